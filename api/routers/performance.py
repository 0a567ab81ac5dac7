"""Performance metrics of videos: snapshots, bulk import, summaries, series, Discover links.

Refusals: an unknown id (or another tenant's) is 404, a second snapshot at the same moment
409, numbers that cannot be true 422 (`reelflow.improve.performance` says which and why), an
import file that is not CSV or JSON 422 with nothing written.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import APIRouter, Request
from pydantic import BaseModel

from api.deps import CurrentTenant, ResourcesDep, SessionDep
from api.errors import ERROR_RESPONSES, ApiError, not_found
from api.streaming import StoredFile, receive_form_upload
from reelflow.core.errors import DomainError
from reelflow.improve import aggregates, performance
from reelflow.improve.performance_import import import_snapshots
from schemas.api import ErrorResponse
from schemas.discover import Platform
from schemas.failures import FailureCode
from schemas.improve import (
    ImportReport,
    PerformanceIn,
    PerformancePatch,
    PerformanceSnapshot,
    SeriesPerformance,
    VideoPerformanceSummary,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

router = APIRouter(tags=["performance"], responses=ERROR_RESPONSES)


class PerformanceHistory(BaseModel):
    """A video's snapshots, oldest first. A history is bounded by days × platforms, so it
    comes in one page (`next_cursor` is always null)."""

    items: list[PerformanceSnapshot]
    next_cursor: str | None = None


class LinkPostRequest(BaseModel):
    post_id: uuid.UUID


class LinkPostResult(BaseModel):
    video_id: uuid.UUID
    post_id: uuid.UUID
    copied: int
    """Snapshots copied by this call (0 when the link existed and nothing new was scraped)."""


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


def _uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise not_found(what, raw) from None


_NOT_FOUND = {
    FailureCode.VIDEO_NOT_FOUND,
    FailureCode.SNAPSHOT_NOT_FOUND,
    FailureCode.POST_NOT_FOUND,
    FailureCode.COLLECTION_NOT_FOUND,
}


def _refusal(err: DomainError) -> ApiError:
    if err.code in _NOT_FOUND:
        return ApiError(404, "not_found", err.message)
    if err.code == FailureCode.DUPLICATE_SNAPSHOT:
        return ApiError(409, err.code.value, err.message)
    return ApiError(422, err.code.value, err.message)


def _now() -> datetime:
    return datetime.now(UTC)


@router.post(
    "/v1/videos/{video_id}/performance",
    status_code=201,
    response_model=PerformanceSnapshot,
    responses=_errors(404, 409, 422),
)
async def add_performance(
    video_id: str, body: PerformanceIn, tenant: CurrentTenant, session: SessionDep
) -> PerformanceSnapshot:
    """Record one snapshot of the video's numbers on a platform."""
    video = _uuid(video_id, "video")
    try:
        stored = await performance.add_snapshot(
            session, tenant_id=tenant.id, video_id=video, snapshot=body, now=_now()
        )
    except DomainError as err:
        raise _refusal(err) from None
    await session.commit()
    return stored


@router.get(
    "/v1/videos/{video_id}/performance",
    response_model=PerformanceHistory,
    responses=_errors(404),
)
async def performance_history(
    video_id: str, tenant: CurrentTenant, session: SessionDep, platform: Platform | None = None
) -> PerformanceHistory:
    """The video's snapshots, oldest first, optionally of one platform."""
    video = _uuid(video_id, "video")
    try:
        items = await performance.list_snapshots(
            session, tenant_id=tenant.id, video_id=video, platform=platform
        )
    except DomainError as err:
        raise _refusal(err) from None
    await session.commit()  # keeps snapshots just copied from a linked post
    return PerformanceHistory(items=items)


@router.patch(
    "/v1/videos/{video_id}/performance/{snapshot_id}",
    response_model=PerformanceSnapshot,
    responses=_errors(404, 409, 422),
)
async def change_performance(
    video_id: str,
    snapshot_id: str,
    body: PerformancePatch,
    tenant: CurrentTenant,
    session: SessionDep,
) -> PerformanceSnapshot:
    """Change some fields of a snapshot; the result is checked like a new one."""
    video = _uuid(video_id, "video")
    snapshot = _uuid(snapshot_id, "snapshot")
    try:
        changed = await performance.update_snapshot(
            session,
            tenant_id=tenant.id,
            video_id=video,
            snapshot_id=snapshot,
            patch=body,
            now=_now(),
        )
    except DomainError as err:
        raise _refusal(err) from None
    await session.commit()
    return changed


