"""Media activities: probe and validate an upload, extract its audio and a thumbnail."""

from __future__ import annotations

import shutil
import uuid
from concurrent.futures import Executor
from pathlib import Path, PurePosixPath

from sqlalchemy import update
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._support import materialize, run_blocking
from reelflow.core.db import SessionFactory
from reelflow.core.settings import Settings
from reelflow.core.storage import Storage
from reelflow.media import ffmpeg as media
from schemas.ingest import ExtractMediaInput, ExtractMediaOutput, ProbeVideoInput, ProbeVideoOutput
from schemas.tables import Video


def media_rejected(exc: media.MediaRejected) -> ApplicationError:
    """A permanent, readable failure: the same file would be rejected again."""
    return ApplicationError(exc.message, exc.code, type=exc.code, non_retryable=True)


class MediaActivities:
    """ffprobe/ffmpeg work on the CPU-bound media pool."""

    def __init__(
        self,
        *,
        storage: Storage,
        sessions: SessionFactory,
        settings: Settings,
        scratch_dir: Path,
        executor: Executor,
    ) -> None:
        self._storage = storage
        self._sessions = sessions
        self._limits = media.MediaLimits.from_settings(settings)
        self._scratch = scratch_dir
        self._executor = executor

    def _video_scratch(self, video_id: str) -> Path:
        path = self._scratch / str(uuid.UUID(video_id))
        path.mkdir(parents=True, exist_ok=True)
        return path

    @activity.defn
    async def probe_video(self, input: ProbeVideoInput) -> ProbeVideoOutput:
        """Check the upload against the allow-lists and limits and record what it holds."""
        scratch = self._video_scratch(input.video_id)

        def probe() -> media.ProbeReport:
            source = materialize(self._storage, input.source_key, scratch)
            return media.probe_video(source, self._limits)

        try:
            report = await run_blocking(self._executor, probe, heartbeat_details="probe")
        except media.MediaRejected as exc:
            raise media_rejected(exc) from None
        async with self._sessions.begin() as session:
            await session.execute(
                update(Video)
                .where(Video.id == uuid.UUID(input.video_id))
                .values(
                    duration_s=report.duration_s,
                    has_audio=report.has_audio,
                    width=report.width,
                    height=report.height,
                    container=report.container,
                    video_codec=report.video_codec,
                    audio_codec=report.audio_codec,
                    size_bytes=report.size_bytes,
                )
            )
        return ProbeVideoOutput(
            duration_s=report.duration_s,
            has_audio=report.has_audio,
            width=report.width,
            height=report.height,
            container=report.container,
            video_codec=report.video_codec,
            audio_codec=report.audio_codec,
            size_bytes=report.size_bytes,
        )

    @activity.defn
    async def extract_media(self, input: ExtractMediaInput) -> ExtractMediaOutput:
        """Extract 16 kHz mono audio (when there is any) and a thumbnail into storage."""
        scratch = self._video_scratch(input.video_id)
        base = PurePosixPath(input.source_key).parent
        audio_key = str(base / "audio.wav") if input.has_audio else None
        thumbnail_key = str(base / "thumbnail.jpg")

        def extract() -> float:
            source = materialize(self._storage, input.source_key, scratch)
            audio_seconds = 0.0
            if audio_key is not None:
                wav = scratch / "audio.wav"
                audio_seconds = media.extract_audio(source, wav)
                self._storage.put_file(audio_key, wav, content_type="audio/wav")
                # Keep the local copy where `materialize` looks, so transcription on this
                # host skips a download.
                cached = scratch / audio_key.replace("/", "__")
                shutil.move(wav, cached)
            thumbnail = scratch / "thumbnail.jpg"
            media.extract_thumbnail(source, thumbnail, at_s=min(1.0, input.duration_s / 3))
            self._storage.put_file(thumbnail_key, thumbnail, content_type="image/jpeg")
            return audio_seconds

        try:
            audio_seconds = await run_blocking(self._executor, extract, heartbeat_details="extract")
        except media.MediaRejected as exc:
            raise media_rejected(exc) from None
        async with self._sessions.begin() as session:
            await session.execute(
                update(Video)
                .where(Video.id == uuid.UUID(input.video_id))
                .values(audio_key=audio_key, thumbnail_key=thumbnail_key)
            )
        return ExtractMediaOutput(
            audio_key=audio_key, thumbnail_key=thumbnail_key, audio_duration_s=audio_seconds
        )
