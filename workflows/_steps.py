"""Turning activity failures into reasons a person can act on; shared by every workflow."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    FailureError,
)
from temporalio.exceptions import TimeoutError as TimeoutError_

T = TypeVar("T")


class StepFailed(Exception):
    """A step failed permanently; `code` and `message` end up on the run and the record."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def describe_failure(err: ActivityError) -> StepFailed:
    """The code and readable reason behind an activity failure."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return StepFailed(cause.type or "step_failed", cause.message)
    if isinstance(cause, TimeoutError_):
        kind = cause.type.name.lower() if cause.type else "timeout"
        return StepFailed("step_timed_out", f"{err.activity_type} did not finish in time ({kind})")
    if isinstance(cause, FailureError):
        return StepFailed("step_failed", f"{err.activity_type} failed: {cause.message}")
    return StepFailed("step_failed", f"{err.activity_type} failed")


async def step(awaitable: Awaitable[T]) -> T:
    """Await a step; a permanent failure becomes `StepFailed` with a readable reason.

    Raises:
        StepFailed: the activity failed for good.
        asyncio.CancelledError: the run itself was canceled, so the caller records that
            rather than a step failure.
    """
    try:
        return await awaitable
    except ActivityError as err:
        if isinstance(err.cause, CancelledError):
            raise asyncio.CancelledError() from err
        raise describe_failure(err) from err
