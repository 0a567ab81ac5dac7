"""Generated videos: estimate, request, follow, approve and cancel.

The generated file and its thumbnail are a video asset like any other: once a generation
completes, `video_id` is served by `GET /v1/videos/{id}`, `/content` and `/thumbnail`.
"""

from __future__ import annotations

import logging
import math
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi import APIRouter
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from api.deps import CurrentTenant, ResourcesDep, SessionDep, TenantContext
from api.errors import ERROR_RESPONSES, ApiError, not_found, temporal_unavailable
from api.routers.videos import workflow_queue
from reelflow.assets import videos
from reelflow.billing.usage import current_period
from reelflow.core import runs
from reelflow.core.runs import start_generation
from reelflow.generation import quotas
from reelflow.generation.capabilities import UnsupportedRequest
from reelflow.generation.routing import (
    GenerationSpec,
    NoRouteAvailable,
    ProviderNotInPlan,
    ProviderRegistry,
    RoutePlan,
    admit_generation,
    approval_reasons,
    get_generation,
    list_attempts,
    plan_route,
)
from schemas.api import ErrorResponse, text_problem
from schemas.generation import (
    AUTO_PROVIDER,
    TERMINAL_STATUSES,
    ApprovalInput,
    ApprovalOutput,
    ApprovalRequest,
    ApprovalState,
    AttemptOutcome,
    AttemptView,
    CandidateEstimate,
    GenerationAccepted,
    GenerationAction,
    GenerationDetail,
    GenerationError,
    GenerationEstimate,
    GenerationRequest,
    GenerationStatus,
    QuotaView,
    ValidationResult,
    generation_workflow_id,
)
from schemas.generation_activities import APPROVE_UPDATE
from schemas.generation_tables import Generation, GenerationAttempt

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/generations", tags=["generations"], responses=ERROR_RESPONSES)


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


MAX_COST_USD = 999_999.99
"""The most `max_cost_usd` can be: it is stored in a `Money` column (6 integer digits)."""


def _invalid(field: str, problem: str) -> ApiError:
    return ApiError(422, "invalid_request", f"{field}: {problem}")


def _spec(body: GenerationRequest) -> GenerationSpec:
    """The request as the router sees it; 422 for what the database could not store."""
    problem = text_problem(body.prompt)
    if problem is not None:
        raise _invalid("prompt", problem)
    if body.max_cost_usd is not None and not (
        math.isfinite(body.max_cost_usd) and body.max_cost_usd <= MAX_COST_USD
    ):
        raise _invalid("max_cost_usd", f"must be a number of at most {MAX_COST_USD}")
    return GenerationSpec(
        provider=body.provider or AUTO_PROVIDER,
        duration_s=body.duration_s,
        aspect_ratio=body.aspect_ratio.strip(),
        resolution=body.resolution.strip(),
        max_cost_usd=None if body.max_cost_usd is None else Decimal(str(body.max_cost_usd)),
    )


def _route(registry: ProviderRegistry, spec: GenerationSpec, plan: str) -> RoutePlan:
    """The providers to try, or 422 naming what is allowed (402 for a provider the
    tenant's plan does not include): nothing reaches a provider."""
    try:
        return plan_route(registry, spec, plan=plan)
    except ProviderNotInPlan as exc:
        raise ApiError(402, "quota_exceeded", exc.message) from None
    except UnsupportedRequest as exc:
        raise ApiError(422, "unsupported_request", exc.message) from None
    except NoRouteAvailable as exc:
        raise ApiError(422, "no_provider_available", str(exc)) from None


def _plan(tenant: TenantContext) -> quotas.Plan:
    try:
        return quotas.plan_named(tenant.plan)
    except ValueError:
        # A plan the quota table does not know gets the smallest one, never unlimited.
        logger.warning("tenant %s has unknown plan %r; using free", tenant.id, tenant.plan)
        return quotas.PLANS["free"]


