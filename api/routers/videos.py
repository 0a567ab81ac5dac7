"""Video assets: direct upload, import from a URL, status, transcript and media."""

from __future__ import annotations

import logging
import mimetypes
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Annotated, Any
from urllib.parse import urlsplit

import anyio.to_thread
from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse

from api.deps import CurrentTenant, Resources, ResourcesDep, SessionDep, TenantContext
from api.errors import ERROR_RESPONSES, ApiError, not_found
from api.routers.billing import quota_refused, warn
from api.streaming import StoredFile, receive_form_upload
from reelflow.assets import videos
from reelflow.billing.usage import QuotaExceeded, admit_media
from reelflow.core.db import SessionFactory
from reelflow.core.runs import start_import, start_ingest
from reelflow.core.settings import Settings
from reelflow.core.storage import ObjectNotFound, Storage
from reelflow.ingest.speech_plan import coverage_of
from schemas.api import (
    MAX_TITLE_CHARS,
    ErrorResponse,
    ImportRequest,
    Transcript,
    TranscriptCoverage,
    TranscriptGap,
    TranscriptLine,
    VideoAccepted,
    VideoDetail,
    VideoError,
    media_type_problem,
    text_problem,
)
from schemas.ingest import VideoStatus
from schemas.queues import TaskQueues
from schemas.tables import Video

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/videos", tags=["videos"], responses=ERROR_RESPONSES)


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


def parse_video_id(raw: str) -> uuid.UUID:
    """A path id that is not a UUID cannot name a video: 404, like any unknown id."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise not_found("video", raw) from None


async def load_video(sessions: SessionFactory, tenant: TenantContext, video_id: uuid.UUID) -> Video:
    """The tenant's video or 404, read in a short session of its own."""
    async with sessions() as session:
        video = await videos.get_video(session, tenant.id, video_id)
    if video is None:
        raise not_found("video", video_id)
    return video


def _temporal_unavailable() -> ApiError:
    return ApiError(
        503,
        "temporal_unavailable",
        "the workflow engine did not accept the run; try again shortly",
    )


def workflow_queue(settings: Settings) -> str:
    """The workflow task queue of the configured queue family (`TASK_QUEUE_PREFIX`)."""
    return TaskQueues.for_prefix(settings.task_queue_prefix).workflows


async def start_run_for(
    resources: Resources,
    tenant: TenantContext,
    video_id: uuid.UUID,
    start: Callable[[], Awaitable[str]],
    *,
    what: str,
) -> str:
    """Start the video's run with `start()` and remember its workflow id on the row.

    Raises:
        ApiError: 503 when Temporal did not take the run; the row is then marked failed
            with a readable reason instead of sitting in `pending` forever.
    """
    try:
        workflow_id = await start()
    except Exception:  # any failure here means no run exists to move the video on
        logger.exception("could not start the %s run of video %s", what, video_id)
        async with resources.sessions() as session:
            await videos.mark_failed(
                session,
                tenant_id=tenant.id,
                video_id=video_id,
                code="start_failed",
                message=f"the {what} run could not be started; {what} the video again",
            )
            await session.commit()
        raise _temporal_unavailable() from None
    async with resources.sessions() as session:
        await videos.set_workflow_id(
            session, tenant_id=tenant.id, video_id=video_id, workflow_id=workflow_id
        )
        await session.commit()
    return workflow_id


async def _delete_quietly(storage: Storage, key: str) -> None:
    try:
        await anyio.to_thread.run_sync(storage.delete, key)
    except Exception:
        logger.warning("could not delete stored object %s", key, exc_info=True)


def _invalid(field: str, problem: str) -> ApiError:
    return ApiError(422, "invalid_request", f"{field}: {problem}")


def _check_file_part(file: StoredFile) -> None:
    """Refuse a file part whose name or type could not be stored, before its bytes are."""
    problem = text_problem(file.filename)
    if problem is not None:
        raise _invalid("filename", problem)
    if file.content_type is not None:
        problem = media_type_problem(file.content_type)
        if problem is not None:
            raise _invalid("file", f"the part's Content-Type {problem}")


def _form_title(fields: dict[str, str]) -> str:
    title = fields.get("title", "").strip()
    if not title:
        raise _invalid("title", "a non-empty `title` field is required")
    if len(title) > MAX_TITLE_CHARS:
        raise _invalid("title", f"must be at most {MAX_TITLE_CHARS} characters")
    problem = text_problem(title)
    if problem is not None:
        raise _invalid("title", problem)
    return title


def _form_collection(fields: dict[str, str]) -> uuid.UUID | None:
    raw = fields.get("collection_id", "").strip()
    if not raw:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise _invalid("collection_id", "must be a UUID") from None


