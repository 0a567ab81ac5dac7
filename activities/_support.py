"""Helpers shared by activity classes: scratch files, blocking calls with heartbeats.

`run_blocking` is how every activity runs blocking work (ffmpeg, yt-dlp, local models,
provider SDKs) on an executor:

* **Heartbeats** every few seconds, with details ``{"elapsed_s", "step", "done"}``:
  ``done`` is what the work has verifiably finished (`record_progress`), so a retried
  attempt can resume instead of redo (`previous_progress`).
* **Cancellation** reaches the work: the call runs in a `CancelScope` carried into the
  executor thread by a copy of the activity's `contextvars` context. When the activity is
  canceled, the scope terminates the ffmpeg/ffprobe process the work started (then kills
  it), aborts downloads, and the thread unwinds with `Cancelled`; the activity then
  raises `asyncio.CancelledError` as Temporal expects. Nothing keeps running behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from reelflow.core.cancellation import Cancelled, CancelScope, record_progress
from reelflow.core.storage import ObjectNotFound, Storage
from schemas.failures import FailureCode

__all__ = [
    "HEARTBEAT_EVERY_S",
    "KILL_GRACE_S",
    "TERMINATE_GRACE_S",
    "Cancelled",
    "materialize",
    "previous_progress",
    "record_progress",
    "resumable_part",
    "run_blocking",
    "stored_copy_matches",
]

T = TypeVar("T")

logger = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 5.0
"""Heartbeat at least this often (more often when the activity's heartbeat timeout is short)."""

TERMINATE_GRACE_S = 0.5
"""After a cancel, how long a child process gets to exit on SIGTERM before SIGKILL."""

KILL_GRACE_S = 1.0
"""After SIGKILL, how long the executor thread gets to unwind before we stop waiting."""


async def run_blocking(
    executor: Executor,
    fn: Callable[[], T],
    *,
    heartbeat_details: object | None = None,
    progress: Mapping[str, Any] | None = None,
) -> T:
    """Run `fn` on `executor`, heartbeating while it works; stop it if the activity is canceled.

    The event loop stays free for other activities and for heartbeats themselves.

    Args:
        executor: Where `fn` runs.
        fn: The blocking work. It may call `record_progress(**done)` after each part it has
            finished for good; a heartbeat carrying the new ``done`` is sent at once.
        heartbeat_details: The ``step`` named in heartbeats (e.g. ``"extract"``).
        progress: What an earlier attempt verifiably finished (from `previous_progress`,
            checked by the caller); heartbeats keep reporting it.

    Returns:
        What `fn` returned.

    Raises:
        asyncio.CancelledError: The activity was canceled; `fn`'s processes are stopped
            and its thread has ended (or, in the worst case, was given up on after
            `TERMINATE_GRACE_S` + `KILL_GRACE_S`, with a warning).
        Exception: Whatever `fn` raised.
    """
    loop = asyncio.get_running_loop()
    progressed = asyncio.Event()

    def on_progress() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to tell
            loop.call_soon_threadsafe(progressed.set)

    scope = CancelScope(progress=progress, on_progress=on_progress)
    # The copy carries the activity context (activity.info() works in `fn`) and makes the
    # scope current in the executor thread without any call site passing it along.
    context = contextvars.copy_context()
    work: Future[T] = executor.submit(context.run, scope.run, fn)
    future = asyncio.wrap_future(work)
    started = time.monotonic()
    interval = _heartbeat_interval()
    reported = dict(progress or {})

    def beat() -> None:
        nonlocal reported
        reported = scope.progress()
        _heartbeat(
            {
                "elapsed_s": round(time.monotonic() - started, 1),
                "step": heartbeat_details,
                "done": reported,
            }
        )

    try:
        while True:
            waiter: asyncio.Future[Any] = asyncio.ensure_future(progressed.wait())
            watched: set[asyncio.Future[Any]] = {future, waiter}
            try:
                done, _ = await asyncio.wait(
                    watched, timeout=interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiter.cancel()
            if future in done:
                if scope.progress() != reported:
                    # What finished last is on record too: after a failure, for the retry;
                    # after success, should a later step of this attempt fail.
                    beat()
                return future.result()
            progressed.clear()
            beat()
    except asyncio.CancelledError:
        stopper = asyncio.ensure_future(_stop(scope, work, future, heartbeat_details))
        with contextlib.suppress(asyncio.CancelledError):
            # Shielded: a second cancel must not leave the processes running.
            await asyncio.shield(stopper)
        raise


async def _stop(
    scope: CancelScope, work: Future[Any], future: asyncio.Future[Any], step: object
) -> None:
    """Terminate, then kill, the work's processes and wait for its thread to end."""
    future.add_done_callback(_consume)
    if work.cancel():  # still queued behind other work: it never starts
        return
    scope.cancel()
    done, _ = await asyncio.wait({future}, timeout=TERMINATE_GRACE_S)
    if done:
        return
    scope.kill()
    done, _ = await asyncio.wait({future}, timeout=KILL_GRACE_S)
    if not done:
        logger.warning(
            "canceled step %r is still running %.1f s after its cancel",
            step,
            TERMINATE_GRACE_S + KILL_GRACE_S,
        )


def _consume(future: asyncio.Future[Any]) -> None:
    # The work's outcome after a cancel (usually `Cancelled`) is not news to anyone.
    if not future.cancelled():
        future.exception()


def _heartbeat_interval() -> float:
    if not activity.in_activity():
        return HEARTBEAT_EVERY_S
    timeout = activity.info().heartbeat_timeout
    if timeout is None or timeout.total_seconds() <= 0:
        return HEARTBEAT_EVERY_S
    # Several heartbeats per timeout, so one late beat does not fail the attempt.
    return max(0.1, min(HEARTBEAT_EVERY_S, timeout.total_seconds() / 3))


def _heartbeat(details: dict[str, Any]) -> None:
    if activity.in_activity():
        activity.heartbeat(details)


def previous_progress() -> dict[str, Any]:
    """What the last heartbeat of an earlier attempt said was finished (its ``done``).

    Only a claim: check each part (the stored object exists with the recorded size, ...)
    before skipping work because of it. Empty on a first attempt or outside an activity.
    """
    if not activity.in_activity():
        return {}
    details = activity.info().heartbeat_details
    if not details:
        return {}
    last = details[0]
    if isinstance(last, Mapping) and isinstance(last.get("done"), Mapping):
        return dict(last["done"])
    return {}


def stored_copy_matches(storage: Storage, key: object, size_bytes: object) -> bool:
    """Whether `key` is stored with exactly `size_bytes` (a claim from a heartbeat, checked).

    Storage writes are atomic (a put either lands whole or not at all), so a stored object
    of the recorded size is the object the earlier attempt stored.
    """
    if not isinstance(key, str) or not isinstance(size_bytes, int) or size_bytes <= 0:
        return False
    try:
        return storage.size(key) == size_bytes
    except ObjectNotFound:
        return False


def resumable_part(
    storage: Storage, earlier: Mapping[str, Any], part: str, key: str | None
) -> dict[str, Any] | None:
    """`earlier[part]` if it says `key` was stored and storage has it with that size.

    For heartbeat progress of the form ``{part: {"key": ..., "size_bytes": ..., ...}}``.
    """
    claim = earlier.get(part)
    if key is None or not isinstance(claim, Mapping) or claim.get("key") != key:
        return None
    if not stored_copy_matches(storage, key, claim.get("size_bytes")):
        return None
    return dict(claim)


def materialize(storage: Storage, key: str, scratch: Path) -> Path:
    """A local copy of a stored object, reused when a previous attempt already fetched it.

    Steps of one video may run on different media hosts, so each fetches what it needs
    rather than assuming a file left behind by an earlier step.
    """
    try:
        size = storage.size(key)
    except ObjectNotFound:
        raise ApplicationError(
            f"the stored file {key!r} is missing; upload the video again",
            type=FailureCode.OBJECT_NOT_FOUND.value,
            non_retryable=True,
        ) from None
    local = scratch / key.replace("/", "__")
    if local.exists() and local.stat().st_size == size:
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    storage.download_to(key, local)
    return local
