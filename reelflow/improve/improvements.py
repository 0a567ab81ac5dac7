"""Improvement runs: what an original is made of, the improved prompt, and the run's row.

* **The original's content** (`original_content`): the prompt of the generation that made
  it; else the discover script it was produced from; else (an upload, an import) what it
  says (its transcript) and, when the discover pipeline analyzed it, how it is built. With
  none of them the run fails with `improvement_source_missing`, naming what it looked for.
* **The writers** (`PromptWriter`): a chat provider answering in a schema through
  `reelflow.chat.structured_llm` (`ModelPromptWriter`), or `TemplatePromptWriter`, which
  needs no model and says it is a template. Every writer keeps the strengths and answers
  each weakness with a recommendation, and lists what it kept and changed (`PromptChange`).
* **The row** (`create_improvement`, `start_improvement`, `improvement_detail`): the API
  and the CLI write it and start the run by name, importing no workflow or provider SDK.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, Field
from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from reelflow.chat.structured import TokenUsage
from reelflow.chat.structured_llm import (
    SMALL_MODELS,
    AnswerFormat,
    StructuredAnswerFailed,
    StructuredChat,
    build_structured_chat,
)
from reelflow.core.errors import DomainError
from schemas import search_attributes as sa
from schemas.discover_tables import Analysis, Script
from schemas.failures import FailureCode
from schemas.generation import AUTO_PROVIDER, ApprovalState, GenerationStatus
from schemas.generation_tables import Generation
from schemas.improve import Insights
from schemas.improve_activities import IMPROVE_WORKFLOW
from schemas.improve_tables import VideoPerformance
from schemas.improvement import (
    MAX_IMPROVED_PROMPT_CHARS,
    TERMINAL_IMPROVEMENT_STATUSES,
    ChangeKind,
    ImproveInput,
    ImprovementDetail,
    ImprovementError,
    ImprovementStatus,
    PromptChange,
    SourceKind,
    improvement_workflow_id,
)
from schemas.improvement_run_tables import Improvement
from schemas.queues import WORKFLOW_TASK_QUEUE
from schemas.tables import LedgerEntry, TranscriptSegment, Video

if TYPE_CHECKING:
    from reelflow.core.settings import Settings

TEMPLATE_WRITER = "offline-template"
DEFAULT_WRITER_MODELS: dict[str, str] = dict(SMALL_MODELS)
"""Per provider, when `IMPROVE_WRITER_MODEL` is empty: rewriting one prompt needs no large model."""

MAX_SOURCE_CHARS = 6000
"""The original's text sent to a writer; a long transcript is cut (its start holds the hook)."""
MAX_OUTPUT_TOKENS = 2048
TEMPERATURE = 0.6


# --- the original ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OriginalContent:
    """What the original video was made from, as the writer reads it."""

    kind: SourceKind
    text: str
    """The prompt, the script as text, or the transcript (with the analysis' structure)."""
    title: str


def _script_text(content: dict[str, Any]) -> str:
    """A discover script (`ScriptContent`) as one prompt-like text."""
    parts: list[str] = []
    if hook := content.get("hook"):
        parts.append(f"Hook: {hook}")
    for scene in content.get("scenes") or []:
        if not isinstance(scene, dict):
            continue
        line = scene.get("direction") or scene.get("description") or ""
        if voiceover := scene.get("voiceover"):
            line = f"{line} Voiceover: {voiceover}".strip()
        if text := scene.get("on_screen_text"):
            line = f"{line} On screen: {text}".strip()
        if line:
            start, end = scene.get("start_s"), scene.get("end_s")
            timing = (
                f"[{start:g}–{end:g} s] "
                if isinstance(start, int | float) and isinstance(end, int | float)
                else ""
            )
            parts.append(f"{timing}{line}")
    if cta := content.get("call_to_action"):
        parts.append(f"Call to action: {cta}")
    return "\n".join(parts)


def _analysis_text(analysis: dict[str, Any]) -> str:
    """The structure a discover analysis found: hook, scenes, patterns, triggers."""
    parts: list[str] = []
    hook = analysis.get("hook")
    if isinstance(hook, dict) and (hook.get("text") or hook.get("technique")):
        parts.append(
            f"Hook ({hook.get('technique') or 'technique unknown'}): {hook.get('text') or ''}"
        )
    for scene in analysis.get("scenes") or []:
        if isinstance(scene, dict) and scene.get("description"):
            parts.append(f"Scene: {scene['description']}")
    if patterns := analysis.get("viral_patterns"):
        parts.append("Patterns: " + ", ".join(str(p) for p in patterns))
    if triggers := analysis.get("emotional_triggers"):
        parts.append("Emotional triggers: " + ", ".join(str(t) for t in triggers))
    if cta := analysis.get("call_to_action"):
        parts.append(f"Call to action: {cta}")
    return "\n".join(parts)


