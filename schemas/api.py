"""Request and response bodies of the HTTP API v1, shared by the API and the CLI.

Every error the API returns has the shape of :class:`ErrorResponse`. Money is a float in
dollars here (the ledger keeps exact decimals; JSON clients want numbers).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator

MAX_TITLE_CHARS = 300
MAX_FILENAME_CHARS = 300
MAX_QUERY_CHARS = 1000
MAX_URL_CHARS = 2048
MAX_CONTENT_TYPE_CHARS = 120
"""The `videos.content_type` column's width."""


# --- text and timestamps the database can store ---------------------------------------------


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as Postgres text, or None when it can.

    Postgres refuses the NUL character in text, and text must encode as UTF-8, which an
    unpaired surrogate escape in JSON (`"\\ud800"`) prevents; pydantic refuses those in
    some `str` fields (constrained ones) but lets them through in others (optional ones).
    """
    if "\x00" in value:
        return "must not contain the NUL character (\\u0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (it contains an unpaired surrogate)"
    return None


def check_text(value: str) -> str:
    """The validator behind :data:`StoredText`."""
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


StoredText = Annotated[str, AfterValidator(check_text)]
"""A request string that will be written to the database: with it, bad text is a 422 naming
the field, never a database error. (A model that cannot use it calls `text_problem`.)"""

_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


def media_type_problem(value: str) -> str | None:
    """Why `value` (lower case, parameters stripped) is not a media type we store and later
    send back as a `Content-Type` header, or None."""
    if len(value) > MAX_CONTENT_TYPE_CHARS:
        return f"must be at most {MAX_CONTENT_TYPE_CHARS} characters"
    if not _MEDIA_TYPE.fullmatch(value):
        return "must be a media type such as video/mp4"
    return None


EARLIEST_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIMESTAMP = datetime(9999, 1, 1, tzinfo=UTC)


def to_utc(value: datetime) -> datetime:
    """`value` in UTC (without an offset it is read as UTC), within the supported range.

    A datetime near the ends of Python's range overflows when converted or shifted (year 1
    minus a day, `9999-12-31T23:59:59-14:00` in UTC), so those are refused here, as 422.
    """
    try:
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST_TIMESTAMP <= utc <= LATEST_TIMESTAMP:
        raise ValueError(
            f"must be between {EARLIEST_TIMESTAMP:%Y-%m-%dT%H:%M:%SZ} and "
            f"{LATEST_TIMESTAMP:%Y-%m-%dT%H:%M:%SZ}"
        )
    return utc


UtcTimestamp = Annotated[datetime, AfterValidator(to_utc)]
"""A timestamp parameter: converted to UTC, and refused (422) outside the supported range."""


class ErrorBody(BaseModel):
    """What went wrong, for programs (`code`) and for people (`message`)."""

    code: str = Field(examples=["not_found"])
    message: str = Field(examples=["no video with id 3f2c…"])


class ErrorResponse(BaseModel):
    """The envelope of every 4xx/5xx answer."""

    error: ErrorBody


class Health(BaseModel):
    """Whether the API's own dependencies answer."""

    status: Literal["ok", "degraded"]
    database: Literal["ok", "error"]
    temporal: Literal["ok", "error"]


# --- videos ---------------------------------------------------------------------------------


