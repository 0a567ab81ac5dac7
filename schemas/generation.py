"""Contracts of the generation pipeline: prompt → estimate → quota → approval → provider → asset.

Shared by the API, `workflows/generation.py` and `activities/generation.py`. The prompt
lives in the `generations` row, not in workflow payloads: activities read it by id, so a
long prompt never sits in history (and is written once, by the API).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field, field_validator

MAX_PROMPT_CHARS = 2000
"""Longer prompts are refused (422); providers cap prompts at a few thousand characters."""

AUTO_PROVIDER = "auto"
"""`provider: "auto"` routes by quality tier, then price (seed 003)."""


class GenerationStatus(StrEnum):
    """Lifecycle of a generation request (issue 4), as `GET /v1/generations/{id}` shows it."""

    QUEUED = "queued"
    AWAITING_APPROVAL = "awaiting_approval"
    SUBMITTED = "submitted"
    GENERATING = "generating"
    VALIDATING = "validating"
    STORING = "storing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL_STATUSES = frozenset(
    {GenerationStatus.COMPLETED, GenerationStatus.FAILED, GenerationStatus.CANCELED}
)


class ApprovalState(StrEnum):
    """Whether a generation needed, and got, a person's approval."""

    NOT_REQUIRED = "not_required"
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"


class AttemptOutcome(StrEnum):
    """How one provider job ended, as recorded on its attempt."""

    IN_PROGRESS = "in_progress"
    PASSED = "passed"
    INVALID_OUTPUT = "invalid_output"
    """The job delivered a file that failed validation (black, silent, wrong length...)."""
    JOB_FAILED = "job_failed"
    REJECTED = "rejected"
    """The provider refused the submit (a permanent error)."""
    TIMED_OUT = "timed_out"
    ERROR = "error"
    """Our side could not finish the attempt (e.g. the provider kept answering 5xx)."""
    CANCELED = "canceled"


def generation_workflow_id(generation_id: str) -> str:
    """Business id of a generation's run, so a repeated start is a no-op."""
    return f"generate-{generation_id}"


