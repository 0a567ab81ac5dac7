"""Pipeline runs: inspect, retry and cancel, scoped to the caller's tenant."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter
from temporalio.service import RPCError, RPCStatusCode

from api.deps import CurrentTenant, SettingsDep, TemporalDep
from api.errors import ERROR_RESPONSES, ApiError, not_found, temporal_unavailable
from reelflow.core import runs
from schemas.api import ErrorResponse, RunAction

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=ERROR_RESPONSES)

_CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": ErrorResponse}}
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {503: {"model": ErrorResponse}}


@asynccontextmanager
async def _run_lookup(workflow_id: str) -> AsyncIterator[None]:
    """Translate what the workflow engine says about `workflow_id` into API errors.

    An id it does not know, or refuses as malformed, is a 404; an engine that does not
    answer is a 503.
    """
    try:
        yield
    except runs.RunNotFound:
        raise not_found("run", workflow_id) from None
    except RPCError as err:
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            raise not_found("run", workflow_id) from None
        logger.warning("workflow engine error on run %r", workflow_id, exc_info=True)
        raise temporal_unavailable() from None
    except RuntimeError:
        # What the lazily connected client raises while it cannot reach the engine.
        logger.warning("workflow engine unreachable for run %r", workflow_id, exc_info=True)
        raise temporal_unavailable() from None


@router.get("/{workflow_id}", response_model=runs.RunView, responses=_UNAVAILABLE)
async def get_run(
    workflow_id: str, tenant: CurrentTenant, temporal: TemporalDep, settings: SettingsDep
) -> runs.RunView:
    """Get a run's status, stage, progress and cost."""
    async with _run_lookup(workflow_id):
        return await runs.describe_run(
            temporal,
            workflow_id=workflow_id,
            tenant_id=str(tenant.id),
            ui_base_url=settings.temporal_ui_url,
            namespace=settings.temporal_namespace,
        )


@router.post(
    "/{workflow_id}/retry",
    status_code=202,
    response_model=RunAction,
    responses={**_CONFLICT, **_UNAVAILABLE},
)
async def retry_run(workflow_id: str, tenant: CurrentTenant, temporal: TemporalDep) -> RunAction:
    """Start a failed or canceled run again; it resumes after its last finished step."""
    async with _run_lookup(workflow_id):
        try:
            run_id = await runs.retry_run(
                temporal, workflow_id=workflow_id, tenant_id=str(tenant.id)
            )
        except runs.RunNotRetryable as exc:
            raise ApiError(409, "not_retryable", str(exc)) from None
    return RunAction(workflow_id=workflow_id, run_id=run_id or None, status="running")


@router.post(
    "/{workflow_id}/cancel",
    status_code=202,
    response_model=RunAction,
    responses={**_CONFLICT, **_UNAVAILABLE},
)
async def cancel_run(workflow_id: str, tenant: CurrentTenant, temporal: TemporalDep) -> RunAction:
    """Ask a running run to cancel; it records the cancellation and stops.

    409 `already_finished` when the run has already ended, however it ended.
    """
    async with _run_lookup(workflow_id):
        try:
            await runs.cancel_run(temporal, workflow_id=workflow_id, tenant_id=str(tenant.id))
        except runs.RunNotCancelable as exc:
            raise ApiError(409, "already_finished", str(exc)) from None
    return RunAction(workflow_id=workflow_id, status="cancel_requested")
