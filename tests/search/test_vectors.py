"""The one vector query (`search_chunks`) as its two callers use it: search and chat.

A fresh database holds a few thousand clustered vectors: Alice's across twenty videos (a
small collection among them), and a copy of every query vector stored for Bob and under
another embedding model, so a scoping mistake would put those copies first. `GET /v1/search`
(its route function, called directly) and chat retrieval (`Retriever.retrieve`) are given
the same question, embedded to the same vector, and must return the same chunks.

On a table this small PostgreSQL would rather sort every candidate row (exact, and cheap
here) than walk the HNSW graph; from about 100k rows it walks the graph
(tests/benchmarks/vector_search_benchmark.py prints that plan). The sessions here turn
sorting off, so the planner takes the HNSW index whenever the statement allows it: the plan
the callers get in production, including its approximations and iterative scans.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import pytest_asyncio
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import reelflow.search.vectors as vectors
from api.deps import TenantContext
from api.routers.search import search as search_route
from reelflow.chat.retrieval import RetrievalScope, Retriever
from reelflow.core.db import session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.settings import Settings
from reelflow.core.tenants import create_tenant
from reelflow.search.embedding import EmbeddingBatch
from reelflow.search.vectors import search_chunks
from schemas.api import SearchMode
from schemas.tables import EMBEDDING_DIMENSIONS, Chunk, Video
from tests.chat.chat_support import completed_video
from tests.search.plans import plans_of_vector_queries, uses_hnsw

FloatArray = npt.NDArray[np.float32]

MODEL = "test/fixed-vectors"
OTHER_MODEL = "test/another-model"
# Alice's videos, largest first: very different sizes, like a real library.
VIDEO_SHARES = (
    0.30, 0.20, 0.12, 0.08, 0.06, 0.05, 0.04, 0.03, 0.025, 0.02,
    0.015, 0.012, 0.01, 0.008, 0.006, 0.005, 0.004, 0.003, 0.002, 0.002,
)  # fmt: skip
COLLECTION_VIDEOS = range(13, 20)
"""The small videos, about 90 chunks: 2 % of the table, so most HNSW candidates fail it."""
ALICE_ROWS = 3000
BOB_ROWS = 1000
QUERIES = 12
K = 10


def unit(x: FloatArray) -> FloatArray:
    result: FloatArray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return result


@dataclass(frozen=True)
class Corpus:
    alice: uuid.UUID
    bob: uuid.UUID
    videos: tuple[uuid.UUID, ...]  # Alice's, largest first
    collection: uuid.UUID
    vectors: FloatArray  # Alice's chunks of MODEL, in `chunk_ids` order
    chunk_ids: tuple[uuid.UUID, ...]
    video_of_row: npt.NDArray[np.int64]
    in_collection: npt.NDArray[np.bool_]
    foreign_ids: frozenset[uuid.UUID]  # Bob's chunks and Alice's chunks of OTHER_MODEL
    queries: FloatArray

    def question(self, i: int) -> str:
        return f"question {i}"

    def exact(self, query: int, rows: npt.NDArray[np.bool_] | None = None) -> list[uuid.UUID]:
        """Alice's K nearest chunks of MODEL among `rows`, by brute force."""
        candidates = np.flatnonzero(rows) if rows is not None else np.arange(len(self.chunk_ids))
        scores = self.vectors[candidates] @ self.queries[query]
        best = candidates[np.argsort(-scores, kind="stable")[:K]]
        return [self.chunk_ids[i] for i in best]


class FixedEmbedder:
    """Embeds `question i` to the corpus's query vector i, like a model would, deterministically."""

    model_name = MODEL
    provider = "local"

    def __init__(self, corpus: Corpus) -> None:
        self._corpus = corpus

    def embed(self, texts: Sequence[str]) -> EmbeddingBatch:
        rows = [self._corpus.queries[int(t.removeprefix("question "))] for t in texts]
        return EmbeddingBatch(vectors=np.stack(rows), input_tokens=self.count_tokens(texts))

    def count_tokens(self, texts: Sequence[str]) -> int:
        return sum(len(t.split()) for t in texts)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    upgrade_database(database_url)
    # See the module docstring: the large-table plan on a small table.
    engine = create_async_engine(
        database_url, pool_size=3, connect_args={"options": "-c enable_sort=off"}
    )
    try:
        yield engine
    finally:
        await engine.dispose()


