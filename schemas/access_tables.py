"""Tables: request rate windows per API key and run admissions per tenant (migration `0011`).

Declared on `schemas.tables.Base`, which imports this module at its end. The `api_keys`
columns for names, scopes and rotation are on `schemas.tables.ApiKey`; `0011` adds them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from schemas.tables import Base as Base


class RateLimitWindow(Base):
    """The current fixed window of one API key: one row per key, rewritten in place.

    One row per key (not per window) means nothing to clean up: the upsert that counts a
    request also moves the row to a new window when the old one has passed.
    """

    __tablename__ = "rate_limit_windows"

    key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    hits: Mapped[int] = mapped_column(Integer)


class RunAdmission(Base):
    """A run holding (`running`) or waiting for (`queued`) one of its tenant's run slots.

    Rows are admitted in `id` order, so queued runs start in the order they asked; a
    finished run's row is deleted, which frees its slot.
    """

    __tablename__ = "run_admissions"
    __table_args__ = (Index("ix_run_admissions_tenant_state", "tenant_id", "state", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    workflow_id: Mapped[str] = mapped_column(String(200), unique=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    pipeline: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(10))
    """`queued` or `running`."""
    start: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    """What starting the run later needs (pipeline-specific, e.g. the video id)."""
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