def parse_generation_id(raw: str) -> uuid.UUID:
    """A path id that is not a UUID cannot name a generation: 404, like any unknown id."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise not_found("generation", raw) from None


def _quota_view(snapshot: quotas.QuotaSnapshot) -> QuotaView:
    return QuotaView(
        plan=snapshot.plan.name,
        period=snapshot.period,
        limit_seconds=snapshot.plan.monthly_video_seconds,
        used_seconds=snapshot.used_seconds,
        reserved_seconds=snapshot.reserved_seconds,
        budget_usd=float(snapshot.plan.monthly_budget_usd),
        spent_usd=float(snapshot.spent_usd),
        reserved_usd=float(snapshot.reserved_usd),
    )


@router.post("/estimate", response_model=GenerationEstimate)
async def estimate_generation(
    body: GenerationRequest, tenant: CurrentTenant, resources: ResourcesDep, session: SessionDep
) -> GenerationEstimate:
    """What a request would cost, where it would go and whether it would need approval.

    Nothing is reserved or started.
    """
    spec = _spec(body)
    route = _route(resources.video_providers, spec, tenant.plan)
    plan = _plan(tenant)
    # The tenant's own period (it starts on its billing anchor), as admission counts it.
    period = await current_period(session, tenant.id, datetime.now(UTC))
    snapshot = await quotas.snapshot(session, tenant_id=tenant.id, plan=plan, period=period.name)
    estimate = route.estimated_cost_usd
    after = quotas.QuotaSnapshot(
        plan,
        snapshot.period,
        snapshot.used_seconds,
        snapshot.reserved_seconds + spec.duration_s,
        snapshot.spent_usd,
        snapshot.reserved_usd + estimate,
    )
    reasons = approval_reasons(estimate, spec.max_cost_usd, snapshot.budget_left_usd, plan.name)
    refusal = snapshot.refusal(spec.duration_s)
    primary = route.primary.capabilities
    return GenerationEstimate(
        provider=primary.provider,
        model=primary.model,
        estimated_cost_usd=float(estimate),
        candidates=[
            CandidateEstimate(
                provider=option.capabilities.provider,
                model=option.capabilities.model,
                estimated_cost_usd=float(option.estimated_cost_usd),
            )
            for option in route.candidates
        ],
        approval_required=bool(reasons),
        approval_reason="; ".join(reasons) or None,
        quota=_quota_view(snapshot),
        quota_warning=refusal or after.warning(),
        quota_exceeded=refusal is not None,
    )


@router.post("", status_code=202, response_model=GenerationAccepted, responses=_errors(402, 503))
async def create_generation(
    body: GenerationRequest, tenant: CurrentTenant, resources: ResourcesDep
) -> GenerationAccepted:
    """Ask for a video: checked, estimated and quota-reserved now, generated by a run.

    422 names the allowed values of an unsupported provider, duration, aspect ratio or
    resolution; 402 `quota_exceeded` when the plan's monthly video-seconds would be
    exceeded. Either way nothing is stored and no provider is called.
    """
    spec = _spec(body)
    route = _route(resources.video_providers, spec, tenant.plan)
    plan = _plan(tenant)
    generation_id = uuid.uuid4()
    workflow_id = generation_workflow_id(str(generation_id))
    async with resources.sessions() as session:
        if body.improved_from_video_id is not None and (
            await videos.get_video(session, tenant.id, body.improved_from_video_id) is None
        ):
            raise not_found("video", body.improved_from_video_id)
        try:
            admission = await admit_generation(
                session,
                tenant_id=tenant.id,
                plan=plan,
                generation_id=generation_id,
                prompt=body.prompt,
                spec=spec,
                route=route,
                improved_from_video_id=body.improved_from_video_id,
                now=datetime.now(UTC),
            )
        except quotas.QuotaExceeded as exc:
            await session.rollback()
            raise ApiError(402, "quota_exceeded", exc.message) from None
        admission.generation.workflow_id = workflow_id
        if body.index:
            # The run reads it when it plans, so a retried run indexes too.
            admission.generation.index_result = {"status": "requested"}
        await session.commit()
    try:
        await start_generation(
            resources.temporal,
            tenant_id=str(tenant.id),
            generation_id=str(generation_id),
            task_queue=workflow_queue(resources.settings),
        )
    except Exception:  # no run exists to settle the reservation: do it here
        logger.exception("could not start generation %s", generation_id)
        await _mark_start_failed(resources, tenant, generation_id)
        raise ApiError(
            503,
            "temporal_unavailable",
            "the workflow engine did not accept the run; try again shortly",
        ) from None
    reservation = admission.reservation
    reasons = approval_reasons(
        route.estimated_cost_usd, spec.max_cost_usd, reservation.budget_left_usd, plan.name
    )
    primary = route.primary.capabilities
    return GenerationAccepted(
        generation_id=generation_id,
        workflow_id=workflow_id,
        estimated_cost_usd=float(route.estimated_cost_usd),
        status=GenerationStatus.AWAITING_APPROVAL if reasons else GenerationStatus.QUEUED,
        provider=primary.provider,
        model=primary.model,
        approval_required=bool(reasons),
        quota_warning=reservation.warning,
    )


async def _mark_start_failed(
    resources: ResourcesDep, tenant: TenantContext, generation_id: uuid.UUID
) -> None:
    async with resources.sessions.begin() as session:
        row = await get_generation(session, tenant.id, generation_id)
        if row is not None:
            row.status = GenerationStatus.FAILED.value
            row.error_code = "start_failed"
            row.error_message = "the generation run could not be started; request it again"
            row.completed_at = datetime.now(UTC)
        await quotas.release(session, generation_id=generation_id)


def _attempt_view(attempt: GenerationAttempt) -> AttemptView:
    return AttemptView(
        attempt=attempt.attempt,
        provider=attempt.provider,
        model=attempt.model,
        provider_job_id=attempt.provider_job_id,
        job_state=attempt.job_state,
        outcome=AttemptOutcome(attempt.outcome),
        error=attempt.error,
        validation=(
            ValidationResult.model_validate(attempt.validation) if attempt.validation else None
        ),
        cost_usd=float(attempt.cost_usd or 0),
        created_at=attempt.created_at,
        finished_at=attempt.finished_at,
    )


def generation_detail(row: Generation, attempts: list[GenerationAttempt]) -> GenerationDetail:
    """The API view of a generation row and its attempts."""
    error = (
        GenerationError(code=row.error_code, message=row.error_message or row.error_code)
        if row.error_code
        else None
    )
    return GenerationDetail(
        generation_id=row.id,
        workflow_id=row.workflow_id,
        status=GenerationStatus(row.status),
        prompt=row.prompt,
        requested_provider=row.requested_provider,
        provider=row.provider,
        model=row.model,
        provider_job_id=row.provider_job_id,
        duration_s=row.duration_s,
        aspect_ratio=row.aspect_ratio,
        resolution=row.resolution,
        max_cost_usd=None if row.max_cost_usd is None else float(row.max_cost_usd),
        estimated_cost_usd=float(row.estimated_cost_usd),
        cost_usd=float(row.cost_usd or 0),
        approval=ApprovalState(row.approval),
        attempts=[_attempt_view(a) for a in attempts],
        validation=ValidationResult.model_validate(row.validation) if row.validation else None,
        video_id=row.video_id,
        improved_from_video_id=row.improved_from_video_id,
        error=error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        completed_at=row.completed_at,
    )


async def _load(session: SessionDep, tenant: TenantContext, raw_id: str) -> Generation:
    row = await get_generation(session, tenant.id, parse_generation_id(raw_id))
    if row is None:
        raise not_found("generation", raw_id)
    return row


@router.get("/{generation_id}", response_model=GenerationDetail)
async def get_generation_detail(
    generation_id: str, tenant: CurrentTenant, session: SessionDep
) -> GenerationDetail:
    """Status, provider, provider job id, every attempt, validation report, video and cost."""
    row = await _load(session, tenant, generation_id)
    return generation_detail(row, await list_attempts(session, row.id))


def _not_awaiting(row: Generation) -> ApiError:
    return ApiError(
        409,
        "not_awaiting_approval",
        f"generation {row.id} is {row.status}; only a generation awaiting approval can be "
        "approved or rejected",
    )


@router.post("/{generation_id}/approve", response_model=GenerationAction, responses=_errors(409))
async def approve_generation(
    generation_id: str,
    tenant: CurrentTenant,
    resources: ResourcesDep,
    session: SessionDep,
    body: ApprovalRequest | None = None,
) -> GenerationAction:
    """Approve (`{"approve": true}`, also an empty body) or reject a generation over budget."""
    body = body or ApprovalRequest()
    if body.note is not None and (problem := text_problem(body.note)) is not None:
        # The run stores a rejection's note with the generation.
        raise _invalid("note", problem)
    row = await _load(session, tenant, generation_id)
    refusal = _not_awaiting(row)
    workflow_id = row.workflow_id
    if row.status != GenerationStatus.AWAITING_APPROVAL.value or workflow_id is None:
        raise refusal
    # The update waits for the run; the request's connection should not wait with it.
    await session.close()
    handle = resources.temporal.get_workflow_handle(workflow_id)
    try:
        decided = await handle.execute_update(
            APPROVE_UPDATE,
            ApprovalInput(approve=body.approve, note=body.note),
            result_type=ApprovalOutput,
        )
    except (WorkflowUpdateFailedError, RPCError):
        # Rejected by the run's validator, or the run ended meanwhile (a timeout, a cancel).
        raise refusal from None
    status = "approved" if body.approve else "rejected"
    return GenerationAction(
        generation_id=uuid.UUID(generation_id), status=status, approval=decided.approval
    )


@router.post(
    "/{generation_id}/cancel",
    status_code=202,
    response_model=GenerationAction,
    responses=_errors(409, 503),
)
async def cancel_generation(
    generation_id: str, tenant: CurrentTenant, resources: ResourcesDep, session: SessionDep
) -> GenerationAction:
    """Cancel a generation at any stage: its provider job is stopped where the provider
    can, its status becomes `canceled` and its quota is released."""
    row = await _load(session, tenant, generation_id)
    row_id, status, workflow_id = row.id, row.status, row.workflow_id
    await session.close()
    if GenerationStatus(status) in TERMINAL_STATUSES or workflow_id is None:
        raise ApiError(409, "already_finished", f"generation {row_id} is already {status}")
    try:
        # The run's own status too: one that ended without settling the row (terminated by
        # an operator) cannot be canceled either, and the engine would accept the request.
        await runs.cancel_run(resources.temporal, workflow_id=workflow_id, tenant_id=str(tenant.id))
    except (runs.RunNotFound, runs.RunNotCancelable):
        raise ApiError(
            409, "already_finished", f"generation {row_id} is no longer running"
        ) from None
    except (RPCError, RuntimeError):  # RuntimeError: a lazy client that cannot connect
        logger.warning("could not cancel generation %s", row_id, exc_info=True)
        raise temporal_unavailable() from None
    return GenerationAction(generation_id=row_id, status="cancel_requested")
