"""Contracts of the discover pipeline: scrape → outliers → download → analyze → adapt → scripts.

Shared by the API, the CLI, `workflows/discover.py` and `activities/discover.py`. Posts,
analyses and scripts live in their tables; workflow payloads carry ids and counts, never a
dataset or an analysis, so a scrape of 100k posts keeps its history small.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

# --- sources and posts ---------------------------------------------------------------------


class Platform(StrEnum):
    """Where a watched account posts."""

    INSTAGRAM = "instagram"
    TIKTOK = "tiktok"


class ScrapeSource(StrEnum):
    """Where a scrape's posts come from."""

    APIFY = "apify"
    """An Apify actor run started for this scrape (`apify/instagram-scraper`,
    `clockworks/tiktok-scraper`)."""
    DATASET_FILE = "dataset_file"
    """An Apify dataset export (JSON, JSONL or CSV) uploaded or read from a path."""
    POST_URL = "post_url"
    """A single post URL, read with yt-dlp."""


class ScrapeStatus(StrEnum):
    """Lifecycle of a scrape, as `GET /v1/scrapes/{id}` shows it."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


class ScrapeStage(StrEnum):
    """Which step a running scrape is in."""

    QUEUED = "queued"
    SCRAPING = "scraping"
    UPSERTING = "upserting"
    SCORING = "scoring"
    PROCESSING = "processing"
    """Downloading, ingesting, analyzing and adapting the new outliers."""
    DONE = "done"


class ScrapedPost(BaseModel):
    """One post as a source reports it, normalised: counts are non-negative integers or None
    (the platform does not report it, or the row's value was unreadable), times are UTC."""

    platform: Platform
    post_id: str = Field(min_length=1, max_length=200)
    account: str = Field(min_length=1, max_length=200)
    """The account's handle, without `@`, lowercase."""
    url: str | None = None
    video_url: str | None = None
    caption: str | None = None
    posted_at: datetime | None = None
    duration_s: float | None = None
    views: int | None = None
    """The count the outlier score reads: plays where the platform reports plays
    (`reelflow.discover.datasets` documents the choice per platform)."""
    likes: int | None = None
    comments: int | None = None
    shares: int | None = None
    saves: int | None = None
    followers: int | None = None
    is_video: bool = True


class RejectedRow(BaseModel):
    """A dataset row that was not used, and why (line or record number, 1-based)."""

    line: int
    reason: str


# --- outliers ------------------------------------------------------------------------------


class OutlierTier(StrEnum):
    """How far above the account's usual a post did (views ÷ the account's median)."""

    X3 = "3x"
    X5 = "5x"
    X10 = "10x"


class NoScoreReason(StrEnum):
    """Why a post has no outlier score."""

    TOO_FEW_POSTS = "too_few_posts"
    """The account has fewer comparable posts in the window than the minimum."""
    TOO_RECENT = "too_recent"
    """The post is younger than the age at which views are comparable."""
    NO_VIEWS = "no_views"
    """The source reported no view count for the post."""
    NO_POSTED_AT = "no_posted_at"
    ZERO_MEDIAN = "zero_median"
    """The account's comparable posts have a median of zero views."""
    NOT_A_VIDEO = "not_a_video"


class OutlierSettings(BaseModel):
    """How a project decides what an outlier is."""

    window_days: int = Field(default=30, ge=1, le=365)
    min_posts: int = Field(default=3, ge=2, le=1000)
    min_age_hours: float = Field(default=48.0, ge=0, le=24 * 90)
    min_ratio: float = Field(default=3.0, ge=1.0)
    """The lowest tier: a post is an outlier from this many times the median."""
    min_robust_z: float = Field(default=2.0, ge=0)
    """Second test: the robust z-score of log views (median/MAD) must reach this too."""


# --- analysis ------------------------------------------------------------------------------


class Score(BaseModel):
    """A 0–10 score with the reasons for it."""

    score: float = Field(ge=0, le=10)
    reasons: list[str] = Field(default_factory=list)


class Hook(BaseModel):
    """The first seconds of a video: what stops the scroll."""

    start_s: float = Field(default=0.0, ge=0)
    end_s: float = Field(default=3.0, ge=0)
    text: str | None = None
    """What is said or shown in the hook."""
    technique: str | None = None
    """E.g. question, bold claim, pattern interrupt."""


class Scene(BaseModel):
    """One beat of the storyboard."""

    start_s: float = Field(ge=0)
    end_s: float = Field(ge=0)
    shot: str | None = None
    """Framing and camera, e.g. close-up, handheld."""
    description: str | None = None
    on_screen_text: str | None = None
    audio: str | None = None
    """Voice, music or effects heard in the scene."""
    keyframe_key: str | None = None
    """A still of the scene in storage (the offline analyzer stores one per scene)."""


class Pacing(BaseModel):
    """How fast the video moves."""

    cuts_per_minute: float | None = None
    words_per_minute: float | None = None
    average_scene_s: float | None = None


class UnfilledField(BaseModel):
    """A field an analyzer could not fill, and why."""

    field: str
    reason: str


class VideoAnalysis(BaseModel):
    """Why a video worked: the same schema from Gemini and from the offline analyzer.

    Gemini is asked for exactly this schema (structured output); the offline analyzer fills
    what it can measure and lists the rest in `unfilled`.
    """

    hook: Hook
    scenes: list[Scene] = Field(default_factory=list)
    transcript_excerpt: str | None = None
    emotional_triggers: list[str] = Field(default_factory=list)
    viral_patterns: list[str] = Field(default_factory=list)
    pacing: Pacing = Field(default_factory=Pacing)
    call_to_action: str | None = None
    viral_score: Score | None = None
    hook_score: Score | None = None
    loudness_lufs: float | None = None
    unfilled: list[UnfilledField] = Field(default_factory=list)


# --- products and adaptation ---------------------------------------------------------------


class ProductBrief(BaseModel):
    """What an adapter needs to know about a product."""

    product_id: uuid.UUID
    name: str
    brand: str | None = None
    description: str | None = None
    audience: str | None = None
    benefits: list[str] = Field(default_factory=list)
    tone: str | None = None


class AdaptedScene(BaseModel):
    """One scene of the original, mapped to the product."""

    start_s: float = Field(ge=0)
    end_s: float = Field(ge=0)
    original: str | None = None
    """What happens in the original scene."""
    direction: str
    """What to film for the product."""
    voiceover: str | None = None
    on_screen_text: str | None = None


class ScriptAdaptation(BaseModel):
    """A script draft adapting a winning video's structure to one product."""

    title: str
    hook: str
    scenes: list[AdaptedScene] = Field(default_factory=list)
    call_to_action: str
    audience_fit: Score
    adapter: str
    """Which adapter wrote it: a provider model, or `offline-template`."""
    is_template: bool = False
    """True when written by the offline template adapter, not a language model."""


class ProductFit(BaseModel):
    """One product's fit for a video, in a comparison."""

    product_id: uuid.UUID
    product_name: str
    score: float
    reasons: list[str] = Field(default_factory=list)


class ProductComparison(BaseModel):
    """A project's products ranked by fit for one video (best first)."""

    video_id: uuid.UUID
    ranking: list[ProductFit]
    recommended_product_id: uuid.UUID | None
    why: str


# --- scripts -------------------------------------------------------------------------------


class ScriptStatus(StrEnum):
    """Where a script is on its way to a published video."""

    DRAFT = "draft"
    REVIEW = "review"
    APPROVED = "approved"
    IN_PRODUCTION = "in_production"
    PRODUCED = "produced"
    PUBLISHED = "published"


SCRIPT_TRANSITIONS: dict[ScriptStatus, tuple[ScriptStatus, ...]] = {
    ScriptStatus.DRAFT: (ScriptStatus.REVIEW,),
    # A reviewer sends a script back for changes, or approves it.
    ScriptStatus.REVIEW: (ScriptStatus.APPROVED, ScriptStatus.DRAFT),
    # An approved script can be reopened for review until production starts.
    ScriptStatus.APPROVED: (ScriptStatus.IN_PRODUCTION, ScriptStatus.REVIEW),
    # A shoot that cannot go ahead returns the script to approved.
    ScriptStatus.IN_PRODUCTION: (ScriptStatus.PRODUCED, ScriptStatus.APPROVED),
    ScriptStatus.PRODUCED: (ScriptStatus.PUBLISHED,),
    ScriptStatus.PUBLISHED: (),
}
"""Every allowed move; anything else is a 409 naming the allowed next states."""


class ScriptContent(BaseModel):
    """The body of a script version."""

    hook: str
    scenes: list[AdaptedScene] = Field(default_factory=list)
    call_to_action: str | None = None
    notes_for_production: str | None = None


# --- workflow inputs and outputs -----------------------------------------------------------


MAX_CARRIED_FAILURES = 100
"""Failed outliers a scrape keeps with their reasons; the count is always complete."""


class DiscoverInput(BaseModel):
    """Start of one scrape run (`DiscoverWorkflow`).

    A scrape asked for through the API or the CLI has its row already (`scrape_id`); a run
    started by the project's Schedule has none, and its first step creates one, named after
    the run so a retried step never creates a second.
    """

    tenant_id: uuid.UUID
    project_id: uuid.UUID
    scrape_id: uuid.UUID | None = None
    process_after: uuid.UUID | None = None
    """Continue-as-new: outliers are processed in post-id order, after this one."""
    carried: DiscoverProgress | None = None
    """Continue-as-new: the counts of the runs before, so the scrape reports its total."""
    carried_failures: list[OutlierOutcome] = Field(default_factory=list)
    """Continue-as-new: failed outliers of the runs before (at most `MAX_CARRIED_FAILURES`)."""


class DiscoverProgress(BaseModel):
    """What the `progress` query answers."""

    scrape_id: uuid.UUID | None
    status: ScrapeStatus
    stage: ScrapeStage
    posts_seen: int = 0
    posts_new: int = 0
    outliers: int = 0
    processed: int = 0
    failed_outliers: int = 0
    cost_usd: float = 0.0
    error: str | None = None


class DiscoverOutcome(BaseModel):
    """What a scrape run did."""

    scrape_id: uuid.UUID
    status: ScrapeStatus
    posts_seen: int = 0
    posts_new: int = 0
    outliers: int = 0
    processed: int = 0
    failed_outliers: int = 0
    cost_usd: float = 0.0


class ApifyRunRef(BaseModel):
    """An actor run a scrape started (persisted on the scrape before it is polled)."""

    platform: Platform
    actor: str
    run_id: str
    dataset_id: str


class ScrapePlan(BaseModel):
    """A scrape as its run needs it: where the posts come from and what is done."""

    scrape_id: uuid.UUID
    source: ScrapeSource
    platforms: list[Platform] = Field(default_factory=list)
    """Platforms with watched accounts (what an Apify scrape starts runs for)."""
    apify_runs: list[ApifyRunRef] = Field(default_factory=list)
    posts_imported: bool = False
    """The import step already finished (a retried run skips it)."""
    scored: bool = False
    max_parallel: int = 4
    per_run: int = 200


class BeginScrapeInput(BaseModel):
    tenant_id: uuid.UUID
    project_id: uuid.UUID
    scrape_id: uuid.UUID | None = None
    run_key: str
    """The workflow id: a scheduled run's scrape is created under it once."""
    workflow_id: str


class StartApifyRunInput(BaseModel):
    tenant_id: uuid.UUID
    scrape_id: uuid.UUID
    platform: Platform


class PollApifyRunInput(BaseModel):
    tenant_id: uuid.UUID
    scrape_id: uuid.UUID
    run: ApifyRunRef


class ApifyRunStatus(BaseModel):
    status: str
    finished: bool
    succeeded: bool
    message: str | None = None
    item_count: int | None = None


class AbortApifyRunsInput(BaseModel):
    tenant_id: uuid.UUID
    scrape_id: uuid.UUID


class AbortApifyRunsOutput(BaseModel):
    aborted: int


class ImportPostsInput(BaseModel):
    tenant_id: uuid.UUID
    scrape_id: uuid.UUID
    run_id: str
    """The workflow id, for the ledger rows of the runs' cost."""


class ImportPostsOutput(BaseModel):
    posts_seen: int
    posts_new: int
    rejected: int
    cost_usd: float = 0.0


class ScoreOutliersInput(BaseModel):
    tenant_id: uuid.UUID
    project_id: uuid.UUID
    scrape_id: uuid.UUID


class ScoreOutliersOutput(BaseModel):
    scored: int
    outliers: int
    """Outliers among the project's posts that have no video yet (this run's work)."""


class NextOutliersInput(BaseModel):
    tenant_id: uuid.UUID
    project_id: uuid.UUID
    after: uuid.UUID | None = None
    limit: int = Field(ge=1, le=10_000)


class NextOutliersOutput(BaseModel):
    post_ids: list[uuid.UUID]


class FinishScrapeInput(BaseModel):
    tenant_id: uuid.UUID
    scrape_id: uuid.UUID
    status: ScrapeStatus
    run_id: str
    posts_seen: int = 0
    posts_new: int = 0
    outliers: int = 0
    processed: int = 0
    failures: list[OutlierOutcome] = Field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None


class FinishScrapeOutput(BaseModel):
    cost_usd: float


class ScrapeStateInput(BaseModel):
    tenant_id: uuid.UUID
    scrape_id: uuid.UUID
    stage: ScrapeStage
    posts_seen: int = 0
    posts_new: int = 0
    outliers: int = 0
    processed: int = 0


class ScrapeStateOutput(BaseModel):
    updated: bool


class OutlierInput(BaseModel):
    """One new outlier to download, ingest, analyze and adapt (`ProcessOutlierWorkflow`)."""

    tenant_id: uuid.UUID
    project_id: uuid.UUID
    scrape_id: uuid.UUID
    post_id: uuid.UUID


class OutlierVideo(BaseModel):
    """The video asset made for an outlier, and the products to adapt it to."""

    video_id: uuid.UUID
    product_ids: list[uuid.UUID]
    ingested: bool
    analysis_id: uuid.UUID | None = None
    analyze_on_media_pool: bool = True
    """The offline analyzer is ffmpeg work for the media pool; Gemini is I/O."""


class AnalyzeVideoInput(BaseModel):
    tenant_id: uuid.UUID
    video_id: uuid.UUID
    post_id: uuid.UUID | None = None
    run_id: str


class AnalyzeVideoOutput(BaseModel):
    analysis_id: uuid.UUID
    analyzer: str
    viral_score: float | None = None
    unfilled: int = 0
    cost_usd: float = 0.0


class AdaptScriptInput(BaseModel):
    tenant_id: uuid.UUID
    project_id: uuid.UUID
    analysis_id: uuid.UUID
    product_id: uuid.UUID
    run_id: str


class AdaptScriptOutput(BaseModel):
    adaptation_id: uuid.UUID
    script_id: uuid.UUID
    fit_score: float
    adapter: str
    cost_usd: float = 0.0


class OutlierOutcome(BaseModel):
    """What became of one outlier."""

    post_id: uuid.UUID
    video_id: uuid.UUID | None = None
    analysis_id: uuid.UUID | None = None
    script_ids: list[uuid.UUID] = Field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None
    failed_step: str | None = None
    cost_usd: float = 0.0