async def original_content(
    session: AsyncSession, *, tenant_id: uuid.UUID, video: Video
) -> OriginalContent:
    """The best description of what `video` was made from (see the module's docstring).

    Raises:
        DomainError: `improvement_source_missing` naming the sources looked for.
    """
    prompt = await session.scalar(
        select(Generation.prompt)
        .where(Generation.tenant_id == tenant_id, Generation.video_id == video.id)
        .order_by(Generation.created_at.desc())
        .limit(1)
    )
    if prompt:
        return OriginalContent(SourceKind.PROMPT, prompt, video.title)
    script = await session.scalar(
        select(Script)
        .where(Script.tenant_id == tenant_id, Script.produced_video_id == video.id)
        .order_by(Script.version.desc())
        .limit(1)
    )
    if script is not None and (text := _script_text(script.content)):
        return OriginalContent(SourceKind.SCRIPT, text, script.title or video.title)
    lines = (
        await session.scalars(
            select(TranscriptSegment.text)
            .where(TranscriptSegment.video_id == video.id)
            .order_by(TranscriptSegment.window_index, TranscriptSegment.seq)
        )
    ).all()
    transcript = " ".join(line.strip() for line in lines if line.strip())
    analysis = await session.scalar(
        select(Analysis.analysis)
        .where(Analysis.tenant_id == tenant_id, Analysis.video_id == video.id)
        .order_by(Analysis.created_at.desc())
        .limit(1)
    )
    structure = _analysis_text(analysis) if analysis else ""
    if transcript or structure:
        parts = []
        if structure:
            parts.append(f"How the video is built:\n{structure}")
        if transcript:
            parts.append(f"What the video says:\n{transcript[:MAX_SOURCE_CHARS]}")
        return OriginalContent(SourceKind.TRANSCRIPT, "\n\n".join(parts), video.title)
    raise DomainError(
        FailureCode.IMPROVEMENT_SOURCE_MISSING,
        f"video {video.id} has nothing to improve from: no generation prompt, no discover "
        "script that produced it, no transcript (ingest it first) and no analysis",
    )


# --- the writers -----------------------------------------------------------------------------


class PromptAnswer(BaseModel):
    """What a writer returns: the prompt for the generation and the decisions behind it."""

    prompt: str = Field(description="The improved video prompt, at most 2000 characters.")
    changes: list[PromptChange] = Field(default_factory=list)


@dataclass(frozen=True)
class WrittenPrompt:
    """An improved prompt, who wrote it and the tokens it cost (None: free)."""

    prompt: str
    changes: list[PromptChange]
    writer: str
    is_template: bool
    model: str
    usage: TokenUsage | None


class PromptWriter(Protocol):
    """Writes the improved prompt of a video from its content and insights."""

    def write(self, original: OriginalContent, insights: Insights) -> WrittenPrompt:
        """Write (blocking; call from an executor thread).

        Raises:
            DomainError: `ANALYSIS_INVALID` (the answer never fit the schema),
                `CONTENT_BLOCKED` (the provider refused).
            ProviderTransientError / ProviderPermanentError: classified provider failures.
        """
        ...


SYSTEM_PROMPT = (
    "You improve short-form videos from their performance. You get what the original video "
    "was made from (its generation prompt, its script, or its transcript and structure) and "
    "insights from its metrics: strengths, weaknesses, recommendations and suggestions. "
    "Write one prompt for a text-to-video model that makes a new version of the same video: "
    "keep every strength, address every weakness with a concrete change (following the "
    "recommendations), and keep the subject and format. At most 2000 characters, one "
    "paragraph of visual direction a video model can follow. List each decision in "
    "`changes`: kind kept/changed/added, what, and the insight it comes from. Answer only in "
    "the given schema."
)


def build_user_prompt(original: OriginalContent, insights: Insights) -> str:
    """The original and the insights, as the writer reads them."""
    source = original.text[:MAX_SOURCE_CHARS]
    return "\n\n".join(
        [
            f"Original video title: {original.title}",
            f"The original was made from its {original.kind.value}:\n{source}",
            "Insights from its performance:\n"
            + json.dumps(insights.model_dump(mode="json"), ensure_ascii=False),
            "Write the improved prompt.",
        ]
    )


