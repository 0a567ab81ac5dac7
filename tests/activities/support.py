"""Running real activity classes in `ActivityEnvironment`, and watching what they start.

* `activity_env` — an environment whose activity info has a short heartbeat timeout (so
  `run_blocking` heartbeats every ~0.1 s) and, for a retry, the previous attempt's
  heartbeat details; `Heartbeats` records what the activity reported.
* `ToolProcesses` — records every ffmpeg/ffprobe `Popen` (the real processes, started
  by the code under test) so a test can wait until one is running, cancel, and check it
  is gone.
* `cancel_and_wait` — cancel the activity and measure how long until it has raised and
  its process has ended.
* `executor_is_free` — proof that the (one-thread) executor's thread has finished the
  canceled work: a no-op submitted after it runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from concurrent.futures import Executor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from tests.support import pid_is_gone

CANCEL_BOUND_S = 2.0
"""The issue's bound: a canceled activity's child process is gone within 2 s."""


class Heartbeats:
    """Every heartbeat an activity sent, with a way to wait for a particular one."""

    def __init__(self) -> None:
        self.details: list[Any] = []
        self._changed = threading.Condition()

    def __call__(self, *details: Any) -> None:
        with self._changed:
            self.details.append(details[0] if len(details) == 1 else details)
            self._changed.notify_all()

    @property
    def steps(self) -> list[Any]:
        return [d.get("step") for d in self.details if isinstance(d, Mapping)]

    @property
    def last(self) -> Any:
        assert self.details, "the activity sent no heartbeat"
        return self.details[-1]

    async def wait_for(self, check: Callable[[Any], bool], timeout: float = 30.0) -> Any:
        """The first heartbeat (already sent or still to come) that passes `check`."""
        return await asyncio.to_thread(self.wait_for_sync, check, timeout)

    def wait_for_sync(self, check: Callable[[Any], bool], timeout: float = 30.0) -> Any:
        """`wait_for` for a thread (never on the event loop, which sends the heartbeats)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = 0
            while True:
                for details in self.details[seen:]:
                    if check(details):
                        return details
                seen = len(self.details)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such heartbeat in {timeout} s: {self.details}")
                self._changed.wait(left)


def activity_env(
    *,
    heartbeat_timeout_s: float = 0.3,
    heartbeat_details: list[Any] | None = None,
    attempt: int = 1,
    activity_type: str = "test",
) -> tuple[ActivityEnvironment, Heartbeats]:
    """An environment as a worker would give: heartbeat timeout set, maybe a retry."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        activity_type=activity_type,
        attempt=attempt,
        heartbeat_timeout=timedelta(seconds=heartbeat_timeout_s),
        heartbeat_details=heartbeat_details or [],
        start_to_close_timeout=timedelta(minutes=10),
        schedule_to_close_timeout=timedelta(minutes=30),
    )
    heartbeats = Heartbeats()
    env.on_heartbeat = heartbeats
    return env, heartbeats


@dataclasses.dataclass
class ToolProcesses:
    """The media-tool processes started while recording, in order."""

    started: list[subprocess.Popen[Any]] = dataclasses.field(default_factory=list)
    _new: threading.Condition = dataclasses.field(default_factory=threading.Condition)

    def add(self, process: subprocess.Popen[Any]) -> None:
        with self._new:
            self.started.append(process)
            self._new.notify_all()

    async def wait_for(
        self, check: Callable[[list[str]], bool], timeout: float = 30.0
    ) -> subprocess.Popen[Any]:
        """The first recorded process whose argv passes `check`, once it is running."""

        def wait() -> subprocess.Popen[Any]:
            deadline = time.monotonic() + timeout
            with self._new:
                while True:
                    for process in self.started:
                        if check(list(process.args)):  # type: ignore[arg-type]
                            return process
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise AssertionError(f"no such process in {timeout} s")
                    self._new.wait(left)

        process = await asyncio.to_thread(wait)
        assert process.poll() is None, "the tool had already finished: the input is too short"
        assert Path(f"/proc/{process.pid}").exists()
        return process


@contextmanager
def recording_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[ToolProcesses]:
    """Record the ffmpeg/ffprobe processes the code under test starts."""
    processes = ToolProcesses()
    real_popen = subprocess.Popen

    class RecordingPopen(real_popen):  # type: ignore[misc,valid-type]
        def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
            super().__init__(args, *rest, **kwargs)
            if Path(str(next(iter(args)))).name in ("ffmpeg", "ffprobe"):
                processes.add(self)

    with monkeypatch.context() as patch:
        patch.setattr(subprocess, "Popen", RecordingPopen)
        yield processes


def ffmpeg_writing(fmt: str) -> Callable[[list[str]], bool]:
    """Matches the ffmpeg command whose output format is `fmt` (`wav`, `null`, ...)."""
    return lambda argv: Path(argv[0]).name == "ffmpeg" and f"-f {fmt}" in " ".join(argv[-4:])


async def cancel_and_wait(
    env: ActivityEnvironment,
    run: asyncio.Task[Any],
    process: subprocess.Popen[Any] | None = None,
) -> float:
    """Cancel the activity; seconds until it raised `CancelledError` and `process` ended."""
    started = time.monotonic()
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, timeout=CANCEL_BOUND_S * 5)
    if process is not None:
        # Event-based: the process object knows when it has been reaped.
        await asyncio.to_thread(process.wait, CANCEL_BOUND_S * 5)
    return time.monotonic() - started


def assert_stopped(process: subprocess.Popen[Any]) -> None:
    """The tool did not run to the end: it was stopped by a signal and is gone."""
    assert process.returncode is not None
    # ffmpeg turns SIGTERM into exit status 255; SIGKILL shows as -9.
    assert process.returncode != 0, "the tool finished instead of being stopped"
    assert pid_is_gone(process.pid)


async def executor_is_free(executor: Executor, timeout: float = CANCEL_BOUND_S) -> None:
    """Fail unless the executor runs a new no-op within `timeout` (its thread is free)."""
    await asyncio.wait_for(asyncio.wrap_future(executor.submit(lambda: None)), timeout)


def start(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    return asyncio.ensure_future(coro)
