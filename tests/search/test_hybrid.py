"""Hybrid search (`find_chunks`): exact names, numbers and rare words are found, real MiniLM.

The corpus is what a hardware shop's videos would hold: long passages of everyday talk, each
with one fact in it (a product code, a year, a street). The local embedder places a passage
by its general meaning, so the codes XK-4471 and XK-4417 or the years 1987 and 1991 barely
move its vector: asked for one of them, the vector search often ranks another passage first.
The full-text half of hybrid search must put the passage that says it first, every time.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.chat.retrieval import RetrievalScope, Retriever
from reelflow.core.db import create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.tenants import create_tenant
from reelflow.search.hybrid import (
    COMMON_WORD_ROWS,
    RRF_K,
    FusionWeights,
    SearchMode,
    find_chunks,
    fuse,
    query_words,
    text_search_chunks,
    word_counts,
)
from reelflow.search.minilm import LocalMiniLMEmbedder
from reelflow.search.vectors import SearchHit
from schemas.tables import Chunk
from tests.chat.chat_support import completed_video

FILLER = [
    "Customers love our weekend workshops on sanding, staining and finishing hardwood furniture.",
    "Always wear eye protection and gloves when you cut metal or sand painted surfaces.",
    "A sharp blade is safer than a dull one because it needs less force to cut.",
    "We test every cordless tool on a full day of work before it goes into the catalogue.",
    "Batteries last longer when you store them half charged in a cool dry room.",
    "The delivery vans leave the warehouse at six every morning except on Sundays.",
    "Most of our staff worked on building sites for years before they joined the shop.",
    "Ask at the counter if you need a ladder, a scaffold tower or a cement mixer.",
    "Our return policy gives you thirty days to bring back anything that does not fit the job.",
    "Good clamps make a better joint than expensive glue, so buy them before anything else.",
    "The paint section mixes any colour while you wait, in tins from half a litre to ten litres.",
    "In winter we stock heaters, de-icer and snow shovels near the main entrance.",
]
CODES = ["XK-4471", "XK-4417", "XK-7144", "XK-1447", "XK-4714", "XK-7414"]
YEARS = [1983, 1987, 1991, 1996, 2004, 2011]
STREETS = [
    "Quillfeather Lane",
    "Thistlewood Road",
    "Brackenridge Street",
    "Marrowgate Lane",
    "Pemberly Road",
    "Wrenfield Street",
]
FACTS = (
    [f"The {c} impact driver is the model our roofers prefer." for c in CODES]
    + [f"The shop ran its first winter sale in {y}." for y in YEARS]
    + [f"Our next store opens on {s}, beside the bakery." for s in STREETS]
)
EXACT_QUERIES = [*CODES, *(f"winter sale {y}" for y in YEARS), *STREETS]
"""Query ``i`` asks for the passage carrying ``FACTS[i]``."""
BIKE = (
    "This video shows how to fix a flat tyre on a road bicycle. Remove the wheel and use two "
    "levers to lift the tyre off the rim, then find the puncture in the inner tube."
)


def passages() -> list[str]:
    """Each fact inside six filler sentences, at a varying place (seeded: the same every run)."""
    rng = random.Random(8)
    out = []
    for fact in FACTS:
        sentences = rng.sample(FILLER, 6)
        sentences.insert(rng.randrange(7), fact)
        out.append(" ".join(sentences))
    return out


@dataclass(frozen=True)
class Library:
    tenant_id: uuid.UUID
    other_tenant_id: uuid.UUID
    video_id: uuid.UUID
    other_video_id: uuid.UUID
    chunk_ids: list[uuid.UUID]
    """Alice's fact passages, in `FACTS` order."""
    bike_chunk_id: uuid.UUID
    foreign_ids: frozenset[uuid.UUID]


