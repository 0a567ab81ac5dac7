"""The ingest pipeline end to end: real workers, Postgres, ffmpeg, Whisper and the embedder."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select
from temporalio.client import WorkflowFailureError

from reelflow.core.runs import retry_run, start_ingest
from reelflow.core.storage import LocalStorage
from reelflow.dev.samples import SpeechVideo, make_silent_video
from reelflow.ingest.speech_plan import coverage_of
from reelflow.search.vectors import search_chunks
from schemas.ingest import IngestResult, VideoStatus
from schemas.queues import POOLS, TaskQueues
from schemas.tables import Chunk, LedgerEntry, TranscriptSegment, Video
from tests.e2e.conftest import Pipeline
from workers.pools import WorkerDependencies, build_workers
from workflows.ingest import IngestWorkflow


@asynccontextmanager
async def running_workers(pipeline: Pipeline) -> AsyncIterator[WorkerDependencies]:
    deps = WorkerDependencies.build(pipeline.settings)
    workers = build_workers(pipeline.client, deps, POOLS)
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        yield deps
    finally:
        await asyncio.gather(*(worker.shutdown() for worker in workers))
        await asyncio.gather(*tasks, return_exceptions=True)
        await deps.close()


async def add_video(pipeline: Pipeline, source: Path, *, title: str = "bread") -> str:
    video_id = uuid.uuid4()
    key = f"tenants/{pipeline.tenant_id}/videos/{video_id}/source{source.suffix}"
    storage = LocalStorage(Path(pipeline.settings.resolved_storage_url.removeprefix("file://")))
    storage.put_file(key, source)
    async with pipeline.sessions.begin() as session:
        session.add(
            Video(
                id=video_id,
                tenant_id=uuid.UUID(pipeline.tenant_id),
                title=title,
                origin="upload",
                source_key=key,
                size_bytes=source.stat().st_size,
                status=VideoStatus.PENDING.value,
                stage="queued",
                progress=0.0,
                cost_usd=Decimal(0),
            )
        )
    return str(video_id)


async def ingest(pipeline: Pipeline, video_id: str) -> IngestResult:
    queues = TaskQueues.for_prefix(pipeline.settings.task_queue_prefix)
    workflow_id = await start_ingest(
        pipeline.client,
        tenant_id=pipeline.tenant_id,
        video_id=video_id,
        task_queue=queues.workflows,
    )
    return await pipeline.client.get_workflow_handle_for(IngestWorkflow.run, workflow_id).result()


async def counts(pipeline: Pipeline, video_id: str) -> tuple[int, int, int]:
    vid = uuid.UUID(video_id)
    async with pipeline.sessions() as session:
        chunks = await session.scalar(select(func.count()).where(Chunk.video_id == vid))
        segments = await session.scalar(
            select(func.count()).where(TranscriptSegment.video_id == vid)
        )
        ledger = await session.scalar(select(func.count()).where(LedgerEntry.video_id == vid))
    return int(chunks or 0), int(segments or 0), int(ledger or 0)


async def test_a_speech_video_becomes_searchable_at_the_right_moment(
    pipeline: Pipeline, speech_video: SpeechVideo
) -> None:
    video_id = await add_video(pipeline, speech_video.path)
    async with running_workers(pipeline) as deps:
        result = await ingest(pipeline, video_id)

        assert result.status == VideoStatus.COMPLETED
        assert result.chunk_count >= 1
        async with pipeline.sessions() as session:
            video = await session.get(Video, uuid.UUID(video_id))
            assert video is not None
            assert video.status == "completed" and video.progress == 1.0
            assert video.chunk_count == result.chunk_count
            assert video.thumbnail_key and video.audio_key
            assert video.duration_s == pytest.approx(speech_video.duration_s, abs=0.5)
            transcript = " ".join(
                (
                    await session.scalars(
                        select(TranscriptSegment.text)
                        .where(TranscriptSegment.video_id == video.id)
                        .order_by(TranscriptSegment.window_index, TranscriptSegment.seq)
                    )
                ).all()
            ).lower()
            assert "dough" in transcript and "oven" in transcript

            query = deps.embedder.embed(["how hot should the oven be?"]).vectors[0]
            hits = await search_chunks(
                session,
                tenant_id=uuid.UUID(pipeline.tenant_id),
                query_vector=query.tolist(),
                k=3,
                video_ids=(uuid.UUID(video_id),),
                embedding_model=deps.embedder.model_name,
            )
    oven = next(line for line in speech_video.spoken if "oven" in line.text)
    assert hits, "the indexed video must be searchable"
    best = hits[0]
    assert best.start_s <= oven.start_s + 1.0 and best.end_s >= oven.end_s - 1.0


async def test_ingesting_the_same_video_again_changes_nothing(
    pipeline: Pipeline, speech_video: SpeechVideo
) -> None:
    video_id = await add_video(pipeline, speech_video.path)
    async with running_workers(pipeline):
        first = await ingest(pipeline, video_id)
        before = await counts(pipeline, video_id)
        second = await ingest(pipeline, video_id)
        after = await counts(pipeline, video_id)
    assert first.chunk_count == second.chunk_count
    assert before == after, "no duplicate chunks, segments or ledger rows"
    assert second.cost_usd == first.cost_usd


async def test_a_video_without_audio_completes_with_zero_chunks(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    silent = make_silent_video(tmp_path / "silent.mp4", 3.0)
    video_id = await add_video(pipeline, silent.path)
    async with running_workers(pipeline):
        result = await ingest(pipeline, video_id)
    assert result.chunk_count == 0
    assert result.note and "no audio track" in result.note
    async with pipeline.sessions() as session:
        video = await session.get(Video, uuid.UUID(video_id))
        assert video is not None and video.status == "completed" and video.chunk_count == 0
        assert video.note is not None and "no audio track" in video.note


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        ("empty.mp4", b"", "empty_file"),
        ("random.mp4", bytes(range(256)) * 64, "not_a_video"),
        ("notes.txt", b"this is a text file, not a video\n" * 20, "not_a_video"),
    ],
)
async def test_bad_files_fail_with_a_reason_and_nothing_half_written(
    pipeline: Pipeline, tmp_path: Path, name: str, content: bytes, code: str
) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    video_id = await add_video(pipeline, source)
    async with running_workers(pipeline):
        with pytest.raises(WorkflowFailureError):
            await ingest(pipeline, video_id)
    async with pipeline.sessions() as session:
        video = await session.get(Video, uuid.UUID(video_id))
        assert video is not None
        assert video.status == "failed"
        assert video.error_code == code
        assert video.error_message
    assert await counts(pipeline, video_id) == (0, 0, 0)


async def test_a_truncated_mp4_fails_and_retry_resumes_after_the_fix(
    pipeline: Pipeline, speech_video: SpeechVideo, tmp_path: Path
) -> None:
    data = speech_video.path.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    video_id = await add_video(pipeline, truncated)
    async with running_workers(pipeline):
        with pytest.raises(WorkflowFailureError):
            await ingest(pipeline, video_id)
        async with pipeline.sessions() as session:
            video = await session.get(Video, uuid.UUID(video_id))
            assert video is not None and video.status == "failed"
            assert video.error_code in ("truncated_file", "not_a_video")
            source_key = video.source_key
        # An operator replaces the broken upload, then retries the failed run.
        storage = LocalStorage(Path(pipeline.settings.resolved_storage_url.removeprefix("file://")))
        storage.put_file(source_key, speech_video.path)
        await retry_run(
            pipeline.client, workflow_id=f"ingest-{video_id}", tenant_id=pipeline.tenant_id
        )
        result = await pipeline.client.get_workflow_handle_for(
            IngestWorkflow.run, f"ingest-{video_id}"
        ).result()
    assert result.status == VideoStatus.COMPLETED and result.chunk_count >= 1


async def test_the_same_file_ingested_five_times_gives_the_same_segments(
    pipeline: Pipeline, speech_video: SpeechVideo
) -> None:
    transcripts: list[list[tuple[float, float, str]]] = []
    async with running_workers(pipeline):
        for _ in range(5):
            video_id = await add_video(pipeline, speech_video.path)
            assert (await ingest(pipeline, video_id)).status == VideoStatus.COMPLETED
            async with pipeline.sessions() as session:
                rows = (
                    await session.execute(
                        select(TranscriptSegment.start_s, TranscriptSegment.end_s,
                               TranscriptSegment.text)
                        .where(TranscriptSegment.video_id == uuid.UUID(video_id))
                        .order_by(TranscriptSegment.window_index, TranscriptSegment.seq)
                    )
                ).all()  # fmt: skip
                video = await session.get(Video, uuid.UUID(video_id))
            transcripts.append([(a, b, text) for a, b, text in rows])
            assert video is not None
            found = coverage_of(video.transcription_plan)
            assert found is not None and found.share == 1.0 and found.gaps == []

    assert transcripts[0], "the speech is transcribed"
    assert all(transcript == transcripts[0] for transcript in transcripts[1:])
    spoken = " ".join(text for _, _, text in transcripts[0]).lower()
    assert "dough" in spoken and "oven" in spoken