def _fit(prompt: str) -> str:
    """At most the generation prompt limit, cut at a sentence or word boundary."""
    text = " ".join(prompt.split())
    if len(text) <= MAX_IMPROVED_PROMPT_CHARS:
        return text
    cut = text[: MAX_IMPROVED_PROMPT_CHARS - 1]
    boundary = max(cut.rfind(". "), cut.rfind(" "))
    return (cut[: boundary + 1] if boundary > MAX_IMPROVED_PROMPT_CHARS // 2 else cut).rstrip()


class TemplatePromptWriter:
    """An improved prompt with no model: the original, then what to keep and what to change.

    It says it is a template (`is_template=True`, writer `offline-template`): each strength
    becomes a "keep" line, each weakness is paired with a recommendation (in order; a
    weakness without one gets "fix: <weakness>"), and the first next-video suggestion sets
    the focus.
    """

    provider = "offline"
    model = TEMPLATE_WRITER

    def write(self, original: OriginalContent, insights: Insights) -> WrittenPrompt:
        """See :meth:`PromptWriter.write`; never fails and costs nothing."""
        changes: list[PromptChange] = []
        keep = [s.strip().rstrip(".") for s in insights.strengths if s.strip()]
        weaknesses = [w.strip().rstrip(".") for w in insights.weaknesses if w.strip()]
        recommendations = [r.strip().rstrip(".") for r in insights.recommendations if r.strip()]
        for strength in keep:
            changes.append(PromptChange(kind=ChangeKind.KEPT, what=strength, because="a strength"))
        fixes: list[str] = []
        for index, weakness in enumerate(weaknesses):
            fix = recommendations[index] if index < len(recommendations) else f"fix: {weakness}"
            fixes.append(fix)
            changes.append(
                PromptChange(kind=ChangeKind.CHANGED, what=fix, because=f"weakness: {weakness}")
            )
        for extra in recommendations[len(weaknesses) :]:
            fixes.append(extra)
            changes.append(PromptChange(kind=ChangeKind.ADDED, what=extra, because="recommended"))
        focus = next((s.strip() for s in insights.next_video_suggestions if s.strip()), None)
        if focus:
            changes.append(
                PromptChange(kind=ChangeKind.ADDED, what=focus, because="next-video suggestion")
            )
        directions = []
        if keep:
            directions.append("Keep what worked: " + "; ".join(keep) + ".")
        if fixes:
            directions.append("Improve: " + "; ".join(fixes) + ".")
        if focus:
            directions.append(f"Focus: {focus.rstrip('.')}.")
        # The directions go first: cutting a long original must not cut what changes.
        base = " ".join(original.text.split())
        head = " ".join(directions)
        room = MAX_IMPROVED_PROMPT_CHARS - len(head) - len("Based on: ") - 1
        prompt = f"{head} Based on: {base[: max(room, 0)]}" if head else base
        return WrittenPrompt(
            prompt=_fit(prompt),
            changes=changes,
            writer=TEMPLATE_WRITER,
            is_template=True,
            model=TEMPLATE_WRITER,
            usage=None,
        )


WritingFailed = StructuredAnswerFailed
"""A domain failure after tokens were billed: `usage` says how many, for the ledger."""


def _unusable(answer: PromptAnswer) -> str | None:
    return None if answer.prompt.strip() else "the answer's prompt is empty"


PROMPT_FORMAT = AnswerFormat(
    schema=PromptAnswer,
    name="write_prompt",
    what="the prompt",
    task="write this prompt",
    subject="this prompt",
    usable=_unusable,
)


class ModelPromptWriter:
    """A chat model writes the improved prompt in `PromptAnswer`'s schema (any provider)."""

    def __init__(self, chat: StructuredChat) -> None:
        self._chat = chat
        self.provider = chat.provider
        self.model = chat.model

    def write(self, original: OriginalContent, insights: Insights) -> WrittenPrompt:
        """See :meth:`PromptWriter.write`."""
        written = self._chat.ask(
            SYSTEM_PROMPT,
            build_user_prompt(original, insights),
            PROMPT_FORMAT,
            max_tokens=MAX_OUTPUT_TOKENS,
            temperature=TEMPERATURE,
        )
        return WrittenPrompt(
            prompt=_fit(written.answer.prompt),
            changes=written.answer.changes,
            writer=f"{self.provider}/{self.model}",
            is_template=False,
            model=written.model,
            usage=written.usage,
        )


def build_prompt_writer(settings: Settings) -> PromptWriter:
    """The writer of the provider that explains the numbers (`INSIGHTS_PROVIDER`).

    One setting for both: the deployment that can afford a model for insights uses it to
    act on them too, and `local` (no network) gets the template. The model is
    `INSIGHTS_MODEL`, or the provider's default (`DEFAULT_WRITER_MODELS`). Build it once
    per worker process; only the chosen provider's SDK is imported.

    Raises:
        SettingsError: a provider is chosen without its API key.
    """
    provider = settings.insights_provider
    if provider == "local":
        return TemplatePromptWriter()
    model = settings.insights_model or DEFAULT_WRITER_MODELS[provider]
    return ModelPromptWriter(
        build_structured_chat(settings, provider, model, chosen_by="INSIGHTS_PROVIDER")
    )


def writer_provider(writer: str) -> str:
    """`gemini/gemini-2.5-flash` → `gemini`: the provider column prices are keyed by."""
    return writer.split("/", 1)[0]


# --- the row and the run ---------------------------------------------------------------------


async def get_improvement(
    session: AsyncSession, tenant_id: uuid.UUID, improvement_id: uuid.UUID
) -> Improvement | None:
    """The tenant's improvement, or None when it does not exist or is someone else's."""
    return await session.scalar(
        select(Improvement).where(
            Improvement.id == improvement_id, Improvement.tenant_id == tenant_id
        )
    )


async def default_provider(session: AsyncSession, *, tenant_id: uuid.UUID, video: Video) -> str:
    """The provider that made the original (a new version looks like the old), else `auto`."""
    provider = await session.scalar(
        select(Generation.provider)
        .where(Generation.tenant_id == tenant_id, Generation.video_id == video.id)
        .order_by(Generation.created_at.desc())
        .limit(1)
    )
    return provider or AUTO_PROVIDER


async def create_improvement(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    video: Video,
    provider: str,
    max_cost_usd: Decimal | None,
    approve_over_budget: bool,
) -> Improvement:
    """Write a queued improvement of `video` (the caller commits, then starts its run)."""
    improvement_id = uuid.uuid4()
    row = Improvement(
        id=improvement_id,
        tenant_id=tenant_id,
        video_id=video.id,
        status=ImprovementStatus.QUEUED.value,
        iteration=(video.improvement_iteration or 0) + 1,
        requested_provider=provider,
        max_cost_usd=max_cost_usd,
        approve_over_budget=approve_over_budget,
        approval=ApprovalState.NOT_REQUIRED.value,
        workflow_id=improvement_workflow_id(improvement_id),
    )
    session.add(row)
    await session.flush()
    return row


class ImprovementRefused(Exception):
    """The video cannot be improved now; `code` says why (the API answers 409)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def request_improvement(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    video_id: uuid.UUID,
    provider: str | None,
    max_cost_usd: Decimal | None,
    approve_over_budget: bool,
) -> Improvement:
    """Check that `video_id` can be improved now and write its queued improvement.

    The caller commits, then starts the run (`start_improvement`).

    Raises:
        DomainError: `VIDEO_NOT_FOUND` (also another tenant's video).
        ImprovementRefused: `no_insights` (no metrics yet: nothing to improve on),
            `improvement_running` (another improvement of the video is still running).
    """
    video = await session.scalar(
        select(Video).where(Video.id == video_id, Video.tenant_id == tenant_id)
    )
    if video is None:
        raise DomainError(FailureCode.VIDEO_NOT_FOUND, f"no video with id {video_id}")
    has_metrics = await session.scalar(
        select(
            exists().where(
                VideoPerformance.video_id == video.id, VideoPerformance.tenant_id == tenant_id
            )
        )
    )
    if not has_metrics:
        raise ImprovementRefused(
            FailureCode.NO_INSIGHTS.value,
            f"video {video.id} has no performance metrics yet: add some "
            "(POST /v1/videos/{id}/performance) before improving it",
        )
    running = await session.scalar(
        select(Improvement.id)
        .where(
            Improvement.tenant_id == tenant_id,
            Improvement.video_id == video.id,
            Improvement.status.not_in([s.value for s in TERMINAL_IMPROVEMENT_STATUSES]),
        )
        .limit(1)
    )
    if running is not None:
        raise ImprovementRefused(
            "improvement_running",
            f"improvement {running} of video {video.id} is still running; follow it, or "
            "cancel it first",
        )
    return await create_improvement(
        session,
        tenant_id=tenant_id,
        video=video,
        provider=provider or await default_provider(session, tenant_id=tenant_id, video=video),
        max_cost_usd=max_cost_usd,
        approve_over_budget=approve_over_budget,
    )


async def mark_start_failed(session: AsyncSession, row: Improvement) -> None:
    """No run exists for the row (the engine refused it): say so instead of `queued`."""
    row.status = ImprovementStatus.FAILED.value
    row.error_code = "start_failed"
    row.error_message = "the improvement run could not be started; request it again"
    row.completed_at = datetime.now(UTC)
    await session.commit()


def improve_search_attributes(tenant_id: str, video_id: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.TENANT_ID, tenant_id),
            SearchAttributePair(sa.VIDEO_ID, video_id),
            SearchAttributePair(sa.PIPELINE, IMPROVE_WORKFLOW.pipeline),
            SearchAttributePair(sa.STAGE, ImprovementStatus.QUEUED.value),
            SearchAttributePair(sa.COST_USD, 0.0),
        ]
    )


async def start_improvement(
    client: Client,
    *,
    tenant_id: uuid.UUID,
    improvement: Improvement,
    task_queue: str = WORKFLOW_TASK_QUEUE,
) -> str:
    """Start the run of an improvement whose row the caller has committed.

    A second call while it runs joins the running one.

    Returns:
        The workflow id, `improve-<improvement_id>`.
    """
    workflow_id = improvement_workflow_id(improvement.id)
    await client.start_workflow(
        IMPROVE_WORKFLOW.name,
        ImproveInput(
            tenant_id=str(tenant_id),
            improvement_id=str(improvement.id),
            video_id=str(improvement.video_id),
            approve_over_budget=improvement.approve_over_budget,
        ),
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=improve_search_attributes(str(tenant_id), str(improvement.video_id)),
    )
    return workflow_id


async def load_detail(session: AsyncSession, row: Improvement) -> ImprovementDetail:
    """`improvement_detail` with the child generation and the run's cost read from the
    database: the writer's tokens (ledger rows of the run) plus what the generation cost."""
    generation = (
        await session.scalar(
            select(Generation).where(
                Generation.id == row.generation_id, Generation.tenant_id == row.tenant_id
            )
        )
        if row.generation_id is not None
        else None
    )
    writing = await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.cost_usd), 0)).where(
            LedgerEntry.tenant_id == row.tenant_id, LedgerEntry.run_id == row.workflow_id
        )
    )
    cost = Decimal(writing or 0) + (generation.cost_usd or Decimal(0) if generation else 0)
    return improvement_detail(row, generation, cost_usd=float(cost))


