"""GenerationWorkflow orchestration with stand-in activities: timers, approval, history size."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from schemas import search_attributes as sa
from schemas.generation import (
    ApprovalInput,
    ApprovalState,
    AttemptOutcome,
    GenerationInput,
    GenerationResult,
    GenerationStatus,
    generation_workflow_id,
)
from tests.support import assert_eventually
from tests.workflows.generation.fakes import FakeGeneration, fake_plan
from workers.pools import activity_worker
from workflows.generation import GenerationWorkflow

HISTORY_TARGET = 63
"""Events per generation on the happy path with one poll: the benchmark's 50, plus 13 for
taking and giving back the tenant's run slot (a patch marker and two activities)."""


@asynccontextmanager
async def generation_workers(client: Client, fake: FakeGeneration) -> AsyncIterator[None]:
    """Workers on a queue family of this test's own."""
    activities = fake.activities()
    async with (
        Worker(client, task_queue=fake.queues.workflows, workflows=[GenerationWorkflow]),
        activity_worker(
            client,
            fake.queues.media,
            activities,
        ),
        activity_worker(
            client,
            fake.queues.providers,
            activities,
        ),
    ):
        yield


async def start(
    client: Client, fake: FakeGeneration
) -> WorkflowHandle[GenerationWorkflow, GenerationResult]:
    generation_id = str(uuid.uuid4())
    return await client.start_workflow(
        GenerationWorkflow.run,
        GenerationInput(tenant_id=str(uuid.uuid4()), generation_id=generation_id),
        id=generation_workflow_id(generation_id),
        task_queue=fake.queues.workflows,
    )


async def all_events(client: Client, workflow_id: str, first_run_id: str | None) -> list[int]:
    """Event types of every run of the workflow (continued runs included), in order."""
    types: list[int] = []
    run_id = first_run_id
    while run_id is not None:
        run = client.get_workflow_handle(workflow_id, run_id=run_id)
        next_run: str | None = None
        async for event in run.fetch_history_events():
            types.append(event.event_type)
            if event.HasField("workflow_execution_continued_as_new_event_attributes"):
                next_run = (
                    event.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                )
        run_id = next_run
    return types


@pytest.fixture(params=["time-skipping", "local"])
def env(request: pytest.FixtureRequest) -> WorkflowEnvironment:
    """Tests that need no long timers run on the time-skipping server and the dev server."""
    name = "local_env" if request.param == "local" else "time_skipping_env"
    environment: WorkflowEnvironment = request.getfixturevalue(name)
    return environment


async def test_a_generation_stays_within_its_history_budget(env: WorkflowEnvironment) -> None:
    # A job done before the first poll: the shape of a local render, and the benchmark's.
    fake = FakeGeneration(plan=fake_plan(poll_initial_s=0.5), latency_s=0.1)
    async with generation_workers(env.client, fake):
        handle = await start(env.client, fake)
        result = await handle.result()
    assert result.status == GenerationStatus.COMPLETED
    assert result.video_id is not None
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.PASSED]
    events = await all_events(env.client, handle.id, handle.result_run_id)
    assert len(events) <= HISTORY_TARGET, len(events)
    assert events.count(EventType.EVENT_TYPE_TIMER_STARTED) == 1
    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(sa.STAGE) == "completed"
    assert attributes.get(sa.COST_USD) == pytest.approx(0.4)
    assert attributes.get(sa.VIDEO_ID) == result.video_id


async def test_a_twenty_minute_generation_takes_seconds_and_bounded_history(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env = time_skipping_env
    fake = FakeGeneration(plan=fake_plan(poll_initial_s=5.0, poll_max_s=30.0), latency_s=20 * 60)
    loop = asyncio.get_running_loop()
    async with generation_workers(env.client, fake):
        server_start = await env.get_current_time()
        wall_start = loop.time()
        handle = await start(env.client, fake)
        result = await handle.result()
        wall = loop.time() - wall_start
        server_elapsed = await env.get_current_time() - server_start

    assert result.status == GenerationStatus.COMPLETED
    assert server_elapsed >= timedelta(minutes=20)
    assert wall < 30, f"{wall:.1f} s of real time for a 20-minute job"
    assert len(fake.submits) == 1, "the job is submitted once, whatever the polling"
    # 5 s growing 1.5x to 30 s: ~45 polls, more than one run holds, so the job id was
    # carried over continue-as-new and polled again, never resubmitted.
    assert len(fake.polls) > 30
    assert {p.job_id for p in fake.polls} == {f"job-{fake.submits[0].idempotency_key}"}
    events = await all_events(env.client, handle.id, handle.result_run_id)
    assert events.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW) >= 1
    runs = events.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)
    assert len(events) / runs < 400, "each run's history stays bounded"


