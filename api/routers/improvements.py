"""Improvement runs, versions of a video, and a discover script's predicted vs actual.

An improvement makes a new version of a video from its insights: the run writes an improved
prompt, admits a generation (quota reserved as for `POST /v1/generations`) and runs it as a
child; the new video is linked to the original (`improved_from_video_id`,
`improvement_iteration`). The child generation is a generation like any other: it can be
followed, approved and canceled under `/v1/generations/{id}` too.

Approval: a generation over `max_cost_usd` or over what is left of the plan's budget waits
for a person. `approve_over_budget: true` gives that approval in advance; otherwise
`POST /v1/improvements/{id}/approve` approves (or rejects) the waiting generation.
"""

from __future__ import annotations

import logging
import math
import uuid
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from api.deps import CurrentTenant, ResourcesDep, SessionDep, TenantContext
from api.errors import ERROR_RESPONSES, ApiError, not_found, temporal_unavailable
from api.routers.videos import workflow_queue
from reelflow.core import runs
from reelflow.core.errors import DomainError
from reelflow.improve import improvements, versions
from reelflow.improve.versions import NotAVersion
from schemas.api import ErrorResponse, text_problem
from schemas.generation import (
    AUTO_PROVIDER,
    ApprovalInput,
    ApprovalOutput,
    ApprovalRequest,
    GenerationStatus,
)
from schemas.generation_activities import APPROVE_UPDATE
from schemas.generation_tables import Generation
from schemas.improvement import (
    TERMINAL_IMPROVEMENT_STATUSES,
    ImprovementAccepted,
    ImprovementAction,
    ImprovementDetail,
    ImprovementRequest,
    ImprovementStatus,
    ScriptPerformance,
    VersionComparison,
    VersionHistory,
)
from schemas.improvement_run_tables import Improvement

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["improvements"], responses=ERROR_RESPONSES)

MAX_COST_USD = 999_999.99
"""The most `max_cost_usd` can be: it is stored in a `Money` column (6 integer digits)."""


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


