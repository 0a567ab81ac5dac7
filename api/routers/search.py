"""Semantic search over the tenant's transcribed videos."""

from __future__ import annotations

import uuid
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Query

from api.deps import CurrentTenant, EmbedderDep, SessionDep
from api.errors import ERROR_RESPONSES, ApiError, not_found
from reelflow.assets import videos
from reelflow.search.vectors import search_chunks
from schemas.api import MAX_QUERY_CHARS, SearchResponse, SearchResult

router = APIRouter(prefix="/v1/search", tags=["search"], responses=ERROR_RESPONSES)


@router.get("", response_model=SearchResponse)
async def search(
    tenant: CurrentTenant,
    session: SessionDep,
    embedder: EmbedderDep,
    q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS)],
    k: Annotated[int, Query(ge=1, le=50)] = 5,
    video_id: uuid.UUID | None = None,
    collection_id: uuid.UUID | None = None,
) -> SearchResponse:
    """Find the transcript passages closest in meaning to `q`, best first."""
    query = q.strip()
    if not query:
        raise ApiError(422, "invalid_request", "q: must not be blank")
    if video_id is not None and await videos.get_video(session, tenant.id, video_id) is None:
        raise not_found("video", video_id)
    # Model inference is blocking (and may call a provider): keep it off the event loop.
    batch = await anyio.to_thread.run_sync(embedder.embed, [query])
    hits = await search_chunks(
        session,
        tenant_id=tenant.id,
        query_vector=batch.vectors[0].tolist(),
        k=k,
        embedding_model=embedder.model_name,
        collection_id=collection_id,
        video_ids=None if video_id is None else (video_id,),
    )
    return SearchResponse(
        results=[
            SearchResult(
                video_id=hit.video_id,
                chunk_id=hit.chunk_id,
                start_s=hit.start_s,
                end_s=hit.end_s,
                text=hit.text,
                score=round(hit.score, 6),
            )
            for hit in hits
        ]
    )
