"""Stopping blocking work from outside: child processes, downloads, and what is done so far.

Blocking work (ffmpeg, yt-dlp, streamed downloads) runs on executor threads, where an
activity's cancellation cannot reach it: the activity's task is canceled, but the thread
and the process it started run to the end. A `CancelScope` closes that gap:

* The activity side creates a scope and runs the blocking call inside it
  (`CancelScope.run`), on a copy of its `contextvars` context, so the scope is *current*
  in the executor thread without any call site passing it along.
* Blocking code registers what can be stopped: `_run` in `reelflow.media.ffmpeg` watches
  its `Popen` (`watch_process`), a download registers a callback that shuts its socket
  (`on_cancel`), and loops call `raise_if_cancelled()` between chunks.
* `CancelScope.cancel()` (from the event loop) terminates every watched process, runs the
  callbacks and makes the next check raise `Cancelled`; `kill()` escalates to SIGKILL.
  The thread then unwinds, so no work is left behind.

Outside a scope (a CLI call, a test, the local renderer's own threads) every helper here
is a no-op: code behaves exactly as before.

Blocking code can also record what it has *verifiably finished* (`record_progress`); the
activity heartbeats it, and a retried attempt reads it back to resume instead of redo.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_current: contextvars.ContextVar[CancelScope | None] = contextvars.ContextVar(
    "reelflow_cancel_scope", default=None
)


class Cancelled(BaseException):
    """The work was canceled by whoever started it.

    A `BaseException`, like `asyncio.CancelledError`, so the many `except Exception`
    handlers around tools (retry without the caption, wrap yt-dlp's errors, record a
    crashed job) let it through instead of treating a cancellation as a failure.
    """


class CancelScope:
    """Cancellation and progress shared between an activity and its executor thread.

    Thread-safe: `cancel`/`kill` are called from the event loop while the work runs on
    another thread.
    """

    def __init__(
        self,
        *,
        progress: Mapping[str, Any] | None = None,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        """Create a scope.

        Args:
            progress: What an earlier attempt verifiably finished (carried forward, so the
                next heartbeat still reports it).
            on_progress: Called (from the working thread) after `record_progress`.
        """
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._killed = False
        self._processes: set[subprocess.Popen[Any]] = set()
        self._callbacks: list[Callable[[], None]] = []
        self._progress: dict[str, Any] = dict(progress or {})
        self._on_progress = on_progress

    # -- state -----------------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        """Whether `cancel` was called."""
        return self._cancelled.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise `Cancelled` if the scope was canceled."""
        if self._cancelled.is_set():
            raise Cancelled("the work was canceled")

    def progress(self) -> dict[str, Any]:
        """A copy of what the work has recorded as finished."""
        with self._lock:
            return dict(self._progress)

    def record_progress(self, **done: Any) -> None:
        """Record finished parts of the work (JSON-serialisable values only)."""
        with self._lock:
            self._progress.update(done)
        if self._on_progress is not None:
            self._on_progress()

    # -- stopping ----------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the work: SIGTERM every watched process, run every `on_cancel` callback.

        Safe to call more than once and from any thread.
        """
        with self._lock:
            first = not self._cancelled.is_set()
            self._cancelled.set()
            processes = list(self._processes)
            callbacks = list(self._callbacks) if first else []
        for process in processes:
            _signal(process, signal.SIGTERM)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.warning("a cancel callback failed", exc_info=True)

    def kill(self) -> None:
        """Cancel, then SIGKILL the processes that are still running."""
        self.cancel()
        with self._lock:
            self._killed = True
            processes = list(self._processes)
        for process in processes:
            _signal(process, signal.SIGKILL)

    @contextlib.contextmanager
    def watch_process(self, process: subprocess.Popen[Any]) -> Iterator[None]:
        """Stop `process` if the scope is canceled while the block runs."""
        with self._lock:
            self._processes.add(process)
            cancelled, killed = self._cancelled.is_set(), self._killed
        if cancelled:  # canceled between the check and the start: stop it at once
            _signal(process, signal.SIGKILL if killed else signal.SIGTERM)
        try:
            yield
        finally:
            with self._lock:
                self._processes.discard(process)

    @contextlib.contextmanager
    def on_cancel(self, callback: Callable[[], None]) -> Iterator[None]:
        """Call `callback` (once, from the canceling thread) if canceled during the block.

        For blocking calls that only a side effect can interrupt, such as shutting the
        socket a stalled download is reading from.
        """
        with self._lock:
            self._callbacks.append(callback)
            cancelled = self._cancelled.is_set()
        if cancelled:
            callback()
        try:
            yield
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

    # -- running -----------------------------------------------------------------------

    def run(self, fn: Callable[[], T]) -> T:
        """Run `fn` with this scope current (call it inside the executor thread)."""
        token = _current.set(self)
        try:
            self.raise_if_cancelled()  # canceled while queued: do not start at all
            return fn()
        finally:
            _current.reset(token)


def _signal(process: subprocess.Popen[Any], sig: signal.Signals) -> None:
    # Popen.send_signal polls first, so an exited (and reaped) process is never signalled.
    with contextlib.suppress(ProcessLookupError, OSError):
        process.send_signal(sig)


# --- helpers for blocking code (no-ops outside a scope) --------------------------------------


def current_scope() -> CancelScope | None:
    """The scope the calling code runs in, if any."""
    return _current.get()


def raise_if_cancelled() -> None:
    """Raise `Cancelled` if the current scope was canceled."""
    scope = _current.get()
    if scope is not None:
        scope.raise_if_cancelled()


def record_progress(**done: Any) -> None:
    """Record finished parts of the work in the current scope (for heartbeats)."""
    scope = _current.get()
    if scope is not None:
        scope.record_progress(**done)


@contextlib.contextmanager
def watch_process(process: subprocess.Popen[Any]) -> Iterator[None]:
    """Stop `process` if the current scope is canceled while the block runs."""
    scope = _current.get()
    if scope is None:
        yield
        return
    with scope.watch_process(process):
        yield


@contextlib.contextmanager
def on_cancel(callback: Callable[[], None]) -> Iterator[None]:
    """Call `callback` if the current scope is canceled while the block runs."""
    scope = _current.get()
    if scope is None:
        yield
        return
    with scope.on_cancel(callback):
        yield
