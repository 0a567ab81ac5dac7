"""A stand-in ingest workflow and workers for generations that index their video.

The generation starts the real ingest workflow's type (`INGEST_WORKFLOW`) by name; this
stand-in registers under that name on the same queue, so the tests and the history recorder
see exactly the child start the real pipeline gets, without transcription models.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio import workflow
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from schemas.ingest import IngestInput, IngestResult, VideoStatus
from schemas.ingest_activities import INGEST_WORKFLOW
from tests.workflows.generation.fakes import FakeGeneration
from workers.pools import activity_worker
from workflows.generation import GenerationWorkflow


@workflow.defn(name=INGEST_WORKFLOW.name, sandboxed=False)
class StandInIngest:
    """Completes at once, or fails like an unreadable file when the tenant id says so, or
    waits for `finish` (a run that is still going when someone else asks for it)."""

    def __init__(self) -> None:
        self._finished = False

    @workflow.signal
    def finish(self) -> None:
        self._finished = True

    @workflow.run
    async def run(self, input: IngestInput) -> IngestResult:
        if input.tenant_id.startswith("fail-"):
            raise ApplicationError("the file is unreadable", type="unreadable", non_retryable=True)
        if input.tenant_id.startswith("wait-"):
            await workflow.wait_condition(lambda: self._finished)
        return IngestResult(
            video_id=input.video_id,
            status=VideoStatus.COMPLETED,
            chunk_count=1,
            duration_s=1.0,
            cost_usd=0.0,
        )


@asynccontextmanager
async def indexing_workers(client: Client, fake: FakeGeneration) -> AsyncIterator[None]:
    """The generation workflow and the stand-in ingest on one workflow queue, as the real
    workflow pool serves both."""
    activities = fake.activities()
    async with (
        Worker(
            client,
            task_queue=fake.queues.workflows,
            workflows=[GenerationWorkflow, StandInIngest],
        ),
        activity_worker(client, fake.queues.media, activities),
        activity_worker(client, fake.queues.providers, activities),
    ):
        yield