@router.delete(
    "/v1/videos/{video_id}/performance/{snapshot_id}",
    status_code=204,
    responses=_errors(404),
)
async def delete_performance(
    video_id: str, snapshot_id: str, tenant: CurrentTenant, session: SessionDep
) -> None:
    video = _uuid(video_id, "video")
    snapshot = _uuid(snapshot_id, "snapshot")
    try:
        await performance.delete_snapshot(
            session, tenant_id=tenant.id, video_id=video, snapshot_id=snapshot
        )
    except DomainError as err:
        raise _refusal(err) from None
    await session.commit()


@router.get(
    "/v1/videos/{video_id}/performance/summary",
    response_model=VideoPerformanceSummary,
    responses=_errors(404),
)
async def performance_summary(
    video_id: str, tenant: CurrentTenant, session: SessionDep
) -> VideoPerformanceSummary:
    """Totals, latest values per platform against your usual, growth, best platform."""
    video = _uuid(video_id, "video")
    try:
        summary = await aggregates.video_summary(session, tenant_id=tenant.id, video_id=video)
    except DomainError as err:
        raise _refusal(err) from None
    await session.commit()
    return summary


@router.get(
    "/v1/collections/{collection_id}/performance",
    response_model=SeriesPerformance,
    responses=_errors(404),
)
async def series_performance(
    collection_id: str, tenant: CurrentTenant, session: SessionDep
) -> SeriesPerformance:
    """Best and worst episodes, cadence against views and hashtag lift of a series."""
    collection = _uuid(collection_id, "collection")
    try:
        result = await aggregates.series_performance(
            session, tenant_id=tenant.id, collection_id=collection
        )
    except DomainError as err:
        raise _refusal(err) from None
    await session.commit()
    return result


@router.post(
    "/v1/videos/{video_id}/performance/link-post",
    response_model=LinkPostResult,
    responses=_errors(404),
)
async def link_post(
    video_id: str, body: LinkPostRequest, tenant: CurrentTenant, session: SessionDep
) -> LinkPostResult:
    """Take the video's numbers from the Discover post it was published as, now and later."""
    video = _uuid(video_id, "video")
    try:
        copied = await performance.link_post(
            session, tenant_id=tenant.id, video_id=video, post_id=body.post_id
        )
    except DomainError as err:
        raise _refusal(err) from None
    await session.commit()
    return LinkPostResult(video_id=video, post_id=body.post_id, copied=copied)


# --- import -------------------------------------------------------------------------------


class _ChunkStream(io.RawIOBase):
    """A stored object's chunks as a readable binary stream."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        size = min(len(view), len(self._pending))
        view[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


_IMPORT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


@router.post(
    "/v1/performance/import",
    response_model=ImportReport,
    openapi_extra=_IMPORT_BODY,
    responses=_errors(400, 413, 415, 422),
)
async def import_performance(
    request: Request, tenant: CurrentTenant, resources: ResourcesDep
) -> ImportReport:
    """Import snapshots from a CSV or JSON file (multipart `file`); every line is reported.

    The accepted lines are written in one transaction; a file that is not CSV or JSON
    writes nothing. Importing the same file again changes nothing.
    """
    upload_id = uuid.uuid4()

    def key_for(_file: StoredFile) -> str:
        return f"tenants/{tenant.id}/performance-imports/{upload_id}"

    form = await receive_form_upload(
        request,
        resources.storage,
        file_field="file",
        key_for=key_for,
        max_file_bytes=resources.settings.performance_import_max_bytes,
    )
    if form.file is None:
        raise ApiError(422, "invalid_request", "file: a `file` part is required")
    if form.file.key is None:
        raise ApiError(422, FailureCode.INVALID_DATASET.value, "the uploaded file is empty")
    key = form.file.key
    try:
        chunks = await anyio.to_thread.run_sync(resources.storage.iter_bytes, key)
        stream = io.BufferedReader(_ChunkStream(chunks))
        async with resources.sessions() as session:
            try:
                report = await import_snapshots(
                    session,
                    tenant_id=tenant.id,
                    stream=stream,
                    filename=form.file.filename,
                    now=_now(),
                )
            except DomainError as err:
                await session.rollback()
                raise _refusal(err) from None
            await session.commit()
        return report
    finally:
        await anyio.to_thread.run_sync(resources.storage.delete, key)
