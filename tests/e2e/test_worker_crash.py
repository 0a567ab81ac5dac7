"""A worker killed mid-transcription: the run still completes, and nothing is counted twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select
from temporalio.testing import WorkflowEnvironment

from reelflow.core.runs import start_ingest
from reelflow.dev.samples import SpeechVideo, make_speech_video
from schemas.ingest import VideoStatus
from schemas.queues import TaskQueues
from schemas.tables import Chunk, LedgerEntry, TranscriptWindow
from tests.e2e.conftest import SENTENCES, Pipeline
from tests.e2e.test_ingest_pipeline import add_video, counts, ingest, running_workers
from workflows.ingest import IngestWorkflow


@pytest.fixture(scope="module")
def long_speech_video(tmp_path_factory: pytest.TempPathFactory) -> SpeechVideo:
    # About a minute: five transcription windows of 12 s, done one at a time below.
    return make_speech_video(
        tmp_path_factory.mktemp("long") / "long.mp4", [*SENTENCES, *SENTENCES, *SENTENCES]
    )


def start_worker_process(
    pipeline: Pipeline, env: WorkflowEnvironment, log: Path
) -> subprocess.Popen[bytes]:
    settings = pipeline.settings
    variables = {
        **os.environ,
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "DATABASE_URL": settings.database_url,
        "REELFLOW_HOME": str(settings.reelflow_home),
        "STORAGE_URL": settings.resolved_storage_url,
        "TASK_QUEUE_PREFIX": settings.task_queue_prefix,
        "TRANSCRIBE_SEGMENT_S": str(settings.transcribe_segment_s),
        # One window at a time, so the kill lands between finished and unfinished ones.
        "MEDIA_CONCURRENCY": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "reelflow.cli", "worker"],
        env=variables,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def windows_done(pipeline: Pipeline, video_id: str) -> int:
    async with pipeline.sessions() as session:
        count = await session.scalar(
            select(func.count()).where(TranscriptWindow.video_id == uuid.UUID(video_id))
        )
    return int(count or 0)


async def test_killed_worker_resumes_with_the_same_chunks_and_ledger(
    pipeline: Pipeline,
    local_env: WorkflowEnvironment,
    long_speech_video: SpeechVideo,
    tmp_path: Path,
) -> None:
    # Reference: the same file ingested without interruption.
    reference_id = await add_video(pipeline, long_speech_video.path)
    async with running_workers(pipeline):
        reference = await ingest(pipeline, reference_id)
    assert reference.status == VideoStatus.COMPLETED

    video_id = await add_video(pipeline, long_speech_video.path)
    log = tmp_path / "worker.log"
    first = start_worker_process(pipeline, local_env, log)
    try:
        queues = TaskQueues.for_prefix(pipeline.settings.task_queue_prefix)
        workflow_id = await start_ingest(
            pipeline.client,
            tenant_id=pipeline.tenant_id,
            video_id=video_id,
            task_queue=queues.workflows,
        )
        for _ in range(1200):
            if await windows_done(pipeline, video_id) >= 1:
                break
            await asyncio.sleep(0.1)
        done_at_kill = await windows_done(pipeline, video_id)
        assert 1 <= done_at_kill < 5, log.read_text()[-2000:]
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()

    second = start_worker_process(pipeline, local_env, log)
    try:
        handle = pipeline.client.get_workflow_handle_for(IngestWorkflow.run, workflow_id)
        result = await asyncio.wait_for(handle.result(), timeout=240)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)

    assert result.status == VideoStatus.COMPLETED
    assert result.chunk_count == reference.chunk_count
    chunks, segments, ledger_rows = await counts(pipeline, video_id)
    ref_chunks, ref_segments, ref_ledger_rows = await counts(pipeline, reference_id)
    assert (chunks, segments, ledger_rows) == (ref_chunks, ref_segments, ref_ledger_rows)
    async with pipeline.sessions() as session:
        steps = (
            await session.scalars(
                select(LedgerEntry.step).where(LedgerEntry.video_id == uuid.UUID(video_id))
            )
        ).all()
        texts = (
            await session.scalars(
                select(Chunk.text)
                .where(Chunk.video_id == uuid.UUID(video_id))
                .order_by(Chunk.chunk_index)
            )
        ).all()
    assert len(steps) == len(set(steps)), "one ledger row per step"
    assert all(texts)
