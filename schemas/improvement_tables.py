"""Tables of insights and improvements (migration `0009`).

Declared on `schemas.tables.Base`, which imports this module at its end.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from schemas.tables import Base


class InsightCacheEntry(Base):
    """Insights of a video or a series, as made from one set of metrics by one analyst.

    The key holds the metrics fingerprint, so new metrics simply miss the cache (no
    invalidation step to forget); the analyst is in the key too, so switching provider never
    serves another analyst's answer as if it were the current one's.
    """

    __tablename__ = "insight_cache"
    __table_args__ = (
        UniqueConstraint(
            "tenant_id",
            "subject_kind",
            "subject_id",
            "metrics_fingerprint",
            "analyst",
            name="uq_insight_cache_key",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    subject_kind: Mapped[str] = mapped_column(String(20))  # video | collection
    subject_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    metrics_fingerprint: Mapped[str] = mapped_column(String(128))
    analyst: Mapped[str] = mapped_column(String(160))
    statistical: Mapped[bool] = mapped_column(Boolean)
    insights: Mapped[dict[str, Any]] = mapped_column(JSONB)
    generated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class InsightGeneration(Base):
    """One fresh generation (a reservation taken before the analyst runs).

    Counted per tenant over the last hour for the rate limit; rows live in Postgres so every
    API process and worker sees the same count.
    """

    __tablename__ = "insight_generations"
    __table_args__ = (Index("ix_insight_generations_tenant_at", "tenant_id", "generated_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    subject_kind: Mapped[str] = mapped_column(String(20))
    subject_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    analyst: Mapped[str] = mapped_column(String(160))
    generated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
