"""(Re)index any stored video asset: `POST /v1/videos/{id}/ingest`.

Uploads and imports are ingested when they arrive; a generated video (and a scraped one
whose file is stored) is not, and any video may need indexing again, e.g. after the
embedding model changed. This endpoint starts the video's ingest run, `ingest-<video_id>`:

* a run already going is joined (202 with the video's current status), never doubled;
* otherwise a new run starts (202, status `pending`). The ingest workflow resumes from what
  is stored for the video (`load_ingest_plan`): for a video indexed before it keeps the
  transcript and the chunks, and re-embeds only the chunks that have no vector of the
  *current* embedding model. Re-indexing is therefore what brings a video onto a new model,
  or finishes one whose index is incomplete, and costs nothing when the index is current
  (the run completes at once). It does not transcribe again: the stored transcript is kept.
* a video whose source is not stored yet (an upload not confirmed, an import or scraped post
  not downloaded) is a 409 `source_not_stored` with the reason: there is nothing to index.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import anyio.to_thread
from fastapi import APIRouter
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from api.deps import CurrentTenant, ResourcesDep
from api.errors import ERROR_RESPONSES, ApiError, not_found, temporal_unavailable
from reelflow.assets import videos
from reelflow.core.runs import start_ingest
from reelflow.core.storage import ObjectNotFound
from schemas.api import ErrorResponse, VideoAccepted
from schemas.ingest import VideoStatus, ingest_workflow_id
from schemas.queues import TaskQueues
from schemas.tables import Video

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/videos", tags=["videos"], responses=ERROR_RESPONSES)

_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}

# Origins whose file the ingest run downloads itself, from `source_url`.
_DOWNLOADED_BY_THE_RUN = ("import", "scraped")


def source_missing_reason(video: Video) -> str | None:
    """Why `video` has no stored source to index, or None when it has one.

    Judged from the row: an upload is stored once confirmed (`uploading` until then), an
    import or a scraped post once its download recorded the file's size. A generated video
    is stored when its row is written.
    """
    if video.status == VideoStatus.UPLOADING:
        return "the upload is not confirmed yet; confirm it first"
    if video.origin in _DOWNLOADED_BY_THE_RUN and video.size_bytes is None:
        if video.status == VideoStatus.FAILED:
            return "the file was never downloaded (its run failed); retry that run"
        return "the file is not downloaded yet; its ingest run will index it"
    return None


def _parse(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise not_found("video", raw) from None


async def _running(resources: ResourcesDep, workflow_id: str) -> bool:
    """Whether the video's ingest run is executing now (so a start would join it)."""
    try:
        description = await resources.temporal.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        logger.warning("workflow engine error describing %s", workflow_id, exc_info=True)
        raise temporal_unavailable() from None
    except RuntimeError:
        # What the lazily connected client raises while it cannot reach the engine.
        raise temporal_unavailable() from None
    return description.status == WorkflowExecutionStatus.RUNNING


@router.post(
    "/{video_id}/ingest",
    status_code=202,
    response_model=VideoAccepted,
    responses=_RESPONSES,
)
async def ingest_video(
    video_id: str, tenant: CurrentTenant, resources: ResourcesDep
) -> VideoAccepted:
    """Index (or index again) a stored video of any origin so search and chat find it.

    Joins the video's ingest run when one is going. A completed video is indexed again:
    its transcript is kept and its chunks are re-embedded with the current embedding model
    where they are not already. 409 `source_not_stored` when the video's file is not stored
    yet (unconfirmed upload, import not downloaded).
    """
    parsed = _parse(video_id)
    async with resources.sessions() as session:
        video = await videos.get_video(session, tenant.id, parsed)
    if video is None:
        raise not_found("video", parsed)
    reason = source_missing_reason(video)
    if reason is None:
        try:
            await anyio.to_thread.run_sync(resources.storage.size, video.source_key)
        except ObjectNotFound:
            reason = "the video's file is missing from storage"
    if reason is not None:
        raise ApiError(409, "source_not_stored", f"video {parsed} cannot be indexed: {reason}")

    workflow_id = ingest_workflow_id(str(parsed))
    if await _running(resources, workflow_id):
        return VideoAccepted(video_id=parsed, workflow_id=workflow_id, status=video.status)
    try:
        # USE_EXISTING: a run started by someone else in the meantime is joined, not doubled.
        workflow_id = await start_ingest(
            resources.temporal,
            tenant_id=str(tenant.id),
            video_id=str(parsed),
            task_queue=TaskQueues.for_prefix(resources.settings.task_queue_prefix).workflows,
        )
    except Exception:  # no run exists; the video keeps the index it had
        logger.exception("could not start the ingest run of video %s", parsed)
        raise temporal_unavailable() from None
    async with resources.sessions() as session:
        await videos.set_workflow_id(
            session, tenant_id=tenant.id, video_id=parsed, workflow_id=workflow_id
        )
        await session.commit()
    return VideoAccepted(video_id=parsed, workflow_id=workflow_id, status=VideoStatus.PENDING)
