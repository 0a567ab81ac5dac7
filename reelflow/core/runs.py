"""Starting, inspecting, retrying and canceling pipeline runs; shared by the API and the CLI.

Every run carries the `TenantId` search attribute, and every lookup checks it, so one
tenant can never see or touch another tenant's run.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from schemas import search_attributes as sa
from schemas.contracts import PROGRESS_QUERY
from schemas.generation import GenerationInput, GenerationProgress, generation_workflow_id
from schemas.generation_activities import GENERATION_WORKFLOW
from schemas.ingest import IngestInput, IngestProgress, ingest_workflow_id
from schemas.ingest_activities import INGEST_WORKFLOW
from schemas.queues import WORKFLOW_TASK_QUEUE

logger = logging.getLogger(__name__)

PROGRESS_QUERY_TIMEOUT = timedelta(seconds=2)
"""A query needs a worker; without one, show the run's status instead of hanging."""
_RETRYABLE = {"failed", "canceled", "terminated", "timed_out"}


class RunView(BaseModel):
    """A run as the API and CLI show it."""

    workflow_id: str
    run_id: str
    pipeline: str
    status: str
    tenant_id: str
    video_id: str | None
    started_at: datetime | None
    closed_at: datetime | None
    stage: str | None
    cost_usd: float | None
    progress: IngestProgress | GenerationProgress | None
    error: str | None
    ui_url: str


class RunNotFound(LookupError):
    """No such run for this tenant (also raised for another tenant's run)."""


class RunNotRetryable(ValueError):
    """Retry asked for a run that is still running or already succeeded."""


class RunNotCancelable(ValueError):
    """Cancel asked for a run that has already finished (completed, failed, canceled...)."""


def _status_name(description: WorkflowExecutionDescription) -> str:
    return description.status.name.lower() if description.status else "unknown"


def _ingest_search_attributes(tenant_id: str, video_id: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.TENANT_ID, tenant_id),
            SearchAttributePair(sa.VIDEO_ID, video_id),
            SearchAttributePair(sa.PIPELINE, "ingest"),
            SearchAttributePair(sa.STAGE, "queued"),
            SearchAttributePair(sa.COST_USD, 0.0),
        ]
    )


async def start_ingest(
    client: Client, *, tenant_id: str, video_id: str, task_queue: str = WORKFLOW_TASK_QUEUE
) -> str:
    """Start ingesting a video; a second call while one runs joins the running one.

    Returns:
        The workflow id, `ingest-<video_id>`.
    """
    workflow_id = ingest_workflow_id(video_id)
    await client.start_workflow(
        INGEST_WORKFLOW.name,
        IngestInput(tenant_id=tenant_id, video_id=video_id),
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=_ingest_search_attributes(tenant_id, video_id),
    )
    return workflow_id


async def _describe(
    client: Client, workflow_id: str, tenant_id: str
) -> tuple[WorkflowHandle[object, object], WorkflowExecutionDescription]:
    handle: WorkflowHandle[object, object] = client.get_workflow_handle(workflow_id)
    try:
        description = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise RunNotFound(workflow_id) from None
        raise
    if description.typed_search_attributes.get(sa.TENANT_ID) != tenant_id:
        raise RunNotFound(workflow_id)
    return handle, description


async def describe_run(
    client: Client, *, workflow_id: str, tenant_id: str, ui_base_url: str, namespace: str
) -> RunView:
    """The run's status, stage, cost and (for ingest) live progress.

    Raises:
        RunNotFound: unknown id, or a run of another tenant.
    """
    _, description = await _describe(client, workflow_id, tenant_id)
    attributes = description.typed_search_attributes
    status = _status_name(description)
    progress: IngestProgress | GenerationProgress | None = None
    pipeline = attributes.get(sa.PIPELINE) or description.workflow_type
    if pipeline == "ingest":
        try:
            progress = await client.get_workflow_handle(
                workflow_id, run_id=description.run_id
            ).query(PROGRESS_QUERY, result_type=IngestProgress, rpc_timeout=PROGRESS_QUERY_TIMEOUT)
        except RPCError:
            # A run with no worker to answer queries still has a status worth showing.
            progress = None
        except Exception:
            progress = None
    elif pipeline == "generation":
        try:
            progress = await client.get_workflow_handle(
                workflow_id, run_id=description.run_id
            ).query(
                PROGRESS_QUERY, result_type=GenerationProgress, rpc_timeout=PROGRESS_QUERY_TIMEOUT
            )
        except Exception:
            # As above: no worker (or a closed run it cannot load) means no live progress.
            progress = None
    error = progress.error if progress else None
    return RunView(
        workflow_id=workflow_id,
        run_id=description.run_id,
        pipeline=pipeline,
        status=status,
        tenant_id=tenant_id,
        video_id=attributes.get(sa.VIDEO_ID),
        started_at=description.start_time,
        closed_at=description.close_time,
        stage=attributes.get(sa.STAGE),
        cost_usd=attributes.get(sa.COST_USD),
        progress=progress,
        error=error,
        ui_url=f"{ui_base_url}/namespaces/{namespace}/workflows/{workflow_id}/{description.run_id}",
    )


