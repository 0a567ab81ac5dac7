"""Contracts of the improvement run: insights → improved prompt → generated new version → link.

Shared by the API, the CLI, `workflows/improve.py` and `activities/improve.py`. Prompts,
scripts, transcripts and insights live in the `improvements` row, never in workflow
payloads: activities read them by id, so history stays small and holds no creative text.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from schemas.generation import MAX_PROMPT_CHARS, ApprovalState, GenerationStatus
from schemas.improve import Insights


class ImprovementStatus(StrEnum):
    """Lifecycle of an improvement run, as `GET /v1/improvements/{id}` shows it."""

    QUEUED = "queued"
    LOADING_INSIGHTS = "loading_insights"
    WRITING = "writing"
    GENERATING = "generating"
    """The child generation runs; while it waits for approval the API says so."""
    AWAITING_APPROVAL = "awaiting_approval"
    """Never stored: shown while the child generation waits for a person's approval."""
    LINKING = "linking"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL_IMPROVEMENT_STATUSES = frozenset(
    {ImprovementStatus.COMPLETED, ImprovementStatus.FAILED, ImprovementStatus.CANCELED}
)


class SourceKind(StrEnum):
    """What the original's content was taken from, best first."""

    PROMPT = "prompt"
    """The prompt of the generation that made it."""
    SCRIPT = "script"
    """A discover script whose produced video it is."""
    TRANSCRIPT = "transcript"
    """What it says (transcript segments) and, when analyzed, how it is built."""


class ChangeKind(StrEnum):
    KEPT = "kept"
    CHANGED = "changed"
    ADDED = "added"


class PromptChange(BaseModel):
    """One decision of the writer: what it kept or changed, and the insight behind it."""

    kind: ChangeKind
    what: str
    because: str


def improvement_workflow_id(improvement_id: str | uuid.UUID) -> str:
    """Business id of an improvement's run, so a repeated start is a no-op."""
    return f"improve-{improvement_id}"


def improvement_generation_id(improvement_id: str | uuid.UUID) -> uuid.UUID:
    """The generation an improvement admits: derived, so a retried admission finds its row."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"reelflow:improvement:{improvement_id}")


# --- workflow ------------------------------------------------------------------------------


class ImproveInput(BaseModel):
    """Run the improvement `improvement_id` (its row holds the options)."""

    tenant_id: str
    improvement_id: str
    video_id: str
    """The original; also the run's `VideoId` search attribute."""
    approve_over_budget: bool = False
    """Approve the child generation in advance if its estimate needs approval."""


class ImproveResult(BaseModel):
    """What a finished improvement produced."""

    improvement_id: str
    status: ImprovementStatus
    generation_id: str | None = None
    new_video_id: str | None = None
    iteration: int | None = None
    cost_usd: float = 0.0
    message: str | None = None


class ImproveProgress(BaseModel):
    """Answer of the workflow's `progress` query."""

    improvement_id: str
    status: ImprovementStatus
    stage: str
    writer: str | None = None
    generation_id: str | None = None
    generation_workflow_id: str | None = None
    new_video_id: str | None = None
    cost_usd: float = 0.0
    error: str | None = None


# --- activities ----------------------------------------------------------------------------


class ImprovementStepInput(BaseModel):
    """The step reads everything else from the improvement row."""

    tenant_id: str
    improvement_id: str


class LoadInsightsOutput(BaseModel):
    """Insights are snapshotted on the row; history keeps only who made them."""

    analyst: str
    statistical: bool
    cached: bool
    strengths: int
    weaknesses: int


class WritePromptOutput(BaseModel):
    writer: str
    is_template: bool
    source_kind: SourceKind
    prompt_chars: int
    cost_usd: float = 0.0


class AdmitGenerationOutput(BaseModel):
    """The child generation's row is written and its quota reserved."""

    generation_id: str
    workflow_id: str
    estimated_cost_usd: float
    provider: str
    model: str


class PreApproveInput(BaseModel):
    tenant_id: str
    improvement_id: str
    generation_id: str


class PreApproveOutput(BaseModel):
    accepted: bool
    """False when the generation had already passed its approval gate (none was needed)."""


class LinkVersionInput(BaseModel):
    tenant_id: str
    improvement_id: str
    generation_id: str
    new_video_id: str
    cost_usd: float


class LinkVersionOutput(BaseModel):
    iteration: int


class FinishImprovementInput(BaseModel):
    """End an improvement without a new version: record why."""

    tenant_id: str
    improvement_id: str
    status: ImprovementStatus
    error_code: str
    error_message: str


class FinishImprovementOutput(BaseModel):
    updated: bool


