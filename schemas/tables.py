"""Database tables (SQLAlchemy 2). Every row that belongs to a tenant carries `tenant_id`.

Migrations in `schemas/migrations/` are written by hand from these classes; the test
`tests/schemas/test_migrations.py` checks the two agree.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    Computed,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

EMBEDDING_DIMENSIONS = 384
"""Width of every stored vector; remote embedders are asked for this many dimensions."""

Money = Numeric(14, 8)


class Base(DeclarativeBase):
    """Declarative base of all tables."""


class Tenant(Base):
    """A customer account; everything else hangs off one."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    plan: Mapped[str] = mapped_column(String(40), default="free")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ApiKey(Base):
    """An API key, stored as a SHA-256 hash: the secret itself is shown once, at creation.

    A tenant has several, each with a name and scopes. Rotation makes a new key and gives
    the old one an `expires_at` (its grace period) and a `replaced_by_id`; revocation sets
    `revoked_at`, which every API process sees on the next request (nothing caches keys).
    """

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100), server_default="default")
    scopes: Mapped[list[str]] = mapped_column(JSONB, server_default='["read", "write", "admin"]')
    """Any of `read`, `write`, `admin` (see `reelflow.core.tenants.SCOPES`)."""
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """Written at most once a minute per key, so using a key costs no write per request."""
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """The end of a rotated key's grace period; None for a key that does not expire."""
    replaced_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Video(Base):
    """A video asset: uploaded, imported, generated or scraped; the pipelines read and write it."""

    __tablename__ = "videos"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    collection_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    title: Mapped[str] = mapped_column(String(300))
    origin: Mapped[str] = mapped_column(String(20))  # upload | import | generated | scraped
    source_url: Mapped[str | None] = mapped_column(Text)
    filename: Mapped[str | None] = mapped_column(String(300))
    content_type: Mapped[str | None] = mapped_column(String(120))
    declared_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    source_key: Mapped[str] = mapped_column(Text)
    audio_key: Mapped[str | None] = mapped_column(Text)
    thumbnail_key: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), index=True)
    stage: Mapped[str] = mapped_column(String(20))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error_code: Mapped[str | None] = mapped_column(String(60))
    error_message: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    """Why a completed result is unusual, e.g. no audio track, so nothing to search."""
    duration_s: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    has_audio: Mapped[bool | None] = mapped_column(Boolean)
    container: Mapped[str | None] = mapped_column(String(60))
    video_codec: Mapped[str | None] = mapped_column(String(40))
    audio_codec: Mapped[str | None] = mapped_column(String(40))
    chunk_count: Mapped[int | None] = mapped_column(Integer)
    embedding_model: Mapped[str | None] = mapped_column(String(120))
    transcription_plan: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    """Voiced regions and transcription windows of the extracted audio
    (`reelflow.ingest.speech_plan.SpeechPlan`), so every retry transcribes the same windows."""
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    workflow_id: Mapped[str | None] = mapped_column(String(200))
    upload_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    improved_from_video_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("videos.id", ondelete="SET NULL"), index=True
    )
    """The video this one is an improved version of; deleting the original keeps this one."""
    improvement_iteration: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """0 for an original, the original's iteration + 1 for each improved version."""


class TranscriptWindow(Base):
    """Marks one transcription window as done, so a resumed run skips it."""

    __tablename__ = "transcript_windows"

    video_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("videos.id", ondelete="CASCADE"), primary_key=True
    )
    window_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    model: Mapped[str] = mapped_column(String(120))
    completed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class TranscriptSegment(Base):
    """One timed line of a transcript."""

    __tablename__ = "transcript_segments"
    __table_args__ = (UniqueConstraint("video_id", "window_index", "seq"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    video_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"))
    window_index: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)


class Chunk(Base):
    """A searchable passage of a transcript with its time span and vector."""

    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint("video_id", "chunk_index"),
        Index(
            "ix_chunks_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
        Index("ix_chunks_search_vector", "search_vector", postgresql_using="gin"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    video_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"))
    collection_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    chunk_index: Mapped[int] = mapped_column(Integer)
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)
    word_count: Mapped[int] = mapped_column(Integer)
    embedding_model: Mapped[str | None] = mapped_column(String(120), index=True)
    embedding: Mapped[list[float] | None] = mapped_column(Vector(EMBEDDING_DIMENSIONS))
    # Generated by Postgres from `text`, so every writer of chunks gets full-text search
    # without knowing about it (reelflow.search.hybrid).
    search_vector: Mapped[str | None] = mapped_column(
        TSVECTOR,
        Computed("to_tsvector('english'::regconfig, text)", persisted=True),
        deferred=True,
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LedgerEntry(Base):
    """One paid (or local, $0) call. `idempotency_key` makes retries count once."""

    __tablename__ = "cost_ledger"
    __table_args__ = (Index("ix_cost_ledger_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(300), unique=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    run_id: Mapped[str | None] = mapped_column(String(200), index=True)
    step: Mapped[str] = mapped_column(String(80))
    video_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    provider: Mapped[str] = mapped_column(String(40))
    operation: Mapped[str] = mapped_column(String(60))
    model: Mapped[str] = mapped_column(String(120))
    units: Mapped[Decimal] = mapped_column(Numeric(20, 6))
    unit: Mapped[str] = mapped_column(String(30))
    unit_price_usd: Mapped[Decimal] = mapped_column(Money)
    price_version: Mapped[str] = mapped_column(String(40))
    cost_usd: Mapped[Decimal] = mapped_column(Money)
    compute_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# Tables kept in modules of their own register on Base.metadata when imported; importing
# them here means whoever reads `Base.metadata` (migrations, their test) sees every table.
from schemas import access_tables as access_tables  # noqa: E402
from schemas import billing_tables as billing_tables  # noqa: E402
from schemas import chat_tables as chat_tables  # noqa: E402
from schemas import discover_tables as discover_tables  # noqa: E402
from schemas import generation_tables as generation_tables  # noqa: E402
from schemas import improve_tables as improve_tables  # noqa: E402
from schemas import improvement_run_tables as improvement_run_tables  # noqa: E402
from schemas import improvement_tables as improvement_tables  # noqa: E402
