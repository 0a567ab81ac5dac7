"""EmbeddedPostgres: pgvector works, data survives restarts and crashed runs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from reelflow.dev.stack import DevStackError, EmbeddedPostgres
from tests.support import (
    REPO_ROOT,
    TEST_CLUSTER_PREFIX,
    free_port,
    libpq_url,
    pid_is_gone,
    reap_orphaned_clusters,
)

SCRIPTS = Path(__file__).parent / "scripts"


@pytest.fixture
def pg_root() -> Iterator[Path]:
    # Not tmp_path: pytest keeps its base directory private, out of the postgres user's reach.
    root = Path(tempfile.mkdtemp(prefix=f"{TEST_CLUSTER_PREFIX}devstack-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _query(url: str, statement: str) -> list[tuple[object, ...]]:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchall() if cursor.description is not None else []


def test_vector_works_and_data_survives_restart(pg_root: Path) -> None:
    server = EmbeddedPostgres(pg_root / "data", free_port(), database="films", durable=False)
    try:
        server.start()
        assert server.url == f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/films"
        assert _query(server.url, "SELECT '[1,2,3]'::vector::text") == [("[1,2,3]",)]
        _query(server.url, "CREATE TABLE kept (id int PRIMARY KEY, embedding vector(3))")
        _query(server.url, "INSERT INTO kept VALUES (1, '[0.5,0.25,1]')")
        first_pid = server.process.pid if server.process else None

        server.stop()
        assert server.process is not None
        assert server.process.returncode == 0, "fast shutdown should exit cleanly"
        assert not (pg_root / "data" / "postmaster.pid").exists()

        server.start()
        assert server.process.pid != first_pid
        rows = _query(server.url, "SELECT id, embedding::text FROM kept")
        assert rows == [(1, "[0.5,0.25,1]")]
    finally:
        server.stop()


def test_listens_on_loopback_and_unix_socket_only(pg_root: Path) -> None:
    server = EmbeddedPostgres(pg_root / "data", free_port(), durable=False)
    try:
        server.start()
        ((addresses, socket_dirs),) = _query(
            server.url,
            "SELECT current_setting('listen_addresses'), "
            "current_setting('unix_socket_directories')",
        )
        assert addresses == "127.0.0.1"
        assert Path(str(socket_dirs)) == server.socket_dir
        assert (server.socket_dir / f".s.PGSQL.{server.port}").is_socket()
    finally:
        server.stop()


def test_stale_lock_with_reused_pid_does_not_block_start(pg_root: Path) -> None:
    data_dir = pg_root / "data"
    server = EmbeddedPostgres(data_dir, free_port(), durable=False)
    server.start()
    server.stop()
    # After a crash the pid in postmaster.pid can belong to an unrelated live process;
    # PostgreSQL alone would refuse to start ("lock file already exists").
    impostor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = data_dir / "postmaster.pid"
        lock.write_text(f"{impostor.pid}\n{data_dir}\n0\n{server.port}\n\n\n\nready\n")
        server.start()
        assert server.is_running
        assert _query(server.url, "SELECT 1") == [(1,)]
        assert impostor.poll() is None, "the unrelated process must be left alone"
    finally:
        server.stop()
        impostor.kill()
        impostor.wait()


def _orphan_cluster(data_dir: Path, port: int) -> int:
    """Start a cluster from a helper process, then SIGKILL the helper; returns the orphan."""
    ready = data_dir.with_name("ready")
    script = SCRIPTS / "start_postgres_then_hang.py"
    supervisor = subprocess.Popen(
        [sys.executable, str(script), str(data_dir), str(port), str(ready)]
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert supervisor.poll() is None, "helper supervisor died before PostgreSQL was up"
            assert time.monotonic() < deadline, "helper supervisor never got PostgreSQL up"
            time.sleep(0.1)
        orphan_pid = int(ready.read_text())
        _query(f"postgresql://postgres@127.0.0.1:{port}/reelflow", "CREATE TABLE kept (id int)")
    finally:
        supervisor.kill()
        supervisor.wait()
    assert not pid_is_gone(orphan_pid), "postmaster should outlive its killed supervisor"
    return orphan_pid


def _kill(pid: int) -> None:
    if not pid_is_gone(pid):
        os.kill(pid, signal.SIGKILL)


def test_orphaned_postmaster_from_crashed_supervisor_is_replaced(pg_root: Path) -> None:
    data_dir, port = pg_root / "data", free_port()
    orphan_pid = _orphan_cluster(data_dir, port)
    try:
        server = EmbeddedPostgres(data_dir, port, durable=False)
        try:
            server.start()
            assert server.process is not None and server.process.pid != orphan_pid
            assert pid_is_gone(orphan_pid)
            assert _query(server.url, "SELECT count(*) FROM kept") == [(0,)]
        finally:
            server.stop()
    finally:
        _kill(orphan_pid)


def test_reaper_removes_only_clusters_of_dead_sessions(
    pg_root: Path, postgres_server: EmbeddedPostgres
) -> None:
    orphan_pid = _orphan_cluster(pg_root / "data", free_port())
    try:
        removed = reap_orphaned_clusters()
        assert pg_root in removed
        assert not pg_root.exists()
        assert pid_is_gone(orphan_pid)
        # This session's own cluster is alive and supervised: untouched.
        assert postgres_server.is_running
        assert _query(postgres_server.url, "SELECT 1") == [(1,)]
    finally:
        _kill(orphan_pid)


def test_port_in_use_is_a_clear_error(pg_root: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = EmbeddedPostgres(pg_root / "data", port, durable=False)
        with pytest.raises(DevStackError, match="already in use"):
            server.start()
        assert not server.is_running


def test_session_fixtures_give_vector_enabled_databases(
    postgres_url: str, database_url: str
) -> None:
    assert postgres_url != database_url
    for url in (postgres_url, database_url):
        assert _query(url, "SELECT extname FROM pg_extension WHERE extname = 'vector'") == [
            ("vector",)
        ]


def test_session_postgres_is_torn_down_when_pytest_gets_sigterm(tmp_path: Path) -> None:
    state, probe = tmp_path / "state", str(SCRIPTS / "sigterm_probe.py")
    inner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--", probe],
        cwd=REPO_ROOT,
        env={**os.environ, "SIGTERM_PROBE_STATE": str(state)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not state.exists():
            assert inner.poll() is None, "inner pytest exited before starting PostgreSQL"
            assert time.monotonic() < deadline, "inner pytest never started PostgreSQL"
            time.sleep(0.1)
        pid_text, root = state.read_text().split(" ", 1)
        inner.send_signal(signal.SIGTERM)
        inner.wait(timeout=60)
    finally:
        inner.kill()
        inner.wait()
    assert pid_is_gone(int(pid_text)), "SIGTERM must still stop the session's PostgreSQL"
    assert not Path(root).exists()