def _chunk_rows(
    tenant_id: uuid.UUID, video_of_row: Sequence[Video], vectors: FloatArray, model: str
) -> list[dict[str, Any]]:
    next_index: dict[uuid.UUID, int] = {}
    rows = []
    for i, video in enumerate(video_of_row):
        index = next_index.get(video.id, 0)
        next_index[video.id] = index + 1
        rows.append(
            {
                "id": uuid.uuid4(),
                "tenant_id": tenant_id,
                "video_id": video.id,
                "collection_id": video.collection_id,
                "chunk_index": index,
                "start_s": index * 30.0,
                "end_s": index * 30.0 + 29.5,
                "text": f"chunk {index} of {video.title}",
                "word_count": 5,
                "embedding_model": model,
                "embedding": vectors[i].tolist(),
            }
        )
    return rows


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def corpus(engine: AsyncEngine) -> Corpus:
    rng = np.random.default_rng(20261128)
    d = EMBEDDING_DIMENSIONS
    centres = unit(rng.standard_normal((40, d), dtype=np.float32))

    def points(n: int) -> FloatArray:
        labels = rng.integers(0, len(centres), size=n)
        noise = np.float32(0.8 / np.sqrt(d)) * rng.standard_normal((n, d), dtype=np.float32)
        return unit(centres[labels] + noise)

    alice_vectors, bob_vectors, queries = points(ALICE_ROWS), points(BOB_ROWS), points(QUERIES)
    shares = np.asarray(VIDEO_SHARES) / sum(VIDEO_SHARES)
    video_of_row = rng.choice(len(shares), ALICE_ROWS, p=shares)
    in_collection = np.isin(video_of_row, COLLECTION_VIDEOS)
    collection = uuid.uuid4()

    sessions = session_factory(engine)
    async with sessions.begin() as session:
        alice = (await create_tenant(session, name="alice")).tenant_id
        bob = (await create_tenant(session, name="bob")).tenant_id
        counts = np.bincount(video_of_row, minlength=len(shares))
        videos = [
            completed_video(
                alice,
                f"Alice {i}",
                chunk_count=int(counts[i]),
                embedding_model=MODEL,
                collection_id=collection if i in COLLECTION_VIDEOS else None,
            )
            for i in range(len(shares))
        ]
        bobs = completed_video(bob, "Bob's", chunk_count=BOB_ROWS + QUERIES, embedding_model=MODEL)
        other = completed_video(
            alice, "Alice, other model", chunk_count=QUERIES, embedding_model=OTHER_MODEL
        )
        session.add_all([*videos, bobs, other])
        await session.flush()
        alice_rows = _chunk_rows(alice, [videos[v] for v in video_of_row], alice_vectors, MODEL)
        # Every query vector itself, stored where Alice's searches must never look.
        foreign_rows = _chunk_rows(
            bob, [bobs] * (BOB_ROWS + QUERIES), np.concatenate([bob_vectors, queries]), MODEL
        ) + _chunk_rows(alice, [other] * QUERIES, queries, OTHER_MODEL)
        await session.execute(insert(Chunk), alice_rows + foreign_rows)
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE chunks"))
        await conn.execute(text("ANALYZE videos"))
    return Corpus(
        alice=alice,
        bob=bob,
        videos=tuple(v.id for v in videos),
        collection=collection,
        vectors=alice_vectors,
        chunk_ids=tuple(r["id"] for r in alice_rows),
        video_of_row=video_of_row,
        in_collection=in_collection,
        foreign_ids=frozenset(r["id"] for r in foreign_rows),
        queries=queries,
    )


# --- the two callers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    chunk_id: uuid.UUID
    video_id: uuid.UUID
    start_s: float
    end_s: float
    text: str
    score: float


