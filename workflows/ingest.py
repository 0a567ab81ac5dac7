"""The ingest pipeline: probe → extract → transcribe (parallel windows) → chunk → embed.

Deterministic orchestration only. Every side effect is an activity; media, transcripts and
vectors never travel through workflow payloads, only ids and storage keys. A run resumes
from what earlier runs of the same video finished (the plan says what is done), which is
how `POST /v1/runs/{id}/retry` restarts from the failed step.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ApplicationError,
)

from workflows._steps import StepFailed, step

with workflow.unsafe.imports_passed_through():
    from activities.catalog import CatalogActivities
    from activities.imports import ImportActivities
    from activities.indexing import IndexingActivities
    from activities.media import MediaActivities
    from activities.transcription import TranscriptionActivities
    from schemas import search_attributes as sa
    from schemas.ingest import (
        STAGE_STATUS,
        ChunkTranscriptInput,
        DownloadSourceInput,
        EmbedChunksInput,
        ExtractMediaInput,
        IngestInput,
        IngestPlan,
        IngestPlanInput,
        IngestProgress,
        IngestResult,
        IngestStage,
        ProbeVideoInput,
        TranscribeWindowInput,
        VideoStateInput,
        VideoStatus,
        plan_windows,
    )
    from schemas.queues import TaskQueues

# Database steps retry for a long time: a Postgres restart must delay a run, not fail it.
DATABASE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
DATABASE_TIMEOUT = timedelta(seconds=30)
DATABASE_DEADLINE = timedelta(minutes=30)

MEDIA_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=4,
    non_retryable_error_types=["MediaRejected", "ObjectNotFound"],
)
PROBE_TIMEOUT = timedelta(minutes=2)
EXTRACT_TIMEOUT = timedelta(minutes=30)

PROVIDER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=6,
    non_retryable_error_types=[
        "ProviderPermanentError",
        "MediaRejected",
        "ObjectNotFound",
        "url_not_allowed",
        "import_failed",
    ],
)
DOWNLOAD_TIMEOUT = timedelta(minutes=30)
DOWNLOAD_HEARTBEAT = timedelta(seconds=30)
TRANSCRIBE_TIMEOUT = timedelta(minutes=20)
TRANSCRIBE_HEARTBEAT = timedelta(seconds=20)
CHUNK_TIMEOUT = timedelta(minutes=5)
EMBED_TIMEOUT = timedelta(minutes=10)
EMBED_HEARTBEAT = timedelta(seconds=30)

# Progress reported to users: each stage owns a slice of [0, 1].
_TRANSCRIBE_SPAN = (0.10, 0.75)
_EMBED_SPAN = (0.80, 0.98)


@workflow.defn
class IngestWorkflow:
    """Ingest one video asset until it is searchable, or failed with a readable reason."""

    def __init__(self) -> None:
        self._progress: IngestProgress | None = None
        self._input: IngestInput | None = None
        self._queues = TaskQueues.of_workflow_queue(workflow.info().task_queue)

    @workflow.query
    def progress(self) -> IngestProgress:
        """Status, stage and progress of this run, as the API and the CLI show them."""
        if self._progress is None:
            raise ApplicationError("the run has not started yet")
        return self._progress

    @workflow.run
    async def run(self, input: IngestInput) -> IngestResult:
        """Run (or resume) the pipeline for `input.video_id`."""
        self._input = input
        self._progress = IngestProgress(
            video_id=input.video_id,
            status=VideoStatus.PENDING,
            stage=IngestStage.QUEUED,
            progress=0.0,
        )
        plan = await workflow.execute_activity_method(
            CatalogActivities.load_ingest_plan,
            IngestPlanInput(tenant_id=input.tenant_id, video_id=input.video_id),
            task_queue=self._queues.providers,
            start_to_close_timeout=DATABASE_TIMEOUT,
            schedule_to_close_timeout=DATABASE_DEADLINE,
            retry_policy=DATABASE_RETRY,
        )
        self._progress.cost_usd = plan.cost_usd_so_far
        try:
            return await self._run(input, plan)
        except StepFailed as failed:
            await self._fail(failed.code, failed.message)
            raise ApplicationError(failed.message, type=failed.code, non_retryable=True) from None
        except asyncio.CancelledError:
            await self._fail("canceled", "the run was canceled")
            raise

    async def _run(self, input: IngestInput, plan: IngestPlan) -> IngestResult:
        source_key = plan.source_key
        if not plan.source_ready and plan.source_url:
            await self._enter(IngestStage.DOWNLOADING, 0.01)
            downloaded = await step(
                workflow.execute_activity_method(
                    ImportActivities.download_source,
                    DownloadSourceInput(
                        tenant_id=input.tenant_id, video_id=input.video_id, url=plan.source_url
                    ),
                    task_queue=self._queues.providers,
                    start_to_close_timeout=DOWNLOAD_TIMEOUT,
                    heartbeat_timeout=DOWNLOAD_HEARTBEAT,
                    retry_policy=PROVIDER_RETRY,
                )
            )
            source_key = downloaded.source_key
        duration_s = plan.duration_s
        has_audio = plan.has_audio
        if duration_s is None or has_audio is None:
            await self._enter(IngestStage.PROBING, 0.02)
            probe = await step(
                workflow.execute_activity_method(
                    MediaActivities.probe_video,
                    ProbeVideoInput(
                        tenant_id=input.tenant_id,
                        video_id=input.video_id,
                        source_key=source_key,
                    ),
                    task_queue=self._queues.media,
                    start_to_close_timeout=PROBE_TIMEOUT,
                    retry_policy=MEDIA_RETRY,
                )
            )
            duration_s, has_audio = probe.duration_s, probe.has_audio

        audio_key = plan.audio_key
        if plan.thumbnail_key is None or (has_audio and audio_key is None):
            await self._enter(IngestStage.EXTRACTING, 0.05)
            extracted = await step(
                workflow.execute_activity_method(
                    MediaActivities.extract_media,
                    ExtractMediaInput(
                        tenant_id=input.tenant_id,
                        video_id=input.video_id,
                        source_key=source_key,
                        duration_s=duration_s,
                        has_audio=has_audio,
                    ),
                    task_queue=self._queues.media,
                    start_to_close_timeout=EXTRACT_TIMEOUT,
                    retry_policy=MEDIA_RETRY,
                )
            )
            audio_key = extracted.audio_key

        if not has_audio or audio_key is None:
            return await self._complete(
                duration_s,
                chunk_count=0,
                note="the video has no audio track, so there is no speech to transcribe or search",
            )

        await self._transcribe(input, plan, audio_key, duration_s)

        chunk_count = plan.chunk_count
        if chunk_count is None:
            await self._enter(IngestStage.CHUNKING, 0.78)
            chunked = await step(
                workflow.execute_activity_method(
                    IndexingActivities.chunk_transcript,
                    ChunkTranscriptInput(tenant_id=input.tenant_id, video_id=input.video_id),
                    task_queue=self._queues.providers,
                    start_to_close_timeout=CHUNK_TIMEOUT,
                    schedule_to_close_timeout=DATABASE_DEADLINE,
                    retry_policy=DATABASE_RETRY,
                )
            )
            chunk_count = chunked.chunk_count
        assert self._progress is not None
        self._progress.chunk_count = chunk_count
        if chunk_count == 0:
            return await self._complete(
                duration_s, chunk_count=0, note="no speech was recognised in the audio"
            )

        await self._embed(input, plan, chunk_count)
        return await self._complete(duration_s, chunk_count=chunk_count, note=None)

    async def _transcribe(
        self, input: IngestInput, plan: IngestPlan, audio_key: str, duration_s: float
    ) -> None:
        assert self._progress is not None
        windows = plan_windows(duration_s, plan.segment_s)
        done = set(plan.windows_done)
        self._progress.segments_total = len(windows)
        self._progress.segments_done = len(done & set(range(len(windows))))
        await self._enter(IngestStage.TRANSCRIBING, self._transcribe_progress())
        # Local Whisper is CPU work for the media pool; the remote API is I/O.
        queue = (
            self._queues.media if plan.transcription_provider == "local" else self._queues.providers
        )
        workflow_id = workflow.info().workflow_id

        async def transcribe(index: int, start_s: float, end_s: float) -> None:
            output = await workflow.execute_activity_method(
                TranscriptionActivities.transcribe_window,
                TranscribeWindowInput(
                    tenant_id=input.tenant_id,
                    video_id=input.video_id,
                    audio_key=audio_key,
                    window_index=index,
                    start_s=start_s,
                    end_s=end_s,
                    run_id=workflow_id,
                    ledger_key=(
                        f"ingest-{input.video_id}/transcribe/{plan.transcription_provider}/{index}"
                    ),
                ),
                task_queue=queue,
                start_to_close_timeout=TRANSCRIBE_TIMEOUT,
                heartbeat_timeout=TRANSCRIBE_HEARTBEAT,
                retry_policy=PROVIDER_RETRY,
            )
            assert self._progress is not None
            self._progress.segments_done += 1
            self._add_cost(output.cost_usd)
            self._progress.progress = self._transcribe_progress()

        await step(
            asyncio.gather(
                *(
                    transcribe(index, start_s, end_s)
                    for index, (start_s, end_s) in enumerate(windows)
                    if index not in done
                )
            )
        )

    async def _embed(self, input: IngestInput, plan: IngestPlan, chunk_count: int) -> None:
        assert self._progress is not None
        self._progress.chunks_embedded = min(plan.chunks_embedded, chunk_count)
        await self._enter(IngestStage.EMBEDDING, self._embed_progress())
        queue = self._queues.media if plan.embedding_provider == "local" else self._queues.providers
        workflow_id = workflow.info().workflow_id
        batch = max(1, plan.embed_batch_size)

        async def embed(start: int, end: int) -> None:
            output = await workflow.execute_activity_method(
                IndexingActivities.embed_chunks,
                EmbedChunksInput(
                    tenant_id=input.tenant_id,
                    video_id=input.video_id,
                    start_index=start,
                    end_index=end,
                    run_id=workflow_id,
                    ledger_key=f"ingest-{input.video_id}/embed/{start}-{end}",
                ),
                task_queue=queue,
                start_to_close_timeout=EMBED_TIMEOUT,
                heartbeat_timeout=EMBED_HEARTBEAT,
                retry_policy=PROVIDER_RETRY,
            )
            assert self._progress is not None
            self._progress.chunks_embedded = min(
                chunk_count, self._progress.chunks_embedded + output.embedded
            )
            self._add_cost(output.cost_usd)
            self._progress.progress = self._embed_progress()

        await step(
            asyncio.gather(
                *(
                    embed(start, min(start + batch, chunk_count))
                    for start in range(0, chunk_count, batch)
                )
            )
        )

    # --- state --------------------------------------------------------------------------

    def _transcribe_progress(self) -> float:
        assert self._progress is not None
        low, high = _TRANSCRIBE_SPAN
        total = max(1, self._progress.segments_total)
        return low + (high - low) * min(1.0, self._progress.segments_done / total)

    def _embed_progress(self) -> float:
        assert self._progress is not None
        low, high = _EMBED_SPAN
        total = max(1, self._progress.chunk_count)
        return low + (high - low) * min(1.0, self._progress.chunks_embedded / total)

    def _add_cost(self, cost_usd: float) -> None:
        assert self._progress is not None
        self._progress.cost_usd = round(self._progress.cost_usd + cost_usd, 8)

    async def _enter(self, stage: IngestStage, progress: float, *, note: str | None = None) -> None:
        assert self._progress is not None
        self._progress.stage = stage
        self._progress.status = STAGE_STATUS[stage]
        self._progress.progress = progress
        workflow.upsert_search_attributes(
            [sa.STAGE.value_set(stage.value), sa.COST_USD.value_set(self._progress.cost_usd)]
        )
        await self._save_state(note=note)

    async def _save_state(
        self,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        note: str | None = None,
    ) -> None:
        assert self._progress is not None and self._input is not None
        await workflow.execute_activity_method(
            CatalogActivities.set_video_state,
            VideoStateInput(
                tenant_id=self._input.tenant_id,
                video_id=self._input.video_id,
                status=self._progress.status,
                stage=self._progress.stage,
                progress=self._progress.progress,
                error_code=error_code,
                error_message=error_message,
                chunk_count=self._progress.chunk_count,
                cost_usd=self._progress.cost_usd,
                note=note,
            ),
            task_queue=self._queues.providers,
            start_to_close_timeout=DATABASE_TIMEOUT,
            schedule_to_close_timeout=DATABASE_DEADLINE,
            retry_policy=DATABASE_RETRY,
        )

    async def _complete(
        self, duration_s: float, *, chunk_count: int, note: str | None
    ) -> IngestResult:
        assert self._progress is not None and self._input is not None
        self._progress.chunk_count = chunk_count
        await self._enter(IngestStage.COMPLETED, 1.0, note=note)
        return IngestResult(
            video_id=self._input.video_id,
            status=VideoStatus.COMPLETED,
            chunk_count=chunk_count,
            duration_s=duration_s,
            cost_usd=self._progress.cost_usd,
            note=note,
        )

    async def _fail(self, code: str, message: str) -> None:
        assert self._progress is not None
        self._progress.stage = IngestStage.FAILED
        self._progress.status = VideoStatus.FAILED
        self._progress.error = message
        workflow.upsert_search_attributes(
            [
                sa.STAGE.value_set(IngestStage.FAILED.value),
                sa.COST_USD.value_set(self._progress.cost_usd),
            ]
        )
        await self._save_state(error_code=code, error_message=message)