@pytest.fixture(scope="module")
def minilm() -> LocalMiniLMEmbedder:
    return LocalMiniLMEmbedder()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    upgrade_database(database_url)
    engine = create_engine(database_url, pool_size=3)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def library(engine: AsyncEngine, minilm: LocalMiniLMEmbedder) -> Library:
    texts = passages()
    vectors = minilm.embed([*texts, BIKE]).vectors
    sessions = session_factory(engine)
    async with sessions.begin() as session:
        alice = (await create_tenant(session, name="hybrid-alice")).tenant_id
        bob = (await create_tenant(session, name="hybrid-bob")).tenant_id
    model = minilm.model_name
    shop = completed_video(alice, "shop", chunk_count=len(texts), embedding_model=model)
    bikes = completed_video(alice, "bikes", chunk_count=1, embedding_model=model)
    theirs = completed_video(bob, "theirs", chunk_count=len(texts), embedding_model=model)
    other_model = completed_video(alice, "old", chunk_count=len(texts), embedding_model="x/old")
    ids = [uuid.uuid4() for _ in texts]
    foreign: list[uuid.UUID] = []

    def chunk(video_id: uuid.UUID, tenant_id: uuid.UUID, i: int, text: str, **kw: object) -> Chunk:
        values: dict[str, object] = {
            "id": uuid.uuid4(),
            "tenant_id": tenant_id,
            "video_id": video_id,
            "chunk_index": i,
            "start_s": i * 40.0,
            "end_s": i * 40.0 + 40.0,
            "text": text,
            "word_count": len(text.split()),
            "embedding_model": model,
            "embedding": vectors[i].tolist(),
        }
        values.update(kw)
        return Chunk(**values)

    async with sessions.begin() as session:
        session.add_all([shop, bikes, theirs, other_model])
        await session.flush()
        for i, text in enumerate(texts):
            session.add(chunk(shop.id, alice, i, text, id=ids[i]))
            # The same passages for another tenant and under another model: a scoping mistake
            # would return these copies as well.
            copy = chunk(theirs.id, bob, i, text)
            old = chunk(other_model.id, alice, i, text, embedding_model="x/old")
            foreign += [copy.id, old.id]
            session.add_all([copy, old])
        bike = chunk(bikes.id, alice, 0, BIKE, embedding=vectors[len(texts)].tolist())
        session.add(bike)
    return Library(alice, bob, shop.id, bikes.id, ids, bike.id, frozenset(foreign))


async def search(
    engine: AsyncEngine,
    minilm: LocalMiniLMEmbedder,
    library: Library,
    query: str,
    mode: SearchMode,
    *,
    k: int = 5,
    video_ids: tuple[uuid.UUID, ...] | None = None,
) -> list[SearchHit]:
    vector = None if mode == "text" else minilm.embed([query]).vectors[0].tolist()
    async with session_factory(engine).begin() as session:
        return await find_chunks(
            session,
            tenant_id=library.tenant_id,
            query=query,
            query_vector=vector,
            k=k,
            embedding_model=minilm.model_name,
            mode=mode,
            video_ids=video_ids,
        )


async def test_exact_codes_years_and_streets_come_first_where_vectors_alone_miss_them(
    engine: AsyncEngine, minilm: LocalMiniLMEmbedder, library: Library
) -> None:
    first: dict[str, int] = {"vector": 0, "text": 0, "hybrid": 0}
    for i, query in enumerate(EXACT_QUERIES):
        for mode in ("vector", "text", "hybrid"):
            hits = await search(engine, minilm, library, query, mode)
            assert not {h.chunk_id for h in hits} & library.foreign_ids
            assert hits, (mode, query)
            first[mode] += hits[0].chunk_id == library.chunk_ids[i]
            if mode == "hybrid":
                assert hits[0].chunk_id == library.chunk_ids[i], (query, hits[0].text)
                assert hits[0].text_rank is not None and hits[0].similarity is not None
    # The embedder alone misses many of them (so this test means something) ...
    assert first["vector"] <= len(EXACT_QUERIES) // 2, first
    # ... and the words put every one first.
    assert first["text"] == first["hybrid"] == len(EXACT_QUERIES), first


async def test_a_paraphrase_with_no_shared_words_is_still_found_by_meaning(
    engine: AsyncEngine, minilm: LocalMiniLMEmbedder, library: Library
) -> None:
    query = "how do I mend a cycle that lost its air"
    assert await search(engine, minilm, library, query, "text") == []
    hits = await search(engine, minilm, library, query, "hybrid")
    assert hits[0].chunk_id == library.bike_chunk_id
    assert hits[0].text_rank is None  # found by its vector alone


async def test_scope_filters_apply_to_the_text_half_too(
    engine: AsyncEngine, minilm: LocalMiniLMEmbedder, library: Library
) -> None:
    only_bikes = await search(
        engine, minilm, library, "XK-4471", "hybrid", video_ids=(library.other_video_id,)
    )
    assert [h.chunk_id for h in only_bikes] == [library.bike_chunk_id]
    assert await search(engine, minilm, library, "XK-4471", "text", video_ids=()) == []
    async with session_factory(engine)() as session:
        theirs = await text_search_chunks(
            session,
            tenant_id=library.other_tenant_id,
            query="Quillfeather",
            k=50,
            embedding_model=minilm.model_name,
        )
    assert len(theirs) == 1 and theirs[0].chunk_id in library.foreign_ids


