"""Postgres restarting in the middle of an ingest delays the run; it loses and doubles nothing."""

from __future__ import annotations

import asyncio

from reelflow.core.runs import start_ingest
from reelflow.dev.samples import SpeechVideo
from reelflow.dev.stack import EmbeddedPostgres
from schemas.ingest import IngestResult, VideoStatus
from schemas.queues import TaskQueues
from tests.e2e.conftest import Pipeline
from tests.e2e.test_ingest_pipeline import add_video, counts, ingest, running_workers
from tests.e2e.test_worker_crash import windows_done


async def test_a_postgres_restart_mid_ingest_loses_nothing(
    pipeline: Pipeline, postgres_server: EmbeddedPostgres, speech_video: SpeechVideo
) -> None:
    reference_id = await add_video(pipeline, speech_video.path)
    video_id = await add_video(pipeline, speech_video.path)
    async with running_workers(pipeline):
        reference = await ingest(pipeline, reference_id)
        workflow_id = await start_ingest(
            pipeline.client,
            tenant_id=pipeline.tenant_id,
            video_id=video_id,
            task_queue=TaskQueues.for_prefix(pipeline.settings.task_queue_prefix).workflows,
        )
        for _ in range(600):
            if await windows_done(pipeline, video_id) >= 1:
                break
            await asyncio.sleep(0.05)
        # Connections in the pool die with the server; activities must retry, not fail.
        await asyncio.to_thread(postgres_server.stop)
        await asyncio.sleep(3)
        await asyncio.to_thread(postgres_server.start)
        result = await asyncio.wait_for(
            pipeline.client.get_workflow_handle(workflow_id, result_type=IngestResult).result(),
            timeout=180,
        )
    assert result.status == VideoStatus.COMPLETED
    assert result.chunk_count == reference.chunk_count
    assert await counts(pipeline, video_id) == await counts(pipeline, reference_id)
