"""Semantic search over transcript chunks with pgvector (cosine distance on the HNSW index).

:func:`search_chunks` is the one vector query of the product: `GET /v1/search` calls it with
the API's filters, and chat retrieval (`reelflow.chat.retrieval`) calls it for its candidates
before ranking them. Both therefore get the same tenant scoping, the same embedding-model
restriction and the same HNSW tuning.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import Float, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.tables import EMBEDDING_DIMENSIONS, Chunk

# Measured on 100k clustered vectors (tests/benchmarks/vector_search_benchmark.py): 100
# gives recall@10 0.97-0.98 but ~0.91 under selective filters; 200 gives 0.99+ for ~1 ms.
EF_SEARCH = 200
"""HNSW candidate list size; pgvector's default of 40 misses good matches on larger tables."""

# pgvector >= 0.8 can keep scanning the HNSW graph until enough rows pass the WHERE clause
# (tenant, video, model). Without it, a filter that rejects most of the first EF_SEARCH
# candidates returns fewer than k results. Older versions reject the setting, hence the check.
_TUNE_SCAN = text(
    """
    SELECT set_config('hnsw.ef_search', :ef_search, true),
           set_config('hnsw.iterative_scan', 'strict_order', true)
    WHERE EXISTS (
        SELECT 1 FROM pg_extension
        WHERE extname = 'vector'
          AND string_to_array(split_part(extversion, '-', 1), '.')::int[] >= ARRAY[0, 8]
    )
    """
)
_TUNE_EF_ONLY = text("SELECT set_config('hnsw.ef_search', :ef_search, true)")


@dataclass(frozen=True)
class SearchHit:
    """One matching chunk.

    Attributes:
        distance: Cosine distance to the query vector; None when the search had no vector.
        text_rank: Full-text rank (``ts_rank``) of the chunk for the query words; None when
            the chunk did not match the words (or the search did not look at them).
        relevance: The fused 0..1 score of a text or hybrid search
            (:func:`reelflow.search.hybrid.fuse`); None for a vector-only search.
        exact_match: The chunk holds the whole query (every word, quoted phrases).
    """

    chunk_id: uuid.UUID
    video_id: uuid.UUID
    start_s: float
    end_s: float
    text: str
    distance: float | None = None
    text_rank: float | None = None
    relevance: float | None = None
    exact_match: bool = False

    @property
    def similarity(self) -> float | None:
        """Cosine similarity to the query vector (1 - cosine distance)."""
        return None if self.distance is None else 1.0 - self.distance

    @property
    def score(self) -> float:
        """What results are ordered by: the fused relevance, else cosine similarity."""
        if self.relevance is not None:
            return self.relevance
        return self.similarity or 0.0


async def _tune_scan(session: AsyncSession, k: int) -> None:
    """Set the HNSW scan settings for the session's current transaction only.

    set_config(..., true) is SET LOCAL: it lasts until the transaction ends, so it never leaks
    into other requests that reuse the pooled connection.
    """
    params = {"ef_search": str(max(EF_SEARCH, k))}
    if (await session.execute(_TUNE_SCAN, params)).first() is None:
        await session.execute(_TUNE_EF_ONLY, params)


async def search_chunks(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    query_vector: Sequence[float],
    k: int,
    embedding_model: str,
    collection_id: uuid.UUID | None = None,
    video_ids: Collection[uuid.UUID] | None = None,
) -> list[SearchHit]:
    """The `k` chunks of the tenant nearest to `query_vector`, nearest first.

    Only chunks embedded with `embedding_model` are compared: vectors of different models
    live in different spaces, so mixing them would rank noise. The filters narrow together
    (a collection and a list of videos: chunks of those videos in that collection).

    Args:
        session: A session; the search settings are set for its current transaction only.
        tenant_id: Whose chunks to search.
        query_vector: A unit-length vector of `EMBEDDING_DIMENSIONS` floats.
        k: How many hits at most.
        embedding_model: The model that produced `query_vector`.
        collection_id: Restrict to one collection.
        video_ids: Restrict to these videos (one for `GET /v1/search?video_id=`, a list for
            chat); an empty collection matches nothing.
    """
    if len(query_vector) != EMBEDDING_DIMENSIONS:
        raise ValueError(
            f"query vector has {len(query_vector)} dimensions, expected {EMBEDDING_DIMENSIONS}"
        )
    if k < 1:
        raise ValueError("k must be at least 1")
    if video_ids is not None and not video_ids:
        return []
    await _tune_scan(session, k)

    vector = [float(x) for x in query_vector]
    # The right-hand side is bound with the column's pgvector type.
    distance = Chunk.embedding.op("<=>", return_type=Float())(vector)
    statement = (
        select(
            Chunk.id,
            Chunk.video_id,
            Chunk.start_s,
            Chunk.end_s,
            Chunk.text,
            distance.label("distance"),
        )
        .where(
            Chunk.tenant_id == tenant_id,
            Chunk.embedding_model == embedding_model,
            Chunk.embedding.is_not(None),
        )
        # A single ORDER BY on the distance is what lets the planner use the HNSW index.
        .order_by(distance)
        .limit(k)
    )
    if video_ids is not None:
        # PostgreSQL reads `IN` of one value as `=`, so one video plans as it always did.
        statement = statement.where(Chunk.video_id.in_(list(dict.fromkeys(video_ids))))
    if collection_id is not None:
        statement = statement.where(Chunk.collection_id == collection_id)
    rows = await session.execute(statement)
    return [
        SearchHit(
            chunk_id=row.id,
            video_id=row.video_id,
            start_s=row.start_s,
            end_s=row.end_s,
            text=row.text,
            distance=float(row.distance),
        )
        for row in rows
    ]
