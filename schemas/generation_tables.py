"""Tables of the generation pipeline (migration `0003`): requests, attempts and quotas.

Declared on `schemas.tables.Base`, which imports this module at its end, so
`Base.metadata` (migrations, the drift test) always includes these tables.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from schemas.tables import Base, Money


class Generation(Base):
    """One request for a generated video; its result is a `videos` row (origin `generated`)."""

    __tablename__ = "generations"
    __table_args__ = (Index("ix_generations_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    prompt: Mapped[str] = mapped_column(Text)
    requested_provider: Mapped[str] = mapped_column(String(40))
    """What the caller asked for: a provider name or ``auto``."""
    provider: Mapped[str | None] = mapped_column(String(40))
    """The provider of the current (finally: the delivering) attempt."""
    model: Mapped[str | None] = mapped_column(String(120))
    provider_job_id: Mapped[str | None] = mapped_column(String(200))
    duration_s: Mapped[int] = mapped_column(Integer)
    aspect_ratio: Mapped[str] = mapped_column(String(10))
    resolution: Mapped[str] = mapped_column(String(10))
    max_cost_usd: Mapped[Decimal | None] = mapped_column(Money)
    estimated_cost_usd: Mapped[Decimal] = mapped_column(Money)
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    """What the provider jobs really cost: the sum of this generation's ledger rows."""
    status: Mapped[str] = mapped_column(String(20), index=True)
    approval: Mapped[str] = mapped_column(String(20), default="not_required")
    validation: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    """The last validation report."""
    video_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    improved_from_video_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    workflow_id: Mapped[str | None] = mapped_column(String(200))
    error_code: Mapped[str | None] = mapped_column(String(60))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    index_result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    """Null when the video is not to be indexed; ``{"status": "requested"}`` when the request
    asked for it (`index: true`). The ingest run itself is `ingest-<video_id>`."""


class GenerationAttempt(Base):
    """One provider job of a generation, written before the provider is called."""

    __tablename__ = "generation_attempts"

    generation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("generations.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    provider: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(120))
    idempotency_key: Mapped[str] = mapped_column(String(300))
    provider_job_id: Mapped[str | None] = mapped_column(String(200))
    job_state: Mapped[str] = mapped_column(String(20))
    """``submitting`` until the provider answered, then the provider job's state."""
    outcome: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    output_key: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    validation: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class QuotaUsage(Base):
    """A tenant's generation usage in one billing period (a calendar month, UTC).

    Reservations move seconds and dollars into the `reserved_*` columns; settling moves
    them to `used_seconds`/`spent_usd`, releasing gives them back. Every change takes the
    row lock (`SELECT … FOR UPDATE`), so concurrent requests never overshoot the plan.
    """

    __tablename__ = "quota_usage"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    used_seconds: Mapped[int] = mapped_column(Integer, default=0)
    reserved_seconds: Mapped[int] = mapped_column(Integer, default=0)
    spent_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    reserved_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class QuotaReservation(Base):
    """What one generation holds of its period's quota; keyed by generation (idempotent)."""

    __tablename__ = "quota_reservations"

    generation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    period: Mapped[str] = mapped_column(String(7))
    seconds: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[Decimal] = mapped_column(Money)
    state: Mapped[str] = mapped_column(String(20))
    """``reserved``, ``committed`` or ``released``."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
