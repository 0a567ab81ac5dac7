"""Scrapes: create one, start its run, follow, cancel it; and each project's Schedule.

Shared by the API and the CLI. Runs are started by name through `DISCOVER_WORKFLOW`, so
neither imports workflow or activity code. A scrape row is written before its run starts;
a run that cannot be started marks its scrape failed with a reason instead of leaving it
queued forever.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from reelflow.core.errors import DomainError
from reelflow.core.pagination import PageKey, newest_first, split_page
from schemas import search_attributes as sa
from schemas.discover import DiscoverInput, ScrapeSource, ScrapeStage, ScrapeStatus
from schemas.discover_activities import DISCOVER_WORKFLOW
from schemas.discover_tables import Project, Scrape
from schemas.failures import FailureCode

logger = logging.getLogger(__name__)

MIN_SCHEDULE_INTERVAL = timedelta(hours=1)
"""Re-scraping more often than hourly finds little new and costs Apify money every time."""
TERMINAL = frozenset({ScrapeStatus.COMPLETED, ScrapeStatus.FAILED, ScrapeStatus.CANCELED})


def discover_search_attributes(
    tenant_id: uuid.UUID, project_id: uuid.UUID
) -> TypedSearchAttributes:
    """What makes a discover run findable: tenant, pipeline, project, stage and cost."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.TENANT_ID, str(tenant_id)),
            SearchAttributePair(sa.PIPELINE, DISCOVER_WORKFLOW.pipeline),
            SearchAttributePair(sa.PROJECT_ID, str(project_id)),
            SearchAttributePair(sa.STAGE, ScrapeStage.QUEUED.value),
            SearchAttributePair(sa.COST_USD, 0.0),
        ]
    )


def scrape_workflow_id(scrape_id: uuid.UUID) -> str:
    return DISCOVER_WORKFLOW.workflow_id(str(scrape_id))


def schedule_id(project_id: uuid.UUID) -> str:
    return f"discover-schedule-{project_id}"


async def get_project(
    session: AsyncSession, tenant_id: uuid.UUID, project_id: uuid.UUID
) -> Project:
    project = await session.scalar(
        select(Project).where(Project.id == project_id, Project.tenant_id == tenant_id)
    )
    if project is None:
        raise DomainError(FailureCode.PROJECT_NOT_FOUND, f"no project with id {project_id}")
    return project


async def create_scrape(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    project_id: uuid.UUID,
    source: ScrapeSource,
    dataset_key: str | None = None,
    dataset_format: str | None = None,
    post_url: str | None = None,
    scrape_id: uuid.UUID | None = None,
) -> Scrape:
    """A queued scrape of the tenant's project; the caller commits, then starts its run."""
    await get_project(session, tenant_id, project_id)
    scrape = Scrape(
        id=scrape_id or uuid.uuid4(),
        tenant_id=tenant_id,
        project_id=project_id,
        source=source.value,
        dataset_key=dataset_key,
        dataset_format=dataset_format,
        post_url=post_url,
        status=ScrapeStatus.QUEUED.value,
        stage=ScrapeStage.QUEUED.value,
        apify_runs=[],
        errors=[],
        cost_usd=Decimal(0),
    )
    session.add(scrape)
    await session.flush()
    return scrape


async def start_scrape_run(client: Client, *, scrape: Scrape, task_queue: str) -> str:
    """Start (or join) the scrape's run; the workflow id is `discover-<scrape_id>`."""
    workflow_id = scrape_workflow_id(scrape.id)
    await client.start_workflow(
        DISCOVER_WORKFLOW.name,
        DiscoverInput(
            tenant_id=scrape.tenant_id, project_id=scrape.project_id, scrape_id=scrape.id
        ),
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        search_attributes=discover_search_attributes(scrape.tenant_id, scrape.project_id),
        static_summary=f"scrape of project {scrape.project_id} ({scrape.source})",
    )
    return workflow_id


async def get_scrape(
    session: AsyncSession, tenant_id: uuid.UUID, scrape_id: uuid.UUID
) -> Scrape | None:
    return await session.scalar(
        select(Scrape).where(Scrape.id == scrape_id, Scrape.tenant_id == tenant_id)
    )


async def list_scrapes(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    project_id: uuid.UUID,
    *,
    limit: int,
    after: PageKey | None = None,
) -> tuple[list[Scrape], PageKey | None]:
    """A page of the project's scrapes, newest first, and the key of the next page."""
    query = select(Scrape).where(Scrape.tenant_id == tenant_id, Scrape.project_id == project_id)
    rows = (
        await session.scalars(
            newest_first(query, Scrape.created_at, Scrape.id, after=after, limit=limit)
        )
    ).all()
    return split_page(rows, limit, lambda row: PageKey(row.created_at, row.id))


