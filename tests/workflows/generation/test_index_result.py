"""A generation asked to index its video starts the video's ingest run, and never fails
because of it (stand-in activities and a stand-in ingest workflow).

On the dev server: its runs are a few seconds of real time, and the shared time-skipping
server is left to tests that need it (a run left waiting there holds its clock back).
"""

from __future__ import annotations

import uuid

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from schemas import search_attributes as sa
from schemas.generation import (
    GenerationInput,
    GenerationResult,
    GenerationStatus,
    generated_video_id,
    generation_workflow_id,
)
from schemas.ingest import IngestInput, ingest_workflow_id
from schemas.ingest_activities import INGEST_WORKFLOW
from tests.workflows.generation.fakes import FakeGeneration, fake_plan
from tests.workflows.generation.indexing import StandInIngest, indexing_workers
from workflows.generation import GenerationWorkflow


def fake(*, index: bool) -> FakeGeneration:
    plan = fake_plan(poll_initial_s=1.0).model_copy(update={"index": index})
    return FakeGeneration(plan=plan, latency_s=0.5)


async def generate(
    client: Client, generation: FakeGeneration, tenant_id: str, generation_id: str
) -> GenerationResult:
    handle: WorkflowHandle[GenerationWorkflow, GenerationResult] = await client.start_workflow(
        GenerationWorkflow.run,
        GenerationInput(tenant_id=tenant_id, generation_id=generation_id),
        id=generation_workflow_id(generation_id),
        task_queue=generation.queues.workflows,
    )
    return await handle.result()


def video_of(generation_id: str) -> str:
    return str(generated_video_id(generation_id))


async def test_the_stored_video_is_ingested_by_its_own_run(
    local_env: WorkflowEnvironment,
) -> None:
    client = local_env.client
    generation, tenant_id, generation_id = fake(index=True), str(uuid.uuid4()), str(uuid.uuid4())
    async with indexing_workers(client, generation):
        result = await generate(client, generation, tenant_id, generation_id)
        ingest = client.get_workflow_handle(ingest_workflow_id(video_of(generation_id)))
        outcome = await ingest.result()
    assert result.status == GenerationStatus.COMPLETED
    assert result.video_id == video_of(generation_id)
    assert outcome["chunk_count"] == 1
    description = await ingest.describe()
    attributes = description.typed_search_attributes
    # Found, listed and guarded by tenant like any ingest run.
    assert attributes.get(sa.TENANT_ID) == tenant_id
    assert attributes.get(sa.VIDEO_ID) == video_of(generation_id)
    assert attributes.get(sa.PIPELINE) == "ingest"


async def test_a_failed_index_leaves_the_generation_completed(
    local_env: WorkflowEnvironment,
) -> None:
    client = local_env.client
    generation, generation_id = fake(index=True), str(uuid.uuid4())
    async with indexing_workers(client, generation):
        result = await generate(client, generation, f"fail-{uuid.uuid4()}", generation_id)
        ingest = client.get_workflow_handle(ingest_workflow_id(video_of(generation_id)))
        with pytest.raises(WorkflowFailureError):
            await ingest.result()
    assert result.status == GenerationStatus.COMPLETED
    assert (await ingest.describe()).status == WorkflowExecutionStatus.FAILED


async def test_a_video_already_being_indexed_is_joined_not_doubled(
    local_env: WorkflowEnvironment,
) -> None:
    client = local_env.client
    generation, generation_id = fake(index=True), str(uuid.uuid4())
    tenant_id = f"wait-{uuid.uuid4()}"
    video_id = video_of(generation_id)
    async with indexing_workers(client, generation):
        running = await client.start_workflow(
            INGEST_WORKFLOW.name,
            IngestInput(tenant_id=tenant_id, video_id=video_id),
            id=ingest_workflow_id(video_id),
            task_queue=generation.queues.workflows,
        )
        result = await generate(client, generation, tenant_id, generation_id)
        assert result.status == GenerationStatus.COMPLETED
        description = await client.get_workflow_handle(ingest_workflow_id(video_id)).describe()
        assert description.run_id == running.first_execution_run_id
        await running.signal(StandInIngest.finish)
        await running.result()


async def test_without_the_option_nothing_is_indexed(
    local_env: WorkflowEnvironment,
) -> None:
    client = local_env.client
    generation, generation_id = fake(index=False), str(uuid.uuid4())
    async with indexing_workers(client, generation):
        result = await generate(client, generation, str(uuid.uuid4()), generation_id)
    assert result.status == GenerationStatus.COMPLETED
    with pytest.raises(RPCError) as missing:
        await client.get_workflow_handle(ingest_workflow_id(video_of(generation_id))).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND
