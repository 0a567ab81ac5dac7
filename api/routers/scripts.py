"""Scripts: create (by hand or from an adaptation), list, read, version, move, link, export.

Every route is scoped by the caller's tenant: another tenant's script is a 404. Status moves
follow `schemas.discover.SCRIPT_TRANSITIONS`; a move outside it is a 409 whose message names
the allowed next states (as every script view's `allowed_next` does), and who moved it is the
caller's API key prefix (never the key).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, field_validator, model_validator

from api.deps import CurrentTenant, SessionDep, SettingsDep
from api.errors import ERROR_RESPONSES, ApiError, not_found
from api.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageKey, decode_cursor, encode_cursor
from reelflow.discover import export, scripts
from reelflow.discover.export import StatusChange, status_changes
from reelflow.discover.scripts import (
    InvalidScript,
    ScriptObjectNotFound,
    ScriptTransitionRefused,
)
from schemas.api import ErrorResponse, StoredText
from schemas.discover import ScriptContent, ScriptStatus
from schemas.discover_tables import Script

router = APIRouter(prefix="/v1/scripts", tags=["scripts"], responses=ERROR_RESPONSES)

LIST_NAME = "scripts"
MAX_TITLE_CHARS = scripts.MAX_TITLE_CHARS
MAX_TEXT_CHARS = scripts.MAX_TEXT_CHARS


# --- request and response bodies -----------------------------------------------------------


def _checked_content(content: ScriptContent | None) -> ScriptContent | None:
    if content is not None and (problem := scripts.content_problem(content)) is not None:
        raise ValueError(f"content.{problem}")
    return content


def _checked_title(title: str | None) -> str | None:
    if title is not None and not title.strip():
        raise ValueError("must not be empty")
    return None if title is None else title.strip()


class CreateScriptRequest(BaseModel):
    """Either `{adaptation_id, project_id?, title?}`: the first version of the script an
    adaptation drafted (asking again returns the same script); or, by hand,
    `{title, content, project_id?, product_id?, notes?}`."""

    adaptation_id: uuid.UUID | None = None
    title: StoredText | None = Field(default=None, max_length=MAX_TITLE_CHARS)
    content: ScriptContent | None = None
    project_id: uuid.UUID | None = None
    product_id: uuid.UUID | None = None
    notes: StoredText | None = Field(default=None, max_length=MAX_TEXT_CHARS)

    check_title = field_validator("title")(_checked_title)
    check_content = field_validator("content")(_checked_content)

    @model_validator(mode="after")
    def _one_way(self) -> CreateScriptRequest:
        if self.adaptation_id is not None:
            if self.content is not None or self.product_id is not None:
                raise ValueError(
                    "give either adaptation_id, or content (with title and optional "
                    "product_id), not both: a script from an adaptation takes both from it"
                )
        elif self.content is None or self.title is None:
            raise ValueError("give adaptation_id, or title and content")
        return self


class NewVersionRequest(BaseModel):
    """A new draft version; content and title default to the version it is made from."""

    content: ScriptContent | None = None
    title: StoredText | None = Field(default=None, max_length=MAX_TITLE_CHARS)
    notes: StoredText = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    """What this version changes, and why."""

    check_title = field_validator("title")(_checked_title)
    check_content = field_validator("content")(_checked_content)

    @field_validator("notes")
    @classmethod
    def _notes(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must say what this version changes")
        return value.strip()


class StatusRequest(BaseModel):
    """The status to move to."""

    status: ScriptStatus


class LinksRequest(BaseModel):
    """The video produced from a script version and the post that published it; an id
    left out keeps its link."""

    produced_video_id: uuid.UUID | None = None
    published_post_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _something(self) -> LinksRequest:
        if self.produced_video_id is None and self.published_post_id is None:
            raise ValueError("give produced_video_id, published_post_id or both")
        return self


class ScriptSummary(BaseModel):
    """A script version in a list."""

    script_id: uuid.UUID
    parent_script_id: uuid.UUID | None
    version: int
    title: str
    status: ScriptStatus
    project_id: uuid.UUID | None
    product_id: uuid.UUID | None
    brand_id: uuid.UUID | None
    adaptation_id: uuid.UUID | None
    predicted_viral_score: float | None
    produced_video_id: uuid.UUID | None
    published_post_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class ScriptView(ScriptSummary):
    """A script version with its body, its recorded moves and where it may move next."""

    source_video_id: uuid.UUID | None
    content: ScriptContent
    notes: str | None
    status_history: list[StatusChange]
    allowed_next: list[ScriptStatus]


class VersionSummary(BaseModel):
    """One version of a script's chain."""

    script_id: uuid.UUID
    parent_script_id: uuid.UUID | None
    version: int
    title: str
    status: ScriptStatus
    notes: str | None
    created_at: datetime


class ScriptDetail(ScriptView):
    """A script version and every version of its chain, oldest first."""

    versions: list[VersionSummary]


class ScriptList(BaseModel):
    """A page of script versions, newest first; `next_cursor` continues it."""

    items: list[ScriptSummary]
    next_cursor: str | None


def _summary_fields(script: Script) -> dict[str, Any]:
    return {
        "script_id": script.id,
        "parent_script_id": script.parent_script_id,
        "version": script.version,
        "title": script.title,
        "status": ScriptStatus(script.status),
        "project_id": script.project_id,
        "product_id": script.product_id,
        "brand_id": script.brand_id,
        "adaptation_id": script.adaptation_id,
        "predicted_viral_score": script.predicted_viral_score,
        "produced_video_id": script.produced_video_id,
        "published_post_id": script.published_post_id,
        "created_at": script.created_at,
        "updated_at": script.updated_at,
    }


def _view_fields(script: Script) -> dict[str, Any]:
    return {
        **_summary_fields(script),
        "source_video_id": script.source_video_id,
        "content": ScriptContent.model_validate(script.content),
        "notes": script.notes,
        "status_history": status_changes(script),
        "allowed_next": list(scripts.allowed_next(ScriptStatus(script.status))),
    }


def script_view(script: Script) -> ScriptView:
    return ScriptView(**_view_fields(script))


# --- helpers -------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False)


