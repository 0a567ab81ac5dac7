"""Lists of the caller's videos, generations and runs: filters, newest first, cursor pages.

`GET /v1/runs` reads the tables that start runs (videos, generations, scrapes,
improvements each keep their run's workflow id), not Temporal's visibility store: the
tables are scoped by tenant through their indexes, ordered exactly (so cursors are
stable), consistent at once where visibility lags, and they answer while the workflow
engine is down. Temporal stays the place for a run's live detail (`GET /v1/runs/{id}`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, literal, select, union_all

from api.deps import CurrentTenant, SessionDep, SettingsDep, TenantContext
from api.errors import ERROR_RESPONSES, ApiError
from api.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageKey, decode_cursor, encode_cursor
from reelflow.core.concurrency import queue_positions
from reelflow.core.pagination import newest_first
from reelflow.core.settings import Settings
from schemas.api import ErrorResponse, UtcTimestamp
from schemas.discover import ScrapeStatus
from schemas.discover_tables import Scrape
from schemas.generation import GenerationStatus
from schemas.generation_tables import Generation
from schemas.improvement import ImprovementStatus
from schemas.improvement_run_tables import Improvement
from schemas.ingest import VideoStatus
from schemas.tables import Video

router = APIRouter(tags=["listings"], responses=ERROR_RESPONSES)

_LIST_ERRORS: dict[int | str, dict[str, Any]] = {400: {"model": ErrorResponse}}

VideoOrigin = Literal["upload", "import", "generated", "scraped"]
Pipeline = Literal["ingest", "generation", "scrape", "improvement"]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
Cursor = Annotated[
    str | None, Query(max_length=1024, description="`next_cursor` of the previous page.")
]
Since = Annotated[
    UtcTimestamp | None, Query(description="Created at or after; without an offset, UTC.")
]
Until = Annotated[UtcTimestamp | None, Query(description="Created before; without an offset, UTC.")]


class VideoItem(BaseModel):
    video_id: uuid.UUID
    title: str
    origin: str
    status: str
    stage: str
    collection_id: uuid.UUID | None
    duration_s: float | None
    cost_usd: Decimal
    workflow_id: str | None
    improved_from_video_id: uuid.UUID | None
    created_at: datetime
    completed_at: datetime | None


class VideoList(BaseModel):
    items: list[VideoItem]
    next_cursor: str | None


class GenerationItem(BaseModel):
    generation_id: uuid.UUID
    status: str
    requested_provider: str
    provider: str | None
    prompt: str
    duration_s: int
    aspect_ratio: str
    resolution: str
    estimated_cost_usd: Decimal
    cost_usd: Decimal
    video_id: uuid.UUID | None
    workflow_id: str | None
    error_code: str | None
    created_at: datetime
    completed_at: datetime | None


class GenerationList(BaseModel):
    items: list[GenerationItem]
    next_cursor: str | None


class RunItem(BaseModel):
    workflow_id: str
    pipeline: Pipeline
    status: str
    """The pipeline's own status of what the run works on (a video's, a generation's…)."""
    subject_id: uuid.UUID
    """The video, generation, scrape or improvement the run works on."""
    created_at: datetime
    queue_position: int | None = None
    """Waiting for one of the tenant's concurrent-run slots: its place in the queue (1 is
    next); 0 while it holds a slot; null when it holds none (ended, or not slot-limited)."""


class RunList(BaseModel):
    items: list[RunItem]
    next_cursor: str | None