HOSTILE = [
    "",
    "   ",
    "the and of to a",
    "?!.,;:'\"",
    "&|!():*",
    "a & | b ! ( ) : * <-> <2> 'c' \"d",
    "!!!(((XK-4471:*))) | & |",
    "-XK-4471",
    '"unterminated phrase',
    "or or and not",
    "Quillfeather " * 900,
    "x" * 10_000,
    "ǅ İ ß ﬁ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🔨",
]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("mode", ["text", "hybrid"])
async def test_hostile_queries_return_results_or_nothing_never_an_error(
    engine: AsyncEngine,
    minilm: LocalMiniLMEmbedder,
    library: Library,
    query: str,
    mode: SearchMode,
) -> None:
    hits = await search(engine, minilm, library, query, mode, k=50)
    assert not {h.chunk_id for h in hits} & library.foreign_ids
    if mode == "text":
        assert all(h.text_rank is not None for h in hits)
    if query.startswith("Quillfeather"):
        assert hits[0].chunk_id == library.chunk_ids[len(CODES) + len(YEARS)]


def test_query_words_skip_excluded_words_and_are_bounded() -> None:
    assert query_words("XK-4471 -drill Mill St. 1987 mill &") == ["xk-4471", "mill", "st.", "1987"]
    assert len(query_words(" ".join(f"w{i}" for i in range(1000)))) == 32
    assert query_words("&|!():*") == []


def hit(n: int) -> SearchHit:
    return SearchHit(uuid.UUID(int=n), uuid.UUID(int=0), 0.0, 1.0, str(n))


def test_fusion_is_weighted_reciprocal_rank() -> None:
    vector = [hit(1), hit(2), hit(3)]
    text = [hit(3), hit(4)]
    fused = fuse(vector, text, k=10, weights=FusionWeights())
    best = 2 / (RRF_K + 1)
    scores = {h.chunk_id.int: h.relevance for h in fused}
    assert scores[3] == pytest.approx((1 / (RRF_K + 3) + 1 / (RRF_K + 1)) / best, abs=1e-6)
    assert scores[1] == pytest.approx((1 / (RRF_K + 1)) / best, abs=1e-6)
    # In both lists beats first in one.
    assert [h.chunk_id.int for h in fused] == [3, 1, 2, 4]  # 2 and 4 tie: vector order
    # Weights move it: text counting three times as much puts its first two on top.
    weighted = fuse(vector, text, k=2, weights=FusionWeights(vector=1, text=3))
    assert [h.chunk_id.int for h in weighted] == [3, 4]
    # Both weights 0 is "no preference", not "rank nothing".
    assert fuse(vector, text, k=10, weights=FusionWeights(0, 0)) == fused
    # A chunk first in both lists is exactly 1.
    assert fuse([hit(7)], [hit(7)], k=1, weights=FusionWeights(2, 0.5))[0].relevance == 1.0
    with pytest.raises(ValueError, match=">= 0"):
        FusionWeights(vector=-1)


async def test_chat_retrieval_finds_the_exact_code_through_the_same_search(
    engine: AsyncEngine, minilm: LocalMiniLMEmbedder, library: Library
) -> None:
    missed_by_vectors = 0
    for i, code in enumerate(CODES):
        question = f"Which impact driver is the {code}?"
        scope = RetrievalScope()
        hybrid = await Retriever(minilm).retrieve(
            session_factory(engine), tenant_id=library.tenant_id, question=question, scope=scope
        )
        vector = await Retriever(minilm, mode="vector").retrieve(
            session_factory(engine), tenant_id=library.tenant_id, question=question, scope=scope
        )
        assert hybrid.passages[0].chunk_id == library.chunk_ids[i], question
        assert hybrid.passages[0].similarity > 0
        missed_by_vectors += vector.passages[0].chunk_id != library.chunk_ids[i]
    assert missed_by_vectors > 0


async def test_after_analyze_word_counts_are_known_and_exact_terms_still_come_first(
    engine: AsyncEngine, minilm: LocalMiniLMEmbedder, library: Library
) -> None:
    """Last in this module: ANALYZE gives the column statistics the text search reads."""
    async with engine.begin() as connection:
        await connection.execute(text("ANALYZE chunks"))
    async with session_factory(engine)() as session:
        counts = await word_counts(session, ["shop", "Quillfeather", "the", "zyzzogeton"])
    # "shop" is in a filler sentence most passages have, "Quillfeather" in one passage and
    # its two copies, "zyzzogeton" in none; "the" is a stop word and has no lexeme at all.
    assert counts[0] > counts[1] > 0 and counts[3] == 0 and 2 not in counts
    assert counts[0] < COMMON_WORD_ROWS  # a table this small has no common words
    for i, query in enumerate(EXACT_QUERIES):
        hits = await search(engine, minilm, library, query, "hybrid")
        assert hits[0].chunk_id == library.chunk_ids[i], query
