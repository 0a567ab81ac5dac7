"""Stand-in activities for workflow tests, registered under the real activities' names.

They record what the workflow asked for, so tests can assert on orchestration alone
(the real activities have their own tests against Postgres, ffmpeg and the models).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from reelflow.core.provider_errors import ProviderTransientError
from schemas.ingest import (
    ChunkTranscriptInput,
    ChunkTranscriptOutput,
    DownloadSourceInput,
    DownloadSourceOutput,
    EmbedChunksInput,
    EmbedChunksOutput,
    ExtractMediaInput,
    ExtractMediaOutput,
    IngestPlan,
    IngestPlanInput,
    ProbeVideoInput,
    ProbeVideoOutput,
    TranscribeWindowInput,
    TranscribeWindowOutput,
    VideoStateInput,
    VideoStateOutput,
)
from schemas.queues import TaskQueues
from tests.workflows.admission import admit_every_run


@dataclass
class FakePipeline:
    """Configurable behaviour plus a record of every call."""

    plan: IngestPlan
    duration_s: float = 300.0
    has_audio: bool = True
    probe_error: ApplicationError | None = None
    chunk_count: int = 12
    transcribe_delay_s: float = 0.0
    transcribe_failures_left: int = 0
    speech_windows: list[tuple[float, float]] | None = None
    """What extraction reports as windows cut at silences (None: an older extractor)."""
    audio_duration_s: float | None = None
    gaps_per_window: int = 0
    """Length of the decoded audio when it differs from the probed duration."""
    calls: list[str] = field(default_factory=list)
    states: list[VideoStateInput] = field(default_factory=list)
    transcribed: list[TranscribeWindowInput] = field(default_factory=list)
    embedded: list[EmbedChunksInput] = field(default_factory=list)
    queues: TaskQueues = field(default_factory=lambda: TaskQueues.for_prefix(uuid.uuid4().hex))

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="load_ingest_plan")
        async def load_ingest_plan(input: IngestPlanInput) -> IngestPlan:
            self.calls.append("load_ingest_plan")
            return self.plan

        @activity.defn(name="set_video_state")
        async def set_video_state(input: VideoStateInput) -> VideoStateOutput:
            self.states.append(input)
            return VideoStateOutput(updated=True)

        @activity.defn(name="download_source")
        async def download_source(input: DownloadSourceInput) -> DownloadSourceOutput:
            self.calls.append("download_source")
            return DownloadSourceOutput(source_key="k/source.mp4", size_bytes=10)

        @activity.defn(name="probe_video")
        async def probe_video(input: ProbeVideoInput) -> ProbeVideoOutput:
            self.calls.append("probe_video")
            if self.probe_error is not None:
                raise self.probe_error
            return ProbeVideoOutput(
                duration_s=self.duration_s,
                has_audio=self.has_audio,
                width=640,
                height=360,
                container="mp4",
                video_codec="h264",
                audio_codec="aac" if self.has_audio else None,
                size_bytes=1000,
            )

        @activity.defn(name="extract_media")
        async def extract_media(input: ExtractMediaInput) -> ExtractMediaOutput:
            self.calls.append("extract_media")
            audio_s = self.audio_duration_s or input.duration_s
            return ExtractMediaOutput(
                audio_key="k/audio.wav" if input.has_audio else None,
                thumbnail_key="k/thumbnail.jpg",
                audio_duration_s=audio_s if input.has_audio else 0.0,
                duration_s=max(audio_s, input.duration_s) if input.has_audio else None,
                windows=self.speech_windows if input.has_audio else None,
            )

        @activity.defn(name="transcribe_window")
        async def transcribe_window(input: TranscribeWindowInput) -> TranscribeWindowOutput:
            self.calls.append(f"transcribe_window[{input.window_index}]")
            if self.transcribe_failures_left > 0:
                self.transcribe_failures_left -= 1
                raise ProviderTransientError("provider hiccup", provider="openai", status_code=503)
            if self.transcribe_delay_s:
                await asyncio.sleep(self.transcribe_delay_s)
            self.transcribed.append(input)
            return TranscribeWindowOutput(
                window_index=input.window_index,
                segment_count=3,
                word_count=30,
                gap_count=self.gaps_per_window,
                audio_seconds=input.end_s - input.start_s,
                cost_usd=0.006 * (input.end_s - input.start_s) / 60,
            )

        @activity.defn(name="chunk_transcript")
        async def chunk_transcript(input: ChunkTranscriptInput) -> ChunkTranscriptOutput:
            self.calls.append("chunk_transcript")
            return ChunkTranscriptOutput(chunk_count=self.chunk_count, word_count=100)

        @activity.defn(name="embed_chunks")
        async def embed_chunks(input: EmbedChunksInput) -> EmbedChunksOutput:
            self.calls.append(f"embed_chunks[{input.start_index}:{input.end_index}]")
            self.embedded.append(input)
            return EmbedChunksOutput(
                embedded=input.end_index - input.start_index,
                input_tokens=100,
                cost_usd=0.000002,
                model="fake/embedder",
            )

        return [
            load_ingest_plan,
            set_video_state,
            download_source,
            probe_video,
            extract_media,
            transcribe_window,
            chunk_transcript,
            embed_chunks,
            *admit_every_run(),
        ]