def improvement_detail(
    row: Improvement, generation: Generation | None, *, cost_usd: float = 0.0
) -> ImprovementDetail:
    """The API view of an improvement, with its child generation's state.

    While the generation waits for approval the improvement says `awaiting_approval`: that
    is what the person has to act on (`POST /v1/improvements/{id}/approve`).
    """
    status = ImprovementStatus(row.status)
    generation_status = GenerationStatus(generation.status) if generation is not None else None
    if (
        status == ImprovementStatus.GENERATING
        and generation_status == GenerationStatus.AWAITING_APPROVAL
    ):
        status = ImprovementStatus.AWAITING_APPROVAL
    error = (
        ImprovementError(code=row.error_code, message=row.error_message or row.error_code)
        if row.error_code
        else None
    )
    return ImprovementDetail(
        improvement_id=row.id,
        workflow_id=row.workflow_id,
        video_id=row.video_id,
        status=status,
        iteration=row.iteration,
        requested_provider=row.requested_provider,
        max_cost_usd=None if row.max_cost_usd is None else float(row.max_cost_usd),
        approve_over_budget=row.approve_over_budget,
        source_kind=SourceKind(row.source_kind) if row.source_kind else None,
        original_prompt=row.original_prompt,
        improved_prompt=row.improved_prompt,
        changes=[PromptChange.model_validate(c) for c in row.changes or []],
        writer=row.writer,
        insights=Insights.model_validate(row.insights) if row.insights else None,
        generation_id=row.generation_id,
        generation_status=generation_status,
        approval=ApprovalState(generation.approval) if generation is not None else None,
        estimated_cost_usd=(
            float(generation.estimated_cost_usd) if generation is not None else None
        ),
        new_video_id=row.new_video_id,
        cost_usd=cost_usd,
        error=error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        completed_at=row.completed_at,
    )