def _uuid(raw: str, what: str) -> uuid.UUID:
    """A path id that is not a UUID cannot name anything: 404, like any unknown id."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise not_found(what, raw) from None


def _domain(err: DomainError) -> ApiError:
    """What does not exist (for this tenant) is a 404 under its own code; else a 422."""
    status = 404 if err.code.endswith("not_found") else 422
    return ApiError(status, err.code, err.message)


async def _improvement(session: SessionDep, tenant: TenantContext, raw_id: str) -> Improvement:
    row = await improvements.get_improvement(session, tenant.id, _uuid(raw_id, "improvement"))
    if row is None:
        raise not_found("improvement", raw_id)
    return row


def _provider(body: ImprovementRequest, resources: ResourcesDep) -> str | None:
    """The requested provider, or 422 naming those this deployment has."""
    if body.provider is None:
        return None
    provider = body.provider.strip()
    allowed = [AUTO_PROVIDER, *resources.video_providers.providers]
    if provider not in allowed:
        raise ApiError(
            422,
            "unsupported_request",
            f"provider: {provider[:40]!r} is not available; choose one of {', '.join(allowed)}",
        )
    return provider


def _max_cost(body: ImprovementRequest) -> Decimal | None:
    if body.max_cost_usd is None:
        return None
    if not (math.isfinite(body.max_cost_usd) and body.max_cost_usd <= MAX_COST_USD):
        raise ApiError(
            422, "invalid_request", f"max_cost_usd: must be a number of at most {MAX_COST_USD}"
        )
    return Decimal(str(body.max_cost_usd))


@router.post(
    "/videos/{video_id}/improvements",
    status_code=202,
    response_model=ImprovementAccepted,
    responses=_errors(409, 503),
)
async def create_improvement(
    video_id: str,
    tenant: CurrentTenant,
    resources: ResourcesDep,
    body: ImprovementRequest | None = None,
) -> ImprovementAccepted:
    """Improve a video: insights → improved prompt → a generated new version, linked to it.

    409 `no_insights` when the video has no performance metrics yet (there is nothing to
    improve on); 409 `improvement_running` while another improvement of it runs. What the
    run finds later (no prompt, script or transcript; the quota used up) is on
    `GET /v1/improvements/{id}`.
    """
    body = body or ImprovementRequest()
    provider = _provider(body, resources)
    max_cost = _max_cost(body)
    async with resources.sessions() as session:
        try:
            row = await improvements.request_improvement(
                session,
                tenant_id=tenant.id,
                video_id=_uuid(video_id, "video"),
                provider=provider,
                max_cost_usd=max_cost,
                approve_over_budget=body.approve_over_budget,
            )
        except DomainError as err:
            raise _domain(err) from None
        except improvements.ImprovementRefused as exc:
            raise ApiError(409, exc.code, exc.message) from None
        await session.commit()
        try:
            workflow_id = await improvements.start_improvement(
                resources.temporal,
                tenant_id=tenant.id,
                improvement=row,
                task_queue=workflow_queue(resources.settings),
            )
        except Exception:  # no run exists: say so on the row, which would stay queued
            logger.exception("could not start improvement %s", row.id)
            await improvements.mark_start_failed(session, row)
            raise ApiError(
                503,
                "temporal_unavailable",
                "the workflow engine did not accept the run; try again shortly",
            ) from None
        return ImprovementAccepted(improvement_id=row.id, workflow_id=workflow_id)


async def _detail(session: SessionDep, row: Improvement) -> ImprovementDetail:
    return await improvements.load_detail(session, row)


@router.get("/improvements/{improvement_id}", response_model=ImprovementDetail)
async def get_improvement(
    improvement_id: str, tenant: CurrentTenant, session: SessionDep
) -> ImprovementDetail:
    """Status, insights used, original and improved prompt with what changed and why, the
    child generation (status, approval, estimate) and the new video."""
    return await _detail(session, await _improvement(session, tenant, improvement_id))


@router.post(
    "/improvements/{improvement_id}/cancel",
    status_code=202,
    response_model=ImprovementAction,
    responses=_errors(409, 503),
)
async def cancel_improvement(
    improvement_id: str, tenant: CurrentTenant, resources: ResourcesDep, session: SessionDep
) -> ImprovementAction:
    """Cancel an improvement at any stage; its generation, if started, is canceled too and
    its quota released."""
    row = await _improvement(session, tenant, improvement_id)
    row_id, status, workflow_id = row.id, ImprovementStatus(row.status), row.workflow_id
    await session.close()
    if status in TERMINAL_IMPROVEMENT_STATUSES or workflow_id is None:
        raise ApiError(409, "already_finished", f"improvement {row_id} is already {status}")
    try:
        await runs.cancel_run(resources.temporal, workflow_id=workflow_id, tenant_id=str(tenant.id))
    except (runs.RunNotFound, runs.RunNotCancelable):
        raise ApiError(
            409, "already_finished", f"improvement {row_id} is no longer running"
        ) from None
    except (RPCError, RuntimeError):  # RuntimeError: a lazy client that cannot connect
        logger.warning("could not cancel improvement %s", row_id, exc_info=True)
        raise temporal_unavailable() from None
    return ImprovementAction(improvement_id=row_id, status="cancel_requested")


@router.post(
    "/improvements/{improvement_id}/approve",
    response_model=ImprovementAction,
    responses=_errors(409),
)
async def approve_improvement(
    improvement_id: str,
    tenant: CurrentTenant,
    resources: ResourcesDep,
    session: SessionDep,
    body: ApprovalRequest | None = None,
) -> ImprovementAction:
    """Approve (`{"approve": true}`, also an empty body) or reject the improvement's
    generation while it waits for approval; 409 at any other time."""
    body = body or ApprovalRequest()
    if body.note is not None and (problem := text_problem(body.note)) is not None:
        raise ApiError(422, "invalid_request", f"note: {problem}")
    row = await _improvement(session, tenant, improvement_id)
    generation = (
        await session.get(Generation, row.generation_id) if row.generation_id is not None else None
    )
    refusal = ApiError(
        409,
        "not_awaiting_approval",
        f"improvement {row.id} is not waiting for approval (it is {row.status}"
        + (f", its generation {generation.status}" if generation is not None else "")
        + ")",
    )
    if (
        generation is None
        or generation.tenant_id != tenant.id
        or generation.status != GenerationStatus.AWAITING_APPROVAL.value
        or generation.workflow_id is None
    ):
        raise refusal
    row_id, workflow_id = row.id, generation.workflow_id
    await session.close()
    handle = resources.temporal.get_workflow_handle(workflow_id)
    try:
        decided = await handle.execute_update(
            APPROVE_UPDATE,
            ApprovalInput(approve=body.approve, note=body.note),
            result_type=ApprovalOutput,
        )
    except (WorkflowUpdateFailedError, RPCError):
        raise refusal from None
    return ImprovementAction(
        improvement_id=row_id,
        status="approved" if body.approve else "rejected",
        approval=decided.approval,
    )


@router.get("/videos/{video_id}/versions", response_model=VersionHistory)
async def get_versions(video_id: str, tenant: CurrentTenant, session: SessionDep) -> VersionHistory:
    """The chain of versions the video belongs to (original → v2 → v3 …), oldest first,
    each with its latest metrics."""
    try:
        return await versions.version_history(
            session, tenant_id=tenant.id, video_id=_uuid(video_id, "video")
        )
    except DomainError as err:
        raise _domain(err) from None


@router.get(
    "/videos/{video_id}/versions/compare",
    response_model=VersionComparison,
    responses=_errors(422),
)
async def compare_versions(
    video_id: str,
    tenant: CurrentTenant,
    session: SessionDep,
    with_: Annotated[str, Query(alias="with", description="The other version's video id.")],
) -> VersionComparison:
    """Two versions side by side: views, engagement, completion, × usual, and deltas
    (`with` − this). `comparable` is false, with a message, until both have metrics."""
    try:
        return await versions.compare_versions(
            session,
            tenant_id=tenant.id,
            video_id=_uuid(video_id, "video"),
            other_id=_uuid(with_, "video"),
        )
    except DomainError as err:
        raise _domain(err) from None
    except NotAVersion as exc:
        raise ApiError(422, "not_a_version", str(exc)) from None


@router.get("/scripts/{script_id}/performance", response_model=ScriptPerformance)
async def get_script_performance(
    script_id: str, tenant: CurrentTenant, session: SessionDep
) -> ScriptPerformance:
    """The script's predicted viral score (0–10) against what happened: its published
    post's outlier score, or its produced video's × usual."""
    try:
        return await versions.script_performance(
            session, tenant_id=tenant.id, script_id=_uuid(script_id, "script")
        )
    except DomainError as err:
        if err.code == "object_not_found":
            raise not_found("script", script_id) from None
        raise _domain(err) from None