async def current_actor(
    _tenant: CurrentTenant,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """Who a recorded move names: the caller's API key prefix (as stored with the key)."""
    return "api" if credentials is None else credentials.credentials[:10]


Actor = Annotated[str, Depends(current_actor)]


def _script_id(raw: str) -> uuid.UUID:
    """A path id that is not a UUID cannot name a script: 404, like any unknown id."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise not_found("script", raw) from None


def _domain_error(exc: ScriptObjectNotFound | InvalidScript) -> ApiError:
    if isinstance(exc, ScriptObjectNotFound):
        return not_found(exc.what, exc.ident)
    return ApiError(422, "invalid_request", str(exc))


def transition_refused(exc: ScriptTransitionRefused) -> ApiError:
    """409 `transition_not_allowed`; the message names the allowed next states (the envelope
    has no field for them; `allowed_next` on the script lists them for programs)."""
    return ApiError(409, "transition_not_allowed", exc.message)


# --- routes --------------------------------------------------------------------------------


@router.post("", status_code=201, response_model=ScriptView)
async def create_script(
    body: CreateScriptRequest, tenant: CurrentTenant, actor: Actor, session: SessionDep
) -> ScriptView:
    """A new script in `draft`: from an adaptation (once per adaptation), or by hand."""
    try:
        if body.adaptation_id is not None:
            script = await scripts.create_from_adaptation(
                session,
                tenant_id=tenant.id,
                adaptation_id=body.adaptation_id,
                project_id=body.project_id,
                title=body.title,
                by=actor,
            )
        else:
            assert body.title is not None and body.content is not None  # the model checked
            script = await scripts.create_script(
                session,
                tenant_id=tenant.id,
                title=body.title,
                content=body.content,
                project_id=body.project_id,
                product_id=body.product_id,
                notes=body.notes,
                by=actor,
            )
    except (ScriptObjectNotFound, InvalidScript) as exc:
        raise _domain_error(exc) from None
    await session.commit()
    return script_view(script)


@router.get("", response_model=ScriptList, responses={400: {"model": ErrorResponse}})
async def list_scripts(
    tenant: CurrentTenant,
    session: SessionDep,
    settings: SettingsDep,
    project_id: uuid.UUID | None = None,
    product_id: uuid.UUID | None = None,
    brand_id: uuid.UUID | None = None,
    status: ScriptStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> ScriptList:
    """The tenant's script versions matching every filter, newest first, a page at a time."""
    after = decode_cursor(settings.secret_key, tenant.id, LIST_NAME, cursor)
    page = await scripts.list_scripts(
        session,
        tenant_id=tenant.id,
        project_id=project_id,
        product_id=product_id,
        brand_id=brand_id,
        status=status,
        limit=limit,
        after=after,
    )
    next_cursor = None
    if page.has_more:
        last = page.items[-1]
        next_cursor = encode_cursor(
            settings.secret_key, tenant.id, LIST_NAME, PageKey(last.created_at, last.id)
        )
    return ScriptList(
        items=[ScriptSummary(**_summary_fields(s)) for s in page.items], next_cursor=next_cursor
    )


@router.get("/{script_id}", response_model=ScriptDetail)
async def get_script(script_id: str, tenant: CurrentTenant, session: SessionDep) -> ScriptDetail:
    """A script version, its moves, and every version of its chain (oldest first)."""
    ident = _script_id(script_id)
    try:
        script = await scripts.get_script(session, tenant_id=tenant.id, script_id=ident)
        chain = await scripts.version_history(session, tenant_id=tenant.id, script_id=ident)
    except ScriptObjectNotFound as exc:
        raise _domain_error(exc) from None
    return ScriptDetail(
        **_view_fields(script),
        versions=[
            VersionSummary(
                script_id=v.id,
                parent_script_id=v.parent_script_id,
                version=v.version,
                title=v.title,
                status=ScriptStatus(v.status),
                notes=v.notes,
                created_at=v.created_at,
            )
            for v in chain
        ],
    )


@router.post("/{script_id}/versions", status_code=201, response_model=ScriptView)
async def new_version(
    script_id: str,
    body: NewVersionRequest,
    tenant: CurrentTenant,
    actor: Actor,
    session: SessionDep,
) -> ScriptView:
    """A new `draft` version made from this one; numbered after the chain's newest."""
    try:
        script = await scripts.new_version(
            session,
            tenant_id=tenant.id,
            script_id=_script_id(script_id),
            content=body.content,
            title=body.title,
            notes=body.notes,
            by=actor,
        )
    except (ScriptObjectNotFound, InvalidScript) as exc:
        raise _domain_error(exc) from None
    await session.commit()
    return script_view(script)


@router.post(
    "/{script_id}/status",
    response_model=ScriptView,
    responses={409: {"model": ErrorResponse, "description": "transition_not_allowed"}},
)
async def change_status(
    script_id: str,
    body: StatusRequest,
    tenant: CurrentTenant,
    actor: Actor,
    session: SessionDep,
) -> ScriptView:
    """Move the script: `draft → review → approved → in_production → produced → published`,
    with `review → draft`, `approved → review` and `in_production → approved` as the only
    ways back. Anything else (a skip, an unlisted way back, any move from `published`, a
    move to the same state) is a 409 naming the allowed next states."""
    try:
        script = await scripts.change_status(
            session,
            tenant_id=tenant.id,
            script_id=_script_id(script_id),
            to=body.status,
            by=actor,
            now=datetime.now(UTC),
        )
    except ScriptObjectNotFound as exc:
        raise _domain_error(exc) from None
    except ScriptTransitionRefused as exc:
        raise transition_refused(exc) from None
    await session.commit()
    return script_view(script)


@router.patch("/{script_id}/links", response_model=ScriptView)
async def link_production(
    script_id: str, body: LinksRequest, tenant: CurrentTenant, session: SessionDep
) -> ScriptView:
    """Link the version to the video produced from it and the post that published it."""
    try:
        script = await scripts.link_production(
            session,
            tenant_id=tenant.id,
            script_id=_script_id(script_id),
            produced_video_id=body.produced_video_id,
            published_post_id=body.published_post_id,
        )
    except ScriptObjectNotFound as exc:
        raise _domain_error(exc) from None
    await session.commit()
    return script_view(script)


ExportFormat = Literal["md", "pdf", "json"]

_MEDIA_TYPES: dict[str, str] = {
    "md": "text/markdown; charset=utf-8",
    "pdf": "application/pdf",
    "json": "application/json",
}


@router.get(
    "/{script_id}/export",
    response_class=Response,
    responses={
        200: {
            "content": {media: {} for media in _MEDIA_TYPES.values()},
            "description": "The document, as an attachment named after the title and version.",
        }
    },
)
async def export_script(
    script_id: str,
    tenant: CurrentTenant,
    session: SessionDep,
    format: ExportFormat = "md",
) -> Response:
    """The version as a production document: Markdown, PDF or JSON (`reelflow.script/1`)."""
    try:
        script = await scripts.get_script(
            session, tenant_id=tenant.id, script_id=_script_id(script_id)
        )
    except ScriptObjectNotFound as exc:
        raise _domain_error(exc) from None
    product_name, brand_name = await scripts.export_names(session, script)
    await session.close()
    if format == "md":
        body = export.to_markdown(script, product_name=product_name, brand_name=brand_name)
        data = body.encode()
    elif format == "json":
        data = export.to_json(script, product_name=product_name, brand_name=brand_name)
    else:
        # Loading the font and laying out pages is CPU work: off the event loop.
        data = await anyio.to_thread.run_sync(
            partial(export.to_pdf, script, product_name=product_name, brand_name=brand_name)
        )
    filename = export.export_filename(script, format)
    return Response(
        content=data,
        media_type=_MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
