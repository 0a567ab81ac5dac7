"""Two-step uploads: get a signed URL, `PUT` the bytes to it, then confirm to start ingest.

Large files go straight to storage through the signed URL, and ingest starts only when the
client says the upload is complete (`confirm`), exactly once however often it says so.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request, Response

from api.deps import CurrentTenant, ResourcesDep, SessionDep, SettingsDep
from api.errors import ERROR_RESPONSES, ApiError, not_found, payload_too_large
from api.routers.billing import quota_refused, warn
from api.routers.videos import load_video, parse_video_id, workflow_queue
from api.signing import check_upload_signature, signed_upload_url
from api.streaming import receive_raw_body
from reelflow.assets import videos
from reelflow.billing.usage import QuotaExceeded, admit_media
from reelflow.core.runs import start_ingest
from reelflow.core.storage import ObjectNotFound
from schemas.api import ErrorResponse, UploadReceived, UploadRequest, UploadTicket, VideoAccepted
from schemas.ingest import VideoStatus, ingest_workflow_id

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/videos", tags=["uploads"])


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


@router.post(
    "/uploads",
    status_code=201,
    response_model=UploadTicket,
    responses={**ERROR_RESPONSES, **_errors(402, 413)},
)
async def create_upload(
    body: UploadRequest,
    tenant: CurrentTenant,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> UploadTicket:
    """Register a video and get a signed URL to PUT its bytes to (402 past the plan's
    storage or ingest minutes)."""
    if body.size_bytes > settings.max_upload_bytes:
        raise payload_too_large(settings.max_upload_bytes)
    try:
        # The declared size counts against storage from here: the row is the reservation.
        warn(
            response,
            await admit_media(
                session, tenant_id=tenant.id, incoming_bytes=body.size_bytes, now=datetime.now(UTC)
            ),
        )
    except QuotaExceeded as exc:
        raise quota_refused(exc) from None
    video_id = uuid.uuid4()
    # Whole seconds: the expiry travels in the URL as a unix timestamp.
    expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(
        seconds=settings.upload_url_ttl_s
    )
    await videos.create_video(
        session,
        tenant_id=tenant.id,
        video_id=video_id,
        title=body.title,
        origin="upload",
        source_key=videos.source_key(tenant.id, video_id, videos.safe_extension(body.filename)),
        status=VideoStatus.UPLOADING,
        collection_id=body.collection_id,
        filename=body.filename,
        content_type=body.content_type,
        declared_size_bytes=body.size_bytes,
        upload_expires_at=expires_at,
    )
    await session.commit()
    return UploadTicket(
        video_id=video_id,
        upload_url=signed_upload_url(
            settings.api_base_url, settings.secret_key, video_id, expires_at
        ),
        expires_at=expires_at,
    )


_RAW_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "Exactly the declared number of bytes.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}

_SIGNATURE_MESSAGES = {
    "invalid_signature": "the upload URL's signature is missing or wrong",
    "upload_expired": "the upload URL has expired; request a new one",
}


@router.put(
    "/{video_id}/upload",
    response_model=UploadReceived,
    openapi_extra=_RAW_BODY,
    responses=_errors(400, 403, 404, 409, 413),
)
async def put_upload(
    video_id: str,
    request: Request,
    resources: ResourcesDep,
    expires: Annotated[str | None, Query()] = None,
    signature: Annotated[str | None, Query()] = None,
) -> UploadReceived:
    """Receive the bytes of a registered upload (authorized by the URL's signature)."""
    parsed = parse_video_id(video_id)
    problem = check_upload_signature(resources.settings.secret_key, parsed, expires, signature)
    if problem is not None:
        raise ApiError(403, problem, _SIGNATURE_MESSAGES[problem])
    # The signature names the video; no API key is involved, so no tenant filter either.
    async with resources.sessions() as session:
        video = await videos.get_video_unscoped(session, parsed)
    if video is None:
        raise not_found("video", video_id)
    if video.status != VideoStatus.UPLOADING or video.declared_size_bytes is None:
        raise ApiError(409, "conflict", f"the video is {video.status}; its upload is closed")
    size = await receive_raw_body(
        request,
        resources.storage,
        key=video.source_key,
        expected_bytes=video.declared_size_bytes,
        content_type=video.content_type,
    )
    return UploadReceived(video_id=parsed, size_bytes=size, status=VideoStatus.UPLOADING)


@router.post(
    "/{video_id}/confirm",
    status_code=202,
    response_model=VideoAccepted,
    responses={**ERROR_RESPONSES, **_errors(400, 503)},
)
async def confirm_upload(
    video_id: str, tenant: CurrentTenant, resources: ResourcesDep
) -> VideoAccepted:
    """Confirm an upload is complete and start ingesting it (once, however often called)."""
    parsed = parse_video_id(video_id)
    video = await load_video(resources.sessions, tenant, parsed)
    if video.status != VideoStatus.UPLOADING:
        return _current_state(video.id, video.status, video.workflow_id)
    try:
        stored = await anyio.to_thread.run_sync(resources.storage.size, video.source_key)
    except ObjectNotFound:
        raise ApiError(
            400, "upload_incomplete", "no bytes were uploaded for this video yet"
        ) from None
    if stored != video.declared_size_bytes:
        raise ApiError(
            400,
            "upload_incomplete",
            f"{stored} of {video.declared_size_bytes} declared bytes are stored",
        )
    async with resources.sessions() as session:
        claimed = await videos.claim_confirmation(
            session, tenant_id=tenant.id, video_id=parsed, size_bytes=stored
        )
        await session.commit()
    if not claimed:
        # Another confirmation won the race; it starts (or started) the run.
        current = await load_video(resources.sessions, tenant, parsed)
        return _current_state(current.id, current.status, current.workflow_id)
    try:
        # USE_EXISTING conflict policy: even a duplicate start would join the same run.
        workflow_id = await start_ingest(
            resources.temporal,
            tenant_id=str(tenant.id),
            video_id=str(parsed),
            task_queue=workflow_queue(resources.settings),
        )
    except Exception:  # no run exists: hand the video back so confirm can be retried
        logger.exception("could not start the ingest run of video %s", parsed)
        async with resources.sessions() as session:
            await videos.release_confirmation(session, tenant_id=tenant.id, video_id=parsed)
            await session.commit()
        raise ApiError(
            503,
            "temporal_unavailable",
            "the workflow engine did not accept the run; confirm again shortly",
        ) from None
    async with resources.sessions() as session:
        await videos.set_workflow_id(
            session, tenant_id=tenant.id, video_id=parsed, workflow_id=workflow_id
        )
        await session.commit()
    return VideoAccepted(video_id=parsed, workflow_id=workflow_id, status=VideoStatus.PENDING)


def _current_state(video_id: uuid.UUID, status: str, workflow_id: str | None) -> VideoAccepted:
    # The ingest workflow id is derived from the video id, so it is known even before the
    # winning confirmation has written it to the row.
    return VideoAccepted(
        video_id=video_id,
        workflow_id=workflow_id or ingest_workflow_id(str(video_id)),
        status=status,
    )
