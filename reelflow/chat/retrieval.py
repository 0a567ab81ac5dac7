"""Retrieval for RAG chat: the transcript passages a question is answered from.

One call of :meth:`Retriever.retrieve`:

1. **Anything to search?** A cheap look at the tenant's videos in scope: when none has
   vectors of the current embedding model, the answer is "nothing is indexed yet" and the
   question is not even embedded (an embedding provider would bill for it).
2. **Embed** the question with the same embedder the chunks were indexed with, in a worker
   thread (model inference and SDK calls block).
3. **Search** with :func:`reelflow.search.hybrid.find_chunks`, the search `GET /v1/search`
   runs too (hybrid by default: the HNSW vector search fused with full-text search, so a
   question naming a product code or a year finds the passage that says it), scoped to the
   tenant and optionally to a collection and/or a list of videos, for :data:`CANDIDATES`
   chunks.
4. **Rank**: the search's relevance (0..1; cosine similarity in vector mode) plus two
   settable boosts (seed 004),
   ``score = relevance + recency_boost * recency + popularity_boost * popularity``, where
   recency is 1 for a video created now and halves every :data:`RECENCY_HALF_LIFE_DAYS`
   days, and popularity is a 0..1 figure per video from a :class:`PopularitySource`: by
   default :class:`MetricsPopularity`, the video's performance metrics (latest views summed
   over platforms, log-scaled against the tenant's most viewed video, see
   :func:`reelflow.improve.aggregates.popularity`); a video without metrics scores 0. Both
   boosts default to 0, so ranking is by similarity alone unless configured.
5. **Budget**: passages go into the prompt best first while their estimated tokens fit the
   context budget (8,000 by default), at most :data:`MAX_PASSAGES` of them.

Results are cached for a short time (5 minutes by default) per tenant, normalized question,
scope, embedding model and ranking settings, so a repeated question costs no embedding and no
search. A question that found nothing is never cached: a video that finishes indexing is
found at once.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import anyio.to_thread
from sqlalchemy import and_, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.chat.answerers import Passage, estimate_tokens
from reelflow.core.db import SessionFactory
from reelflow.search.embedding import Embedder, embed_timed
from reelflow.search.hybrid import FusionWeights, SearchMode, find_chunks
from reelflow.search.vectors import SearchHit
from schemas.tables import Video

CANDIDATES = 24
"""Chunks fetched from the index before boosts re-rank them and the budget cuts them."""
MAX_PASSAGES = 10
"""At most this many passages per prompt, however small: more adds cost, not answers."""
PASSAGE_OVERHEAD_TOKENS = 30
"""Estimated tokens of the `<passage …>` wrapper around each passage's text."""
RECENCY_HALF_LIFE_DAYS = 30.0
DEFAULT_CACHE_ENTRIES = 1024


@dataclass(frozen=True)
class RetrievalScope:
    """Which of the tenant's videos to search: all, a collection, a list, or both narrowings."""

    collection_id: uuid.UUID | None = None
    video_ids: tuple[uuid.UUID, ...] | None = None

    def key(self) -> str:
        """A stable text form for cache keys (video order does not matter)."""
        videos = ",".join(sorted(str(v) for v in self.video_ids)) if self.video_ids else "*"
        return f"collection={self.collection_id or '*'};videos={videos}"


@dataclass(frozen=True)
class RetrievedPassage:
    """A chunk chosen for the prompt.

    Attributes:
        chunk_id: The chunk's id.
        video_id: Its video.
        title: The video's title.
        start_s: Start of the chunk in the video, in seconds.
        end_s: End of the chunk, in seconds.
        text: The chunk's transcript text.
        similarity: Cosine similarity to the question.
        score: The search's relevance plus boosts; passages are ordered by it.
    """

    chunk_id: uuid.UUID
    video_id: uuid.UUID
    title: str
    start_s: float
    end_s: float
    text: str
    similarity: float
    score: float