class ScrapeNotCancelable(ValueError):
    """The scrape has already finished."""


async def cancel_scrape(client: Client, scrape: Scrape) -> None:
    """Ask the scrape's run to stop; it aborts its Apify runs and records `canceled`."""
    if ScrapeStatus(scrape.status) in TERMINAL:
        raise ScrapeNotCancelable(f"the scrape is already {scrape.status}")
    handle = client.get_workflow_handle(scrape.workflow_id or scrape_workflow_id(scrape.id))
    try:
        await handle.cancel()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ScrapeNotCancelable("the scrape has no running run") from None
        raise


def mark_start_failed(scrape: Scrape) -> None:
    scrape.status = ScrapeStatus.FAILED.value
    scrape.stage = ScrapeStage.DONE.value
    scrape.error_code = "start_failed"
    scrape.error_message = "the scrape run could not be started; start the scrape again"
    scrape.completed_at = datetime.now(UTC)


def scrape_view(scrape: Scrape) -> dict[str, Any]:
    """A scrape as the API and the CLI show it."""
    return {
        "scrape_id": str(scrape.id),
        "project_id": str(scrape.project_id),
        "source": scrape.source,
        "status": scrape.status,
        "stage": scrape.stage,
        "posts_seen": scrape.posts_seen,
        "posts_new": scrape.posts_new,
        "outliers": scrape.outliers,
        "processed": scrape.processed,
        "errors": list(scrape.errors or []),
        "cost_usd": float(scrape.cost_usd or 0),
        "workflow_id": scrape.workflow_id,
        "error_code": scrape.error_code,
        "error_message": scrape.error_message,
        "created_at": scrape.created_at.isoformat() if scrape.created_at else None,
        "completed_at": scrape.completed_at.isoformat() if scrape.completed_at else None,
    }


# --- schedules ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleView:
    schedule_id: str
    every_s: int | None
    paused: bool
    next_runs: list[datetime]
    recent_runs: list[str]


def _schedule(
    tenant_id: uuid.UUID, project_id: uuid.UUID, every: timedelta, task_queue: str, paused: bool
) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            DISCOVER_WORKFLOW.name,
            DiscoverInput(tenant_id=tenant_id, project_id=project_id),
            id=f"discover-scheduled-{project_id}",
            task_queue=task_queue,
            typed_search_attributes=discover_search_attributes(tenant_id, project_id),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        # A scrape still going when the next is due makes the next one pointless.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(paused=paused, note="re-scrape the project's accounts"),
    )


async def set_schedule(
    client: Client,
    *,
    tenant_id: uuid.UUID,
    project_id: uuid.UUID,
    every: timedelta,
    task_queue: str,
) -> None:
    """Create the project's Schedule, or change its cadence."""
    if every < MIN_SCHEDULE_INTERVAL:
        raise DomainError(
            FailureCode.UNSUPPORTED_REQUEST,
            f"a project is re-scraped at most every {MIN_SCHEDULE_INTERVAL}",
        )
    schedule = _schedule(tenant_id, project_id, every, task_queue, paused=False)
    try:
        await client.create_schedule(schedule_id(project_id), schedule)
    except ScheduleAlreadyRunningError:

        def replace(current: ScheduleUpdateInput) -> ScheduleUpdate:
            schedule.state = current.description.schedule.state
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id(project_id)).update(replace)


async def pause_schedule(client: Client, project_id: uuid.UUID, *, paused: bool) -> None:
    handle = client.get_schedule_handle(schedule_id(project_id))
    if paused:
        await handle.pause(note="paused by the project's owner")
    else:
        await handle.unpause(note="resumed by the project's owner")


async def trigger_schedule(client: Client, project_id: uuid.UUID) -> None:
    """Run the project's scheduled scrape now (skipped if one is still running)."""
    await client.get_schedule_handle(schedule_id(project_id)).trigger()


async def delete_schedule(client: Client, project_id: uuid.UUID) -> None:
    try:
        await client.get_schedule_handle(schedule_id(project_id)).delete()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise


async def describe_schedule(client: Client, project_id: uuid.UUID) -> ScheduleView | None:
    handle = client.get_schedule_handle(schedule_id(project_id))
    try:
        description = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    spec = description.schedule.spec
    every = spec.intervals[0].every if spec.intervals else None
    return ScheduleView(
        schedule_id=description.id,
        every_s=int(every.total_seconds()) if every else None,
        paused=description.schedule.state.paused,
        next_runs=list(description.info.next_action_times[:3]),
        recent_runs=[
            action.action.workflow_id
            for action in description.info.recent_actions[-5:]
            if hasattr(action.action, "workflow_id")
        ],
    )
