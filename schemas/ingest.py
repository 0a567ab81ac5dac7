"""Contracts of the ingest pipeline: upload → probe → extract → transcribe → chunk → embed."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class VideoStatus(StrEnum):
    """Lifecycle of a video asset (seed 004)."""

    UPLOADING = "uploading"
    PENDING = "pending"
    TRANSCRIBING = "transcribing"
    CHUNKING = "chunking"
    EMBEDDING = "embedding"
    COMPLETED = "completed"
    FAILED = "failed"


class IngestStage(StrEnum):
    """Finer-grained step shown to operators (search attribute `Stage`)."""

    QUEUED = "queued"
    DOWNLOADING = "downloading"
    PROBING = "probing"
    EXTRACTING = "extracting"
    TRANSCRIBING = "transcribing"
    CHUNKING = "chunking"
    EMBEDDING = "embedding"
    COMPLETED = "completed"
    FAILED = "failed"


STAGE_STATUS: dict[IngestStage, VideoStatus] = {
    IngestStage.QUEUED: VideoStatus.PENDING,
    IngestStage.DOWNLOADING: VideoStatus.PENDING,
    IngestStage.PROBING: VideoStatus.PENDING,
    IngestStage.EXTRACTING: VideoStatus.PENDING,
    IngestStage.TRANSCRIBING: VideoStatus.TRANSCRIBING,
    IngestStage.CHUNKING: VideoStatus.CHUNKING,
    IngestStage.EMBEDDING: VideoStatus.EMBEDDING,
    IngestStage.COMPLETED: VideoStatus.COMPLETED,
    IngestStage.FAILED: VideoStatus.FAILED,
}


def ingest_workflow_id(video_id: str) -> str:
    """Business id of a video's ingest run, so a repeated start is a no-op."""
    return f"ingest-{video_id}"


class IngestInput(BaseModel):
    """Start (or resume) ingesting one video asset."""

    tenant_id: str
    video_id: str


class IngestResult(BaseModel):
    """What a finished ingest produced."""

    video_id: str
    status: VideoStatus
    chunk_count: int
    duration_s: float
    cost_usd: float
    note: str | None = None
    """Why the result is unusual, e.g. no audio track, so zero chunks."""


class IngestProgress(BaseModel):
    """Answer of the workflow's `progress` query."""

    video_id: str
    status: VideoStatus
    stage: IngestStage
    progress: float = Field(ge=0.0, le=1.0)
    segments_total: int = 0
    segments_done: int = 0
    chunk_count: int = 0
    chunks_embedded: int = 0
    cost_usd: float = 0.0
    error: str | None = None


# --- activity contracts -------------------------------------------------------------------


class IngestPlanInput(BaseModel):
    tenant_id: str
    video_id: str


class IngestPlan(BaseModel):
    """The video as stored, plus what earlier runs already finished (for resume)."""

    source_key: str
    source_url: str | None = None
    """For imports: where to fetch the video from while `source_ready` is false."""
    source_ready: bool = True
    transcription_provider: str
    embedding_provider: str
    segment_s: float
    embed_batch_size: int
    duration_s: float | None = None
    """Set once probing succeeded."""
    has_audio: bool | None = None
    audio_key: str | None = None
    thumbnail_key: str | None = None
    windows_done: list[int] = Field(default_factory=list)
    windows: list[tuple[float, float]] | None = None
    """Transcription windows cut at silences, stored once the audio was extracted; `None`
    for videos extracted before plans were stored (they keep `plan_windows`)."""
    chunk_count: int | None = None
    """Set once chunking succeeded."""
    chunks_embedded: int = 0
    cost_usd_so_far: float = 0.0


class VideoStateInput(BaseModel):
    """Write a video's status, stage and progress (the API reads these)."""

    tenant_id: str
    video_id: str
    status: VideoStatus
    stage: IngestStage
    progress: float
    error_code: str | None = None
    error_message: str | None = None
    chunk_count: int | None = None
    """Written only with `completed`: chunking records its own count."""
    note: str | None = None
    """Written only with `completed`: why the result is unusual (e.g. no audio)."""
    cost_usd: float | None = None


class VideoStateOutput(BaseModel):
    updated: bool


class DownloadSourceInput(BaseModel):
    tenant_id: str
    video_id: str
    url: str


class DownloadSourceOutput(BaseModel):
    source_key: str
    size_bytes: int


class ProbeVideoInput(BaseModel):
    tenant_id: str
    video_id: str
    source_key: str


class ProbeVideoOutput(BaseModel):
    duration_s: float
    has_audio: bool
    width: int
    height: int
    container: str
    video_codec: str
    audio_codec: str | None
    size_bytes: int


class ExtractMediaInput(BaseModel):
    tenant_id: str
    video_id: str
    source_key: str
    duration_s: float
    has_audio: bool


class ExtractMediaOutput(BaseModel):
    audio_key: str | None
    thumbnail_key: str
    audio_duration_s: float
    duration_s: float | None = None
    """The length to trust: the decoded audio's when the container claimed less."""
    windows: list[tuple[float, float]] | None = None
    """Transcription windows cut at the silences of the extracted audio (also stored on
    the video): a few dozen pairs of floats even for a long video, never the audio."""


class TranscribeWindowInput(BaseModel):
    """Transcribe one time window of the extracted 16 kHz mono audio."""

    tenant_id: str
    video_id: str
    audio_key: str
    window_index: int
    start_s: float
    end_s: float
    run_id: str
    """Workflow id, recorded on the ledger row."""
    ledger_key: str
    """Idempotency key derived in the workflow; one ledger row per key, retries included."""


class TranscribeWindowOutput(BaseModel):
    window_index: int
    segment_count: int
    word_count: int
    gap_count: int = 0
    """Voiced stretches that still have no text after a second decode (stored as gaps)."""
    audio_seconds: float
    cost_usd: float


class ChunkTranscriptInput(BaseModel):
    tenant_id: str
    video_id: str


class ChunkTranscriptOutput(BaseModel):
    chunk_count: int
    word_count: int


class EmbedChunksInput(BaseModel):
    """Embed chunks `[start_index, end_index)` of a video and upsert their vectors."""

    tenant_id: str
    video_id: str
    start_index: int
    end_index: int
    run_id: str
    ledger_key: str


class EmbedChunksOutput(BaseModel):
    embedded: int
    input_tokens: int
    cost_usd: float
    model: str


def plan_windows(duration_s: float, window_s: float) -> list[tuple[float, float]]:
    """Split `[0, duration_s]` into contiguous transcription windows of about `window_s`.

    A short tail (under a fifth of a window) joins the previous window rather than
    becoming a tiny window of its own. Pure and deterministic: workflow code calls it.
    """
    if duration_s <= 0:
        return []
    if window_s <= 0:
        raise ValueError("window_s must be positive")
    bounds: list[tuple[float, float]] = []
    start = 0.0
    while start < duration_s:
        end = min(start + window_s, duration_s)
        bounds.append((round(start, 3), round(end, 3)))
        start = end
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < window_s / 5:
        tail = bounds.pop()
        bounds[-1] = (bounds[-1][0], tail[1])
    return bounds
