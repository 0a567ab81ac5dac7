"""Tables of the discover pipeline (migration `0006`): brands, products, projects, watched
accounts, scrapes, posts with their metric snapshots, analyses, adaptations and scripts.

Declared on `schemas.tables.Base`, which imports this module at its end.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from schemas.tables import Base, Money


class Brand(Base):
    """A brand a tenant sells under."""

    __tablename__ = "brands"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_brands_tenant_name"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Product(Base):
    """A product scripts are adapted to."""

    __tablename__ = "products"
    __table_args__ = (
        UniqueConstraint("tenant_id", "brand_id", "name", name="uq_products_brand_name"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    brand_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("brands.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    audience: Mapped[str | None] = mapped_column(Text)
    benefits: Mapped[list[str]] = mapped_column(JSONB, default=list)
    tone: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Project(Base):
    """A group of watched accounts and the products their winning videos are adapted to."""

    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_projects_tenant_name"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    outlier_settings: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    """`schemas.discover.OutlierSettings`; empty means the defaults."""
    schedule_interval_s: Mapped[int | None] = mapped_column(Integer)
    """How often the project's Temporal Schedule re-scrapes; None means on request only."""
    schedule_paused: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WatchedAccount(Base):
    """An account on a platform, shared by every project of the tenant that watches it."""

    __tablename__ = "watched_accounts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "platform", "handle", name="uq_accounts_platform_handle"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(20))
    handle: Mapped[str] = mapped_column(String(200))
    """Lowercase, without `@`."""
    followers: Mapped[int | None] = mapped_column(BigInteger)
    last_scraped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ProjectAccount(Base):
    """Which accounts a project watches."""

    __tablename__ = "project_accounts"

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("watched_accounts.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class ProjectProduct(Base):
    """Which products a project adapts to."""

    __tablename__ = "project_products"

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    product_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("products.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Scrape(Base):
    """One scrape of a project: its source, its run and what it found."""

    __tablename__ = "scrapes"
    __table_args__ = (Index("ix_scrapes_project_created", "project_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(20))
    """`schemas.discover.ScrapeSource`."""
    dataset_key: Mapped[str | None] = mapped_column(Text)
    """Storage key of an uploaded dataset file."""
    dataset_format: Mapped[str | None] = mapped_column(String(10))
    post_url: Mapped[str | None] = mapped_column(Text)
    apify_runs: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    """One entry per actor run this scrape started: platform, actor, run id, dataset id,
    status. Written before the run is polled, so a retried step never starts a second."""
    status: Mapped[str] = mapped_column(String(20), index=True)
    stage: Mapped[str] = mapped_column(String(20))
    posts_seen: Mapped[int] = mapped_column(Integer, default=0)
    posts_new: Mapped[int] = mapped_column(Integer, default=0)
    outliers: Mapped[int] = mapped_column(Integer, default=0)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    """Rows and outliers that could not be used, each with its reason (capped)."""
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    workflow_id: Mapped[str | None] = mapped_column(String(200))
    error_code: Mapped[str | None] = mapped_column(String(60))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Post(Base):
    """A post of a watched account, upserted by platform and the platform's post id."""

    __tablename__ = "posts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "platform", "platform_post_id", name="uq_posts_platform_id"),
        Index("ix_posts_account_posted", "account_id", "posted_at"),
        Index("ix_posts_tenant_tier", "tenant_id", "outlier_tier"),
        # The order `GET /v1/posts` pages in.
        Index("ix_posts_tenant_created", "tenant_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("watched_accounts.id", ondelete="CASCADE")
    )
    platform: Mapped[str] = mapped_column(String(20))
    platform_post_id: Mapped[str] = mapped_column(String(200))
    url: Mapped[str | None] = mapped_column(Text)
    video_url: Mapped[str | None] = mapped_column(Text)
    caption: Mapped[str | None] = mapped_column(Text)
    posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[float | None] = mapped_column(Float)
    is_video: Mapped[bool] = mapped_column(default=True)
    views: Mapped[int | None] = mapped_column(BigInteger)
    likes: Mapped[int | None] = mapped_column(BigInteger)
    comments: Mapped[int | None] = mapped_column(BigInteger)
    shares: Mapped[int | None] = mapped_column(BigInteger)
    saves: Mapped[int | None] = mapped_column(BigInteger)
    outlier_score: Mapped[float | None] = mapped_column(Float)
    """Views ÷ the median views of the account's comparable posts."""
    outlier_z: Mapped[float | None] = mapped_column(Float)
    """Robust z-score of log views (median/MAD) among the same posts."""
    outlier_tier: Mapped[str | None] = mapped_column(String(5))
    no_score_reason: Mapped[str | None] = mapped_column(String(30))
    scored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    video_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    """The downloaded video asset (origin `scraped`)."""
    first_scrape_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    processed_scrape_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    """The scrape whose run made the video (its ingest cost belongs to that scrape)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class PostSnapshot(Base):
    """A post's counts as one scrape saw them, so growth over time is known."""

    __tablename__ = "post_snapshots"

    post_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True
    )
    scrape_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("scrapes.id", ondelete="CASCADE"), primary_key=True
    )
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    views: Mapped[int | None] = mapped_column(BigInteger)
    likes: Mapped[int | None] = mapped_column(BigInteger)
    comments: Mapped[int | None] = mapped_column(BigInteger)
    shares: Mapped[int | None] = mapped_column(BigInteger)
    saves: Mapped[int | None] = mapped_column(BigInteger)
    followers: Mapped[int | None] = mapped_column(BigInteger)


class Analysis(Base):
    """Why a video worked (`schemas.discover.VideoAnalysis`), by one analyzer."""

    __tablename__ = "analyses"
    __table_args__ = (UniqueConstraint("video_id", "analyzer", name="uq_analyses_video_analyzer"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    video_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"))
    post_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("posts.id", ondelete="SET NULL"), index=True
    )
    analyzer: Mapped[str] = mapped_column(String(40))
    """`gemini` or `offline`."""
    model: Mapped[str] = mapped_column(String(120))
    prompt_version: Mapped[str] = mapped_column(String(40))
    analysis: Mapped[dict[str, Any]] = mapped_column(JSONB)
    viral_score: Mapped[float | None] = mapped_column(Float)
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Adaptation(Base):
    """A script draft adapting one analyzed video to one product."""

    __tablename__ = "adaptations"
    __table_args__ = (
        UniqueConstraint("analysis_id", "product_id", name="uq_adaptations_analysis_product"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    analysis_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("analyses.id", ondelete="CASCADE"))
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    adapter: Mapped[str] = mapped_column(String(120))
    adaptation: Mapped[dict[str, Any]] = mapped_column(JSONB)
    """`schemas.discover.ScriptAdaptation`."""
    fit_score: Mapped[float] = mapped_column(Float)
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Script(Base):
    """One version of a script; versions chain through `parent_script_id`."""

    __tablename__ = "scripts"
    __table_args__ = (
        Index("ix_scripts_tenant_status", "tenant_id", "status"),
        Index("ix_scripts_project", "project_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL")
    )
    product_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("products.id", ondelete="SET NULL"), index=True
    )
    brand_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("brands.id", ondelete="SET NULL"), index=True
    )
    adaptation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("adaptations.id", ondelete="SET NULL")
    )
    source_video_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    """The analyzed video the script adapts."""
    parent_script_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("scripts.id", ondelete="SET NULL"), index=True
    )
    version: Mapped[int] = mapped_column(Integer, default=1)
    title: Mapped[str] = mapped_column(String(300))
    content: Mapped[dict[str, Any]] = mapped_column(JSONB)
    """`schemas.discover.ScriptContent`."""
    notes: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    status_history: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    """Every transition: from, to, by (the API key's prefix or `cli`), at."""
    predicted_viral_score: Mapped[float | None] = mapped_column(Float)
    produced_video_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    published_post_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("posts.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
