"""Scrapes of a project (start, show, cancel) and the project's re-scrape Schedule.

`POST /v1/projects/{id}/scrapes` takes JSON (`{"source": "apify"}` or `{"source":
"post_url", "url": ...}`) or a multipart `file` holding an Apify dataset export (JSON, JSONL
or CSV). The file is stored before the scrape row is written, and the row before its run is
started, so nothing is lost between the three.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, ValidationError
from temporalio.client import ScheduleAlreadyRunningError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import CurrentTenant, Resources, ResourcesDep
from api.errors import ERROR_RESPONSES, ApiError, not_found, temporal_unavailable
from api.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, decode_cursor, encode_cursor
from api.routers.videos import workflow_queue
from api.streaming import StoredFile, receive_form_upload
from reelflow.core.errors import DomainError
from reelflow.core.netguard import UrlNotAllowed, check_url
from reelflow.discover import scrapes
from schemas.api import ErrorResponse
from schemas.discover import ScrapeSource
from schemas.discover_tables import Project, Scrape

logger = logging.getLogger(__name__)

router = APIRouter(tags=["discover"], responses=ERROR_RESPONSES)

_DATASET_SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


class ScrapeRequest(BaseModel):
    """A scrape started with JSON: through Apify, or of a single post URL."""

    source: Literal["apify", "post_url"]
    url: str | None = Field(default=None, max_length=2048)


class ScrapeAccepted(BaseModel):
    scrape_id: uuid.UUID
    workflow_id: str
    status: str


class ScrapeView(BaseModel):
    scrape_id: uuid.UUID
    project_id: uuid.UUID
    source: str
    status: str
    stage: str
    posts_seen: int
    posts_new: int
    outliers: int
    processed: int
    errors: list[dict[str, Any]]
    """Rows that were not used and outliers that failed, each with its reason."""
    cost_usd: float
    workflow_id: str | None
    error_code: str | None
    error_message: str | None
    created_at: str | None
    completed_at: str | None


class ScheduleRequest(BaseModel):
    every_hours: float = Field(gt=0, le=24 * 30)


class ScheduleBody(BaseModel):
    schedule_id: str
    every_s: int | None
    paused: bool
    next_runs: list[str]
    recent_runs: list[str]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


def _uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise not_found(what, raw) from None


def _domain(err: DomainError) -> ApiError:
    status = 404 if err.code.endswith("not_found") else 422
    return ApiError(status, err.code, err.message)


def _dataset_format(file: StoredFile) -> str:
    name = file.filename.lower()
    for suffix, fmt in _DATASET_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    raise ApiError(
        415,
        "unsupported_media_type",
        "the dataset must be an Apify export: .json, .jsonl or .csv",
    )


_SCRAPE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ScrapeRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}


def _check_dataset_part(file: StoredFile) -> None:
    """Refuse a file that is not an export before any byte of it is stored."""
    _dataset_format(file)


@router.post(
    "/v1/projects/{project_id}/scrapes",
    status_code=202,
    response_model=ScrapeAccepted,
    openapi_extra=_SCRAPE_BODY,
    responses=_errors(400, 404, 413, 415, 422, 503),
)
async def start_scrape(
    project_id: str, request: Request, tenant: CurrentTenant, resources: ResourcesDep
) -> ScrapeAccepted:
    """Start a scrape of the project: through Apify, from a dataset file, or of one post."""
    project = _uuid(project_id, "project")
    async with resources.sessions() as session:
        try:
            await scrapes.get_project(session, tenant.id, project)
        except DomainError as err:
            raise _domain(err) from None
    content_type = request.headers.get("content-type", "")
    scrape_id = uuid.uuid4()
    stored_key: str | None = None
    dataset_format: str | None = None
    post_url: str | None = None
    if content_type.startswith("multipart/form-data"):
        source = ScrapeSource.DATASET_FILE
        form = await receive_form_upload(
            request,
            resources.storage,
            file_field="file",
            key_for=lambda file: (
                f"tenants/{tenant.id}/scrapes/{scrape_id}/dataset.{_dataset_format(file)}"
            ),
            max_file_bytes=resources.settings.max_upload_bytes,
            check_file=_check_dataset_part,
        )
        if form.file is None:
            raise ApiError(422, "invalid_request", "file: a `file` part is required")
        if form.file.key is None:
            raise ApiError(400, "empty_file", "the uploaded dataset is empty")
        stored_key, dataset_format = form.file.key, _dataset_format(form.file)
    else:
        try:
            body = ScrapeRequest.model_validate_json(await request.body())
        except ValidationError as err:
            problem = err.errors()[0]
            where = ".".join(str(part) for part in problem["loc"]) or "body"
            raise ApiError(422, "invalid_request", f"{where}: {problem['msg']}") from None
        if body.source == "post_url":
            if not body.url:
                raise ApiError(422, "invalid_request", "url: required for source post_url")
            try:
                checked = await anyio.to_thread.run_sync(
                    lambda: check_url(
                        body.url or "", allowed_hosts=resources.settings.import_test_allowed_hosts
                    )
                )
            except UrlNotAllowed as refused:
                raise ApiError(422, "url_not_allowed", str(refused)) from None
            source, post_url = ScrapeSource.POST_URL, checked.url
        else:
            if resources.settings.apify_token is None:
                raise ApiError(
                    422,
                    "provider_unavailable_here",
                    "scraping through Apify needs APIFY_TOKEN on this deployment; "
                    "upload an Apify dataset export as a multipart `file` instead",
                )
            source = ScrapeSource.APIFY
    try:
        async with resources.sessions() as session:
            scrape = await scrapes.create_scrape(
                session,
                tenant_id=tenant.id,
                project_id=project,
                source=source,
                dataset_key=stored_key,
                dataset_format=dataset_format,
                post_url=post_url,
                scrape_id=scrape_id,
            )
            await session.commit()
    except BaseException:
        if stored_key is not None:
            await anyio.to_thread.run_sync(resources.storage.delete, stored_key)
        raise
    try:
        workflow_id = await scrapes.start_scrape_run(
            resources.temporal, scrape=scrape, task_queue=workflow_queue(resources.settings)
        )
    except Exception:
        logger.exception("could not start the run of scrape %s", scrape_id)
        async with resources.sessions() as session:
            row = await session.get(Scrape, scrape_id)
            if row is not None:
                scrapes.mark_start_failed(row)
                await session.commit()
        raise temporal_unavailable() from None
    async with resources.sessions() as session:
        row = await session.get(Scrape, scrape_id)
        if row is not None and row.workflow_id is None:
            row.workflow_id = workflow_id
            await session.commit()
    return ScrapeAccepted(scrape_id=scrape_id, workflow_id=workflow_id, status="queued")


class ScrapePage(BaseModel):
    items: list[ScrapeView]
    next_cursor: str | None


@router.get(
    "/v1/projects/{project_id}/scrapes",
    response_model=ScrapePage,
    responses=_errors(400, 404),
)
async def list_project_scrapes(
    project_id: str,
    tenant: CurrentTenant,
    resources: ResourcesDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ScrapePage:
    """The project's scrapes, newest first, a page at a time."""
    project = _uuid(project_id, "project")
    secret = resources.settings.secret_key
    after = decode_cursor(secret, tenant.id, f"scrapes:{project}", cursor)
    async with resources.sessions() as session:
        try:
            await scrapes.get_project(session, tenant.id, project)
        except DomainError as err:
            raise _domain(err) from None
        rows, next_key = await scrapes.list_scrapes(
            session, tenant.id, project, limit=limit, after=after
        )
    return ScrapePage(
        items=[ScrapeView.model_validate(scrapes.scrape_view(row)) for row in rows],
        next_cursor=None
        if next_key is None
        else encode_cursor(secret, tenant.id, f"scrapes:{project}", next_key),
    )


