"""The ingest pipeline: probe → extract → transcribe (parallel windows) → chunk → embed.

Deterministic orchestration only. Every side effect is an activity; media, transcripts and
vectors never travel through workflow payloads, only ids and storage keys. A run resumes
from what earlier runs of the same video finished (the plan says what is done), which is
how `POST /v1/runs/{id}/retry` restarts from the failed step.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import (
    ApplicationError,
)

from workflows._admission import RunSlot
from workflows._steps import StepFailed, call, step

with workflow.unsafe.imports_passed_through():
    from schemas import search_attributes as sa
    from schemas.admission_activities import RUN_SLOT_QUERY, RunSlotState
    from schemas.contracts import Pool
    from schemas.failures import FailureCode
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
    from schemas.ingest_activities import (
        CHUNK_TRANSCRIPT,
        DOWNLOAD_SOURCE,
        EMBED_CHUNKS,
        EXTRACT_MEDIA,
        INGEST_WORKFLOW,
        LOAD_INGEST_PLAN,
        PROBE_VIDEO,
        SET_VIDEO_STATE,
        TRANSCRIBE_WINDOW,
    )
    from schemas.queues import TaskQueues

# Progress reported to users: each stage owns a slice of [0, 1].
_TRANSCRIBE_SPAN = (0.10, 0.75)
_EMBED_SPAN = (0.80, 0.98)


@workflow.defn(name=INGEST_WORKFLOW.name)
class IngestWorkflow:
    """Ingest one video asset until it is searchable, or failed with a readable reason."""

    def __init__(self) -> None:
        self._progress: IngestProgress | None = None
        self._gaps = 0
        """Voiced stretches this run's windows left without text."""
        self._input: IngestInput | None = None
        self._queues = TaskQueues.of_workflow_queue(workflow.info().task_queue)
        self._slot: RunSlot | None = None

    @workflow.query
    def progress(self) -> IngestProgress:
        """Status, stage and progress of this run, as the API and the CLI show them."""
        if self._progress is None:
            raise ApplicationError("the run has not started yet")
        return self._progress

    @workflow.query(name=RUN_SLOT_QUERY)
    def run_slot(self) -> RunSlotState | None:
        """The run's place among its tenant's concurrent runs (None: it takes no slot)."""
        return self._slot.state if self._slot is not None else None

    @workflow.run
    async def run(self, input: IngestInput) -> IngestResult:
        """Run (or resume) the pipeline for `input.video_id`, once the tenant has a slot."""
        self._input = input
        self._progress = IngestProgress(
            video_id=input.video_id,
            status=VideoStatus.PENDING,
            stage=IngestStage.QUEUED,
            progress=0.0,
        )
        slot = self._slot = RunSlot(
            tenant_id=input.tenant_id,
            pipeline=INGEST_WORKFLOW.pipeline,
            queues=self._queues,
            on_queued=self._queued,
        )
        try:
            await slot.acquire()
        except StepFailed as failed:
            await self._fail(failed.code, failed.message)
            raise ApplicationError(failed.message, type=failed.code, non_retryable=True) from None
        except asyncio.CancelledError:
            await self._fail(FailureCode.CANCELED, "the run was canceled while queued")
            raise
        try:
            return await self._load_and_run(input)
        finally:
            await slot.release()

    async def _load_and_run(self, input: IngestInput) -> IngestResult:
        plan = await call(
            LOAD_INGEST_PLAN,
            IngestPlanInput(tenant_id=input.tenant_id, video_id=input.video_id),
            self._queues,
        )
        assert self._progress is not None
        self._progress.cost_usd = plan.cost_usd_so_far
        try:
            return await self._run(input, plan)
        except StepFailed as failed:
            await self._fail(failed.code, failed.message)
            raise ApplicationError(failed.message, type=failed.code, non_retryable=True) from None
        except asyncio.CancelledError:
            await self._fail(FailureCode.CANCELED, "the run was canceled")
            raise

    async def _run(self, input: IngestInput, plan: IngestPlan) -> IngestResult:
        # Windows cut at silences and the decoded audio's length; runs recorded before
        # this change keep fixed windows over the probed duration.
        speech_windows = workflow.patched("vad-windows")
        source_key = plan.source_key
        if not plan.source_ready and plan.source_url:
            await self._enter(IngestStage.DOWNLOADING, 0.01)
            downloaded = await step(
                call(
                    DOWNLOAD_SOURCE,
                    DownloadSourceInput(
                        tenant_id=input.tenant_id, video_id=input.video_id, url=plan.source_url
                    ),
                    self._queues,
                )
            )
            source_key = downloaded.source_key
        duration_s = plan.duration_s
        has_audio = plan.has_audio
        if duration_s is None or has_audio is None:
            await self._enter(IngestStage.PROBING, 0.02)
            probe = await step(
                call(
                    PROBE_VIDEO,
                    ProbeVideoInput(
                        tenant_id=input.tenant_id,
                        video_id=input.video_id,
                        source_key=source_key,
                    ),
                    self._queues,
                )
            )
            duration_s, has_audio = probe.duration_s, probe.has_audio

        audio_key = plan.audio_key
        windows = plan.windows if speech_windows else None
        if plan.thumbnail_key is None or (has_audio and audio_key is None):
            await self._enter(IngestStage.EXTRACTING, 0.05)
            extracted = await step(
                call(
                    EXTRACT_MEDIA,
                    ExtractMediaInput(
                        tenant_id=input.tenant_id,
                        video_id=input.video_id,
                        source_key=source_key,
                        duration_s=duration_s,
                        has_audio=has_audio,
                    ),
                    self._queues,
                )
            )
            audio_key = extracted.audio_key
            if speech_windows:
                windows = extracted.windows
                if extracted.duration_s is not None:
                    duration_s = extracted.duration_s

        if not has_audio or audio_key is None:
            return await self._complete(
                duration_s,
                chunk_count=0,
                note="the video has no audio track, so there is no speech to transcribe or search",
            )

        await self._transcribe(
            input, plan, audio_key, windows or plan_windows(duration_s, plan.segment_s)
        )

        chunk_count = plan.chunk_count
        if chunk_count is None:
            await self._enter(IngestStage.CHUNKING, 0.78)
            chunked = await step(
                call(
                    CHUNK_TRANSCRIPT,
                    ChunkTranscriptInput(tenant_id=input.tenant_id, video_id=input.video_id),
                    self._queues,
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
        # Say so rather than complete as if nothing were missing; `coverage` has the times.
        note = (
            f"{self._gaps} stretch(es) of speech have no text even after a second decode; "
            "see coverage for where"
            if self._gaps
            else None
        )
        return await self._complete(duration_s, chunk_count=chunk_count, note=note)

    async def _transcribe(
        self,
        input: IngestInput,
        plan: IngestPlan,
        audio_key: str,
        windows: list[tuple[float, float]],
    ) -> None:
        assert self._progress is not None
        done = set(plan.windows_done)
        self._progress.segments_total = len(windows)
        self._progress.segments_done = len(done & set(range(len(windows))))
        await self._enter(IngestStage.TRANSCRIBING, self._transcribe_progress())
        # Local Whisper is CPU work for the media pool; the remote API is I/O.
        pool = Pool.MEDIA if plan.transcription_provider == "local" else Pool.PROVIDERS
        workflow_id = workflow.info().workflow_id

        async def transcribe(index: int, start_s: float, end_s: float) -> None:
            output = await call(
                TRANSCRIBE_WINDOW,
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
                self._queues,
                pool=pool,
            )
            assert self._progress is not None
            self._progress.segments_done += 1
            self._gaps += output.gap_count
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
        pool = Pool.MEDIA if plan.embedding_provider == "local" else Pool.PROVIDERS
        workflow_id = workflow.info().workflow_id
        batch = max(1, plan.embed_batch_size)

        async def embed(start: int, end: int) -> None:
            output = await call(
                EMBED_CHUNKS,
                EmbedChunksInput(
                    tenant_id=input.tenant_id,
                    video_id=input.video_id,
                    start_index=start,
                    end_index=end,
                    run_id=workflow_id,
                    ledger_key=f"ingest-{input.video_id}/embed/{start}-{end}",
                ),
                self._queues,
                pool=pool,
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

    async def _queued(self, slot: RunSlotState) -> None:
        # The video reads queued; its place in the queue is in `GET /v1/runs` and the
        # `run_slot` query.
        await self._enter(IngestStage.QUEUED, 0.0)

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
        await call(
            SET_VIDEO_STATE,
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
            self._queues,
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

    async def _fail(self, code: FailureCode, message: str) -> None:
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