# --- HTTP API bodies -----------------------------------------------------------------------


class ImprovementRequest(BaseModel):
    """Ask for an improved version of a video."""

    approve_over_budget: bool = Field(
        default=False,
        description="Approve the generation in advance if its estimate needs approval "
        "(over max_cost_usd or the plan's budget); otherwise it waits for "
        "`POST /v1/improvements/{id}/approve`.",
    )
    max_cost_usd: float | None = Field(
        default=None, ge=0, description="Above this estimate the generation waits for approval."
    )
    provider: str | None = Field(
        default=None,
        min_length=1,
        max_length=40,
        description='A provider or "auto"; by default the provider that made the original, '
        'else "auto".',
    )


class ImprovementAccepted(BaseModel):
    improvement_id: uuid.UUID
    workflow_id: str


class ImprovementError(BaseModel):
    code: str
    message: str


class ImprovementDetail(BaseModel):
    """`GET /v1/improvements/{id}`."""

    improvement_id: uuid.UUID
    workflow_id: str | None
    video_id: uuid.UUID
    status: ImprovementStatus
    iteration: int
    requested_provider: str
    max_cost_usd: float | None
    approve_over_budget: bool
    source_kind: SourceKind | None
    original_prompt: str | None
    improved_prompt: str | None
    changes: list[PromptChange]
    writer: str | None
    insights: Insights | None
    generation_id: uuid.UUID | None
    generation_status: GenerationStatus | None
    approval: ApprovalState | None
    estimated_cost_usd: float | None
    new_video_id: uuid.UUID | None
    cost_usd: float
    """What the run has cost so far: the writer's tokens and the generation."""
    error: ImprovementError | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class ImprovementAction(BaseModel):
    improvement_id: uuid.UUID
    status: str
    approval: ApprovalState | None = None


class VersionMetrics(BaseModel):
    """A version's latest numbers (`reelflow.improve.aggregates.video_summary`)."""

    snapshots: int
    views: int | None = None
    engagement_rate: float | None = None
    completion_rate: float | None = None
    times_usual: float | None = None
    best_platform: str | None = None
    last_recorded_at: datetime | None = None


class VideoVersion(BaseModel):
    """One video of a chain of improvements."""

    video_id: uuid.UUID
    version: int
    """1 for the original, 2 for its first improvement, and so on."""
    iteration: int
    title: str
    status: str
    improved_from_video_id: uuid.UUID | None
    improvement_id: uuid.UUID | None
    """The run that made this version (None for the original)."""
    created_at: datetime
    metrics: VersionMetrics


class VersionHistory(BaseModel):
    """`GET /v1/videos/{id}/versions`: the chain from the first original to the newest."""

    video_id: uuid.UUID
    versions: list[VideoVersion]
    branches: list[uuid.UUID] = Field(default_factory=list)
    """Videos improved from a version of this chain but not on the path shown (a version
    improved twice): the chain follows the newest improvement of each version."""


class MetricComparison(BaseModel):
    name: str
    base: float | None
    other: float | None
    delta: float | None
    """other − base."""
    change: float | None
    """(other − base) ÷ base; None when base is 0 or either is missing."""


class VersionComparison(BaseModel):
    """`GET /v1/videos/{id}/versions/compare?with=`: two versions side by side."""

    base: VideoVersion
    other: VideoVersion
    comparable: bool
    """False until both have metrics; `message` then says which has none."""
    metrics: list[MetricComparison]
    message: str | None = None


class ScriptPerformance(BaseModel):
    """`GET /v1/scripts/{id}/performance`: the discover prediction against what happened."""

    script_id: uuid.UUID
    title: str
    predicted_viral_score: float | None
    """0–10, from the analysis of the video the script adapts."""
    produced_video_id: uuid.UUID | None
    published_post_id: uuid.UUID | None
    actual_outlier_score: float | None
    """The published post's views ÷ its account's median views."""
    actual_times_usual: float | None
    """The produced video's views ÷ the tenant's usual views on that platform."""
    actual: float | None
    """The outlier score when the post is scored, else times-usual."""
    actual_source: str | None
    """`published_post` or `produced_video`; None when there is nothing to measure yet."""
    predicted_as_ratio: float | None
    """The viral score read as a multiple of the usual: a score of s predicts s× (10 is the
    10× outlier tier, 3 the 3× tier), never below 1× (the median)."""
    verdict: str | None
    """`outperformed`, `as_predicted` or `underperformed`; None without both numbers."""
    message: str | None = None


MAX_IMPROVED_PROMPT_CHARS = MAX_PROMPT_CHARS
"""The improved prompt becomes a generation's prompt: the same limit holds."""