async def test_a_failed_job_and_an_invalid_file_fall_back_with_every_attempt_recorded(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeGeneration(
        plan=fake_plan(
            candidates=(("sora", "sora-2"), ("veo", "veo-3.0-generate-001")), poll_initial_s=0.2
        ),
        latency_s=0.1,
        failed_jobs={1},
        invalid_attempts={2},
    )
    async with generation_workers(env.client, fake):
        result = await (await start(env.client, fake)).result()
    assert result.status == GenerationStatus.COMPLETED
    assert [(a.attempt, a.provider, a.outcome) for a in result.attempts] == [
        (1, "sora", AttemptOutcome.JOB_FAILED),
        (2, "sora", AttemptOutcome.INVALID_OUTPUT),
        (3, "veo", AttemptOutcome.PASSED),
    ]
    # One idempotency key per attempt: a retry of attempt 1 could never make a second job.
    assert len({s.idempotency_key for s in fake.submits}) == 3
    assert fake.finalized[0].attempt == 3


async def test_when_every_attempt_fails_the_quota_is_released_and_the_reason_named(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeGeneration(
        plan=fake_plan(poll_initial_s=0.2), latency_s=0.1, invalid_attempts={1, 2}
    )
    async with generation_workers(env.client, fake):
        handle = await start(env.client, fake)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "validation_failed"
    assert "attempt 1" in cause.message and "attempt 2" in cause.message
    assert [r.status for r in fake.releases] == [GenerationStatus.FAILED]
    assert fake.releases[0].error_code == "validation_failed"
    assert not fake.finalized


async def test_quota_refused_at_prepare_never_reaches_a_provider(env: WorkflowEnvironment) -> None:
    fake = FakeGeneration(
        prepare_error=ApplicationError("no quota left", type="quota_exceeded", non_retryable=True)
    )
    async with generation_workers(env.client, fake):
        with pytest.raises(WorkflowFailureError) as failure:
            await (await start(env.client, fake)).result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "quota_exceeded"
    assert fake.calls == ["prepare_generation", "release_generation"]
    assert fake.releases[0].error_code == "quota_exceeded"


async def wait_for_approval_gate(
    handle: WorkflowHandle[GenerationWorkflow, GenerationResult],
) -> None:
    async def waiting() -> bool:
        progress = await handle.query(GenerationWorkflow.progress)
        return progress.status == GenerationStatus.AWAITING_APPROVAL

    await assert_eventually(waiting, timeout=20)


async def test_approved_generation_goes_ahead(env: WorkflowEnvironment) -> None:
    fake = FakeGeneration(
        plan=fake_plan(estimate=1.2, approval_required=True, poll_initial_s=0.2), latency_s=0.1
    )
    async with generation_workers(env.client, fake):
        handle = await start(env.client, fake)
        await wait_for_approval_gate(handle)
        assert not fake.submits, "nothing is submitted before approval"
        decided = await handle.execute_update(
            GenerationWorkflow.approve, ApprovalInput(approve=True)
        )
        assert decided.approval == ApprovalState.APPROVED
        # A second decision is refused by the validator: it never enters history.
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(GenerationWorkflow.approve, ApprovalInput(approve=False))
        result = await handle.result()
        progress = await handle.query(GenerationWorkflow.progress)
    assert result.status == GenerationStatus.COMPLETED
    assert progress.approval == ApprovalState.APPROVED
    assert len(fake.submits) == 1


async def test_rejected_generation_is_canceled_and_releases_its_quota(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeGeneration(plan=fake_plan(estimate=1.2, approval_required=True))
    async with generation_workers(env.client, fake):
        handle = await start(env.client, fake)
        await wait_for_approval_gate(handle)
        await handle.execute_update(
            GenerationWorkflow.approve, ApprovalInput(approve=False, note="too expensive")
        )
        result = await handle.result()
    assert result.status == GenerationStatus.CANCELED
    assert result.message is not None and "too expensive" in result.message
    assert not fake.submits
    assert [(r.status, r.error_code, r.approval) for r in fake.releases] == [
        (GenerationStatus.CANCELED, "approval_rejected", ApprovalState.REJECTED)
    ]


async def test_approval_that_never_comes_times_out(time_skipping_env: WorkflowEnvironment) -> None:
    fake = FakeGeneration(
        plan=fake_plan(estimate=1.2, approval_required=True, approval_timeout_s=24 * 3600)
    )
    async with generation_workers(time_skipping_env.client, fake):
        handle = await start(time_skipping_env.client, fake)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "approval_timed_out"
    assert not fake.submits
    assert [(r.status, r.approval) for r in fake.releases] == [
        (GenerationStatus.FAILED, ApprovalState.TIMED_OUT)
    ]


async def test_approving_a_generation_that_needs_no_approval_is_refused(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeGeneration(plan=fake_plan(poll_initial_s=600.0))
    async with generation_workers(env.client, fake):
        handle = await start(env.client, fake)

        async def generating() -> bool:
            progress = await handle.query(GenerationWorkflow.progress)
            return progress.status == GenerationStatus.GENERATING

        await assert_eventually(generating, timeout=20)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(GenerationWorkflow.approve, ApprovalInput(approve=True))
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert isinstance(failure.value.cause, CancelledError)
    # Canceled while polling: the provider job is canceled and the quota released.
    assert [c.attempt for c in fake.canceled] == [1]
    assert [(r.status, r.error_code) for r in fake.releases] == [
        (GenerationStatus.CANCELED, "canceled")
    ]
