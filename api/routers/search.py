"""Search over the tenant's transcribed videos: by meaning, by words, or both."""

from __future__ import annotations

import uuid
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Query

from api.deps import CurrentTenant, EmbedderDep, SessionDep, SettingsDep
from api.errors import ERROR_RESPONSES, ApiError, not_found
from reelflow.assets import videos
from reelflow.search.embedding import embed_timed
from reelflow.search.hybrid import FusionWeights, find_chunks
from reelflow.search.spans import match_spans
from reelflow.search.usage import record_search_embedding
from schemas.api import MAX_QUERY_CHARS, SearchMode, SearchResponse, SearchResult, StoredText

router = APIRouter(prefix="/v1/search", tags=["search"], responses=ERROR_RESPONSES)


@router.get("", response_model=SearchResponse)
async def search(
    tenant: CurrentTenant,
    session: SessionDep,
    embedder: EmbedderDep,
    settings: SettingsDep,
    q: Annotated[StoredText, Query(min_length=1, max_length=MAX_QUERY_CHARS)],
    k: Annotated[int, Query(ge=1, le=50)] = 5,
    video_id: uuid.UUID | None = None,
    collection_id: uuid.UUID | None = None,
    mode: SearchMode = SearchMode.HYBRID,
) -> SearchResponse:
    """Find the transcript passages that best match `q`, best first.

    `hybrid` (the default) fuses the passages closest in meaning with those containing the
    query's words, so exact names, numbers and rare words are found too. Embedding the query
    is recorded in the usage ledger (local models at $0, with their compute seconds).
    """
    query = q.strip()
    if not query:
        raise ApiError(422, "invalid_request", "q: must not be blank")
    if video_id is not None and await videos.get_video(session, tenant.id, video_id) is None:
        raise not_found("video", video_id)
    vector: list[float] | None = None
    if mode is not SearchMode.TEXT:
        # Model inference is blocking (and may call a provider): keep it off the event loop.
        batch, seconds = await anyio.to_thread.run_sync(embed_timed, embedder, query)
        vector = batch.vectors[0].tolist()
        # Committed before searching: the embedding is spent even if the search then fails.
        await record_search_embedding(
            session,
            tenant_id=tenant.id,
            request_id=uuid.uuid4(),
            embedder=embedder,
            tokens=batch.input_tokens,
            compute_seconds=seconds,
        )
        await session.commit()
    hits = await find_chunks(
        session,
        tenant_id=tenant.id,
        query=query,
        query_vector=vector,
        k=k,
        embedding_model=embedder.model_name,
        mode=mode.value,
        weights=FusionWeights(
            vector=settings.search_vector_weight, text=settings.search_text_weight
        ),
        collection_id=collection_id,
        video_ids=None if video_id is None else (video_id,),
    )
    spans = await match_spans(
        session, tenant.id, [(h.video_id, h.start_s, h.end_s) for h in hits], query
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
                similarity=None if hit.similarity is None else round(hit.similarity, 6),
                text_match=hit.text_rank is not None,
                match_start_s=span.start_s if span else hit.start_s,
                match_end_s=span.end_s if span else hit.end_s,
            )
            for hit, span in zip(hits, spans, strict=True)
        ]
    )
