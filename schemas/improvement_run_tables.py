"""Tables: Improvement runs and video version links (migration `0010`).

Declared on `schemas.tables.Base`, which imports this module at its end. The version link
itself (`improved_from_video_id`, `improvement_iteration`) lives on `videos`, so every
pipeline that reads a video sees it; this table remembers how each improved version came to be.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from schemas.tables import Base, Money


class Improvement(Base):
    """One improvement run: insights of a video → an improved prompt → a generated new version."""

    __tablename__ = "improvements"
    __table_args__ = (Index("ix_improvements_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    video_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("videos.id", ondelete="CASCADE"), index=True
    )
    """The video being improved (the original of this step of the chain)."""
    generation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("generations.id", ondelete="SET NULL")
    )
    new_video_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("videos.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(String(20), index=True)
    iteration: Mapped[int] = mapped_column(Integer)
    """The new version's `improvement_iteration`: the original's + 1."""
    requested_provider: Mapped[str] = mapped_column(String(40))
    max_cost_usd: Mapped[Decimal | None] = mapped_column(Money)
    approve_over_budget: Mapped[bool] = mapped_column(Boolean, default=False)
    approval: Mapped[str] = mapped_column(String(20), default="not_required")
    insights: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    """The insights the prompt was written from, as they were then (they are regenerated later)."""
    source_kind: Mapped[str | None] = mapped_column(String(20))
    """What the original's content came from: prompt, script or transcript."""
    original_prompt: Mapped[str | None] = mapped_column(Text)
    improved_prompt: Mapped[str | None] = mapped_column(Text)
    changes: Mapped[list[Any] | None] = mapped_column(JSONB)
    """What the writer kept and changed, and why, one entry per decision."""
    writer: Mapped[str | None] = mapped_column(String(120))
    workflow_id: Mapped[str | None] = mapped_column(String(200))
    error_code: Mapped[str | None] = mapped_column(String(60))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
