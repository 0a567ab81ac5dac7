"""The generation pipeline's activities as its workflow calls them (see `schemas/contracts.py`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from schemas.contracts import (
    DATABASE_DEADLINE,
    DATABASE_RETRY,
    DATABASE_TIMEOUT,
    MEDIA_RETRY,
    ActivityContract,
    Pool,
    WorkflowContract,
    retry_policy,
)
from schemas.generation import (
    CancelJobInput,
    CancelJobOutput,
    DownloadOutputInput,
    DownloadOutputOutput,
    FinalizeGenerationInput,
    FinalizeGenerationOutput,
    GenerationInput,
    GenerationPlan,
    GenerationResult,
    PollJobInput,
    PollJobOutput,
    PrepareGenerationInput,
    ReleaseGenerationInput,
    ReleaseGenerationOutput,
    SubmitJobInput,
    SubmitJobOutput,
    ValidateOutputInput,
    ValidateOutputOutput,
)

GENERATION_WORKFLOW = WorkflowContract(
    name="GenerationWorkflow",
    input=GenerationInput,
    output=GenerationResult,
    id_prefix="generate-",
    pipeline="generation",
)
APPROVE_UPDATE = "approve"

JOB_RETRY = retry_policy(initial=timedelta(seconds=2), maximum=timedelta(minutes=1), attempts=8)
"""Provider job calls: a 429 or 5xx is retried with backoff (honouring Retry-After); a refusal
is not. Retries of submit reuse the attempt's idempotency key, so they never make a second job."""

CANCEL_RETRY = retry_policy(initial=timedelta(seconds=2), maximum=timedelta(seconds=8), attempts=3)
"""Canceling a job is best effort: the quota is released whether or not it succeeds."""

PREPARE_GENERATION = ActivityContract(
    name="prepare_generation",
    input=PrepareGenerationInput,
    output=GenerationPlan,
    pool=Pool.PROVIDERS,
    start_to_close=DATABASE_TIMEOUT,
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)
"""Route, estimate, reserve quota and decide whether approval is needed."""

SUBMIT_GENERATION_JOB = ActivityContract(
    name="submit_generation_job",
    input=SubmitJobInput,
    output=SubmitJobOutput,
    pool=Pool.PROVIDERS,
    start_to_close=timedelta(minutes=2),
    heartbeat=timedelta(seconds=30),
    retry=JOB_RETRY,
)
"""On the candidate's pool; the local renderer's jobs then stay on the host that made them."""

POLL_GENERATION_JOB = ActivityContract(
    name="poll_generation_job",
    input=PollJobInput,
    output=PollJobOutput,
    pool=Pool.PROVIDERS,
    start_to_close=timedelta(minutes=1),
    retry=JOB_RETRY,
)

DOWNLOAD_GENERATION_OUTPUT = ActivityContract(
    name="download_generation_output",
    input=DownloadOutputInput,
    output=DownloadOutputOutput,
    pool=Pool.PROVIDERS,
    start_to_close=timedelta(minutes=30),
    heartbeat=timedelta(seconds=30),
    retry=JOB_RETRY,
)

CANCEL_GENERATION_JOB = ActivityContract(
    name="cancel_generation_job",
    input=CancelJobInput,
    output=CancelJobOutput,
    pool=Pool.PROVIDERS,
    start_to_close=timedelta(minutes=1),
    retry=CANCEL_RETRY,
)

VALIDATE_GENERATION_OUTPUT = ActivityContract(
    name="validate_generation_output",
    input=ValidateOutputInput,
    output=ValidateOutputOutput,
    pool=Pool.MEDIA,
    start_to_close=timedelta(minutes=10),
    heartbeat=timedelta(seconds=30),
    retry=MEDIA_RETRY,
)

FINALIZE_GENERATION = ActivityContract(
    name="finalize_generation",
    input=FinalizeGenerationInput,
    output=FinalizeGenerationOutput,
    pool=Pool.PROVIDERS,
    start_to_close=DATABASE_TIMEOUT,
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)
"""Store the video asset, write the ledger row and commit the quota with the real cost."""

RELEASE_GENERATION = ActivityContract(
    name="release_generation",
    input=ReleaseGenerationInput,
    output=ReleaseGenerationOutput,
    pool=Pool.PROVIDERS,
    start_to_close=DATABASE_TIMEOUT,
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)
"""Record the end of a failed, rejected or canceled generation and release its quota."""

GENERATION_ACTIVITIES: tuple[ActivityContract[Any, Any], ...] = (
    PREPARE_GENERATION,
    SUBMIT_GENERATION_JOB,
    POLL_GENERATION_JOB,
    DOWNLOAD_GENERATION_OUTPUT,
    CANCEL_GENERATION_JOB,
    VALIDATE_GENERATION_OUTPUT,
    FINALIZE_GENERATION,
    RELEASE_GENERATION,
)
