"""Record the checked-in generation histories that the replay tests guard.

Run after an intentional workflow change that is made safe with `workflow.patched`, to
add histories of the new code next to the old ones (never delete the old ones while runs
of that code may still be open):

    .venv/bin/python -m tests.workflows.generation.record_histories --tag <change>

Without `--tag` it writes `<scenario>.json` and refuses to replace an existing file.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from schemas.generation import (
    ApprovalInput,
    GenerationInput,
    GenerationResult,
    GenerationStatus,
    generation_workflow_id,
)
from tests.support import start_time_skipping_environment
from tests.support.histories import history_path, recorder_tag
from tests.workflows.generation.fakes import FakeGeneration, fake_plan
from tests.workflows.generation.test_orchestration import generation_workers
from workflows.generation import GenerationWorkflow

HISTORIES = Path(__file__).parent / "histories"

Handle = WorkflowHandle[GenerationWorkflow, GenerationResult]
Driver = Callable[[Handle], Awaitable[None]]


async def _until(handle: Handle, status: GenerationStatus) -> None:
    for _ in range(400):
        if (await handle.query(GenerationWorkflow.progress)).status == status:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{handle.id} never reached {status}")


async def _approve(handle: Handle) -> None:
    await _until(handle, GenerationStatus.AWAITING_APPROVAL)
    await handle.execute_update(GenerationWorkflow.approve, ApprovalInput(approve=True))


async def _reject(handle: Handle) -> None:
    await _until(handle, GenerationStatus.AWAITING_APPROVAL)
    await handle.execute_update(
        GenerationWorkflow.approve, ApprovalInput(approve=False, note="over budget")
    )


async def _cancel(handle: Handle) -> None:
    await _until(handle, GenerationStatus.GENERATING)
    await handle.cancel()


def _approval(**plan: object) -> FakeGeneration:
    return FakeGeneration(
        plan=fake_plan(estimate=1.2, approval_required=True, poll_initial_s=1.0, **plan),  # type: ignore[arg-type]
        latency_s=0.5,
    )


SCENARIOS: dict[str, tuple[Callable[[], FakeGeneration], Driver | None]] = {
    "generation_completed": (
        lambda: FakeGeneration(plan=fake_plan(poll_initial_s=1.0), latency_s=0.5),
        None,
    ),
    "generation_fallback": (
        lambda: FakeGeneration(
            plan=fake_plan(
                candidates=(("sora", "sora-2"), ("veo", "veo-3.0-generate-001")),
                poll_initial_s=1.0,
            ),
            latency_s=0.5,
            failed_jobs={1},
            invalid_attempts={2},
        ),
        None,
    ),
    "generation_continued": (
        lambda: FakeGeneration(plan=fake_plan(poll_initial_s=5.0, poll_max_s=30.0), latency_s=1200),
        None,
    ),
    "generation_approved": (_approval, _approve),
    "generation_rejected": (_approval, _reject),
    "generation_approval_timed_out": (lambda: _approval(approval_timeout_s=3600.0), None),
    "generation_quota_refused": (
        lambda: FakeGeneration(
            prepare_error=ApplicationError(
                "no quota left", type="quota_exceeded", non_retryable=True
            )
        ),
        None,
    ),
    "generation_canceled": (
        lambda: FakeGeneration(plan=fake_plan(poll_initial_s=600.0)),
        _cancel,
    ),
}


async def _record(
    client: Client, name: str, fake: FakeGeneration, drive: Driver | None, tag: str | None
) -> None:
    generation_id = str(uuid.uuid4())
    async with generation_workers(client, fake):
        handle = await client.start_workflow(
            GenerationWorkflow.run,
            GenerationInput(tenant_id=str(uuid.uuid4()), generation_id=generation_id),
            id=generation_workflow_id(generation_id),
            task_queue=fake.queues.workflows,
        )
        if drive is not None:
            await drive(handle)
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()
        # Every run of the workflow (continue-as-new makes several): each replays alone.
        run_id: str | None = handle.result_run_id
        index = 0
        while run_id is not None:
            run = client.get_workflow_handle(handle.id, run_id=run_id)
            history = await run.fetch_history()
            suffix = f"_run{index}" if index or name == "generation_continued" else ""
            history_path(HISTORIES, f"{name}{suffix}", tag).write_text(history.to_json())
            run_id = None
            for event in history.events:
                if event.HasField("workflow_execution_continued_as_new_event_attributes"):
                    attributes = event.workflow_execution_continued_as_new_event_attributes
                    run_id = attributes.new_execution_run_id
            index += 1


async def record(tag: str | None) -> None:
    env = await start_time_skipping_environment()
    try:
        for name, (make, drive) in SCENARIOS.items():
            await _record(env.client, name, make(), drive, tag)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record(recorder_tag(__doc__)))