def generated_video_id(generation_id: str) -> uuid.UUID:
    """The id of the video asset a generation produces: derived, so storing it is idempotent."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"reelflow:generation:{generation_id}")


def attempt_idempotency_key(generation_id: str, attempt: int) -> str:
    """The provider submit key of one attempt: the same attempt never makes a second job."""
    return f"generation-{generation_id}/attempt-{attempt}"


def ledger_key(generation_id: str, provider: str, job_id: str) -> str:
    """One ledger row per provider job, however often its result is looked at."""
    return f"generation-{generation_id}/{provider}/{job_id}"


# --- workflow contracts -------------------------------------------------------------------


class Candidate(BaseModel):
    """One provider model that may serve the request: the first choice or a fallback."""

    provider: str
    model: str
    estimated_cost_usd: float
    pool: str = Field(description="Worker pool that calls it: `media` (local) or `providers`.")


class GenerationPlan(BaseModel):
    """What `prepare_generation` decided: candidates, estimate, quota and approval."""

    generation_id: str
    duration_s: int
    aspect_ratio: str
    resolution: str
    candidates: list[Candidate]
    estimated_cost_usd: float
    approval_required: bool
    approval_reason: str | None = None
    approval_timeout_s: float
    poll_initial_s: float
    poll_max_s: float
    quota_warning: str | None = None
    first_attempt: int = 1
    """Attempt numbers go on from earlier runs (a retry), so submit keys never repeat."""
    index: bool = False
    """Start indexing the video once stored (the request's `index`, from the row)."""


class AttemptSummary(BaseModel):
    """One provider job as the workflow saw it (the `generation_attempts` row has more)."""

    attempt: int
    provider: str
    model: str
    job_id: str | None = None
    outcome: AttemptOutcome = AttemptOutcome.IN_PROGRESS
    message: str | None = None
    cost_usd: float = 0.0


class JobInFlight(BaseModel):
    """A submitted provider job being polled; carried over `continue_as_new`."""

    attempt: int
    candidate_index: int
    provider: str
    model: str
    pool: str
    job_id: str
    submitted_at: datetime
    next_poll_s: float
    polls: int = 0
    task_queue: str | None = None
    """The host queue of a host-bound job; None sends its calls to the pool's shared queue."""


class GenerationCursor(BaseModel):
    """Where a generation stands, so a continued run picks up exactly there."""

    plan: GenerationPlan
    candidate_index: int = 0
    tries_on_candidate: int = 0
    next_attempt: int = 1
    attempts: list[AttemptSummary] = Field(default_factory=list)
    job: JobInFlight | None = None
    approval: ApprovalState = ApprovalState.NOT_REQUIRED
    cost_usd: float = 0.0
    total_polls: int = 0


class GenerationInput(BaseModel):
    """Start (or, with `cursor`, continue) one generation."""

    tenant_id: str
    generation_id: str
    cursor: GenerationCursor | None = None
    """Set only by `continue_as_new`; a fresh run prepares from the database row."""


class GenerationResult(BaseModel):
    """What a finished generation produced."""

    generation_id: str
    status: GenerationStatus
    video_id: str | None = None
    provider: str | None = None
    model: str | None = None
    provider_job_id: str | None = None
    cost_usd: float = 0.0
    attempts: list[AttemptSummary] = Field(default_factory=list)
    message: str | None = None


class GenerationProgress(BaseModel):
    """Answer of the workflow's `progress` query."""

    generation_id: str
    status: GenerationStatus
    stage: str
    provider: str | None = None
    model: str | None = None
    provider_job_id: str | None = None
    attempt: int | None = None
    attempts: list[AttemptSummary] = Field(default_factory=list)
    polls: int = 0
    job_progress: float | None = None
    estimated_cost_usd: float = 0.0
    cost_usd: float = 0.0
    approval: ApprovalState = ApprovalState.NOT_REQUIRED
    quota_warning: str | None = None
    video_id: str | None = None
    error: str | None = None


class ApprovalInput(BaseModel):
    """The `approve` update: go ahead (`approve: true`) or stop (`approve: false`)."""

    approve: bool
    note: str | None = Field(default=None, max_length=500)


class ApprovalOutput(BaseModel):
    """What the decision did."""

    generation_id: str
    approval: ApprovalState


# --- activity contracts -------------------------------------------------------------------


class PrepareGenerationInput(BaseModel):
    tenant_id: str
    generation_id: str


class SubmitJobInput(BaseModel):
    """Submit one attempt; the job id is written to the database before this returns."""

    tenant_id: str
    generation_id: str
    attempt: int
    provider: str
    model: str
    idempotency_key: str


class SubmitJobOutput(BaseModel):
    job_id: str
    task_queue: str | None = None
    """Set when the job lives on one host (the local renderer): its later calls go there."""


class PollJobInput(BaseModel):
    tenant_id: str
    generation_id: str
    attempt: int
    provider: str
    model: str
    job_id: str
    run_id: str
    """Workflow id, recorded on the ledger row when the job succeeds."""


class PollJobOutput(BaseModel):
    state: str
    """``queued``, ``running``, ``succeeded``, ``failed`` or ``canceled``."""
    progress: float | None = None
    error: str | None = None
    cost_usd: float = 0.0
    """Set when the job succeeded: what the provider charges for it (ledger row written)."""

    @property
    def terminal(self) -> bool:
        return self.state in ("succeeded", "failed", "canceled")


class DownloadOutputInput(BaseModel):
    tenant_id: str
    generation_id: str
    attempt: int
    provider: str
    model: str
    job_id: str


class DownloadOutputOutput(BaseModel):
    output_key: str
    size_bytes: int


class ValidateOutputInput(BaseModel):
    tenant_id: str
    generation_id: str
    attempt: int
    output_key: str
    duration_s: int
    aspect_ratio: str
    resolution: str


class CheckResult(BaseModel):
    """One validation check (`reelflow.media.validation.Check`)."""

    name: str
    passed: bool
    expected: str
    actual: str
    message: str


class ValidationResult(BaseModel):
    """A validation report (`reelflow.media.validation.ValidationReport`)."""

    passed: bool
    checks: list[CheckResult] = Field(default_factory=list)

    def summary(self) -> str:
        """``"passed"`` or the failed checks' messages, one line."""
        if self.passed:
            return "passed"
        return "; ".join(f"{c.name}: {c.message}" for c in self.checks if not c.passed)


class VideoFacts(BaseModel):
    """What ffprobe found in a passing video, for its asset row."""

    duration_s: float
    width: int
    height: int
    has_audio: bool
    container: str
    video_codec: str
    audio_codec: str | None
    size_bytes: int


class ValidateOutputOutput(BaseModel):
    report: ValidationResult
    thumbnail_key: str | None = None
    """Set when the report passed: the first non-black frame, stored next to the video."""
    facts: VideoFacts | None = None
    """Set when the report passed."""


class CancelJobInput(BaseModel):
    tenant_id: str
    generation_id: str
    attempt: int
    provider: str
    model: str
    job_id: str


class CancelJobOutput(BaseModel):
    canceled: bool


class FinalizeGenerationInput(BaseModel):
    """Store the passing attempt as a video asset and settle cost and quota."""

    tenant_id: str
    generation_id: str
    attempt: int
    output_key: str
    thumbnail_key: str
    facts: VideoFacts
    run_id: str


class FinalizeGenerationOutput(BaseModel):
    video_id: str
    cost_usd: float


class ReleaseGenerationInput(BaseModel):
    """End a generation without a video: record why and give the quota back."""

    tenant_id: str
    generation_id: str
    status: GenerationStatus
    error_code: str
    error_message: str
    approval: ApprovalState | None = None


class ReleaseGenerationOutput(BaseModel):
    cost_usd: float
    """What the generation's provider jobs cost anyway (jobs that delivered a file)."""


# --- HTTP API bodies ----------------------------------------------------------------------


class GenerationRequest(BaseModel):
    """Ask for a video from a prompt."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    provider: str = Field(
        default=AUTO_PROVIDER,
        min_length=1,
        max_length=40,
        description='A provider ("local", "sora", ...) or "auto" (best quality, then price).',
    )
    duration_s: int = Field(strict=True, examples=[8], description="Whole seconds.")
    aspect_ratio: str = Field(max_length=10, examples=["9:16"])
    resolution: str = Field(max_length=10, examples=["720p"])
    max_cost_usd: float | None = Field(
        default=None, ge=0, description="Above this estimate the run waits for approval."
    )
    improved_from_video_id: uuid.UUID | None = None
    index: bool = Field(
        default=False,
        description=(
            "Transcribe and index the video when it is stored, so search and chat find it "
            "(its ingest run is `ingest-<video_id>`). Indexing never fails the generation."
        ),
    )

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        stripped = value.strip()
        if not stripped:
            raise ValueError("must not be empty")
        return stripped

    @field_validator("provider")
    @classmethod
    def _provider(cls, value: str) -> str:
        return value.strip().lower()


class CandidateEstimate(BaseModel):
    """A provider model that could serve the request, in the order it would be tried."""

    provider: str
    model: str
    estimated_cost_usd: float


class QuotaView(BaseModel):
    """The tenant's generation quota this month (video-seconds) and dollar budget."""

    plan: str
    period: str
    limit_seconds: int
    used_seconds: int
    reserved_seconds: int
    budget_usd: float
    spent_usd: float
    reserved_usd: float


class GenerationEstimate(BaseModel):
    """What a request would cost and whether it would need approval; nothing is reserved."""

    provider: str
    model: str
    estimated_cost_usd: float
    candidates: list[CandidateEstimate]
    approval_required: bool
    approval_reason: str | None = None
    quota: QuotaView
    quota_warning: str | None = None
    quota_exceeded: bool = False


class GenerationAccepted(BaseModel):
    """A generation whose run has started."""

    generation_id: uuid.UUID
    workflow_id: str
    estimated_cost_usd: float
    status: GenerationStatus
    provider: str
    model: str
    approval_required: bool
    quota_warning: str | None = None


class AttemptView(BaseModel):
    """One provider job of a generation."""

    attempt: int
    provider: str
    model: str
    provider_job_id: str | None
    job_state: str
    outcome: AttemptOutcome
    error: str | None
    validation: ValidationResult | None
    cost_usd: float
    created_at: datetime
    finished_at: datetime | None


class GenerationError(BaseModel):
    code: str
    message: str


class GenerationDetail(BaseModel):
    """A generation request, its attempts and its result."""

    generation_id: uuid.UUID
    workflow_id: str | None
    status: GenerationStatus
    prompt: str
    requested_provider: str
    provider: str | None
    model: str | None
    provider_job_id: str | None
    duration_s: int
    aspect_ratio: str
    resolution: str
    max_cost_usd: float | None
    estimated_cost_usd: float
    cost_usd: float
    approval: ApprovalState
    attempts: list[AttemptView]
    validation: ValidationResult | None
    video_id: uuid.UUID | None
    improved_from_video_id: uuid.UUID | None
    error: GenerationError | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class ApprovalRequest(BaseModel):
    """`POST /v1/generations/{id}/approve`: approve (default) or reject."""

    approve: bool = True
    note: str | None = Field(default=None, max_length=500)


class GenerationAction(BaseModel):
    """An approval or cancel request that the run accepted."""

    generation_id: uuid.UUID
    status: str
    approval: ApprovalState | None = None
