"""Helpers shared by activity classes: scratch files, blocking calls with heartbeats."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from reelflow.core.storage import ObjectNotFound, Storage

T = TypeVar("T")

HEARTBEAT_EVERY_S = 5.0


async def run_blocking(
    executor: Executor, fn: Callable[[], T], *, heartbeat_details: object | None = None
) -> T:
    """Run `fn` on `executor`, heartbeating while it works so a dead worker is noticed.

    The event loop stays free for other activities and for heartbeats themselves.
    """
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(executor, fn)
    started = time.monotonic()
    while True:
        done, _ = await asyncio.wait({future}, timeout=HEARTBEAT_EVERY_S)
        if done:
            return future.result()
        activity.heartbeat(
            {"elapsed_s": round(time.monotonic() - started, 1), "step": heartbeat_details}
        )


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
            type="ObjectNotFound",
            non_retryable=True,
        ) from None
    local = scratch / key.replace("/", "__")
    if local.exists() and local.stat().st_size == size:
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    storage.download_to(key, local)
    return local
