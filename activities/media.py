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
from reelflow.ingest.speech_plan import SpeechPlan, plan_speech
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
        self._window_s = settings.transcribe_segment_s
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

        def extract() -> tuple[float, SpeechPlan | None]:
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
            plan = None
            if audio_key is not None:
                self._check_real_length(audio_seconds, input.duration_s)
                # Recomputed on a retry rather than resumed: it is deterministic for the
                # stored audio, and the stored plan is only written once it is complete.
                plan = plan_speech(materialize(self._storage, audio_key, scratch), self._window_s)
            if "thumbnail" not in done:
                thumbnail = scratch / "thumbnail.jpg"
                media.extract_thumbnail(source, thumbnail, at_s=min(1.0, input.duration_s / 3))
                size = thumbnail.stat().st_size
                self._storage.put_file(thumbnail_key, thumbnail, content_type="image/jpeg")
                record_progress(thumbnail={"key": thumbnail_key, "size_bytes": size})
            return audio_seconds, plan

        audio_seconds, plan = await run_blocking(
            self._executor, extract, heartbeat_details="extract", progress=done
        )
        duration_s = trusted_duration(input.duration_s, audio_seconds if plan else None)
        values: dict[str, object] = {"audio_key": audio_key, "thumbnail_key": thumbnail_key}
        if plan is not None:
            values["transcription_plan"] = plan.to_json()
        if duration_s != input.duration_s:
            values["duration_s"] = duration_s
        async with self._sessions.begin() as session:
            await session.execute(
                update(Video).where(Video.id == uuid.UUID(input.video_id)).values(**values)
            )
        return ExtractMediaOutput(
            audio_key=audio_key,
            thumbnail_key=thumbnail_key,
            audio_duration_s=audio_seconds,
            duration_s=duration_s,
            windows=plan.windows if plan else None,
        )

    def _check_real_length(self, audio_seconds: float, declared_s: float) -> None:
        """Apply the length limit to the audio actually decoded, not the container's claim."""
        real = trusted_duration(declared_s, audio_seconds)
        if real > self._limits.max_duration_s:
            raise media.MediaRejected(
                "too_long",
                f"The video declares {declared_s:.0f} s but holds {real:.0f} s of audio; "
                f"the limit is {self._limits.max_duration_s:.0f} s: trim or split it.",
            )


# Audio tracks routinely end a fraction of a second before or after the video; only a
# larger excess means the container's duration is wrong.
_DURATION_TOLERANCE_S = 1.0


def trusted_duration(declared_s: float, audio_s: float | None) -> float:
    """The declared duration, or the decoded audio's when the container claimed less.

    A container whose header says 5 s can hold a minute of media; every decoder plays the
    whole minute, so the pipeline plans, limits and reports on what it decoded. An audio
    track shorter than the video is normal (silent tail) and keeps the declared length.
    """
    if audio_s is not None and audio_s > declared_s + _DURATION_TOLERANCE_S:
        return round(audio_s, 3)
    return declared_s
