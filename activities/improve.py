"""Activities of the improvement run (providers pool): insights, the prompt, admission, link.

Each step writes what it did to the `improvements` row before it returns, so
`GET /v1/improvements/{id}` shows the truth while a worker is down, and a retried step finds
what an earlier try did: a written prompt is never written (and billed) twice, an admitted
generation is found again by its derived id.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities._support import run_blocking
from reelflow.chat.structured import TokenUsage
from reelflow.core.db import SessionFactory
from reelflow.core.errors import DomainError
from reelflow.core.ledger import Usage, record_usage
from reelflow.core.settings import Settings
from reelflow.generation import quotas
from reelflow.generation.capabilities import ModelCapabilities
from reelflow.generation.routing import (
    GenerationSpec,
    ProviderRegistry,
    admit_generation,
    plan_route,
)
from reelflow.improve.analysts import InsightAnalyst
from reelflow.improve.improvements import (
    PromptWriter,
    WritingFailed,
    original_content,
    writer_provider,
)
from reelflow.improve.insights import InsightsRateLimited, video_insights
from schemas.failures import FailureCode
from schemas.generation import (
    AUTO_PROVIDER,
    ApprovalInput,
    ApprovalOutput,
    generation_workflow_id,
)
from schemas.generation_activities import APPROVE_UPDATE
from schemas.generation_tables import Generation
from schemas.improve import Insights
from schemas.improve_activities import (
    ADMIT_IMPROVEMENT_GENERATION,
    FINISH_IMPROVEMENT,
    LINK_IMPROVED_VERSION,
    LOAD_IMPROVEMENT_INSIGHTS,
    PRE_APPROVE_GENERATION,
    WRITE_IMPROVED_PROMPT,
)
from schemas.improvement import (
    TERMINAL_IMPROVEMENT_STATUSES,
    AdmitGenerationOutput,
    FinishImprovementInput,
    FinishImprovementOutput,
    ImprovementStatus,
    ImprovementStepInput,
    LinkVersionInput,
    LinkVersionOutput,
    LoadInsightsOutput,
    PreApproveInput,
    PreApproveOutput,
    WritePromptOutput,
    improvement_generation_id,
)
from schemas.improvement_run_tables import Improvement
from schemas.tables import Tenant, Video

logger = logging.getLogger(__name__)

T = TypeVar("T")

CHAT_OPERATIONS = ("chat_input", "chat_output")
DEFAULT_ASPECT_RATIO = "9:16"
"""Short-form is vertical: a video whose frame size is unknown is made vertical."""
DEFAULT_RESOLUTION = "720p"
_TITLE_CHARS = 300


def not_found(improvement_id: str) -> DomainError:
    return DomainError(
        FailureCode.IMPROVEMENT_NOT_FOUND, f"improvement {improvement_id} does not exist"
    )


async def _improvement(
    session: AsyncSession, tenant_id: str, improvement_id: str, *, lock: bool = False
) -> Improvement:
    query = select(Improvement).where(
        Improvement.id == uuid.UUID(improvement_id), Improvement.tenant_id == uuid.UUID(tenant_id)
    )
    if lock:
        query = query.with_for_update()
    row = await session.scalar(query)
    if row is None:
        raise not_found(improvement_id)
    return row


async def _video(session: AsyncSession, tenant_id: uuid.UUID, video_id: uuid.UUID) -> Video:
    video = await session.scalar(
        select(Video).where(Video.id == video_id, Video.tenant_id == tenant_id)
    )
    if video is None:
        raise DomainError(FailureCode.VIDEO_NOT_FOUND, f"video {video_id} does not exist")
    return video


def _aspect_ratio(video: Video) -> str:
    if not video.width or not video.height:
        return DEFAULT_ASPECT_RATIO
    ratio = video.width / video.height
    if ratio < 0.8:
        return "9:16"
    if ratio > 1.25:
        return "16:9"
    return "1:1"


def _fitting_spec(
    registry: ProviderRegistry, provider: str, video: Video, max_cost: Decimal | None
) -> GenerationSpec:
    """The request closest to an original no generation made (an upload, an import).

    Its aspect ratio from its frame, the duration a model of `provider` accepts nearest to
    its length, 720p; values no such model accepts fall back to the models' first ones.
    """
    models: list[ModelCapabilities] = [
        caps
        for caps in registry.capabilities
        if provider == AUTO_PROVIDER or caps.provider == provider
    ] or list(registry.capabilities)
    aspects = [a for caps in models for a in caps.aspect_ratios]
    aspect = _aspect_ratio(video)
    if aspect not in aspects and aspects:
        aspect = DEFAULT_ASPECT_RATIO if DEFAULT_ASPECT_RATIO in aspects else aspects[0]
    durations = sorted(
        {d for caps in models if aspect in caps.aspect_ratios for d in caps.durations_s}
    )
    length = video.duration_s or 8.0
    duration = min(durations, key=lambda d: (abs(d - length), d)) if durations else 8
    resolutions = [
        r
        for caps in models
        if aspect in caps.aspect_ratios and duration in caps.durations_s
        for r in caps.resolutions
    ]
    resolution = (
        DEFAULT_RESOLUTION
        if DEFAULT_RESOLUTION in resolutions or not resolutions
        else resolutions[0]
    )
    return GenerationSpec(
        provider=provider,
        duration_s=duration,
        aspect_ratio=aspect,
        resolution=resolution,
        max_cost_usd=max_cost,
    )


async def _record_tokens(
    session: AsyncSession,
    *,
    key: str,
    tenant_id: uuid.UUID,
    provider: str,
    model: str,
    usage: TokenUsage,
    run_id: str | None,
    video_id: uuid.UUID,
) -> Decimal:
    """One ledger row per direction (input, output) of a model call; the dollars recorded."""
    cost = Decimal(0)
    for operation, units in zip(
        CHAT_OPERATIONS, (usage.input_tokens, usage.output_tokens), strict=True
    ):
        cost += await record_usage(
            session,
            Usage(
                idempotency_key=f"{key}-{operation}",
                tenant_id=tenant_id,
                step="improve_prompt",
                provider=provider,
                operation=operation,
                model=model,
                units=Decimal(units),
                run_id=run_id,
                video_id=video_id,
            ),
        )
    return cost


class ImproveActivities:
    """The improvement run's steps; the analyst and the writer are built on first use."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        settings: Settings,
        registry: ProviderRegistry,
        analyst: Callable[[], InsightAnalyst],
        writer: Callable[[], PromptWriter],
        executor: Executor,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._registry = registry
        self._analyst = analyst
        self._writer = writer
        self._executor = executor

    async def _run_in_thread(self, fn: Callable[[], T]) -> T:
        return await run_blocking(self._executor, fn, heartbeat_details="insights")

    async def _set_status(self, input: ImprovementStepInput, status: ImprovementStatus) -> None:
        async with self._sessions.begin() as session:
            row = await _improvement(session, input.tenant_id, input.improvement_id, lock=True)
            if ImprovementStatus(row.status) not in TERMINAL_IMPROVEMENT_STATUSES:
                row.status = status.value

    @activity.defn(name=LOAD_IMPROVEMENT_INSIGHTS.name)
    async def load_improvement_insights(self, input: ImprovementStepInput) -> LoadInsightsOutput:
        """The video's insights (cached, else made now), snapshotted on the improvement.

        Raises:
            ApplicationError: `no_insights` (the video has no metrics),
                `insights_rate_limited` (the tenant's fresh insights are used up this hour),
                `improvement_not_found`; provider failures as classified.
        """
        await self._set_status(input, ImprovementStatus.LOADING_INSIGHTS)
        async with self._sessions() as session:
            row = await _improvement(session, input.tenant_id, input.improvement_id)
            video_id = row.video_id
        try:
            answer = await video_insights(
                self._sessions,
                tenant_id=uuid.UUID(input.tenant_id),
                video_id=video_id,
                refresh=False,
                analyst=self._analyst(),
                settings=self._settings,
                now=datetime.now(UTC),
                run_in_thread=self._run_in_thread,
            )
        except InsightsRateLimited as exc:
            raise DomainError(
                FailureCode.INSIGHTS_RATE_LIMITED,
                f"{exc}; the improvement can run again once insights can be made",
            ) from None
        if answer.insights is None:
            raise DomainError(
                FailureCode.NO_INSIGHTS,
                answer.message
                or f"video {video_id} has no performance metrics yet: add some, then improve it",
            )
        insights = answer.insights
        async with self._sessions.begin() as session:
            row = await _improvement(session, input.tenant_id, input.improvement_id, lock=True)
            row.insights = insights.model_dump(mode="json")
        return LoadInsightsOutput(
            analyst=answer.analyst,
            statistical=answer.statistical,
            cached=answer.cached,
            strengths=len(insights.strengths),
            weaknesses=len(insights.weaknesses),
        )

    @activity.defn(name=WRITE_IMPROVED_PROMPT.name)
    async def write_improved_prompt(self, input: ImprovementStepInput) -> WritePromptOutput:
        """The improved prompt from the original's content and the insights on the row.

        A prompt already on the row (an earlier try wrote it) is returned as it is.

        Raises:
            ApplicationError: `improvement_source_missing` (an upload with no transcript or
                analysis), `analysis_invalid` / `content_blocked` from a provider writer.
        """
        await self._set_status(input, ImprovementStatus.WRITING)
        tenant_id = uuid.UUID(input.tenant_id)
        async with self._sessions() as session:
            row = await _improvement(session, input.tenant_id, input.improvement_id)
            if row.improved_prompt is not None and row.source_kind is not None:
                return WritePromptOutput(
                    writer=row.writer or "",
                    is_template=(row.writer or "").startswith("offline"),
                    source_kind=row.source_kind,
                    prompt_chars=len(row.improved_prompt),
                )
            if row.insights is None:
                raise DomainError(
                    FailureCode.NO_INSIGHTS, "the improvement's insights were not loaded"
                )
            insights = Insights.model_validate(row.insights)
            if not (
                insights.strengths
                or insights.weaknesses
                or insights.recommendations
                or insights.next_video_suggestions
            ):
                # A new version written from nothing would only copy the original, at a cost.
                raise DomainError(
                    FailureCode.NO_INSIGHTS,
                    "the insights name nothing to keep, fix or try yet; add more metrics "
                    "(other platforms, later snapshots) and improve the video again",
                )
            video = await _video(session, tenant_id, row.video_id)
            original = await original_content(session, tenant_id=tenant_id, video=video)
            video_id = video.id
        writer = self._writer()
        run_id = activity.info().workflow_id
        key = f"improve-{input.improvement_id}-prompt"
        try:
            written = await run_blocking(
                self._executor,
                lambda: writer.write(original, insights),
                heartbeat_details="write_prompt",
            )
        except WritingFailed as failed:
            if failed.usage is not None:
                async with self._sessions.begin() as session:
                    await _record_tokens(
                        session,
                        key=f"{key}-failed-{activity.info().attempt}",
                        tenant_id=tenant_id,
                        provider=getattr(writer, "provider", "unknown"),
                        model=getattr(writer, "model", "unknown"),
                        usage=failed.usage,
                        run_id=run_id,
                        video_id=video_id,
                    )
            raise
        cost = Decimal(0)
        async with self._sessions.begin() as session:
            if written.usage is not None:
                cost = await _record_tokens(
                    session,
                    key=key,
                    tenant_id=tenant_id,
                    provider=writer_provider(written.writer),
                    model=written.model,
                    usage=written.usage,
                    run_id=run_id,
                    video_id=video_id,
                )
            row = await _improvement(session, input.tenant_id, input.improvement_id, lock=True)
            row.source_kind = original.kind.value
            row.original_prompt = original.text
            row.improved_prompt = written.prompt
            row.changes = [change.model_dump(mode="json") for change in written.changes]
            row.writer = written.writer
        return WritePromptOutput(
            writer=written.writer,
            is_template=written.is_template,
            source_kind=original.kind,
            prompt_chars=len(written.prompt),
            cost_usd=float(cost),
        )

    @activity.defn(name=ADMIT_IMPROVEMENT_GENERATION.name)
    async def admit_improvement_generation(
        self, input: ImprovementStepInput
    ) -> AdmitGenerationOutput:
        """Write the generation row and reserve its quota, as `POST /v1/generations` does.

        The generation's id derives from the improvement's, so a retried attempt finds the
        row the first one committed instead of reserving twice.

        Raises:
            ApplicationError: `quota_exceeded`, `unsupported_request`,
                `no_provider_available`; nothing is written when one is raised.
        """
        tenant_id = uuid.UUID(input.tenant_id)
        generation_id = improvement_generation_id(input.improvement_id)
        workflow_id = generation_workflow_id(str(generation_id))
        async with self._sessions.begin() as session:
            row = await _improvement(session, input.tenant_id, input.improvement_id, lock=True)
            existing = await session.get(Generation, generation_id)
            if existing is None:
                if row.improved_prompt is None:
                    raise DomainError(
                        FailureCode.STEP_FAILED, "the improved prompt has not been written"
                    )
                video = await _video(session, tenant_id, row.video_id)
                spec = await self._spec(session, row, video)
                tenant = await session.get(Tenant, tenant_id)
                # A ProviderNotInPlan here is `quota_exceeded`, naming the plan to upgrade to.
                route = plan_route(
                    self._registry, spec, plan=tenant.plan if tenant is not None else None
                )
                try:
                    plan = quotas.plan_named(tenant.plan if tenant is not None else "free")
                except ValueError:
                    plan = quotas.plan_named("free")
                admission = await admit_generation(
                    session,
                    tenant_id=tenant_id,
                    plan=plan,
                    generation_id=generation_id,
                    prompt=row.improved_prompt,
                    spec=spec,
                    route=route,
                    improved_from_video_id=row.video_id,
                    now=datetime.now(UTC),
                )
                existing = admission.generation
                existing.workflow_id = workflow_id
            row.generation_id = generation_id
            if ImprovementStatus(row.status) not in TERMINAL_IMPROVEMENT_STATUSES:
                row.status = ImprovementStatus.GENERATING.value
            return AdmitGenerationOutput(
                generation_id=str(generation_id),
                workflow_id=workflow_id,
                estimated_cost_usd=float(existing.estimated_cost_usd),
                provider=existing.provider or existing.requested_provider,
                model=existing.model or "",
            )

    async def _spec(self, session: AsyncSession, row: Improvement, video: Video) -> GenerationSpec:
        """The original's own request when a generation made it, else the closest fit."""
        original = await session.scalar(
            select(Generation)
            .where(Generation.tenant_id == row.tenant_id, Generation.video_id == video.id)
            .order_by(Generation.created_at.desc())
            .limit(1)
        )
        if original is not None:
            return GenerationSpec(
                provider=row.requested_provider,
                duration_s=original.duration_s,
                aspect_ratio=original.aspect_ratio,
                resolution=original.resolution,
                max_cost_usd=row.max_cost_usd,
            )
        return _fitting_spec(self._registry, row.requested_provider, video, row.max_cost_usd)

    @activity.defn(name=PRE_APPROVE_GENERATION.name)
    async def pre_approve_generation(self, input: PreApproveInput) -> PreApproveOutput:
        """Send the child generation the approval its caller gave in advance.

        The generation keeps a decision sent before its estimate is known, and uses it only
        if the estimate needs approval; one that has passed its gate refuses it (False).
        """
        async with self._sessions() as session:
            await _improvement(session, input.tenant_id, input.improvement_id)
        handle = activity.client().get_workflow_handle(generation_workflow_id(input.generation_id))
        try:
            await handle.execute_update(
                APPROVE_UPDATE,
                ApprovalInput(
                    approve=True,
                    note=f"approved in advance by improvement {input.improvement_id}",
                ),
                result_type=ApprovalOutput,
            )
        except WorkflowUpdateFailedError:
            return PreApproveOutput(accepted=False)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return PreApproveOutput(accepted=False)
            raise DomainError(
                FailureCode.DEPENDENCY_UNAVAILABLE, "the workflow engine did not answer"
            ) from err
        return PreApproveOutput(accepted=True)

    @activity.defn(name=LINK_IMPROVED_VERSION.name)
    async def link_improved_version(self, input: LinkVersionInput) -> LinkVersionOutput:
        """Make the new video the original's next version, and complete the improvement."""
        tenant_id = uuid.UUID(input.tenant_id)
        async with self._sessions.begin() as session:
            row = await _improvement(session, input.tenant_id, input.improvement_id, lock=True)
            original = await _video(session, tenant_id, row.video_id)
            new = await _video(session, tenant_id, uuid.UUID(input.new_video_id))
            iteration = (original.improvement_iteration or 0) + 1
            new.improved_from_video_id = original.id
            new.improvement_iteration = iteration
            new.title = f"{original.title} · v{iteration + 1}"[:_TITLE_CHARS]
            row.new_video_id = new.id
            row.iteration = iteration
            row.status = ImprovementStatus.COMPLETED.value
            row.error_code = row.error_message = None
            row.completed_at = datetime.now(UTC)
        return LinkVersionOutput(iteration=iteration)

    @activity.defn(name=FINISH_IMPROVEMENT.name)
    async def finish_improvement(self, input: FinishImprovementInput) -> FinishImprovementOutput:
        """Record why an improvement ended without a new version (never undoes a completion)."""
        async with self._sessions.begin() as session:
            row = await _improvement(session, input.tenant_id, input.improvement_id, lock=True)
            if row.status == ImprovementStatus.COMPLETED.value:
                return FinishImprovementOutput(updated=False)
            row.status = input.status.value
            row.error_code = input.error_code
            row.error_message = input.error_message
            row.completed_at = datetime.now(UTC)
        return FinishImprovementOutput(updated=True)