_MULTIPART_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "title"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "title": {"type": "string", "maxLength": MAX_TITLE_CHARS},
                        "collection_id": {"type": "string", "format": "uuid"},
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=202,
    response_model=VideoAccepted,
    openapi_extra=_MULTIPART_BODY,
    responses=_errors(400, 402, 413, 415, 503),
)
async def upload_video(
    request: Request, tenant: CurrentTenant, resources: ResourcesDep, response: Response
) -> VideoAccepted:
    """Upload a video as multipart/form-data and start ingesting it."""
    settings, storage = resources.settings, resources.storage
    video_id = uuid.uuid4()

    def key_for(file: StoredFile) -> str:
        return videos.source_key(tenant.id, video_id, videos.safe_extension(file.filename))

    form = await receive_form_upload(
        request,
        storage,
        file_field="file",
        key_for=key_for,
        max_file_bytes=settings.max_upload_bytes,
        check_file=_check_file_part,
    )
    stored = form.file
    try:
        if stored is None:
            raise _invalid("file", "a `file` part is required")
        if stored.key is None:
            raise ApiError(400, "empty_file", "the uploaded file is empty")
        title = _form_title(form.fields)
        collection_id = _form_collection(form.fields)
        # The row is written only now that the bytes are safely stored.
        async with resources.sessions() as session:
            try:
                admitted = await admit_media(
                    session, tenant_id=tenant.id, incoming_bytes=stored.size, now=_now()
                )
            except QuotaExceeded as exc:
                raise quota_refused(exc) from None
            warn(response, admitted)
            await videos.create_video(
                session,
                tenant_id=tenant.id,
                video_id=video_id,
                title=title,
                origin="upload",
                source_key=stored.key,
                status=VideoStatus.PENDING,
                collection_id=collection_id,
                filename=stored.filename[:300] or None,
                content_type=stored.content_type,
                size_bytes=stored.size,
            )
            await session.commit()
    except BaseException:
        if stored is not None and stored.key is not None:
            await _delete_quietly(storage, stored.key)
        raise
    workflow_id = await start_run_for(
        resources,
        tenant,
        video_id,
        lambda: start_ingest(
            resources.temporal,
            tenant_id=str(tenant.id),
            video_id=str(video_id),
            task_queue=workflow_queue(resources.settings),
        ),
        what="upload",
    )
    return VideoAccepted(video_id=video_id, workflow_id=workflow_id, status=VideoStatus.PENDING)


def _now() -> datetime:
    return datetime.now(UTC)


def _title_from_url(url: str) -> str:
    parts = urlsplit(url)
    name = PurePosixPath(parts.path).name
    return (name or parts.hostname or "imported video")[:MAX_TITLE_CHARS]


@router.post(
    "/import",
    status_code=202,
    response_model=VideoAccepted,
    responses=_errors(400, 402, 503),
)
async def import_video(
    body: ImportRequest, tenant: CurrentTenant, resources: ResourcesDep, response: Response
) -> VideoAccepted:
    """Import a video from a public http(s) URL and start ingesting it."""
    # Imported here: the SSRF guard brings httpx (and its CLI's rich and click), a tenth of
    # the API's start-up, for a route most deployments rarely call.
    from reelflow.core.netguard import UrlNotAllowed, check_url

    try:
        # Resolves DNS, hence a thread; no request reaches the target before this passes.
        checked = await anyio.to_thread.run_sync(check_url, body.url)
    except UrlNotAllowed as exc:
        raise ApiError(400, "url_not_allowed", exc.reason) from None
    url = checked.url
    video_id = uuid.uuid4()
    extension = videos.safe_extension(urlsplit(url).path)
    async with resources.sessions() as session:
        try:
            # Its size is known only once downloaded: a full storage or month refuses it now.
            admitted = await admit_media(session, tenant_id=tenant.id, incoming_bytes=0, now=_now())
        except QuotaExceeded as exc:
            raise quota_refused(exc) from None
        warn(response, admitted)
        await videos.create_video(
            session,
            tenant_id=tenant.id,
            video_id=video_id,
            title=body.title or _title_from_url(url),
            origin="import",
            source_key=videos.source_key(tenant.id, video_id, extension),
            status=VideoStatus.PENDING,
            collection_id=body.collection_id,
            source_url=url,
        )
        await session.commit()
    workflow_id = await start_run_for(
        resources,
        tenant,
        video_id,
        lambda: start_import(
            resources.temporal,
            tenant_id=str(tenant.id),
            video_id=str(video_id),
            url=url,
            task_queue=workflow_queue(resources.settings),
        ),
        what="import",
    )
    return VideoAccepted(video_id=video_id, workflow_id=workflow_id, status=VideoStatus.PENDING)


def transcript_coverage(video: Video) -> TranscriptCoverage | None:
    """Coverage from the video's stored plan, once every window has been decoded."""
    found = coverage_of(video.transcription_plan)
    if found is None:
        return None
    return TranscriptCoverage(
        share=found.share,
        gaps=[TranscriptGap(start_s=a, end_s=b, reason=reason) for a, b, reason in found.gaps],
    )


