"""Request and response bodies of the chat API (`POST /v1/chat`, `GET /v1/chat/sessions…`).

Money is a float in dollars (the ledger keeps exact decimals). The streamed form of
`POST /v1/chat` sends :class:`ChatContentEvent` data as `content` events, then either a
:class:`ChatResponse` as `done` or a :class:`ChatErrorEvent` as `error`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from schemas.api import StoredText

MAX_MESSAGE_CHARS_LIMIT = 100_000
"""Hard ceiling on a message; `CHAT_MAX_MESSAGE_CHARS` (default 4000) is the usual limit."""
MAX_VIDEO_IDS = 100


class ChatRequest(BaseModel):
    """A question about the tenant's videos.

    Without `session_id` a new session is started, titled from this message. `collection_id`
    and `video_ids` narrow the search; both may be given (a video must then match both).
    """

    message: StoredText = Field(min_length=1, max_length=MAX_MESSAGE_CHARS_LIMIT)
    session_id: uuid.UUID | None = None
    collection_id: uuid.UUID | None = None
    video_ids: list[uuid.UUID] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_VIDEO_IDS,
        description="Only these videos (all must be the caller's); omit to search all.",
    )
    stream: bool = Field(
        default=False,
        description="true: server-sent events `content`…, then `done` or `error`.",
    )

    @field_validator("message")
    @classmethod
    def _message(cls, value: str) -> str:
        stripped = value.strip()
        if not stripped:
            raise ValueError("must not be empty")
        return stripped

    @field_validator("video_ids")
    @classmethod
    def _unique(cls, value: list[uuid.UUID] | None) -> list[uuid.UUID] | None:
        # Order kept: it is how the client listed them, and it makes the 404 deterministic.
        return None if value is None else list(dict.fromkeys(value))


class ChatReference(BaseModel):
    """A video moment the answer rests on, checked against the stored transcript."""

    video_id: uuid.UUID
    title: str
    start_s: float
    end_s: float
    timestamp: str = Field(examples=["5:42", "1:02:03"], description="Start, m:ss or h:mm:ss.")
    text: str = Field(description="The transcript passage cited.")
    score: float = Field(description="Relevance: cosine similarity plus any boosts.")


class ChatUsage(BaseModel):
    """Tokens and dollars of one answer (or of a whole session)."""

    input_tokens: int = 0
    output_tokens: int = 0
    embedding_tokens: int = 0
    cost_usd: float = 0.0


class ChatResponse(BaseModel):
    """The answer: the JSON body, and the data of the streamed `done` event."""

    session_id: uuid.UUID
    message_id: uuid.UUID
    content: str
    incomplete: bool = Field(description="True when the answer was cut short.")
    references: list[ChatReference]
    dropped_references: int = Field(
        description="References left out because the transcript did not confirm them."
    )
    usage: ChatUsage
    cached: bool = Field(
        default=False, description="The passages came from the cache of recent questions."
    )


class ChatContentEvent(BaseModel):
    """Data of a streamed `content` event: the next piece of the answer."""

    text: str


class ChatErrorEvent(BaseModel):
    """Data of a streamed `error` event; the partial answer is kept, marked incomplete."""

    code: str = Field(examples=["provider_unavailable"])
    message: str


class ChatSessionSummary(BaseModel):
    """A session with its totals."""

    session_id: uuid.UUID
    title: str
    created_at: datetime
    last_message_at: datetime
    message_count: int
    usage: ChatUsage = Field(description="Totals over every message of the session.")


class ChatSessionList(BaseModel):
    """The tenant's sessions, most recently active first."""

    sessions: list[ChatSessionSummary]


class ChatMessageOut(BaseModel):
    """One question or answer of a session."""

    message_id: uuid.UUID
    role: Literal["user", "assistant"]
    content: str
    incomplete: bool
    error_code: str | None
    references: list[ChatReference]
    dropped_references: int
    provider: str | None
    model: str | None
    usage: ChatUsage
    created_at: datetime


class ChatMessageList(BaseModel):
    """A session's messages, oldest first, with the session's totals."""

    session_id: uuid.UUID
    title: str
    usage: ChatUsage
    messages: list[ChatMessageOut]
