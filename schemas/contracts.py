"""How a workflow calls an activity, declared apart from how the activity is done.

Each pipeline has one module of `ActivityContract`s (`schemas/ingest_activities.py`,
`schemas/generation_activities.py`): the activity's name, its one input and one output type,
the worker pool that runs it, its timeouts, heartbeat timeout and retry policy. Workflows
call activities only through these declarations (`workflows/_steps.py` `call`) and never
import an implementation; implementations register under the declared name
(`@activity.defn(name=CONTRACT.name)`), and a test checks that every contract has an
implementation with exactly its input and output types.

Starting a run goes through a `WorkflowContract` the same way, so the API and the CLI start
runs by name without importing workflow code, activities or any provider SDK.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Generic, TypeVar

from temporalio.common import RetryPolicy

from schemas.failures import NON_RETRYABLE_ERROR_TYPES

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


class Pool(StrEnum):
    """The worker pool an activity runs on (see `schemas/queues.py`)."""

    MEDIA = "media"
    """CPU-bound: ffmpeg and the local models."""
    PROVIDERS = "providers"
    """I/O-bound: the database, paid provider APIs, downloads."""


@dataclass(frozen=True)
class ActivityContract(Generic[InputT, OutputT]):
    """Everything a workflow needs to call one activity, and nothing of how it is done.

    Attributes:
        name: the activity type name, as registered by the worker and seen in history.
        input: the one input type.
        output: the one output type.
        pool: the pool it runs on unless the call says otherwise (a local model runs on
            the media pool, the same step against a remote API on the providers pool).
        start_to_close: how long one attempt may take.
        retry: the retry policy; its non-retryable types are always the failure vocabulary's.
        heartbeat: how long an attempt may go without a heartbeat before it is retried
            elsewhere; set for every step that can run longer than a few seconds.
        schedule_to_close: a deadline over all attempts, for steps that retry without a
            maximum count (database steps ride out a Postgres restart, not forever).
    """

    name: str
    input: type[InputT]
    output: type[OutputT]
    pool: Pool
    start_to_close: timedelta
    retry: RetryPolicy
    heartbeat: timedelta | None = None
    schedule_to_close: timedelta | None = None


@dataclass(frozen=True)
class WorkflowContract(Generic[InputT, OutputT]):
    """A workflow as its starters see it: name, input, output and business-id prefix.

    Attributes:
        name: the workflow type name.
        input: the one input type.
        output: the one output type.
        id_prefix: workflow ids are `<id_prefix><business id>`, so starting the same
            business object twice is a no-op.
        pipeline: the `Pipeline` search attribute value.
    """

    name: str
    input: type[InputT]
    output: type[OutputT]
    id_prefix: str
    pipeline: str

    def workflow_id(self, business_id: str) -> str:
        return f"{self.id_prefix}{business_id}"


PROGRESS_QUERY = "progress"
"""Every pipeline answers this query with its progress model."""


def retry_policy(
    *,
    initial: timedelta,
    maximum: timedelta,
    attempts: int = 0,
    backoff: float = 2.0,
) -> RetryPolicy:
    """A retry policy whose non-retryable types are the failure vocabulary's.

    `attempts=0` retries until the contract's schedule-to-close deadline.
    """
    return RetryPolicy(
        initial_interval=initial,
        backoff_coefficient=backoff,
        maximum_interval=maximum,
        maximum_attempts=attempts,
        non_retryable_error_types=list(NON_RETRYABLE_ERROR_TYPES),
    )


# The shared policies. Per-pipeline modules use these unless a step has a reason not to.

DATABASE_RETRY = retry_policy(initial=timedelta(seconds=1), maximum=timedelta(seconds=30))
"""Database steps retry for a long time: a Postgres restart must delay a run, not fail it."""
DATABASE_TIMEOUT = timedelta(seconds=30)
DATABASE_DEADLINE = timedelta(minutes=30)

MEDIA_RETRY = retry_policy(initial=timedelta(seconds=2), maximum=timedelta(minutes=1), attempts=4)
"""ffmpeg and local models: a crash or a lost host is retried a few times, a bad file never."""

PROVIDER_RETRY = retry_policy(
    initial=timedelta(seconds=2), maximum=timedelta(minutes=2), attempts=6
)
"""Remote APIs: 429 and 5xx are retried with backoff (Retry-After honoured), refusals not."""