def _strip_title(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError("must not be empty")
    return stripped


class VideoAccepted(BaseModel):
    """A video whose ingest run has been started (or was already running)."""

    video_id: uuid.UUID
    workflow_id: str
    status: str = Field(examples=["pending"])


class UploadRequest(BaseModel):
    """Ask for a signed URL to `PUT` a video's bytes to, then confirm it."""

    filename: StoredText = Field(min_length=1, max_length=MAX_FILENAME_CHARS)
    size_bytes: int = Field(gt=0, description="Exact size of the file that will be PUT.")
    content_type: StoredText = Field(max_length=MAX_CONTENT_TYPE_CHARS, examples=["video/mp4"])
    title: StoredText = Field(min_length=1, max_length=MAX_TITLE_CHARS)
    collection_id: uuid.UUID | None = None

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        return _strip_title(value)

    @field_validator("content_type")
    @classmethod
    def _video_type(cls, value: str) -> str:
        media_type = value.split(";", 1)[0].strip().lower()
        if not media_type.startswith("video/") or media_type_problem(media_type) is not None:
            raise ValueError("must be a video/* media type, e.g. video/mp4")
        return media_type


class UploadTicket(BaseModel):
    """Where to `PUT` the bytes, and until when the URL works."""

    video_id: uuid.UUID
    upload_url: str
    expires_at: datetime


class UploadReceived(BaseModel):
    """The bytes of a signed upload are stored; `confirm` starts the ingest."""

    video_id: uuid.UUID
    size_bytes: int
    status: str


class ImportRequest(BaseModel):
    """Import a video from a public http(s) URL."""

    url: StoredText = Field(min_length=1, max_length=MAX_URL_CHARS)
    title: StoredText | None = Field(default=None, max_length=MAX_TITLE_CHARS)
    collection_id: uuid.UUID | None = None

    @field_validator("title")
    @classmethod
    def _title(cls, value: str | None) -> str | None:
        return None if value is None else _strip_title(value)


class VideoError(BaseModel):
    """Why a video's ingest failed."""

    code: str
    message: str


class TranscriptGap(BaseModel):
    """Voiced audio that has no text, even after a second decode of it alone."""

    start_s: float
    end_s: float
    reason: str = Field(description="`no_text_after_retry`.")


class TranscriptCoverage(BaseModel):
    """How much of the speech made it into the transcript."""

    share: float = Field(description="Voiced seconds with text ÷ voiced seconds.")
    gaps: list[TranscriptGap]


class VideoDetail(BaseModel):
    """A video asset and how far its ingest run has come."""

    video_id: uuid.UUID
    title: str
    origin: str
    collection_id: uuid.UUID | None
    status: str
    stage: str
    progress: float
    error: VideoError | None
    note: str | None = Field(
        default=None, description="Why a completed result is unusual, e.g. no audio track."
    )
    duration_s: float | None
    chunk_count: int | None
    cost_usd: float
    workflow_id: str | None
    filename: str | None
    content_type: str | None
    size_bytes: int | None
    source_url: str | None
    width: int | None
    height: int | None
    has_audio: bool | None
    embedding_model: str | None
    coverage: TranscriptCoverage | None = Field(
        default=None,
        description="Known once every transcription window is decoded; null before, and "
        "for videos transcribed before coverage was recorded.",
    )
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class TranscriptLine(BaseModel):
    """One timed line of a transcript."""

    start_s: float
    end_s: float
    text: str


class Transcript(BaseModel):
    """A video's transcript so far (complete once the video is past `transcribing`)."""

    video_id: uuid.UUID
    status: str
    segments: list[TranscriptLine]
    text: str
    coverage: TranscriptCoverage | None = None
    """As in the video's detail."""


# --- search ---------------------------------------------------------------------------------


class SearchMode(StrEnum):
    """How `GET /v1/search` finds passages."""

    HYBRID = "hybrid"
    """Meaning and words, fused: the default."""
    VECTOR = "vector"
    """Closest in meaning (embedding similarity) only."""
    TEXT = "text"
    """Containing the query's words (full-text search) only; the query is not embedded."""


class SearchResult(BaseModel):
    """A passage that matches the query, with where it is in the video."""

    video_id: uuid.UUID
    chunk_id: uuid.UUID
    start_s: float
    end_s: float
    text: str
    score: float = Field(
        description=(
            "What results are ordered by, 0..1. `vector`: cosine similarity (1 is identical). "
            "`hybrid` and `text`: fused rank, 1 for a passage ranked first by every method."
        )
    )
    similarity: float | None = Field(
        default=None, description="Cosine similarity to the query; null in `text` mode."
    )
    text_match: bool = Field(
        default=False,
        description="The passage matched words of the query (`text` and `hybrid` modes).",
    )
    match_start_s: float = Field(
        description=(
            "Start of the transcript segments inside the passage that carry the query's "
            "words; the passage's start when none does."
        )
    )
    match_end_s: float = Field(description="End of those segments; the passage's end if none.")


class SearchResponse(BaseModel):
    """Best matches first."""

    results: list[SearchResult]


# --- runs -----------------------------------------------------------------------------------


class RunAction(BaseModel):
    """A retry or cancel request that the workflow engine accepted."""

    workflow_id: str
    run_id: str | None = None
    status: str = Field(examples=["running", "cancel_requested"])


# --- usage ----------------------------------------------------------------------------------


class UsageGroupBy(StrEnum):
    """Dimensions usage can be grouped by."""

    DAY = "day"
    PROVIDER = "provider"
    OPERATION = "operation"


class UsageGroup(BaseModel):
    """Usage of one group; only the grouped-by dimensions are set."""

    day: str | None = Field(default=None, examples=["2025-01-31"])
    provider: str | None = None
    operation: str | None = None
    units: float
    cost_usd: float
    calls: int


class UsageReport(BaseModel):
    """Ledger totals of a tenant over `[since, until)`."""

    since: datetime
    until: datetime
    group_by: list[UsageGroupBy]
    total_usd: float
    groups: list[UsageGroup]
    quota_warnings: list[str] = Field(default_factory=list)
    """Plan limits at 80 % or more in the current period (also the `Quota-Warning` header);
    `GET /v1/billing` shows usage against every limit."""
