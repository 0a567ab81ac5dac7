"""Contracts of the improve pipeline: performance → aggregates → insights → improvement.

Shared by the API, the CLI, the chart and report renderers, `workflows/improve.py` and its
activities. Field names follow seed 000's `video_performance` table and insight JSON.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from schemas.discover import Platform


class TrafficSource(StrEnum):
    """Where a video's views came from (seed 000)."""

    FYP = "fyp"
    PROFILE = "profile"
    HASHTAG = "hashtag"
    SHARE = "share"
    OTHER = "other"


class PerformanceIn(BaseModel):
    """One performance snapshot of a video on a platform, as a person or an import gives it.

    Validation beyond types (likes > views, future times) lives in
    `reelflow.improve.performance`, which says why each rule holds.
    """

    platform: Platform
    views: int = Field(ge=0)
    likes: int = Field(default=0, ge=0)
    comments: int = Field(default=0, ge=0)
    shares: int = Field(default=0, ge=0)
    saves: int = Field(default=0, ge=0)
    watch_time_seconds: float | None = Field(default=None, ge=0)
    completion_rate: float | None = Field(default=None, ge=0, le=100)
    """Percent of views watched to the end, 0–100."""
    traffic_source: TrafficSource | None = None
    recorded_at: datetime
    post_id: uuid.UUID | None = None
    """The discover pipeline's post this snapshot belongs to, when the video is published."""


class PerformanceSnapshot(PerformanceIn):
    """A stored snapshot."""

    id: uuid.UUID
    video_id: uuid.UUID
    created_at: datetime


class PlatformLatest(BaseModel):
    """The latest numbers of a video on one platform, read against the tenant's usual."""

    platform: Platform
    recorded_at: datetime
    views: int
    likes: int
    comments: int
    shares: int
    saves: int
    completion_rate: float | None = None
    engagement_rate: float | None = None
    """(likes + comments + shares + saves) ÷ views; None without views."""
    views_per_day: float | None = None
    """Growth between the first and the latest snapshot, per day."""
    baseline_views: float | None = None
    """The tenant's median latest views on this platform (its "usual")."""
    times_usual: float | None = None
    """views ÷ baseline_views: "x× your usual" (`reelflow.core.statistics`)."""


class VideoPerformanceSummary(BaseModel):
    """Aggregates of one video's snapshots (`GET /v1/videos/{id}/performance/summary`)."""

    video_id: uuid.UUID
    snapshots: int
    first_recorded_at: datetime | None = None
    last_recorded_at: datetime | None = None
    totals: dict[str, int] = Field(default_factory=dict)
    """Latest views, likes, comments, shares, saves summed over platforms."""
    engagement_rate: float | None = None
    platforms: list[PlatformLatest] = Field(default_factory=list)
    best_platform: Platform | None = None
    traffic_breakdown: dict[str, float] = Field(default_factory=dict)
    """Share of snapshots (0–1) per traffic source, over snapshots that name one."""
    metrics_fingerprint: str = ""
    """Changes whenever any snapshot of the video is added, changed or removed: the key
    insights are cached under."""


class Insights(BaseModel):
    """Seed 000's insight JSON."""

    strengths: list[str] = Field(default_factory=list)
    weaknesses: list[str] = Field(default_factory=list)
    traffic_insights: str = ""
    patterns: str = ""
    recommendations: list[str] = Field(default_factory=list)
    next_video_suggestions: list[str] = Field(default_factory=list)


class InsightsAnswer(BaseModel):
    """`GET /v1/videos/{id}/insights` and the series equivalent."""

    insights: Insights | None
    """None when there is nothing to analyse yet; `message` says why."""
    generated_at: datetime | None
    cached: bool
    analyst: str
    """A provider model (e.g. `anthropic/claude-haiku-4-5`) or `statistical`."""
    statistical: bool
    message: str | None = None


class PerformancePatch(BaseModel):
    """`PATCH /v1/videos/{id}/performance/{snapshot_id}`: only the fields given change."""

    views: int | None = Field(default=None, ge=0)
    likes: int | None = Field(default=None, ge=0)
    comments: int | None = Field(default=None, ge=0)
    shares: int | None = Field(default=None, ge=0)
    saves: int | None = Field(default=None, ge=0)
    watch_time_seconds: float | None = Field(default=None, ge=0)
    completion_rate: float | None = Field(default=None, ge=0, le=100)
    traffic_source: TrafficSource | None = None
    recorded_at: datetime | None = None


class ImportRejection(BaseModel):
    """A line of an import file that was not used, and why."""

    line: int
    """The CSV line the row starts on (header = 1), the JSONL line, or the JSON record number."""
    reason: str


class ImportReport(BaseModel):
    """What `POST /v1/performance/import` did with each line of the file."""

    format: str
    """`csv`, `json` or `jsonl`."""
    lines: int
    """Data rows read (blank lines not counted)."""
    accepted: int
    """Rows that are now stored: `inserted` new ones plus `unchanged` ones already there."""
    inserted: int
    unchanged: int
    """Identical to a stored snapshot (the same file imported again)."""
    rejected: int
    rejections: list[ImportRejection] = Field(default_factory=list)
    """The first rejected lines with their reasons, in line order (capped)."""
    rejections_truncated: bool = False
    ignored_columns: list[str] = Field(default_factory=list)
    """Header columns the importer does not know (their values are not read)."""


class EpisodePerformance(BaseModel):
    """One video of a series, read against the series."""

    video_id: uuid.UUID
    title: str
    published_at: datetime | None
    """The linked post's `posted_at`, else the first snapshot's time, else the asset's."""
    views: int
    """Latest views summed over platforms."""
    engagement_rate: float | None
    times_series_median: float | None
    """views ÷ the series' median views."""
    gap_days: float | None = None
    """Days since the previous episode was published (None for the first)."""
    hashtags: list[str] = Field(default_factory=list)


class CadenceBucket(BaseModel):
    """Episodes grouped by the gap since the previous episode."""

    label: str
    min_gap_days: float
    max_gap_days: float | None
    episodes: int
    median_views: float | None


class HashtagEffect(BaseModel):
    """How episodes using a hashtag did against the series."""

    hashtag: str
    episodes: int
    median_views: float
    lift: float | None
    """median_views ÷ the series' median views; > 1 means above the series' usual."""


class SeriesPerformance(BaseModel):
    """Aggregates of a collection's videos (`GET /v1/collections/{id}/performance`)."""

    collection_id: uuid.UUID
    episodes: int
    episodes_with_metrics: int
    total_views: int
    median_views: float | None
    engagement_rate: float | None
    best_episodes: list[EpisodePerformance] = Field(default_factory=list)
    worst_episodes: list[EpisodePerformance] = Field(default_factory=list)
    episode_list: list[EpisodePerformance] = Field(default_factory=list)
    """Every episode with metrics, in publishing order."""
    cadence: list[CadenceBucket] = Field(default_factory=list)
    cadence_correlation: float | None = None
    """Spearman rank correlation of gap_days and views over episodes with a gap (−1…1);
    None with fewer than 3 such episodes or no variation."""
    hashtags: list[HashtagEffect] = Field(default_factory=list)
    hashtag_sources: str = ""
    """Where hashtags were read from (titles, linked posts' captions)."""
    metrics_fingerprint: str = ""
    """Changes whenever any snapshot of any episode is added, changed or removed."""
