"""ImproveWorkflow orchestration over stand-in activities, with the real generation child."""

from __future__ import annotations

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from reelflow.improve.improvements import improve_search_attributes
from schemas import search_attributes as sa
from schemas.generation import (
    ApprovalInput,
    ApprovalState,
    GenerationStatus,
    generation_workflow_id,
)
from schemas.improvement import (
    ImproveInput,
    ImprovementStatus,
    ImproveResult,
    improvement_generation_id,
    improvement_workflow_id,
)
from tests.support import assert_eventually
from tests.workflows.generation.fakes import FakeGeneration, fake_plan
from tests.workflows.improve.fakes import FakeImprove, new_ids, no_metrics
from workflows.generation import GenerationWorkflow
from workflows.improve import ImproveWorkflow

Handle = WorkflowHandle[ImproveWorkflow, ImproveResult]


async def start(client: Client, fake: FakeImprove, *, approve_over_budget: bool = False) -> Handle:
    tenant_id, improvement_id, video_id = new_ids()
    return await client.start_workflow(
        ImproveWorkflow.run,
        ImproveInput(
            tenant_id=tenant_id,
            improvement_id=improvement_id,
            video_id=video_id,
            approve_over_budget=approve_over_budget,
        ),
        id=improvement_workflow_id(improvement_id),
        task_queue=fake.queues.workflows,
        search_attributes=improve_search_attributes(tenant_id, video_id),
    )


def child_of(client: Client, handle: Handle) -> WorkflowHandle[GenerationWorkflow, object]:
    improvement_id = handle.id.removeprefix("improve-")
    generation_id = str(improvement_generation_id(improvement_id))
    return client.get_workflow_handle_for(
        GenerationWorkflow.run, generation_workflow_id(generation_id)
    )


async def wait_for_approval_gate(child: WorkflowHandle[GenerationWorkflow, object]) -> None:
    async def waiting() -> bool:
        try:
            progress = await child.query(GenerationWorkflow.progress)
        except RPCError:  # the improvement has not started its child yet
            return False
        return progress.status == GenerationStatus.AWAITING_APPROVAL

    await assert_eventually(waiting, timeout=20)


def over_budget(**changes: object) -> FakeImprove:
    """A generation whose estimate needs approval, done quickly once approved."""
    return FakeImprove(
        generation=FakeGeneration(
            plan=fake_plan(
                estimate=1.2,
                approval_required=True,
                approval_timeout_s=24 * 3600,
                poll_initial_s=0.2,
            ),
            latency_s=0.1,
        ),
        **changes,  # type: ignore[arg-type]
    )