async def via_search(
    engine: AsyncEngine,
    corpus: Corpus,
    query: int,
    *,
    k: int = K,
    video_id: uuid.UUID | None = None,
    collection_id: uuid.UUID | None = None,
    tenant_id: uuid.UUID | None = None,
) -> list[Found]:
    """`GET /v1/search` as the route runs it, on a request's session."""
    tenant = TenantContext(id=tenant_id or corpus.alice, name="t", plan="pro")
    async with session_factory(engine)() as session:
        response = await search_route(
            tenant=tenant,
            session=session,
            embedder=FixedEmbedder(corpus),
            settings=Settings(),
            q=corpus.question(query),
            k=k,
            video_id=video_id,
            collection_id=collection_id,
            # These tests are about the vector query; hybrid search is tests/search/test_hybrid.py.
            mode=SearchMode.VECTOR,
        )
    return [
        Found(r.chunk_id, r.video_id, r.start_s, r.end_s, r.text, r.score) for r in response.results
    ]


async def via_chat(
    engine: AsyncEngine,
    corpus: Corpus,
    query: int,
    scope: RetrievalScope,
    *,
    k: int = K,
) -> list[Found]:
    """Chat retrieval with no boosts and room for `k` passages: its candidates, ranked."""
    retriever = Retriever(FixedEmbedder(corpus), candidates=k, max_passages=k, mode="vector")
    result = await retriever.retrieve(
        session_factory(engine),
        tenant_id=corpus.alice,
        question=corpus.question(query),
        scope=scope,
    )
    return [
        Found(p.chunk_id, p.video_id, p.start_s, p.end_s, p.text, round(p.similarity, 6))
        for p in result.passages
    ]


def ids(found: Sequence[Found]) -> list[uuid.UUID]:
    return [f.chunk_id for f in found]


# --- tests -------------------------------------------------------------------------------------


SCOPES = {
    # name: (index of Alice's video or None, within the collection)
    "tenant": (None, False),
    "largest video": (0, False),
    "small video": (16, False),
    "collection": (None, True),
    "video and collection": (13, True),
    "video outside the collection": (0, True),
}


@pytest.mark.parametrize("scope", SCOPES)
async def test_search_and_chat_return_the_same_chunks_for_the_same_vector_and_scope(
    engine: AsyncEngine, corpus: Corpus, scope: str
) -> None:
    video, in_collection = SCOPES[scope]
    video_id = None if video is None else corpus.videos[video]
    collection_id = corpus.collection if in_collection else None
    rows = np.ones(len(corpus.chunk_ids), dtype=bool)
    if video_id is not None:
        rows &= corpus.video_of_row == video
    if collection_id is not None:
        rows &= corpus.in_collection
    found = 0
    for query in range(QUERIES):
        searched = await via_search(
            engine, corpus, query, video_id=video_id, collection_id=collection_id
        )
        chatted = await via_chat(
            engine,
            corpus,
            query,
            RetrievalScope(
                collection_id=collection_id, video_ids=None if video_id is None else (video_id,)
            ),
        )
        assert chatted == searched
        # k rows whenever the scope has k (iterative scans), nearly all of them the exact ones.
        assert len(searched) == min(K, int(rows.sum()))
        found += len(set(ids(searched)) & set(corpus.exact(query, rows)))
    if rows.any():
        # HNSW is approximate, a filtered walk more so (the benchmark measures how much).
        assert found / (min(K, int(rows.sum())) * QUERIES) >= 0.85


async def test_a_list_of_videos_is_the_best_of_each_videos_own_search(
    engine: AsyncEngine, corpus: Corpus
) -> None:
    """Chat's list scope (which `GET /v1/search` cannot express) against per-video searches."""
    listed = (corpus.videos[1], corpus.videos[16], corpus.videos[19])
    for query in range(QUERIES):
        merged = [f for v in listed for f in await via_search(engine, corpus, query, video_id=v)]
        merged.sort(key=lambda f: -f.score)
        chatted = await via_chat(engine, corpus, query, RetrievalScope(video_ids=listed))
        assert [f.chunk_id for f in chatted] == [f.chunk_id for f in merged[:K]]