@router.get("/v1/scrapes/{scrape_id}", response_model=ScrapeView, responses=_errors(404))
async def show_scrape(scrape_id: str, tenant: CurrentTenant, resources: ResourcesDep) -> ScrapeView:
    """Status, stage, counts, errors and cost of a scrape."""
    ident = _uuid(scrape_id, "scrape")
    async with resources.sessions() as session:
        scrape = await scrapes.get_scrape(session, tenant.id, ident)
        if scrape is None:
            raise not_found("scrape", scrape_id)
        return ScrapeView.model_validate(scrapes.scrape_view(scrape))


@router.post(
    "/v1/scrapes/{scrape_id}/cancel",
    status_code=202,
    response_model=ScrapeView,
    responses=_errors(404, 409, 503),
)
async def cancel_scrape(
    scrape_id: str, tenant: CurrentTenant, resources: ResourcesDep
) -> ScrapeView:
    """Stop a scrape: its Apify runs are aborted and the outliers in flight are canceled."""
    ident = _uuid(scrape_id, "scrape")
    async with resources.sessions() as session:
        scrape = await scrapes.get_scrape(session, tenant.id, ident)
        if scrape is None:
            raise not_found("scrape", scrape_id)
        try:
            await scrapes.cancel_scrape(resources.temporal, scrape)
        except scrapes.ScrapeNotCancelable as err:
            raise ApiError(409, "not_cancelable", str(err)) from None
        except RPCError:
            raise temporal_unavailable() from None
        return ScrapeView.model_validate(scrapes.scrape_view(scrape))