def _window(
    column: Any, since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    if since is not None and until is not None and since > until:
        raise ApiError(422, "invalid_request", "since: must not be after until")
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(column >= since)
    if until is not None:
        conditions.append(column < until)
    return conditions


def _next_cursor(
    settings: Settings,
    tenant: TenantContext,
    list_name: str,
    keys: list[PageKey],
    limit: int,
) -> str | None:
    if len(keys) <= limit:
        return None
    return encode_cursor(settings.secret_key, tenant.id, list_name, keys[limit - 1])


@router.get("/v1/videos", response_model=VideoList, responses=_LIST_ERRORS)
async def list_videos(
    tenant: CurrentTenant,
    session: SessionDep,
    settings: SettingsDep,
    status: VideoStatus | None = None,
    origin: VideoOrigin | None = None,
    collection_id: uuid.UUID | None = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> VideoList:
    """The tenant's videos of every origin matching every filter, newest first."""
    after = decode_cursor(settings.secret_key, tenant.id, "videos", cursor)
    query = select(Video).where(
        Video.tenant_id == tenant.id, *_window(Video.created_at, since, until)
    )
    if status is not None:
        query = query.where(Video.status == status.value)
    if origin is not None:
        query = query.where(Video.origin == origin)
    if collection_id is not None:
        query = query.where(Video.collection_id == collection_id)
    query = newest_first(query, Video.created_at, Video.id, after=after, limit=limit)
    rows = list(await session.scalars(query))
    items = [
        VideoItem(
            video_id=row.id,
            title=row.title,
            origin=row.origin,
            status=row.status,
            stage=row.stage,
            collection_id=row.collection_id,
            duration_s=row.duration_s,
            cost_usd=row.cost_usd,
            workflow_id=row.workflow_id,
            improved_from_video_id=row.improved_from_video_id,
            created_at=row.created_at,
            completed_at=row.completed_at,
        )
        for row in rows[:limit]
    ]
    keys = [PageKey(row.created_at, row.id) for row in rows]
    return VideoList(items=items, next_cursor=_next_cursor(settings, tenant, "videos", keys, limit))


@router.get("/v1/generations", response_model=GenerationList, responses=_LIST_ERRORS)
async def list_generations(
    tenant: CurrentTenant,
    session: SessionDep,
    settings: SettingsDep,
    status: GenerationStatus | None = None,
    provider: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z0-9_.-]+$")] = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> GenerationList:
    """The tenant's generation requests matching every filter, newest first.

    `provider` matches the provider that ran it or, before one was chosen, the one asked for.
    """
    after = decode_cursor(settings.secret_key, tenant.id, "generations", cursor)
    query = select(Generation).where(
        Generation.tenant_id == tenant.id, *_window(Generation.created_at, since, until)
    )
    if status is not None:
        query = query.where(Generation.status == status.value)
    if provider is not None:
        query = query.where(
            (Generation.provider == provider)
            | (Generation.provider.is_(None) & (Generation.requested_provider == provider))
        )
    query = newest_first(query, Generation.created_at, Generation.id, after=after, limit=limit)
    rows = list(await session.scalars(query))
    items = [
        GenerationItem(
            generation_id=row.id,
            status=row.status,
            requested_provider=row.requested_provider,
            provider=row.provider,
            prompt=row.prompt,
            duration_s=row.duration_s,
            aspect_ratio=row.aspect_ratio,
            resolution=row.resolution,
            estimated_cost_usd=row.estimated_cost_usd,
            cost_usd=row.cost_usd,
            video_id=row.video_id,
            workflow_id=row.workflow_id,
            error_code=row.error_code,
            created_at=row.created_at,
            completed_at=row.completed_at,
        )
        for row in rows[:limit]
    ]
    keys = [PageKey(row.created_at, row.id) for row in rows]
    return GenerationList(
        items=items, next_cursor=_next_cursor(settings, tenant, "generations", keys, limit)
    )


_RUN_SOURCES: dict[Pipeline, Any] = {
    "ingest": Video,
    "generation": Generation,
    "scrape": Scrape,
    "improvement": Improvement,
}
_STATUSES: set[str] = (
    {s.value for s in VideoStatus}
    | {s.value for s in GenerationStatus}
    | {s.value for s in ScrapeStatus}
    | {s.value for s in ImprovementStatus}
)


def _runs_of(
    pipeline: Pipeline,
    tenant_id: uuid.UUID,
    status: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Select[Any]:
    table = _RUN_SOURCES[pipeline]
    query = select(
        table.workflow_id.label("workflow_id"),
        literal(pipeline).label("pipeline"),
        table.status.label("status"),
        table.id.label("subject_id"),
        table.created_at.label("created_at"),
    ).where(
        table.tenant_id == tenant_id,
        table.workflow_id.is_not(None),
        *_window(table.created_at, since, until),
    )
    if status is not None:
        query = query.where(table.status == status)
    return query


@router.get("/v1/runs", response_model=RunList, responses=_LIST_ERRORS)
async def list_runs(
    tenant: CurrentTenant,
    session: SessionDep,
    settings: SettingsDep,
    pipeline: Pipeline | None = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> RunList:
    """The tenant's pipeline runs (ingest, generation, scrape, improvement), newest first.

    `status` is the pipeline's own status of the run's subject (`completed`, `failed`…).
    """
    if status is not None and status not in _STATUSES:
        raise ApiError(
            422,
            "invalid_request",
            f"status: not a run status; one of {', '.join(sorted(_STATUSES))}",
        )
    after = decode_cursor(settings.secret_key, tenant.id, "runs", cursor)
    pipelines: list[Pipeline] = [pipeline] if pipeline else list(_RUN_SOURCES)
    runs = union_all(
        *(_runs_of(name, tenant.id, status, since, until) for name in pipelines)
    ).subquery("runs")
    query = select(runs)
    query = newest_first(query, runs.c.created_at, runs.c.subject_id, after=after, limit=limit)
    rows = (await session.execute(query)).all()
    positions = await queue_positions(session, [row.workflow_id for row in rows[:limit]])
    items = [
        RunItem(
            workflow_id=row.workflow_id,
            pipeline=row.pipeline,
            status=row.status,
            subject_id=row.subject_id,
            created_at=row.created_at,
            queue_position=positions.get(row.workflow_id),
        )
        for row in rows[:limit]
    ]
    keys = [PageKey(row.created_at, row.subject_id) for row in rows]
    return RunList(items=items, next_cursor=_next_cursor(settings, tenant, "runs", keys, limit))