async def test_other_tenants_and_other_models_never_appear(
    engine: AsyncEngine, corpus: Corpus
) -> None:
    for query in range(QUERIES):
        # The copies are there and are the nearest of all, for the tenant that owns them...
        bobs = await via_search(engine, corpus, query, k=1, tenant_id=corpus.bob)
        assert bobs[0].score == pytest.approx(1.0, abs=1e-5)
        assert bobs[0].chunk_id in corpus.foreign_ids
        # ...yet neither path of Alice's ever returns one, at any k.
        searched = await via_search(engine, corpus, query, k=50)
        chatted = await via_chat(engine, corpus, query, RetrievalScope(), k=50)
        assert len(searched) == len(chatted) == 50
        assert not corpus.foreign_ids & (set(ids(searched)) | set(ids(chatted)))
        assert max(f.score for f in searched) < 0.999


async def test_a_selective_filter_still_returns_k_rows_because_of_iterative_scans(
    engine: AsyncEngine, corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collection is 2 % of the table and has no index of its own: the HNSW scan is the
    plan, and the filter rejects most of its `ef_search` candidates."""
    members = int(corpus.in_collection.sum())
    assert members > K
    scope = RetrievalScope(collection_id=corpus.collection)
    for query in range(QUERIES):
        searched = await via_search(engine, corpus, query, collection_id=corpus.collection)
        chatted = await via_chat(engine, corpus, query, scope)
        assert ids(searched) == ids(chatted)
        assert len(searched) == K

    # The scenario really needs iterative scans: with them off, the same query comes up short.
    no_iteration = text(
        str(vectors._TUNE_SCAN.text).replace("'strict_order'", "'off'"),
    )
    monkeypatch.setattr(vectors, "_TUNE_SCAN", no_iteration)
    short = [
        len(await via_search(engine, corpus, q, collection_id=corpus.collection))
        for q in range(QUERIES)
    ]
    assert sum(short) < K * QUERIES, short


async def test_both_callers_plan_the_same_hnsw_index_scan(
    engine: AsyncEngine, corpus: Corpus
) -> None:
    in_effect = "ef_search=200 iterative_scan=strict_order"
    for name, (video, in_collection) in SCOPES.items():
        if name == "video outside the collection":
            continue  # chat sees nothing indexed there and does not search
        video_id = None if video is None else corpus.videos[video]
        collection_id = corpus.collection if in_collection else None
        with plans_of_vector_queries(engine) as plans:
            # The API's default k and chat's candidates: the plan does not depend on k.
            await via_search(engine, corpus, 0, k=5, video_id=video_id, collection_id=collection_id)
            await via_chat(
                engine,
                corpus,
                0,
                RetrievalScope(
                    collection_id=collection_id,
                    video_ids=None if video_id is None else (video_id,),
                ),
                k=24,
            )
        search_plan, chat_plan = plans
        assert search_plan == chat_plan, name
        assert uses_hnsw(search_plan) and search_plan[-1] == in_effect, (name, search_plan)

    listed = (corpus.videos[1], corpus.videos[16], corpus.videos[19])
    with plans_of_vector_queries(engine) as plans:
        await via_chat(engine, corpus, 0, RetrievalScope(video_ids=listed), k=24)
    (list_plan,) = plans
    assert uses_hnsw(list_plan) and list_plan[-1] == in_effect, list_plan


async def test_an_empty_video_list_matches_nothing_and_bad_input_is_refused(
    engine: AsyncEngine, corpus: Corpus
) -> None:
    query = corpus.queries[0].tolist()
    async with session_factory(engine)() as session:
        common: dict[str, Any] = {"tenant_id": corpus.alice, "embedding_model": MODEL}
        assert await search_chunks(session, query_vector=query, k=K, video_ids=(), **common) == []
        with pytest.raises(ValueError, match="dimensions"):
            await search_chunks(session, query_vector=query[:-1], k=K, **common)
        with pytest.raises(ValueError, match="k must be"):
            await search_chunks(session, query_vector=query, k=0, **common)