async def retry_run(client: Client, *, workflow_id: str, tenant_id: str) -> str:
    """Start a failed or canceled run again; it resumes after the last finished step.

    Returns:
        The new run id.

    Raises:
        RunNotFound: unknown id, or a run of another tenant.
        RunNotRetryable: the run is still running or has completed.
    """
    _, description = await _describe(client, workflow_id, tenant_id)
    status = _status_name(description)
    if status not in _RETRYABLE:
        raise RunNotRetryable(f"run {workflow_id} is {status}; only failed or canceled runs retry")
    if description.workflow_type == GENERATION_WORKFLOW.name:
        return await _retry_generation(client, description, workflow_id, tenant_id)
    video_id = description.typed_search_attributes.get(sa.VIDEO_ID)
    if description.workflow_type != INGEST_WORKFLOW.name or video_id is None:
        raise RunNotRetryable(f"run {workflow_id} is not a retryable pipeline run")
    handle = await client.start_workflow(
        INGEST_WORKFLOW.name,
        IngestInput(tenant_id=tenant_id, video_id=video_id),
        id=workflow_id,
        task_queue=description.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=_ingest_search_attributes(tenant_id, video_id),
    )
    return handle.result_run_id or ""


def _generation_search_attributes(tenant_id: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.TENANT_ID, tenant_id),
            SearchAttributePair(sa.PIPELINE, "generation"),
            SearchAttributePair(sa.STAGE, "queued"),
            SearchAttributePair(sa.COST_USD, 0.0),
        ]
    )


async def start_generation(
    client: Client, *, tenant_id: str, generation_id: str, task_queue: str = WORKFLOW_TASK_QUEUE
) -> str:
    """Start a generation whose row (and quota reservation) the caller has written.

    A second call while it runs joins the running one.

    Returns:
        The workflow id, `generate-<generation_id>`.
    """
    workflow_id = generation_workflow_id(generation_id)
    await client.start_workflow(
        GENERATION_WORKFLOW.name,
        GenerationInput(tenant_id=tenant_id, generation_id=generation_id),
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=_generation_search_attributes(tenant_id),
    )
    return workflow_id


async def _retry_generation(
    client: Client, description: WorkflowExecutionDescription, workflow_id: str, tenant_id: str
) -> str:
    """A failed or canceled generation runs again: it re-checks, re-reserves its quota and
    makes new attempts (numbered after the old ones, so no submit key repeats)."""
    generation_id = workflow_id.removeprefix("generate-")
    if generation_workflow_id(generation_id) != workflow_id:
        raise RunNotRetryable(f"run {workflow_id} is not a generation run")
    handle = await client.start_workflow(
        GENERATION_WORKFLOW.name,
        GenerationInput(tenant_id=tenant_id, generation_id=generation_id),
        id=workflow_id,
        task_queue=description.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=_generation_search_attributes(tenant_id),
    )
    return handle.result_run_id or ""


async def cancel_run(client: Client, *, workflow_id: str, tenant_id: str) -> None:
    """Ask a run to cancel; it records `failed: the run was canceled` and stops.

    Raises:
        RunNotFound: unknown id, or a run of another tenant.
        RunNotCancelable: the run has already finished. (One that finishes between this
            check and the request is not reported: the engine accepts that request.)
    """
    handle, description = await _describe(client, workflow_id, tenant_id)
    status = _status_name(description)
    if status != "running":
        raise RunNotCancelable(f"run {workflow_id} is {status}; only a running run can be canceled")
    await handle.cancel()


async def start_import(
    client: Client,
    *,
    tenant_id: str,
    video_id: str,
    url: str,
    task_queue: str = WORKFLOW_TASK_QUEUE,
) -> str:
    """Start importing a video (download, then ingest) in the same run as its ingest.

    `url` must already be on the video row: the run reads it from there, so the URL
    never sits in workflow history.
    """
    logger.info("importing video %s from %s", video_id, urlsplit(url).hostname)
    return await start_ingest(client, tenant_id=tenant_id, video_id=video_id, task_queue=task_queue)
