"""Calling activities through their contracts, and turning their failures into reasons a
person can act on; shared by every workflow."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar, cast

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    FailureError,
)
from temporalio.exceptions import TimeoutError as TimeoutError_

with workflow.unsafe.imports_passed_through():
    from schemas.contracts import ActivityContract, Pool
    from schemas.failures import FailureCode, known_code
    from schemas.queues import TaskQueues

T = TypeVar("T")
InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


async def call(
    contract: ActivityContract[InputT, OutputT],
    input: InputT,
    queues: TaskQueues,
    *,
    pool: Pool | None = None,
    task_queue: str | None = None,
    summary: str | None = None,
) -> OutputT:
    """Run the activity `contract` declares, with its timeouts and retry policy.

    Args:
        contract: what to call; the workflow never imports the implementation.
        input: the activity's one input.
        queues: the family of queues this run uses.
        pool: run on another pool than the contract's (local model vs. remote API).
        task_queue: run on this exact queue (a host-bound job on its host's queue).
        summary: a line shown for this call in the Temporal UI's timeline.
    """
    result = await workflow.execute_activity(
        contract.name,
        input,
        result_type=contract.output,
        task_queue=task_queue or queues.by_pool(pool or contract.pool),
        start_to_close_timeout=contract.start_to_close,
        schedule_to_close_timeout=contract.schedule_to_close,
        heartbeat_timeout=contract.heartbeat,
        retry_policy=contract.retry,
        summary=summary,
    )
    return cast(OutputT, result)


class StepFailed(Exception):
    """A step failed permanently; `code` and `message` end up on the run and the record."""

    def __init__(self, code: FailureCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def describe_failure(err: ActivityError) -> StepFailed:
    """The code and readable reason behind an activity failure.

    Only codes of the failure vocabulary reach a run's result; anything else (a failure
    from a worker that predates the vocabulary) is reported as a failed step.
    """
    cause = err.cause
    step_name = err.activity_type or "a step"
    if isinstance(cause, ApplicationError):
        code = known_code(cause.type)
        if code is not None:
            return StepFailed(code, cause.message)
        return StepFailed(FailureCode.STEP_FAILED, f"{step_name} failed: {cause.message}")
    if isinstance(cause, TimeoutError_):
        kind = cause.type.name.lower() if cause.type else "timeout"
        return StepFailed(
            FailureCode.STEP_TIMED_OUT, f"{step_name} did not finish in time ({kind})"
        )
    if isinstance(cause, FailureError):
        return StepFailed(FailureCode.STEP_FAILED, f"{step_name} failed: {cause.message}")
    return StepFailed(FailureCode.STEP_FAILED, f"{step_name} failed")


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
