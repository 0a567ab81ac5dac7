"""GenerationWorkflow with the real activities: PostgreSQL, storage, ffmpeg, the local renderer.

On the time-skipping server: poll timers are skipped, renders and validation are real.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment

from reelflow.billing.usage import current_period
from reelflow.core.provider_errors import ProviderTransientError
from reelflow.core.runs import retry_run
from reelflow.generation.providers.local import LocalRenderer, LocalRendererFaults
from reelflow.generation.routing import ProviderRegistry
from schemas import search_attributes as sa
from schemas.generation import (
    AttemptOutcome,
    GenerationStatus,
    attempt_idempotency_key,
    generated_video_id,
)
from schemas.generation_tables import QuotaUsage
from schemas.tables import LedgerEntry, Video
from tests.generation.helpers import mean_luma
from tests.support import assert_eventually
from tests.workflows.generation.conftest import Harness
from tests.workflows.generation.providers import FlakyProvider, RenamedRenderer, renderer
from workflows.generation import GenerationWorkflow


async def test_a_local_generation_becomes_a_video_asset_with_a_thumbnail(
    time_skipping_env: WorkflowEnvironment, harness: Harness, tmp_path: Path
) -> None:
    client = time_skipping_env.client
    registry = ProviderRegistry([renderer(harness.jobs_dir("local"))])
    generation_id = await harness.request(registry, duration_s=1, aspect_ratio="9:16")
    async with harness.workers(client, registry):
        handle = await harness.start(client, generation_id)
        result = await handle.result()
        progress = await handle.query(GenerationWorkflow.progress)

    video_id = generated_video_id(generation_id)
    assert result.status == GenerationStatus.COMPLETED
    assert result.video_id == str(video_id) == progress.video_id
    row = await harness.generation(generation_id)
    assert row.status == "completed" and row.video_id == video_id
    assert row.provider == "local" and row.provider_job_id == result.provider_job_id
    assert row.validation is not None and row.validation["passed"] is True
    [attempt] = await harness.attempts(generation_id)
    assert attempt.outcome == AttemptOutcome.PASSED and attempt.job_state == "succeeded"

    async with harness.sessions() as session:
        video = await session.get(Video, video_id)
        ledger = (
            await session.scalars(select(LedgerEntry).where(LedgerEntry.video_id == video_id))
        ).all()
    assert video is not None and video.origin == "generated" and video.status == "completed"
    assert (video.width, video.height, video.has_audio) == (480, 854, True)
    assert video.duration_s == pytest.approx(1.0, abs=0.2)
    assert video.thumbnail_key is not None
    thumbnail = tmp_path / "thumb.jpg"
    harness.storage.download_to(video.thumbnail_key, thumbnail)
    assert thumbnail.read_bytes()[:2] == b"\xff\xd8" and mean_luma(thumbnail) > 20

    # One ledger row for the one provider job; local generation is free.
    assert [(e.provider, e.operation, e.idempotency_key) for e in ledger] == [
        ("local", "generation", f"generation-{generation_id}/local/{row.provider_job_id}")
    ]
    reservation = await harness.reservation(generation_id)
    assert reservation is not None and reservation.state == "committed"
    usage = await harness.usage()
    assert usage is not None and (usage.used_seconds, usage.reserved_seconds) == (1, 0)

    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(sa.PIPELINE) == "generation"
    assert attributes.get(sa.TENANT_ID) == str(harness.tenant_id)
    assert attributes.get(sa.STAGE) == "completed"
    assert attributes.get(sa.VIDEO_ID) == str(video_id)


FAULTS = {
    "black_frames": (LocalRendererFaults(black_frames=True), "black_frames"),
    "missing_audio": (LocalRendererFaults(drop_audio=True), "audio_track"),
    "wrong_duration": (LocalRendererFaults(wrong_duration_s=3.0), "duration"),
    "zero_bytes": (LocalRendererFaults(empty_output=True), "file_size"),
    "html_page": (LocalRendererFaults(html_error_page=True), "file_size"),
    "not_a_video": (LocalRendererFaults(random_bytes=True), "readable"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_bad_result_is_retried_then_falls_back_with_every_attempt_recorded(
    time_skipping_env: WorkflowEnvironment, harness: Harness, fault: str
) -> None:
    faults, failed_check = FAULTS[fault]
    client = time_skipping_env.client
    # Both free local models; the misbehaving one sorts first, so it is the first choice.
    flaky = renderer(harness.jobs_dir("flaky"), "a-flaky", faults)
    good = renderer(harness.jobs_dir("good"), "b-good")
    registry = ProviderRegistry([flaky, good])
    generation_id = await harness.request(registry)
    async with harness.workers(client, registry):
        result = await (await harness.start(client, generation_id)).result()

    assert result.status == GenerationStatus.COMPLETED
    assert [(a.model, a.outcome) for a in result.attempts] == [
        ("a-flaky", AttemptOutcome.INVALID_OUTPUT),
        ("a-flaky", AttemptOutcome.INVALID_OUTPUT),
        ("b-good", AttemptOutcome.PASSED),
    ]
    attempts = await harness.attempts(generation_id)
    assert [(a.attempt, a.model, a.outcome) for a in attempts] == [
        (1, "a-flaky", "invalid_output"),
        (2, "a-flaky", "invalid_output"),
        (3, "b-good", "passed"),
    ]
    for attempt in attempts[:2]:
        assert attempt.validation is not None and attempt.validation["passed"] is False
        failed = [c["name"] for c in attempt.validation["checks"] if not c["passed"]]
        assert failed_check in failed, attempt.validation
        assert attempt.error and attempt.output_key and attempt.provider_job_id
    row = await harness.generation(generation_id)
    assert (row.status, row.model) == ("completed", "b-good")


async def test_a_worker_dying_between_submit_and_poll_never_submits_twice(
    local_env: WorkflowEnvironment, harness: Harness
) -> None:
    """On the dev server: handing a dead worker's workflow to a new worker is the real
    server's job (the time-skipping test server keeps the task for the old poller)."""
    client = local_env.client
    jobs = harness.jobs_dir("local")
    # The first worker's renderer only records the job, as if its process died right after.
    first = ProviderRegistry([renderer(jobs, start_on_submit=False)])
    generation_id = await harness.request(first)
    key = attempt_idempotency_key(generation_id, 1)
    async with harness.workers(client, first):
        handle = await harness.start(client, generation_id)

        async def submitted() -> None:
            attempts = await harness.attempts(generation_id)
            assert attempts and attempts[0].provider_job_id is not None

        await assert_eventually(submitted, timeout=30)
    # Everything of the first worker is gone; a new one (a new renderer object on the
    # same jobs, as another process would have) takes over from the workflow's history.
    second = renderer(jobs)
    async with harness.workers(client, ProviderRegistry([second])):
        result = await handle.result()

    assert result.status == GenerationStatus.COMPLETED
    assert second.renderer.submit_count(key) == 1
    assert second.renderer.jobs_created(key) == 1
    [attempt] = await harness.attempts(generation_id)
    assert attempt.provider_job_id == result.provider_job_id