async def test_an_improvement_generates_a_child_and_links_its_video(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    fake = FakeImprove(original_iteration=1)
    async with fake.workers(client):
        handle = await start(client, fake)
        result = await handle.result()
        child = child_of(client, handle)
        child_attributes = (await child.describe()).typed_search_attributes
        attributes = (await handle.describe()).typed_search_attributes

    assert result.status == ImprovementStatus.COMPLETED
    assert result.iteration == 2, "the original's iteration + 1"
    assert result.new_video_id is not None and result.generation_id is not None
    assert fake.calls == [
        "load_improvement_insights",
        "write_improved_prompt",
        "admit_improvement_generation",
        "link_improved_version",
    ]
    [linked] = fake.linked
    assert linked.new_video_id == result.new_video_id
    assert linked.generation_id == result.generation_id
    # The child is a generation like any other: findable by tenant, with its own pipeline.
    assert child_attributes.get(sa.TENANT_ID) == attributes.get(sa.TENANT_ID)
    assert child_attributes.get(sa.PIPELINE) == "generation"
    assert attributes.get(sa.PIPELINE) == "improve"
    assert attributes.get(sa.STAGE) == "completed"
    assert result.cost_usd == pytest.approx(0.4), "the generation's cost is the improvement's"
    assert fake.generation.releases == [], "a completed generation commits its quota"


async def test_a_failing_child_fails_the_improvement_with_its_reason_and_releases_the_quota(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    # Every attempt's job fails: the generation gives up after its tries.
    fake = FakeImprove(
        generation=FakeGeneration(
            plan=fake_plan(poll_initial_s=0.2), latency_s=0.1, failed_jobs={1, 2, 3}
        )
    )
    async with fake.workers(client):
        handle = await start(client, fake)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        child = await child_of(client, handle).describe()

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "generation_failed"
    assert "fake provider failure" in cause.message, "the child's own reason"
    assert child.status == WorkflowExecutionStatus.FAILED
    # The generation workflow released its quota reservation.
    assert [r.status for r in fake.generation.releases] == [GenerationStatus.FAILED]
    [finished] = fake.finished
    assert finished.status == ImprovementStatus.FAILED
    assert finished.error_code == "generation_failed"
    assert "fake provider failure" in finished.error_message
    assert "link_improved_version" not in fake.calls


async def test_canceling_the_improvement_cancels_the_generation_and_releases_the_quota(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    # A job that never finishes in real time: the child is polling when the cancel comes.
    fake = FakeImprove(
        generation=FakeGeneration(plan=fake_plan(poll_initial_s=0.2), latency_s=3600.0)
    )
    async with fake.workers(client):
        handle = await start(client, fake)
        await assert_eventually(lambda: bool(fake.generation.polls), timeout=20)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        child = await child_of(client, handle).describe()
        improvement = await handle.describe()

    assert isinstance(failure.value.cause, CancelledError)
    assert improvement.status == WorkflowExecutionStatus.CANCELED
    assert child.status == WorkflowExecutionStatus.CANCELED
    assert [r.status for r in fake.generation.releases] == [GenerationStatus.CANCELED]
    assert fake.generation.canceled, "the provider job was canceled too"
    [finished] = fake.finished
    assert (finished.status, finished.error_code) == (ImprovementStatus.CANCELED, "canceled")


async def test_over_budget_the_generation_waits_until_the_child_is_approved(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    fake = over_budget()
    async with fake.workers(client):
        handle = await start(client, fake)
        child = child_of(client, handle)

        await wait_for_approval_gate(child)
        assert not fake.generation.submits, "nothing is generated before approval"
        progress = await handle.query(ImproveWorkflow.progress)
        assert progress.status == ImprovementStatus.GENERATING
        assert progress.generation_workflow_id == child.id
        # What `POST /v1/improvements/{id}/approve` does: the generation's own update.
        decided = await child.execute_update(
            GenerationWorkflow.approve, ApprovalInput(approve=True)
        )
        result = await handle.result()

    assert decided.approval == ApprovalState.APPROVED
    assert result.status == ImprovementStatus.COMPLETED
    assert "pre_approve_generation" not in fake.calls
    assert len(fake.generation.submits) == 1


async def test_approve_over_budget_approves_the_generation_in_advance(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    fake = over_budget()
    async with fake.workers(client):
        handle = await start(client, fake, approve_over_budget=True)
        result = await handle.result()
        progress = await child_of(client, handle).query(GenerationWorkflow.progress)

    assert result.status == ImprovementStatus.COMPLETED
    assert fake.pre_approved == [True]
    assert progress.approval == ApprovalState.APPROVED


async def test_approve_over_budget_changes_nothing_when_no_approval_is_needed(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    fake = FakeImprove()
    async with fake.workers(client):
        handle = await start(client, fake, approve_over_budget=True)
        result = await handle.result()
        progress = await child_of(client, handle).query(GenerationWorkflow.progress)

    assert result.status == ImprovementStatus.COMPLETED
    assert progress.approval == ApprovalState.NOT_REQUIRED


async def test_a_rejected_generation_ends_the_improvement_with_the_rejection(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    fake = over_budget()
    async with fake.workers(client):
        handle = await start(client, fake)
        child = child_of(client, handle)

        await wait_for_approval_gate(child)
        await child.execute_update(
            GenerationWorkflow.approve, ApprovalInput(approve=False, note="too expensive")
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "approval_rejected"
    assert "too expensive" in cause.message
    assert [r.status for r in fake.generation.releases] == [GenerationStatus.CANCELED]
    [finished] = fake.finished
    assert (finished.status, finished.error_code) == (
        ImprovementStatus.CANCELED,
        "approval_rejected",
    )


async def test_a_video_without_metrics_fails_before_anything_is_generated(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    fake = FakeImprove(insights_error=no_metrics())
    async with fake.workers(client):
        handle = await start(client, fake)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "no_insights"
    assert "no performance metrics" in cause.message
    assert fake.calls == ["load_improvement_insights", "finish_improvement"]
    assert fake.generation.calls == []


async def test_canceling_the_generation_itself_ends_the_improvement_canceled(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    fake = FakeImprove(
        generation=FakeGeneration(plan=fake_plan(poll_initial_s=0.2), latency_s=3600.0)
    )
    async with fake.workers(client):
        handle = await start(client, fake)
        await assert_eventually(lambda: bool(fake.generation.polls), timeout=20)
        # What `POST /v1/generations/{id}/cancel` does to the child.
        await child_of(client, handle).cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "canceled"
    assert [r.status for r in fake.generation.releases] == [GenerationStatus.CANCELED]
    [finished] = fake.finished
    assert (finished.status, finished.error_code) == (ImprovementStatus.CANCELED, "canceled")
