"""Media activities: probe and validate an upload, extract its audio and a thumbnail."""

from __future__ import annotations

import shutil
import uuid
from concurrent.futures import Executor
from pathlib import Path, PurePosixPath

from sqlalchemy import update
from temporalio import activity

from activities._support import (
    materialize,
    previous_progress,
    record_progress,
    resumable_part,
    run_blocking,
)
from reelflow.core.db import SessionFactory
from reelflow.core.settings import Settings
from reelflow.core.storage import Storage
from reelflow.media import ffmpeg as media
from schemas.ingest import ExtractMediaInput, ExtractMediaOutput, ProbeVideoInput, ProbeVideoOutput
from schemas.ingest_activities import EXTRACT_MEDIA, PROBE_VIDEO
from schemas.tables import Video


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

    @activity.defn(name=PROBE_VIDEO.name)
    async def probe_video(self, input: ProbeVideoInput) -> ProbeVideoOutput:
        """Check the upload against the allow-lists and limits and record what it holds."""
        scratch = self._video_scratch(input.video_id)

        def probe() -> media.ProbeReport:
            source = materialize(self._storage, input.source_key, scratch)
            return media.probe_video(source, self._limits)

        report = await run_blocking(self._executor, probe, heartbeat_details="probe")
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

    @activity.defn(name=EXTRACT_MEDIA.name)
    async def extract_media(self, input: ExtractMediaInput) -> ExtractMediaOutput:
        """Extract 16 kHz mono audio (when there is any) and a thumbnail into storage."""
        scratch = self._video_scratch(input.video_id)
        base = PurePosixPath(input.source_key).parent
        audio_key = str(base / "audio.wav") if input.has_audio else None
        thumbnail_key = str(base / "thumbnail.jpg")

        # A retried attempt skips what the last one stored (its heartbeat says so, and
        # storage confirms the object and its size).
        earlier = previous_progress()
        done = {
            part: found
            for part, key in (("audio", audio_key), ("thumbnail", thumbnail_key))
            if (found := resumable_part(self._storage, earlier, part, key)) is not None
            and (part != "audio" or isinstance(found.get("seconds"), int | float))
        }

        def extract() -> float:
            source = materialize(self._storage, input.source_key, scratch)
            audio_seconds = float(done["audio"]["seconds"]) if "audio" in done else 0.0
            if audio_key is not None and "audio" not in done:
                wav = scratch / "audio.wav"
                audio_seconds = media.extract_audio(source, wav)
                size = wav.stat().st_size
                self._storage.put_file(audio_key, wav, content_type="audio/wav")
                record_progress(
                    audio={"key": audio_key, "size_bytes": size, "seconds": audio_seconds}
                )
                # Keep the local copy where `materialize` looks, so transcription on this
                # host skips a download.
                cached = scratch / audio_key.replace("/", "__")
                shutil.move(wav, cached)
            if "thumbnail" not in done:
                thumbnail = scratch / "thumbnail.jpg"
                media.extract_thumbnail(source, thumbnail, at_s=min(1.0, input.duration_s / 3))
                size = thumbnail.stat().st_size
                self._storage.put_file(thumbnail_key, thumbnail, content_type="image/jpeg")
                record_progress(thumbnail={"key": thumbnail_key, "size_bytes": size})
            return audio_seconds

        audio_seconds = await run_blocking(
            self._executor, extract, heartbeat_details="extract", progress=done
        )
        async with self._sessions.begin() as session:
            await session.execute(
                update(Video)
                .where(Video.id == uuid.UUID(input.video_id))
                .values(audio_key=audio_key, thumbnail_key=thumbnail_key)
            )
        return ExtractMediaOutput(
            audio_key=audio_key, thumbnail_key=thumbnail_key, audio_duration_s=audio_seconds
        )
