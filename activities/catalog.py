"""Database activities of the ingest pipeline: its plan (what is done) and its state."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import func, select, update
from temporalio import activity

from reelflow.core.db import SessionFactory
from reelflow.core.errors import DomainError
from reelflow.core.settings import Settings
from reelflow.ingest.speech_plan import SpeechPlan
from schemas.failures import FailureCode
from schemas.ingest import (
    IngestPlan,
    IngestPlanInput,
    VideoStateInput,
    VideoStateOutput,
    VideoStatus,
)
from schemas.ingest_activities import LOAD_INGEST_PLAN, SET_VIDEO_STATE
from schemas.tables import Chunk, LedgerEntry, TranscriptWindow, Video


class CatalogActivities:
    """Reads and writes the video catalog for the workflows."""

    def __init__(self, sessions: SessionFactory, settings: Settings, embedding_model: str) -> None:
        self._sessions = sessions
        self._settings = settings
        self._embedding_model = embedding_model

    @activity.defn(name=LOAD_INGEST_PLAN.name)
    async def load_ingest_plan(self, input: IngestPlanInput) -> IngestPlan:
        """The video as stored and what earlier runs finished, so a run can resume."""
        video_id = uuid.UUID(input.video_id)
        async with self._sessions() as session:
            video = await session.scalar(
                select(Video).where(
                    Video.id == video_id, Video.tenant_id == uuid.UUID(input.tenant_id)
                )
            )
            if video is None:
                raise DomainError(
                    FailureCode.VIDEO_NOT_FOUND, f"video {input.video_id} does not exist"
                )
            windows = (
                await session.scalars(
                    select(TranscriptWindow.window_index).where(
                        TranscriptWindow.video_id == video_id
                    )
                )
            ).all()
            embedded = await session.scalar(
                select(func.count())
                .select_from(Chunk)
                .where(
                    Chunk.video_id == video_id,
                    Chunk.embedding_model == self._embedding_model,
                    Chunk.embedding.is_not(None),
                )
            )
            spent = await session.scalar(
                select(func.coalesce(func.sum(LedgerEntry.cost_usd), 0)).where(
                    LedgerEntry.video_id == video_id
                )
            )
        settings = self._settings
        stored = (
            SpeechPlan.from_json(video.transcription_plan) if video.transcription_plan else None
        )
        return IngestPlan(
            source_key=video.source_key,
            source_url=video.source_url,
            # Imported and scraped videos are fetched by the run itself, from `source_url`.
            source_ready=video.size_bytes is not None or video.origin not in ("import", "scraped"),
            transcription_provider=settings.transcription_provider,
            embedding_provider=settings.embedding_provider,
            segment_s=settings.transcribe_segment_s,
            embed_batch_size=settings.embed_batch_size,
            duration_s=video.duration_s,
            has_audio=video.has_audio,
            audio_key=video.audio_key,
            thumbnail_key=video.thumbnail_key,
            windows_done=sorted(windows),
            windows=stored.windows if stored else None,
            chunk_count=video.chunk_count,
            chunks_embedded=int(embedded or 0),
            cost_usd_so_far=float(spent or Decimal(0)),
        )

    @activity.defn(name=SET_VIDEO_STATE.name)
    async def set_video_state(self, input: VideoStateInput) -> VideoStateOutput:
        """Record status, stage and progress where the API reads them."""
        values: dict[str, object] = {
            "status": input.status.value,
            "stage": input.stage.value,
            "progress": input.progress,
            "error_code": input.error_code,
            "error_message": input.error_message,
            "updated_at": func.now(),
        }
        if input.cost_usd is not None:
            values["cost_usd"] = Decimal(str(input.cost_usd))
        if input.status == VideoStatus.COMPLETED:
            values["completed_at"] = func.now()
            values["note"] = input.note
            if input.chunk_count is not None:
                values["chunk_count"] = input.chunk_count
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(Video)
                .where(
                    Video.id == uuid.UUID(input.video_id),
                    Video.tenant_id == uuid.UUID(input.tenant_id),
                )
                .values(**values)
            )
        return VideoStateOutput(updated=bool(result.rowcount))  # type: ignore[attr-defined]