async def test_provider_429_5xx_and_a_crashing_poll_are_retried_without_a_second_job(
    time_skipping_env: WorkflowEnvironment, harness: Harness
) -> None:
    client = time_skipping_env.client
    flaky = FlakyProvider(
        renderer(harness.jobs_dir("local")),
        # Retry-After is honoured as the next retry's delay (the policy's backoff is 2 s+).
        submit_errors=[
            ProviderTransientError(
                "rate limited", provider="local", status_code=429, retry_after_s=0.2
            )
        ],
        status_errors=[
            # Not a provider error at all: the poll lost its connection mid-call. Our own
            # infrastructure failing is retried; a bug (any other exception) would not be.
            ConnectionError("the worker lost its connection"),
            ProviderTransientError(
                "bad gateway", provider="local", status_code=502, retry_after_s=0.2
            ),
            ProviderTransientError(
                "unavailable", provider="local", status_code=503, retry_after_s=0.2
            ),
        ],
    )
    registry = ProviderRegistry([flaky])
    generation_id = await harness.request(registry)
    async with harness.workers(client, registry):
        result = await (await harness.start(client, generation_id)).result()

    assert result.status == GenerationStatus.COMPLETED
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.PASSED]
    key = attempt_idempotency_key(generation_id, 1)
    local = inner_renderer(flaky)
    # The 429 refused the first submit; its retry made the one job, polled through errors.
    assert flaky.submit_calls == 2 and local.submit_count(key) == 1
    assert local.jobs_created(key) == 1
    assert flaky.status_calls >= 4


