"""Transcription activity: one time window of a video's audio, stored with its cost."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import Executor
from decimal import Decimal
from pathlib import Path

from sqlalchemy import delete, text
from sqlalchemy.dialects.postgresql import insert
from temporalio import activity

from activities._support import materialize, run_blocking
from reelflow.core.db import SessionFactory
from reelflow.core.errors import DomainError
from reelflow.core.ledger import Usage, record_usage
from reelflow.core.pricing import priced_model
from reelflow.core.provider_errors import ProviderPermanentError
from reelflow.core.storage import Storage
from reelflow.ingest.transcription import Transcriber, Transcription
from reelflow.media import ffmpeg as media
from schemas.failures import FailureCode
from schemas.ingest import TranscribeWindowInput, TranscribeWindowOutput
from schemas.ingest_activities import TRANSCRIBE_WINDOW
from schemas.tables import TranscriptSegment, TranscriptWindow

_RECORD_GAPS = text(
    "UPDATE videos SET transcription_plan = transcription_plan || jsonb_build_object("
    "'gaps', coalesce(transcription_plan -> 'gaps', '{}'::jsonb)"
    " || jsonb_build_object(CAST(:window AS text), CAST(:gaps AS jsonb)))"
    " WHERE id = :video_id AND transcription_plan IS NOT NULL"
)
"""Voiced stretches of one window that have no text, kept in the video's stored plan."""


class TranscriptionActivities:
    """Speech to timed text, with the local model or a provider."""

    def __init__(
        self,
        *,
        storage: Storage,
        sessions: SessionFactory,
        transcriber: Transcriber,
        scratch_dir: Path,
        executor: Executor,
    ) -> None:
        self._storage = storage
        self._sessions = sessions
        self._transcriber = transcriber
        self._scratch = scratch_dir
        self._executor = executor

    @activity.defn(name=TRANSCRIBE_WINDOW.name)
    async def transcribe_window(self, input: TranscribeWindowInput) -> TranscribeWindowOutput:
        """Transcribe `[start_s, end_s)`; segments and the ledger row commit together."""
        scratch = self._scratch / str(uuid.UUID(input.video_id))
        scratch.mkdir(parents=True, exist_ok=True)

        def transcribe() -> tuple[Transcription, float]:
            wav = materialize(self._storage, input.audio_key, scratch)
            window = scratch / f"window-{input.window_index}.wav"
            media.read_wav_segment(wav, input.start_s, input.end_s, window)
            started = time.monotonic()
            try:
                result = self._transcriber.transcribe(window, offset_s=input.start_s)
            finally:
                window.unlink(missing_ok=True)
            return result, time.monotonic() - started

        try:
            transcription, compute_s = await run_blocking(
                self._executor, transcribe, heartbeat_details=f"window {input.window_index}"
            )
        except ProviderPermanentError as exc:
            raise DomainError(
                FailureCode.PROVIDER_REJECTED, f"transcription was refused by the provider: {exc}"
            ) from None

        video_id = uuid.UUID(input.video_id)
        tenant_id = uuid.UUID(input.tenant_id)
        words = sum(len(s.text.split()) for s in transcription.segments)
        async with self._sessions.begin() as session:
            # Replace rather than append: a retried attempt rewrites the same window.
            await session.execute(
                delete(TranscriptSegment).where(
                    TranscriptSegment.video_id == video_id,
                    TranscriptSegment.window_index == input.window_index,
                )
            )
            if transcription.segments:
                await session.execute(
                    insert(TranscriptSegment),
                    [
                        {
                            "tenant_id": tenant_id,
                            "video_id": video_id,
                            "window_index": input.window_index,
                            "seq": seq,
                            "start_s": segment.start_s,
                            "end_s": segment.end_s,
                            "text": segment.text.strip(),
                        }
                        for seq, segment in enumerate(transcription.segments)
                    ],
                )
            # This window's gaps replace what an earlier attempt recorded for it; other
            # windows' entries are untouched (one statement, under the row's lock).
            await session.execute(
                _RECORD_GAPS,
                {
                    "video_id": video_id,
                    "window": str(input.window_index),
                    "gaps": json.dumps(
                        [[g.start_s, g.end_s, g.reason] for g in transcription.gaps]
                    ),
                },
            )
            await session.execute(
                insert(TranscriptWindow)
                .values(
                    video_id=video_id,
                    window_index=input.window_index,
                    tenant_id=tenant_id,
                    start_s=input.start_s,
                    end_s=input.end_s,
                    model=self._transcriber.model_name,
                )
                .on_conflict_do_nothing()
            )
            cost = await record_usage(
                session,
                Usage(
                    idempotency_key=input.ledger_key,
                    tenant_id=tenant_id,
                    run_id=input.run_id,
                    step=f"transcribe[{input.window_index}]",
                    video_id=video_id,
                    provider=self._transcriber.provider,
                    operation="transcription",
                    model=priced_model(self._transcriber.model_name),
                    units=(Decimal(str(transcription.audio_seconds)) / 60).quantize(
                        Decimal("0.000001")
                    ),
                    compute_seconds=round(compute_s, 3),
                ),
            )
        return TranscribeWindowOutput(
            window_index=input.window_index,
            segment_count=len(transcription.segments),
            word_count=words,
            gap_count=len(transcription.gaps),
            audio_seconds=transcription.audio_seconds,
            cost_usd=float(cost),
        )
