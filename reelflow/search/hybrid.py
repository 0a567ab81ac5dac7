"""Full-text search over transcript chunks, and its fusion with the vector search.

The small local embedder places a passage by its general meaning: a product code, a street
name or a year barely moves its vector, so a question about "XK-4471" finds passages about
products in general. Postgres full-text search (the generated `chunks.search_vector` column,
GIN index) finds the passages that contain the words. :func:`find_chunks` runs both, scoped
exactly like :func:`reelflow.search.vectors.search_chunks`, and merges them with weighted
reciprocal rank fusion (RRF); `GET /v1/search` and chat retrieval both call it.

Queries are user text. They are turned into `tsquery` only by Postgres's own parsers
(``websearch_to_tsquery`` and ``plainto_tsquery``), never by assembling query syntax here,
so operators (``& | ! ( ) : *``), quotes and stop words cannot make a query invalid: at
worst it matches nothing.
"""

from __future__ import annotations

import itertools
import math
import re
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from functools import reduce
from typing import Any, Literal

from sqlalchemy import Boolean, Float, Integer, func, literal_column, or_, select, text, true
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from reelflow.search.vectors import SearchHit, search_chunks
from schemas.tables import EMBEDDING_DIMENSIONS, Chunk

SearchMode = Literal["vector", "text", "hybrid"]

RRF_K = 60
"""The RRF constant: a hit at rank r adds ``weight / (RRF_K + r)``. 60 is the value of the
original paper and of most engines; it keeps one list's top rank from drowning the other."""

MIN_SHARE_OF_WORDS = 0.6
"""Share of a query's (non stop) words a chunk needs when no chunk has them all."""

COMMON_WORD_ROWS = 2000
"""A word in more chunks than this (of all tenants, by Postgres's statistics of the column)
does not take part in the most-words match (see :func:`text_search_chunks`). An absolute
count, because what it bounds is work: rows checked one by one for a word."""

MAX_PAIRED_WORDS = 12
"""Up to this many rare words, the index is asked for chunks holding two of them (66 pairs)."""

MAX_QUERY_WORDS = 32
"""Words of a query that take part in the any-word match; a longer query is cut, not refused."""

_CANDIDATES_MIN = 20
_CANDIDATES_MAX = 200

# `regconfig` literal rather than a bound parameter: a bound 'english' arrives as varchar and
# would select the one-argument overload of the tsquery functions.
_ENGLISH: ColumnElement[str] = literal_column("'english'::regconfig")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class FusionWeights:
    """How much each ranked list counts in hybrid search (``SEARCH_*_WEIGHT`` settings)."""

    vector: float = 1.0
    text: float = 1.0

    def __post_init__(self) -> None:
        if self.vector < 0 or self.text < 0:
            raise ValueError("fusion weights must be >= 0")
        if self.vector == 0 and self.text == 0:
            # Nothing would rank anything: read "both off" as "no preference".
            object.__setattr__(self, "vector", 1.0)
            object.__setattr__(self, "text", 1.0)


def query_words(query: str) -> list[str]:
    """The words of ``query`` for the most-words match: first occurrence order, at most 32.

    A "word" is a whitespace-separated token with a letter or digit in it, as typed: Postgres
    parses each one itself (``plainto_tsquery``), so ``XK-4471`` is read exactly as the
    passages were (``xk`` and ``-4471``), which no tokenizer of ours would reproduce. A token
    written with a leading ``-`` is one the user excludes (web-search syntax), so it is not
    looked for.
    """
    words: dict[str, None] = {}
    for token in query.split():
        if token.startswith("-") or not _WORD.search(token):
            continue
        words.setdefault(token.casefold(), None)
        if len(words) >= MAX_QUERY_WORDS:
            break
    return list(words)


# Postgres's own statistics of the column (ANALYZE keeps the most common lexemes and the
# share of rows holding each), read for the query's words: a word's share is that of its
# rarest lexeme, and a lexeme missing from the list is rare. Times the table's row estimate.
_WORD_SHARES = text(
    """
    SELECT w.i - 1 AS i,
           min(coalesce(e.share, 0)) * (
               SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = to_regclass('chunks')
           ) AS chunks
    FROM unnest(CAST(:words AS text[])) WITH ORDINALITY AS w(word, i)
    CROSS JOIN LATERAL unnest(tsvector_to_array(to_tsvector('english'::regconfig, w.word)))
        AS l(lexeme)
    LEFT JOIN (
        SELECT e.elem, e.share
        FROM pg_stats s
        CROSS JOIN LATERAL unnest(
            s.most_common_elems::text::text[], s.most_common_elem_freqs
        ) AS e(elem, share)
        WHERE s.schemaname = current_schema()
          AND s.tablename = 'chunks'
          AND s.attname = 'search_vector'
    ) e ON e.elem = l.lexeme
    GROUP BY w.i
    """
)