@dataclass(frozen=True)
class Retrieval:
    """What one question retrieved.

    Attributes:
        passages: For the prompt, best first, within the context budget.
        context_tokens: Estimated tokens of ``passages`` (wrappers included).
        embedding_tokens: Tokens the embedder consumed (0 when cached or nothing indexed).
        embedding_seconds: Time spent embedding the question.
        cached: The passages came from the cache.
        nothing_indexed: The scope has no searchable chunks at all.
    """

    passages: tuple[RetrievedPassage, ...]
    context_tokens: int
    embedding_tokens: int = 0
    embedding_seconds: float = 0.0
    cached: bool = False
    nothing_indexed: bool = False


def passage_tokens(passage: RetrievedPassage) -> int:
    """Estimated prompt tokens of one passage, wrapper included."""
    return estimate_tokens(passage.text) + estimate_tokens(passage.title) + PASSAGE_OVERHEAD_TOKENS


def fill_budget(
    ranked: Sequence[RetrievedPassage], budget_tokens: int, max_passages: int = MAX_PASSAGES
) -> tuple[list[RetrievedPassage], int]:
    """Take passages best first while they fit; one that does not fit is skipped, not cut.

    Returns:
        The chosen passages in rank order and their estimated tokens.
    """
    chosen: list[RetrievedPassage] = []
    used = 0
    for passage in ranked:
        if len(chosen) >= max_passages:
            break
        cost = passage_tokens(passage)
        if used + cost > budget_tokens:
            continue
        chosen.append(passage)
        used += cost
    return chosen, used


def answer_passages(passages: Sequence[RetrievedPassage]) -> list[Passage]:
    """The passages numbered ``1..n`` for the prompt: ``[n]`` cites ``passages[n - 1]``."""
    return [
        Passage(
            ref=i,
            video_id=str(p.video_id),
            title=p.title,
            start_s=p.start_s,
            end_s=p.end_s,
            text=p.text,
        )
        for i, p in enumerate(passages, start=1)
    ]


def normalize_question(question: str) -> str:
    """Case, spacing and trailing punctuation do not make a question different."""
    return " ".join(question.casefold().split()).rstrip(" ?!.")


# --- popularity hook ---------------------------------------------------------------------------


class PopularitySource(Protocol):
    """Per-video popularity in 0..1 (1 = the tenant's most popular), for the popularity boost."""

    async def scores(
        self, session: AsyncSession, tenant_id: uuid.UUID, video_ids: Sequence[uuid.UUID]
    ) -> Mapping[uuid.UUID, float]:
        """Popularity of each video; a video left out counts as 0."""
        ...


class NoPopularity:
    """Every video scores 0: ranking ignores how videos performed."""

    async def scores(
        self, session: AsyncSession, tenant_id: uuid.UUID, video_ids: Sequence[uuid.UUID]
    ) -> Mapping[uuid.UUID, float]:
        """See :meth:`PopularitySource.scores`."""
        return {}


class MetricsPopularity:
    """The default: popularity from the videos' performance metrics (the Improve pipeline's
    snapshots), read in the retrieval's own session, scoped to the tenant."""

    async def scores(
        self, session: AsyncSession, tenant_id: uuid.UUID, video_ids: Sequence[uuid.UUID]
    ) -> Mapping[uuid.UUID, float]:
        """See :meth:`PopularitySource.scores`."""
        # Imported here: chat needs the metrics only when the popularity boost is on.
        from reelflow.improve.aggregates import popularity

        return await popularity(session, tenant_id=tenant_id, video_ids=list(video_ids))


# --- cache -------------------------------------------------------------------------------------