def video_detail(video: Video) -> VideoDetail:
    """The API view of a video row."""
    error = (
        VideoError(code=video.error_code, message=video.error_message or video.error_code)
        if video.error_code
        else None
    )
    return VideoDetail(
        video_id=video.id,
        title=video.title,
        origin=video.origin,
        collection_id=video.collection_id,
        status=video.status,
        stage=video.stage,
        progress=video.progress,
        error=error,
        note=video.note,
        duration_s=video.duration_s,
        chunk_count=video.chunk_count,
        cost_usd=float(video.cost_usd or 0),
        workflow_id=video.workflow_id,
        filename=video.filename,
        content_type=video.content_type,
        size_bytes=video.size_bytes,
        source_url=video.source_url,
        width=video.width,
        height=video.height,
        has_audio=video.has_audio,
        embedding_model=video.embedding_model,
        coverage=transcript_coverage(video),
        created_at=video.created_at,
        updated_at=video.updated_at,
        completed_at=video.completed_at,
    )


@router.get("/{video_id}", response_model=VideoDetail)
async def get_video(video_id: str, tenant: CurrentTenant, session: SessionDep) -> VideoDetail:
    """Get a video with its ingest status, stage, progress and cost."""
    video = await videos.get_video(session, tenant.id, parse_video_id(video_id))
    if video is None:
        raise not_found("video", video_id)
    return video_detail(video)


@router.get("/{video_id}/transcript", response_model=Transcript)
async def get_transcript(video_id: str, tenant: CurrentTenant, session: SessionDep) -> Transcript:
    """Get a video's timed transcript segments and full text."""
    parsed = parse_video_id(video_id)
    video = await videos.get_video(session, tenant.id, parsed)
    if video is None:
        raise not_found("video", video_id)
    segments = await videos.list_transcript(session, tenant_id=tenant.id, video_id=parsed)
    lines = [
        TranscriptLine(start_s=s.start_s, end_s=s.end_s, text=s.text.strip()) for s in segments
    ]
    return Transcript(
        video_id=parsed,
        status=video.status,
        segments=lines,
        text=" ".join(line.text for line in lines if line.text),
        coverage=transcript_coverage(video),
    )


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The half-open byte range `[start, end)` a `Range` header asks for, or None for all.

    Multiple ranges and other units are answered with the whole object, as RFC 9110
    allows. An unsatisfiable range raises 416.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if start >= size or (last and int(last) < start):
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(
        416,
        "range_not_satisfiable",
        f"the requested range is outside the {size}-byte object",
        headers={"Content-Range": f"bytes */{size}"},
    )


def _media_type(video: Video) -> str:
    if video.content_type:
        return video.content_type
    guessed, _ = mimetypes.guess_type(video.source_key)
    return guessed or "application/octet-stream"


async def _stream_object(
    storage: Storage,
    key: str,
    *,
    media_type: str,
    range_header: str | None,
    not_ready: str,
) -> StreamingResponse:
    try:
        size = await anyio.to_thread.run_sync(storage.size, key)
    except ObjectNotFound:
        raise ApiError(404, "not_ready", not_ready) from None
    byte_range = parse_range(range_header, size)
    start, end = byte_range or (0, size)
    try:
        chunks: Iterator[bytes] = await anyio.to_thread.run_sync(
            lambda: storage.iter_bytes(key, start, end)
        )
    except ObjectNotFound:
        raise ApiError(404, "not_ready", not_ready) from None
    headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start)}
    if byte_range is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    # A sync iterator: Starlette reads it in a worker thread, chunk by chunk.
    return StreamingResponse(
        chunks,
        status_code=206 if byte_range is not None else 200,
        media_type=media_type,
        headers=headers,
    )


_MEDIA_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"video/*": {}}, "description": "The whole file."},
    206: {"content": {"video/*": {}}, "description": "The requested byte range."},
    416: {"model": ErrorResponse},
}


@router.get("/{video_id}/content", response_class=StreamingResponse, responses=_MEDIA_RESPONSES)
async def get_content(
    video_id: str,
    tenant: CurrentTenant,
    resources: ResourcesDep,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
) -> StreamingResponse:
    """Stream the video's source file; supports HTTP Range requests."""
    video = await load_video(resources.sessions, tenant, parse_video_id(video_id))
    if video.status == VideoStatus.UPLOADING:
        raise ApiError(404, "not_ready", "the video has not been uploaded yet")
    return await _stream_object(
        resources.storage,
        video.source_key,
        media_type=_media_type(video),
        range_header=range_header,
        not_ready="the video's file is not stored yet",
    )


@router.get(
    "/{video_id}/thumbnail",
    response_class=StreamingResponse,
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def get_thumbnail(
    video_id: str, tenant: CurrentTenant, resources: ResourcesDep
) -> StreamingResponse:
    """Get the video's thumbnail (JPEG) once ingest has extracted it."""
    video = await load_video(resources.sessions, tenant, parse_video_id(video_id))
    if not video.thumbnail_key:
        raise ApiError(404, "not_ready", "the thumbnail has not been extracted yet")
    return await _stream_object(
        resources.storage,
        video.thumbnail_key,
        media_type="image/jpeg",
        range_header=None,
        not_ready="the thumbnail has not been extracted yet",
    )