def inner_renderer(flaky: FlakyProvider) -> LocalRenderer:
    assert isinstance(flaky.inner, RenamedRenderer)
    return flaky.inner.renderer


async def test_cancel_while_polling_cancels_the_job_and_releases_the_quota(
    time_skipping_env: WorkflowEnvironment, harness: Harness
) -> None:
    client = time_skipping_env.client
    slow = renderer(harness.jobs_dir("slow"), faults=LocalRendererFaults(extra_latency_s=600))
    registry = ProviderRegistry([slow])
    generation_id = await harness.request(registry, duration_s=4)
    usage = await harness.usage()
    assert usage is not None and usage.reserved_seconds == 4
    async with harness.workers(client, registry):
        handle = await harness.start(client, generation_id)

        async def polling() -> None:
            progress = await handle.query(GenerationWorkflow.progress)
            assert progress.status == GenerationStatus.GENERATING and progress.polls >= 1

        await assert_eventually(polling, timeout=30)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()

    assert isinstance(failure.value.cause, CancelledError)
    row = await harness.generation(generation_id)
    assert (row.status, row.error_code) == ("canceled", "canceled")
    [attempt] = await harness.attempts(generation_id)
    assert attempt.outcome == "canceled" and attempt.provider_job_id is not None
    assert slow.status(attempt.provider_job_id).state == "canceled"
    reservation = await harness.reservation(generation_id)
    assert reservation is not None and reservation.state == "released"
    usage = await harness.usage()
    assert usage is not None and (usage.reserved_seconds, usage.used_seconds) == (0, 0)


async def test_exhausted_quota_is_refused_before_any_provider_call_and_retry_resumes(
    time_skipping_env: WorkflowEnvironment, harness: Harness
) -> None:
    client = time_skipping_env.client
    local = renderer(harness.jobs_dir("local"))
    registry = ProviderRegistry([local])
    # The month's quota is used up after the request was written (another run took it).
    generation_id = await harness.request(registry, duration_s=2, reserve=False)
    async with harness.sessions.begin() as session:
        # The tenant's own period (from its billing anchor) at the time admission reads:
        # the activity's clock, not the time-skipping server's, which earlier tests moved.
        period = (await current_period(session, harness.tenant_id, datetime.now(UTC))).name
        session.add(
            QuotaUsage(
                tenant_id=harness.tenant_id,
                period=period,
                used_seconds=harness.plan.monthly_video_seconds - 1,
                reserved_seconds=0,
            )
        )
    async with harness.workers(client, registry):
        handle = await harness.start(client, generation_id)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        cause = failure.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "quota_exceeded"
        assert "needs 2 video-seconds but only 1" in cause.message
        row = await harness.generation(generation_id)
        assert (row.status, row.error_code) == ("failed", "quota_exceeded")
        assert await harness.attempts(generation_id) == []
        assert local.renderer.submit_count(attempt_idempotency_key(generation_id, 1)) == 0

        # Quota freed (a new month, a bigger plan): retrying the run generates the video.
        async with harness.sessions.begin() as session:
            usage = await session.get(QuotaUsage, (harness.tenant_id, period))
            assert usage is not None
            usage.used_seconds = 0
        await retry_run(client, workflow_id=handle.id, tenant_id=str(harness.tenant_id))
        result = await client.get_workflow_handle_for(GenerationWorkflow.run, handle.id).result()
    assert result.status == GenerationStatus.COMPLETED
    row = await harness.generation(generation_id)
    assert (row.status, row.error_code) == ("completed", None)


async def test_two_runs_of_one_generation_do_not_race(
    time_skipping_env: WorkflowEnvironment, harness: Harness
) -> None:
    """Starting the same generation twice joins the running run (business workflow id)."""
    client = time_skipping_env.client
    registry = ProviderRegistry([renderer(harness.jobs_dir("local"))])
    generation_id = await harness.request(registry)
    async with harness.workers(client, registry):
        first, second = await asyncio.gather(
            harness.start(client, generation_id), harness.start(client, generation_id)
        )
        result = await first.result()
        assert (await second.result()).video_id == result.video_id
    assert len(await harness.attempts(generation_id)) == 1
    assert uuid.UUID(result.video_id or "") == generated_video_id(generation_id)
