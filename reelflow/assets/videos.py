"""Tenant-scoped queries and commands on video assets, as the API uses them.

Every function takes the tenant explicitly and filters on it, so a caller cannot read or
change another tenant's video by guessing its id. Callers own the transaction (commit).
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from pathlib import PurePosixPath

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.ingest import IngestStage, VideoStatus
from schemas.tables import TranscriptSegment, Video

_EXTENSION = re.compile(r"\.[a-z0-9]{1,10}")


def safe_extension(name: str | None) -> str:
    """The lower-case extension of a client-supplied file name, or "" when it is odd.

    Only `.[a-z0-9]{1,10}` survives, so a name like `x.mp4/../../y` cannot shape the key.
    """
    if not name:
        return ""
    suffix = PurePosixPath(name.replace("\\", "/")).suffix.lower()
    return suffix if _EXTENSION.fullmatch(suffix) else ""


def source_key(tenant_id: uuid.UUID, video_id: uuid.UUID, extension: str = "") -> str:
    """Storage key of a video's source file; the extension helps tools guess the format."""
    return f"tenants/{tenant_id}/videos/{video_id}/source{extension}"


async def create_video(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    video_id: uuid.UUID,
    title: str,
    origin: str,
    source_key: str,
    status: VideoStatus,
    collection_id: uuid.UUID | None = None,
    filename: str | None = None,
    content_type: str | None = None,
    size_bytes: int | None = None,
    declared_size_bytes: int | None = None,
    source_url: str | None = None,
    upload_expires_at: datetime | None = None,
) -> Video:
    """Add a new video row in stage `queued`; the caller commits."""
    video = Video(
        id=video_id,
        tenant_id=tenant_id,
        collection_id=collection_id,
        title=title,
        origin=origin,
        source_url=source_url,
        filename=filename,
        content_type=content_type,
        declared_size_bytes=declared_size_bytes,
        size_bytes=size_bytes,
        source_key=source_key,
        status=status.value,
        stage=IngestStage.QUEUED.value,
        progress=0.0,
        upload_expires_at=upload_expires_at,
    )
    session.add(video)
    await session.flush()
    # Server defaults (created_at, updated_at) are needed by callers that render the row.
    await session.refresh(video)
    return video


async def get_video(
    session: AsyncSession, tenant_id: uuid.UUID, video_id: uuid.UUID
) -> Video | None:
    """The tenant's video, or None when it does not exist or belongs to someone else."""
    return await session.scalar(
        select(Video).where(Video.id == video_id, Video.tenant_id == tenant_id)
    )


async def get_video_unscoped(session: AsyncSession, video_id: uuid.UUID) -> Video | None:
    """A video by id alone; only for requests authorized by a signed URL, not an API key."""
    return await session.get(Video, video_id)


async def list_transcript(
    session: AsyncSession, *, tenant_id: uuid.UUID, video_id: uuid.UUID
) -> list[TranscriptSegment]:
    """The video's transcript segments in speaking order (window, then position in it)."""
    rows = await session.scalars(
        select(TranscriptSegment)
        .where(TranscriptSegment.video_id == video_id, TranscriptSegment.tenant_id == tenant_id)
        .order_by(TranscriptSegment.window_index, TranscriptSegment.seq)
    )
    return list(rows)


async def set_workflow_id(
    session: AsyncSession, *, tenant_id: uuid.UUID, video_id: uuid.UUID, workflow_id: str
) -> None:
    """Remember which run ingests the video; the caller commits."""
    await session.execute(
        update(Video)
        .where(Video.id == video_id, Video.tenant_id == tenant_id)
        .values(workflow_id=workflow_id)
    )


async def claim_confirmation(
    session: AsyncSession, *, tenant_id: uuid.UUID, video_id: uuid.UUID, size_bytes: int
) -> bool:
    """Move an uploaded video from `uploading` to `pending`, at most once.

    The status check is part of the UPDATE, so of several concurrent confirmations exactly
    one sees a row come back; only that caller may start the ingest run.

    Returns:
        True for the caller that made the transition; the caller commits.
    """
    claimed = await session.scalar(
        update(Video)
        .where(
            Video.id == video_id,
            Video.tenant_id == tenant_id,
            Video.status == VideoStatus.UPLOADING.value,
        )
        .values(
            status=VideoStatus.PENDING.value,
            stage=IngestStage.QUEUED.value,
            size_bytes=size_bytes,
        )
        .returning(Video.id)
    )
    return claimed is not None


async def release_confirmation(
    session: AsyncSession, *, tenant_id: uuid.UUID, video_id: uuid.UUID
) -> None:
    """Undo `claim_confirmation` when the run could not be started, so confirm can be retried."""
    await session.execute(
        update(Video)
        .where(
            Video.id == video_id,
            Video.tenant_id == tenant_id,
            Video.status == VideoStatus.PENDING.value,
            Video.workflow_id.is_(None),
        )
        .values(status=VideoStatus.UPLOADING.value)
    )


async def mark_failed(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    video_id: uuid.UUID,
    code: str,
    message: str,
) -> None:
    """Record that a video cannot be processed, with a reason the user can read."""
    await session.execute(
        update(Video)
        .where(Video.id == video_id, Video.tenant_id == tenant_id)
        .values(
            status=VideoStatus.FAILED.value,
            stage=IngestStage.FAILED.value,
            error_code=code,
            error_message=message,
        )
    )
