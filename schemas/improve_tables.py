"""Tables of the improve pipeline: performance snapshots and video ↔ post links (migration
`0007`).

Declared on `schemas.tables.Base`, which imports this module at its end.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, ForeignKey, Index, String, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from schemas.tables import Base


class VideoPerformance(Base):
    """One snapshot of a video's numbers on a platform at `recorded_at`.

    One row per video, platform and time: the unique index doubles as the access path of
    every per-video read (history, latest per platform) and of the tenant's baselines, which
    probe it once per video and platform for the newest row.
    """

    __tablename__ = "video_performance"
    __table_args__ = (
        Index(
            "uq_video_performance_point",
            "video_id",
            "platform",
            "recorded_at",
            unique=True,
        ),
        Index("ix_video_performance_post", "post_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    """The video's tenant, copied so every query can be scoped without a join. No foreign
    key of its own: the video's cascades already remove the rows with their tenant, and a
    second per-row check doubled the cost of bulk imports."""
    video_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(20))
    views: Mapped[int] = mapped_column(BigInteger)
    likes: Mapped[int] = mapped_column(BigInteger)
    comments: Mapped[int] = mapped_column(BigInteger)
    shares: Mapped[int] = mapped_column(BigInteger)
    saves: Mapped[int] = mapped_column(BigInteger)
    watch_time_seconds: Mapped[float | None] = mapped_column(Float)
    completion_rate: Mapped[float | None] = mapped_column(Float)
    """Percent, 0–100."""
    traffic_source: Mapped[str | None] = mapped_column(String(20))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    post_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("posts.id", ondelete="SET NULL"))
    source: Mapped[str] = mapped_column(String(20))
    """How the row arrived: `manual`, `import` or `discover` (copied from a linked post)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class VideoPostLink(Base):
    """A video published as a discover post: the post's scrape snapshots become the video's.

    `synced_through` is the newest scrape snapshot already copied, so a later read copies
    only what scrapes added since, and a snapshot the user deleted does not come back.
    """

    __tablename__ = "video_post_links"

    video_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("videos.id", ondelete="CASCADE"), primary_key=True
    )
    post_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    synced_through: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
