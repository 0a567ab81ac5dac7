"""Pipeline runs: inspect, retry and cancel, scoped to the caller's tenant."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import CurrentTenant, SettingsDep, TemporalDep
from api.errors import ERROR_RESPONSES, ApiError, not_found
from reelflow.core import runs
from schemas.api import ErrorResponse, RunAction

router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=ERROR_RESPONSES)

_CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": ErrorResponse}}


@router.get("/{workflow_id}", response_model=runs.RunView)
async def get_run(
    workflow_id: str, tenant: CurrentTenant, temporal: TemporalDep, settings: SettingsDep
) -> runs.RunView:
    """Get a run's status, stage, progress and cost."""
    try:
        return await runs.describe_run(
            temporal,
            workflow_id=workflow_id,
            tenant_id=str(tenant.id),
            ui_base_url=settings.temporal_ui_url,
            namespace=settings.temporal_namespace,
        )
    except runs.RunNotFound:
        raise not_found("run", workflow_id) from None


@router.post("/{workflow_id}/retry", status_code=202, response_model=RunAction, responses=_CONFLICT)
async def retry_run(workflow_id: str, tenant: CurrentTenant, temporal: TemporalDep) -> RunAction:
    """Start a failed or canceled run again; it resumes after its last finished step."""
    try:
        run_id = await runs.retry_run(temporal, workflow_id=workflow_id, tenant_id=str(tenant.id))
    except runs.RunNotFound:
        raise not_found("run", workflow_id) from None
    except runs.RunNotRetryable as exc:
        raise ApiError(409, "not_retryable", str(exc)) from None
    return RunAction(workflow_id=workflow_id, run_id=run_id or None, status="running")


@router.post("/{workflow_id}/cancel", status_code=202, response_model=RunAction)
async def cancel_run(workflow_id: str, tenant: CurrentTenant, temporal: TemporalDep) -> RunAction:
    """Ask a running run to cancel; it records the cancellation and stops."""
    try:
        await runs.cancel_run(temporal, workflow_id=workflow_id, tenant_id=str(tenant.id))
    except runs.RunNotFound:
        raise not_found("run", workflow_id) from None
    return RunAction(workflow_id=workflow_id, status="cancel_requested")