async def word_counts(session: AsyncSession, words: Sequence[str]) -> dict[int, float]:
    """For each of `words` (by index), about how many chunks hold it, as far as the column
    statistics know (0 for a word they do not list, or before the first ANALYZE). A word
    with no lexeme (a stop word) is left out."""
    rows = await session.execute(_WORD_SHARES, {"words": list(words)})
    return {int(row.i): float(row.chunks or 0.0) for row in rows}


def _scope(
    tenant_id: uuid.UUID,
    embedding_model: str,
    collection_id: uuid.UUID | None,
    video_ids: Collection[uuid.UUID] | None,
) -> list[ColumnElement[bool]]:
    # The same rows the vector search may return: chunks of the current model with a vector.
    conditions: list[ColumnElement[bool]] = [
        Chunk.tenant_id == tenant_id,
        Chunk.embedding_model == embedding_model,
        Chunk.embedding.is_not(None),
    ]
    if video_ids is not None:
        conditions.append(Chunk.video_id.in_(list(dict.fromkeys(video_ids))))
    if collection_id is not None:
        conditions.append(Chunk.collection_id == collection_id)
    return conditions


async def text_search_chunks(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    query: str,
    k: int,
    embedding_model: str,
    collection_id: uuid.UUID | None = None,
    video_ids: Collection[uuid.UUID] | None = None,
    query_vector: Sequence[float] | None = None,
) -> list[SearchHit]:
    """The `k` chunks whose text best matches the words of `query`, best first.

    When some chunks satisfy the whole query as a web search reads it (every word, quoted
    phrases, no ``-excluded`` word), only those are returned. Otherwise a chunk matches when
    it contains most (:data:`MIN_SHARE_OF_WORDS`) of the query's words, so a question with a
    word or two the passage does not use still finds the passage that holds its rare word,
    while a chunk sharing one common word with a long question does not count as a match.
    Words are compared after English stemming; stop words are ignored. The order is: more
    of the words first, then ``ts_rank`` (how often they occur).

    Returning only whole-query matches when there are some matters for fusion: a chunk that
    shares only a common word with the query ("XK" of "XK-4417") would otherwise sit second
    in the text ranking and, first in the vector ranking, outrank the one that says XK-4417.

    Args:
        query_vector: When given, each hit also carries its cosine distance to it, so fused
            results have a similarity whichever list found them.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    if video_ids is not None and not video_ids:
        return []
    words = query_words(query)
    if not words:
        return []  # only punctuation: there is nothing to match, and no need to ask
    # `a || b` is "a or b"; a stop word's empty tsquery drops out of it. A token of several
    # parts ("XK-4471") is the "and" of its parts.
    terms: list[ColumnElement[str]] = [
        func.plainto_tsquery(_ENGLISH, word, type_=TSQUERY) for word in words
    ]
    counts = await word_counts(session, words)
    # Common words still count in the whole-query match and in ts_rank, but a chunk is not a
    # "most words" match through them: they are in a great many chunks, so checking them row
    # by row would cost far more than it tells. A word with no count has no lexeme (a stop
    # word) and can match nothing.
    rare = [
        t for i, t in enumerate(terms) if counts.get(i, COMMON_WORD_ROWS + 1) <= COMMON_WORD_ROWS
    ]
    any_word = reduce(lambda a, b: a.op("||", return_type=TSQUERY)(b), terms)
    whole = func.websearch_to_tsquery(_ENGLISH, query, type_=TSQUERY)
    vector_col = Chunk.search_vector
    matches_whole = vector_col.op("@@", return_type=Boolean)(whole)
    rank = func.ts_rank(vector_col, any_word, type_=Float)
    order: list[ColumnElement[Any]] = [
        matches_whole.desc()  # true sorts after false: whole-query matches first
    ]
    if rare:
        needed = math.ceil(MIN_SHARE_OF_WORDS * len(rare))
        present: list[ColumnElement[int]] = [
            vector_col.op("@@", return_type=Boolean)(t).cast(Integer) for t in rare
        ]
        matched = reduce(lambda a, b: a + b, present)
        # What the GIN index can narrow to before rows are checked one by one: any rare
        # word, or, when two are needed, any pair of them (far fewer rows).
        parts: list[ColumnElement[str]] = rare
        if needed >= 2 and len(rare) <= MAX_PAIRED_WORDS:
            parts = [a.op("&&", return_type=TSQUERY)(b) for a, b in itertools.combinations(rare, 2)]
        else:
            parts = rare
        some_rare = reduce(lambda a, b: a.op("||", return_type=TSQUERY)(b), parts)
        candidates = vector_col.op("@@")(whole.op("||", return_type=TSQUERY)(some_rare))
        condition = or_(matches_whole, matched >= needed)
        order.append(matched.desc())
    else:
        candidates = matches_whole
        condition = true()
    columns = [
        Chunk.id,
        Chunk.video_id,
        Chunk.start_s,
        Chunk.end_s,
        Chunk.text,
        rank.label("rank"),
        matches_whole.label("whole"),
    ]
    if query_vector is not None:
        if len(query_vector) != EMBEDDING_DIMENSIONS:
            raise ValueError(
                f"query vector has {len(query_vector)} dimensions, expected {EMBEDDING_DIMENSIONS}"
            )
        vector = [float(x) for x in query_vector]
        columns.append(Chunk.embedding.op("<=>", return_type=Float())(vector).label("distance"))
    statement = (
        select(*columns)
        .where(
            *_scope(tenant_id, embedding_model, collection_id, video_ids),
            candidates,
            condition,
        )
        .order_by(
            *order,
            rank.desc(),
            Chunk.video_id,
            Chunk.chunk_index,
        )
        .limit(k)
    )
    rows = list(await session.execute(statement))
    if rows and rows[0].whole:
        rows = [row for row in rows if row.whole]  # sorted first, so all of them are here
    return [
        SearchHit(
            chunk_id=row.id,
            video_id=row.video_id,
            start_s=row.start_s,
            end_s=row.end_s,
            text=row.text,
            distance=float(row.distance) if query_vector is not None else None,
            text_rank=float(row.rank),
            exact_match=bool(row.whole),
        )
        for row in rows
    ]


def fuse(
    vector_hits: Sequence[SearchHit],
    text_hits: Sequence[SearchHit],
    *,
    k: int,
    weights: FusionWeights,
) -> list[SearchHit]:
    """Weighted reciprocal rank fusion of two ranked lists, best first, at most `k`.

    A chunk at rank ``r`` (from 1) of a list gets ``weight / (RRF_K + r)`` from it. The sum
    is divided by what a chunk ranked first in both lists would get, so ``relevance`` is
    1.0 for that chunk and comparable between queries. Ties go to a chunk holding the whole
    query, then keep the vector list's order.
    """
    best = weights.vector / (RRF_K + 1) + weights.text / (RRF_K + 1)
    scores: dict[uuid.UUID, float] = {}
    merged: dict[uuid.UUID, SearchHit] = {}
    for weight, hits in ((weights.vector, vector_hits), (weights.text, text_hits)):
        for rank, hit in enumerate(hits, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight / (RRF_K + rank)
            known = merged.get(hit.chunk_id)
            if known is None:
                merged[hit.chunk_id] = hit
            else:
                merged[hit.chunk_id] = replace(
                    known,
                    distance=known.distance if known.distance is not None else hit.distance,
                    text_rank=known.text_rank if known.text_rank is not None else hit.text_rank,
                    exact_match=known.exact_match or hit.exact_match,
                )
    # Stable; on equal scores a chunk with every word of the query goes first: "XK-4417"
    # found by its words alone ties with the vector list's first, which lacks them.
    order = sorted(merged, key=lambda c: (-scores[c], not merged[c].exact_match))
    return [replace(merged[c], relevance=round(scores[c] / best, 6)) for c in order[:k]]


def candidates_for(k: int) -> int:
    """How many rows each list contributes before fusion: more than `k`, so a chunk ranked
    just below `k` by both lists can still win."""
    return min(_CANDIDATES_MAX, max(_CANDIDATES_MIN, 2 * k))


async def find_chunks(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    query: str,
    query_vector: Sequence[float] | None,
    k: int,
    embedding_model: str,
    mode: SearchMode = "hybrid",
    weights: FusionWeights | None = None,
    collection_id: uuid.UUID | None = None,
    video_ids: Collection[uuid.UUID] | None = None,
) -> list[SearchHit]:
    """The product's one search: the `k` best chunks of the tenant for `query`.

    Args:
        query: The user's words (used by ``text`` and ``hybrid``).
        query_vector: `query` embedded with `embedding_model` (needed by ``vector`` and
            ``hybrid``; optional for ``text``, where it only adds similarities).
        mode: ``vector`` (nearest vectors, ordered by cosine similarity), ``text`` (word
            matches) or ``hybrid`` (both, fused).
        weights: Of the vector and text lists in ``hybrid``; equal by default.
        collection_id, video_ids: Narrow the scope as in :func:`search_chunks`.
    """
    if k < 1:
        raise ValueError("k must be at least 1")

    async def by_text(n: int) -> list[SearchHit]:
        return await text_search_chunks(
            session,
            tenant_id=tenant_id,
            query=query,
            k=n,
            embedding_model=embedding_model,
            collection_id=collection_id,
            video_ids=video_ids,
            query_vector=query_vector,
        )

    if mode == "text":
        return fuse([], await by_text(k), k=k, weights=FusionWeights(vector=0.0, text=1.0))
    if query_vector is None:
        raise ValueError(f"{mode} search needs a query vector")
    n = k if mode == "vector" else candidates_for(k)
    vectors = await search_chunks(
        session,
        tenant_id=tenant_id,
        query_vector=query_vector,
        k=n,
        embedding_model=embedding_model,
        collection_id=collection_id,
        video_ids=video_ids,
    )
    if mode == "vector":
        return vectors
    return fuse(vectors, await by_text(n), k=k, weights=weights or FusionWeights())
