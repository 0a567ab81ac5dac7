"""Small, dependency-free test helpers."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, overload

_T = TypeVar("_T")

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository checkout the tests run from."""

_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now.

    The OS picks it; ports already returned in this process are skipped so two servers
    started in one session never get the same one. Another process can still take it
    before we bind, which is the usual, accepted race.
    """
    with _handed_out_lock:
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("could not find a free port")


def new_task_queue(prefix: str = "test") -> str:
    """A task queue name no other test uses, so workers never steal each other's tasks."""
    return f"{prefix}-{uuid.uuid4()}"


@overload
async def assert_eventually(
    fn: Callable[[], Awaitable[_T]], timeout: float = ..., interval: float = ...
) -> _T: ...


@overload
async def assert_eventually(
    fn: Callable[[], _T], timeout: float = ..., interval: float = ...
) -> _T: ...


async def assert_eventually(
    fn: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.1,
) -> Any:
    """Call ``fn`` until it stops failing, then return what it returned.

    ``fn`` may be sync or async. It fails by raising `AssertionError` or by returning
    ``False``; anything else it raises propagates at once, since retrying a bug only hides
    it.

    Args:
        fn: The check, e.g. ``lambda: handle.query(...)`` or an ``async def`` that asserts.
        timeout: Seconds before giving up.
        interval: Seconds between attempts.

    Returns:
        The first result that passed.

    Raises:
        AssertionError: The last failure, once ``timeout`` has passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = fn()
            if inspect.isawaitable(result):
                result = await result
            if result is False:
                raise AssertionError(f"{getattr(fn, '__name__', fn)!s} still returned False")
            return result
        except AssertionError as exc:
            if time.monotonic() >= deadline:
                raise AssertionError(f"not true after {timeout}s: {exc}") from exc
        await asyncio.sleep(interval)


def pid_is_gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rsplit(")", 1)[1].split()[0] == "Z"