class RetrievalCache:
    """A small in-process TTL + LRU cache of retrieved passages.

    Per API process: replicas each keep their own, which only means a repeated question may
    be embedded once per replica. Used from the event loop only, so it needs no lock.
    """

    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = DEFAULT_CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create an empty cache.

        Args:
            ttl_s: Seconds an entry is served; 0 disables the cache.
            max_entries: Entries kept at most; the least recently used go first.
            clock: Monotonic seconds (tests pass a fake).
        """
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, ...], tuple[float, Retrieval]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, ...]) -> Retrieval | None:
        """The entry under ``key`` if it has not expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if self._clock() >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: tuple[str, ...], value: Retrieval) -> None:
        """Store ``value``; evicts the least recently used entry when full."""
        if self.ttl_s <= 0:
            return
        self._entries[key] = (self._clock() + self.ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


# --- queries -----------------------------------------------------------------------------------


async def missing_videos(
    session: AsyncSession, tenant_id: uuid.UUID, video_ids: Sequence[uuid.UUID]
) -> list[uuid.UUID]:
    """The ids among ``video_ids`` that are not videos of this tenant, in the given order."""
    if not video_ids:
        return []
    found = set(
        (
            await session.scalars(
                select(Video.id).where(Video.tenant_id == tenant_id, Video.id.in_(video_ids))
            )
        ).all()
    )
    return [v for v in video_ids if v not in found]


async def has_indexed_videos(
    session: AsyncSession, *, tenant_id: uuid.UUID, embedding_model: str, scope: RetrievalScope
) -> bool:
    """Whether any video in scope has chunks embedded with ``embedding_model``.

    Read from the videos table (the embed step records the model on the video), which is
    small next to the chunks: a scope with nothing indexed is answered without scanning
    the tenant's chunks.
    """
    conditions = [
        Video.tenant_id == tenant_id,
        Video.embedding_model == embedding_model,
        func.coalesce(Video.chunk_count, 0) > 0,
    ]
    if scope.collection_id is not None:
        conditions.append(Video.collection_id == scope.collection_id)
    if scope.video_ids is not None:
        conditions.append(Video.id.in_(scope.video_ids))
    return bool(await session.scalar(select(exists().where(and_(*conditions)))))


# --- the retriever -----------------------------------------------------------------------------


def recency(created_at: datetime, now: datetime) -> float:
    """1.0 for a video created now, halving every :data:`RECENCY_HALF_LIFE_DAYS` days."""
    age_days = max(0.0, (now - created_at).total_seconds() / 86400)
    return math.pow(0.5, age_days / RECENCY_HALF_LIFE_DAYS)


class Retriever:
    """Finds, ranks and budgets the passages for a question (see the module docstring)."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        cache: RetrievalCache | None = None,
        context_tokens: int = 8000,
        recency_boost: float = 0.0,
        popularity_boost: float = 0.0,
        popularity: PopularitySource | None = None,
        candidates: int = CANDIDATES,
        max_passages: int = MAX_PASSAGES,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        mode: SearchMode = "hybrid",
        weights: FusionWeights | None = None,
    ) -> None:
        """Configure retrieval; cheap, so one per request is fine (share the cache).

        Args:
            embedder: The model the chunks were indexed with.
            cache: Shared cache of recent questions; None disables caching.
            context_tokens: Budget of estimated passage tokens per prompt.
            recency_boost: Weight of recency (0..1) added to similarity.
            popularity_boost: Weight of popularity (0..1) added to similarity.
            popularity: Where popularity comes from; default: the videos' performance
                metrics (:class:`MetricsPopularity`).
            candidates: Chunks fetched from the index before ranking.
            max_passages: Passages per prompt at most.
            now: The clock recency is measured against.
            mode: How the search ranks (see :func:`reelflow.search.hybrid.find_chunks`).
            weights: Of the vector and text rankings in hybrid mode; equal by default.
        """
        self._embedder = embedder
        self._cache = cache
        self.context_tokens = context_tokens
        self.recency_boost = recency_boost
        self.popularity_boost = popularity_boost
        self._popularity = popularity or MetricsPopularity()
        self._candidates = candidates
        self._max_passages = max_passages
        self._now = now
        self.mode: SearchMode = mode
        self.weights = weights or FusionWeights()

    def cache_key(
        self, tenant_id: uuid.UUID, question: str, scope: RetrievalScope
    ) -> tuple[str, ...]:
        """Everything that changes what a question retrieves."""
        return (
            str(tenant_id),
            normalize_question(question),
            scope.key(),
            self._embedder.model_name,
            f"{self.recency_boost:g}/{self.popularity_boost:g}",
            f"{self.context_tokens}/{self._candidates}/{self._max_passages}",
            f"{self.mode}/{self.weights.vector:g}/{self.weights.text:g}",
        )

    async def retrieve(
        self,
        sessions: SessionFactory,
        *,
        tenant_id: uuid.UUID,
        question: str,
        scope: RetrievalScope,
    ) -> Retrieval:
        """The passages to answer ``question`` from.

        Database work runs in short transactions of its own, and no connection is held while
        the question is embedded.
        """
        key = self.cache_key(tenant_id, question, scope)
        if self._cache is not None:
            hit = self._cache.get(key)
            if hit is not None:
                return Retrieval(
                    passages=hit.passages, context_tokens=hit.context_tokens, cached=True
                )
        model = self._embedder.model_name
        async with sessions() as session:
            indexed = await has_indexed_videos(
                session, tenant_id=tenant_id, embedding_model=model, scope=scope
            )
        if not indexed:
            return Retrieval(passages=(), context_tokens=0, nothing_indexed=True)

        batch, seconds = await anyio.to_thread.run_sync(embed_timed, self._embedder, question)
        async with sessions.begin() as session:
            hits = await find_chunks(
                session,
                tenant_id=tenant_id,
                query=question,
                query_vector=batch.vectors[0].tolist(),
                mode=self.mode,
                weights=self.weights,
                k=self._candidates,
                embedding_model=model,
                collection_id=scope.collection_id,
                video_ids=scope.video_ids,
            )
            ranked = await self._rank(session, tenant_id, hits)
        passages, used = fill_budget(ranked, self.context_tokens, self._max_passages)
        result = Retrieval(
            passages=tuple(passages),
            context_tokens=used,
            embedding_tokens=batch.input_tokens,
            embedding_seconds=seconds,
            nothing_indexed=not passages,
        )
        if passages and self._cache is not None:
            self._cache.put(key, result)
        return result

    async def _rank(
        self, session: AsyncSession, tenant_id: uuid.UUID, hits: Sequence[SearchHit]
    ) -> list[RetrievedPassage]:
        if not hits:
            return []
        video_ids = list(dict.fromkeys(h.video_id for h in hits))
        videos = {
            row.id: row
            for row in await session.execute(
                select(Video.id, Video.title, Video.created_at).where(
                    Video.tenant_id == tenant_id, Video.id.in_(video_ids)
                )
            )
        }
        popularity: Mapping[uuid.UUID, float] = {}
        if self.popularity_boost:
            popularity = await self._popularity.scores(session, tenant_id, video_ids)
        now = self._now()
        ranked: list[RetrievedPassage] = []
        for hit in hits:
            video = videos.get(hit.video_id)
            if video is None:
                continue  # deleted between the search and now
            score = hit.score
            if self.recency_boost:
                score += self.recency_boost * recency(video.created_at, now)
            if self.popularity_boost:
                score += self.popularity_boost * min(
                    1.0, max(0.0, float(popularity.get(hit.video_id, 0.0)))
                )
            ranked.append(
                RetrievedPassage(
                    chunk_id=hit.chunk_id,
                    video_id=hit.video_id,
                    title=video.title,
                    start_s=hit.start_s,
                    end_s=hit.end_s,
                    text=hit.text,
                    similarity=hit.similarity or 0.0,
                    score=score,
                )
            )
        # Stable: equal scores keep the index's order.
        ranked.sort(key=lambda p: -p.score)
        return ranked