# --- schedule ------------------------------------------------------------------------------


async def _owned_project(resources: Resources, tenant_id: uuid.UUID, project_id: str) -> uuid.UUID:
    project = _uuid(project_id, "project")
    async with resources.sessions() as session:
        try:
            await scrapes.get_project(session, tenant_id, project)
        except DomainError as err:
            raise _domain(err) from None
    return project


def _schedule_body(view: scrapes.ScheduleView) -> ScheduleBody:
    return ScheduleBody(
        schedule_id=view.schedule_id,
        every_s=view.every_s,
        paused=view.paused,
        next_runs=[moment.isoformat() for moment in view.next_runs],
        recent_runs=view.recent_runs,
    )


async def _set_schedule_columns(
    resources: Resources, project: uuid.UUID, *, every_s: int | None, paused: bool
) -> None:
    async with resources.sessions() as session:
        row = await session.get(Project, project)
        if row is not None:
            row.schedule_interval_s = every_s
            row.schedule_paused = paused
            await session.commit()


@router.put(
    "/v1/projects/{project_id}/schedule",
    response_model=ScheduleBody,
    responses=_errors(404, 422, 503),
)
async def put_schedule(
    project_id: str, body: ScheduleRequest, tenant: CurrentTenant, resources: ResourcesDep
) -> ScheduleBody:
    """Re-scrape the project every `every_hours` (creates or changes its Schedule)."""
    project = await _owned_project(resources, tenant.id, project_id)
    if resources.settings.apify_token is None:
        raise ApiError(
            422,
            "provider_unavailable_here",
            "scheduled scrapes go through Apify; set APIFY_TOKEN on this deployment",
        )
    every = timedelta(hours=body.every_hours)
    try:
        await scrapes.set_schedule(
            resources.temporal,
            tenant_id=tenant.id,
            project_id=project,
            every=every,
            task_queue=workflow_queue(resources.settings),
        )
        view = await scrapes.describe_schedule(resources.temporal, project)
    except DomainError as err:
        raise _domain(err) from None
    except (RPCError, ScheduleAlreadyRunningError):
        raise temporal_unavailable() from None
    await _set_schedule_columns(
        resources, project, every_s=int(every.total_seconds()), paused=False
    )
    assert view is not None
    return _schedule_body(view)


@router.get(
    "/v1/projects/{project_id}/schedule", response_model=ScheduleBody, responses=_errors(404)
)
async def get_schedule(
    project_id: str, tenant: CurrentTenant, resources: ResourcesDep
) -> ScheduleBody:
    project = await _owned_project(resources, tenant.id, project_id)
    view = await scrapes.describe_schedule(resources.temporal, project)
    if view is None:
        raise ApiError(404, "not_found", "the project has no schedule")
    return _schedule_body(view)


@router.post(
    "/v1/projects/{project_id}/schedule/{action}",
    response_model=ScheduleBody,
    responses=_errors(404, 503),
)
async def act_on_schedule(
    project_id: str,
    action: Literal["pause", "resume", "trigger"],
    tenant: CurrentTenant,
    resources: ResourcesDep,
) -> ScheduleBody:
    """Pause, resume, or run the scheduled scrape now."""
    project = await _owned_project(resources, tenant.id, project_id)
    try:
        if await scrapes.describe_schedule(resources.temporal, project) is None:
            raise ApiError(404, "not_found", "the project has no schedule")
        if action == "trigger":
            await scrapes.trigger_schedule(resources.temporal, project)
        else:
            await scrapes.pause_schedule(resources.temporal, project, paused=action == "pause")
        view = await scrapes.describe_schedule(resources.temporal, project)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ApiError(404, "not_found", "the project has no schedule") from None
        raise temporal_unavailable() from None
    assert view is not None
    await _set_schedule_columns(resources, project, every_s=view.every_s, paused=view.paused)
    return _schedule_body(view)


@router.delete("/v1/projects/{project_id}/schedule", status_code=204, responses=_errors(404))
async def delete_schedule(project_id: str, tenant: CurrentTenant, resources: ResourcesDep) -> None:
    project = await _owned_project(resources, tenant.id, project_id)
    try:
        await scrapes.delete_schedule(resources.temporal, project)
    except RPCError:
        raise temporal_unavailable() from None
    await _set_schedule_columns(resources, project, every_s=None, paused=False)
