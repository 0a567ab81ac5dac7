"""ManagedProcess / ProcessGroup: orderly shutdown, escalation, and reporting a dead child."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from reelflow.dev.stack import (
    ChildExitedError,
    ManagedProcess,
    ProcessGroup,
    is_port_open,
    read_log_tail,
    wait_for_http,
    wait_for_port,
)
from tests.support import free_port, pid_is_gone

SCRIPTS = Path(__file__).parent / "scripts"
SLEEP_FOREVER = "import time\nwhile True: time.sleep(1)"


def _wait_for_file(path: Path, process: subprocess.Popen[bytes], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"helper exited early with {process.returncode}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text()


def test_sigterm_stops_children_in_reverse_order(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    supervisor = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "supervise_sleepers.py"), str(tmp_path / "logs"), str(state)]
    )
    try:
        pids = [int(p) for p in _wait_for_file(state / "pids", supervisor).split()]
        # Signal only once both children have installed their SIGTERM handlers.
        for name in ("first", "second"):
            log = tmp_path / "logs" / f"{name}.log"
            deadline = time.monotonic() + 30
            while f"{name} running" not in log.read_text():
                assert time.monotonic() < deadline, f"{name} never started"
                time.sleep(0.05)

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0
    finally:
        supervisor.kill()
        supervisor.wait()
    assert all(pid_is_gone(pid) for pid in pids)
    assert (state / "stopped").read_text().split() == ["second", "first"]


def test_unexpected_death_stops_the_rest_and_says_who_died(tmp_path: Path) -> None:
    with ProcessGroup(tmp_path) as group:
        steady = group.spawn("steady", [sys.executable, "-c", SLEEP_FOREVER])
        group.spawn(
            "crasher",
            [sys.executable, "-c", "import sys; print('boom: disk on fire'); sys.exit(3)"],
        )
        with pytest.raises(ChildExitedError) as failure:
            group.supervise(poll_interval=0.05)

    error = failure.value
    assert (error.name, error.returncode) == ("crasher", 3)
    assert "boom: disk on fire" in error.log_tail
    assert "crasher exited unexpectedly with status 3" in str(error)
    assert "boom: disk on fire" in str(error)
    assert error.log_file == tmp_path / "crasher.log"
    assert steady.returncode is not None, "the healthy child must be stopped too"
    assert steady.stop_requested


def test_request_stop_ends_supervision_cleanly(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    child = group.spawn("sleeper", [sys.executable, "-c", SLEEP_FOREVER])
    threading.Timer(0.3, group.request_stop).start()
    group.supervise(poll_interval=0.05)
    assert child.returncode == -signal.SIGTERM
    group.check()  # a child we stopped is not a failure


def test_stop_escalates_to_sigkill_for_the_whole_process_group(tmp_path: Path) -> None:
    grandchild_pid_file = tmp_path / "grandchild.pid"
    stubborn = (
        "import pathlib, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "grandchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"pathlib.Path({str(grandchild_pid_file)!r}).write_text(str(grandchild.pid))\n"
        "while True: time.sleep(1)\n"
    )
    process = ManagedProcess(
        "stubborn", [sys.executable, "-c", stubborn], log_file=tmp_path / "stubborn.log"
    )
    process.start()
    try:
        deadline = time.monotonic() + 30
        while not grandchild_pid_file.exists() or not grandchild_pid_file.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        grandchild = int(grandchild_pid_file.read_text())

        started = time.monotonic()
        assert process.stop(timeout=0.5) == -signal.SIGKILL
        assert time.monotonic() - started < 10
        deadline = time.monotonic() + 5
        while not pid_is_gone(grandchild):
            assert time.monotonic() < deadline, "grandchild survived its process group's kill"
            time.sleep(0.05)
    finally:
        process.kill()


def test_wait_helpers_fail_fast_when_the_process_dies(tmp_path: Path) -> None:
    process = ManagedProcess(
        "quitter",
        [sys.executable, "-c", "import sys; sys.exit('cannot bind')"],
        log_file=tmp_path / "quitter.log",
    )
    process.start()
    started = time.monotonic()
    with pytest.raises(ChildExitedError, match="cannot bind"):
        wait_for_port("127.0.0.1", free_port(), timeout=60, process=process)
    with pytest.raises(ChildExitedError):
        wait_for_http(f"http://127.0.0.1:{free_port()}/healthz", timeout=60, process=process)
    assert time.monotonic() - started < 10


def test_wait_for_http_and_port_helpers(tmp_path: Path) -> None:
    port = free_port()
    assert not is_port_open("127.0.0.1", port)
    with pytest.raises(TimeoutError, match=f"127.0.0.1:{port}"):
        wait_for_http(f"http://127.0.0.1:{port}/", timeout=0.3)

    server = ManagedProcess(
        "http",
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        log_file=tmp_path / "http.log",
        cwd=tmp_path,
    )
    server.start()
    try:
        wait_for_port("127.0.0.1", port, timeout=30, process=server)
        # A 404 still means the server is up and serving.
        response = wait_for_http(f"http://127.0.0.1:{port}/missing", timeout=30, process=server)
        assert response.status_code == httpx.codes.NOT_FOUND
    finally:
        server.stop()
    assert not is_port_open("127.0.0.1", port)


def test_read_log_tail_returns_only_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "long.log"
    log.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert read_log_tail(log, 3).splitlines() == ["line 9997", "line 9998", "line 9999"]
    assert "no log" in read_log_tail(tmp_path / "absent.log")
