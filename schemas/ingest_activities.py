"""The ingest pipeline's activities as its workflow calls them (see `schemas/contracts.py`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from schemas.contracts import (
    DATABASE_DEADLINE,
    DATABASE_RETRY,
    DATABASE_TIMEOUT,
    MEDIA_RETRY,
    PROVIDER_RETRY,
    ActivityContract,
    Pool,
    WorkflowContract,
)
from schemas.ingest import (
    ChunkTranscriptInput,
    ChunkTranscriptOutput,
    DownloadSourceInput,
    DownloadSourceOutput,
    EmbedChunksInput,
    EmbedChunksOutput,
    ExtractMediaInput,
    ExtractMediaOutput,
    IngestInput,
    IngestPlan,
    IngestPlanInput,
    IngestResult,
    ProbeVideoInput,
    ProbeVideoOutput,
    TranscribeWindowInput,
    TranscribeWindowOutput,
    VideoStateInput,
    VideoStateOutput,
)

INGEST_WORKFLOW = WorkflowContract(
    name="IngestWorkflow",
    input=IngestInput,
    output=IngestResult,
    id_prefix="ingest-",
    pipeline="ingest",
)

LOAD_INGEST_PLAN = ActivityContract(
    name="load_ingest_plan",
    input=IngestPlanInput,
    output=IngestPlan,
    pool=Pool.PROVIDERS,
    start_to_close=DATABASE_TIMEOUT,
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)
"""The video as stored and what earlier runs finished, so a run resumes instead of redoing."""

SET_VIDEO_STATE = ActivityContract(
    name="set_video_state",
    input=VideoStateInput,
    output=VideoStateOutput,
    pool=Pool.PROVIDERS,
    start_to_close=DATABASE_TIMEOUT,
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)

DOWNLOAD_SOURCE = ActivityContract(
    name="download_source",
    input=DownloadSourceInput,
    output=DownloadSourceOutput,
    pool=Pool.PROVIDERS,
    start_to_close=timedelta(minutes=30),
    heartbeat=timedelta(seconds=30),
    retry=PROVIDER_RETRY,
)

PROBE_VIDEO = ActivityContract(
    name="probe_video",
    input=ProbeVideoInput,
    output=ProbeVideoOutput,
    pool=Pool.MEDIA,
    start_to_close=timedelta(minutes=2),
    heartbeat=timedelta(seconds=30),
    retry=MEDIA_RETRY,
)

EXTRACT_MEDIA = ActivityContract(
    name="extract_media",
    input=ExtractMediaInput,
    output=ExtractMediaOutput,
    pool=Pool.MEDIA,
    start_to_close=timedelta(minutes=30),
    heartbeat=timedelta(seconds=30),
    retry=MEDIA_RETRY,
)

TRANSCRIBE_WINDOW = ActivityContract(
    name="transcribe_window",
    input=TranscribeWindowInput,
    output=TranscribeWindowOutput,
    pool=Pool.MEDIA,
    start_to_close=timedelta(minutes=20),
    heartbeat=timedelta(seconds=20),
    retry=PROVIDER_RETRY,
)
"""On the media pool with the local model; the workflow sends it to providers for an API."""

CHUNK_TRANSCRIPT = ActivityContract(
    name="chunk_transcript",
    input=ChunkTranscriptInput,
    output=ChunkTranscriptOutput,
    pool=Pool.PROVIDERS,
    start_to_close=timedelta(minutes=5),
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)

EMBED_CHUNKS = ActivityContract(
    name="embed_chunks",
    input=EmbedChunksInput,
    output=EmbedChunksOutput,
    pool=Pool.MEDIA,
    start_to_close=timedelta(minutes=10),
    heartbeat=timedelta(seconds=30),
    retry=PROVIDER_RETRY,
)
"""On the media pool with the local model; the workflow sends it to providers for an API."""

INGEST_ACTIVITIES: tuple[ActivityContract[Any, Any], ...] = (
    LOAD_INGEST_PLAN,
    SET_VIDEO_STATE,
    DOWNLOAD_SOURCE,
    PROBE_VIDEO,
    EXTRACT_MEDIA,
    TRANSCRIBE_WINDOW,
    CHUNK_TRANSCRIPT,
    EMBED_CHUNKS,
)
