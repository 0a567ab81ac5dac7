"""Chat retrieval: scope, boosts, the context budget and the cache, on real pgvector."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from reelflow.chat.retrieval import (
    MAX_PASSAGES,
    Retrieval,
    RetrievalCache,
    RetrievalScope,
    RetrievedPassage,
    Retriever,
    fill_budget,
    passage_tokens,
)
from reelflow.core.db import session_factory
from reelflow.search.embedding import EmbeddingBatch
from reelflow.search.minilm import LocalMiniLMEmbedder
from tests.chat.chat_support import Tenant, add_unindexed_video, index_transcript, now, timed_lines

BREAD = [
    "Good morning, today we bake a crusty loaf of bread in a home oven.",
    "Mix the flour with warm water, salt and a spoon of dry yeast.",
    "Knead the dough for ten minutes until it feels smooth and elastic.",
    "Let the dough rise in a warm place until it doubles in size.",
    "Bake the loaf at two hundred and thirty degrees for forty minutes.",
]
BIKES = [
    "This video shows how to fix a flat tyre on a road bicycle.",
    "Remove the wheel and use two levers to lift the tyre off the rim.",
    "Find the puncture in the inner tube and patch it with glue.",
    "Pump the tyre back up to the pressure printed on its side.",
]


class CountingEmbedder:
    """The real local model, counting how often a question is embedded."""

    def __init__(self, inner: LocalMiniLMEmbedder) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self.provider = inner.provider
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> EmbeddingBatch:
        self.calls += 1
        return self.inner.embed(texts)

    def count_tokens(self, texts: Sequence[str]) -> int:
        return self.inner.count_tokens(texts)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def counting(minilm: LocalMiniLMEmbedder) -> CountingEmbedder:
    return CountingEmbedder(minilm)


def video_ids(passages: Sequence[RetrievedPassage]) -> list[uuid.UUID]:
    return list(dict.fromkeys(p.video_id for p in passages))


async def test_scope_is_the_tenant_then_a_collection_or_a_list_of_videos(
    chat_engine: AsyncEngine,
    minilm: LocalMiniLMEmbedder,
    counting: CountingEmbedder,
    alice: Tenant,
    bob: Tenant,
) -> None:
    kitchen = uuid.uuid4()
    bread = await index_transcript(
        chat_engine, minilm, alice.tenant_id, "Bread", timed_lines(BREAD), collection_id=kitchen
    )
    bikes = await index_transcript(
        chat_engine, minilm, alice.tenant_id, "Bikes", timed_lines(BIKES)
    )
    bobs = await index_transcript(chat_engine, minilm, bob.tenant_id, "Bob's", timed_lines(BREAD))
    sessions = session_factory(chat_engine)
    retriever = Retriever(counting)

    async def videos(
        scope: RetrievalScope, question: str = "how long to knead dough"
    ) -> set[uuid.UUID]:
        result = await retriever.retrieve(
            sessions, tenant_id=alice.tenant_id, question=question, scope=scope
        )
        assert result.embedding_tokens > 0 and not result.cached
        return set(video_ids(result.passages))

    assert await videos(RetrievalScope()) == {bread.video_id, bikes.video_id}
    assert bobs.video_id not in await videos(RetrievalScope())
    assert await videos(RetrievalScope(collection_id=kitchen)) == {bread.video_id}
    assert await videos(RetrievalScope(video_ids=(bikes.video_id,))) == {bikes.video_id}
    both = RetrievalScope(video_ids=(bikes.video_id, bread.video_id))
    assert await videos(both) == {bread.video_id, bikes.video_id}
    # A list and a collection narrow together.
    narrowed = RetrievalScope(collection_id=kitchen, video_ids=(bikes.video_id, bread.video_id))
    assert await videos(narrowed) == {bread.video_id}

    best = await retriever.retrieve(
        sessions, tenant_id=alice.tenant_id, question="patch a punctured inner tube", scope=both
    )
    assert best.passages[0].video_id == bikes.video_id
    assert [p.score for p in best.passages] == sorted(
        (p.score for p in best.passages), reverse=True
    )


async def test_nothing_indexed_is_reported_without_embedding_the_question(
    chat_engine: AsyncEngine, counting: CountingEmbedder, alice: Tenant
) -> None:
    pending = await add_unindexed_video(chat_engine, alice.tenant_id, "Still transcribing")
    retriever = Retriever(counting, cache=RetrievalCache(300))
    for scope in (RetrievalScope(), RetrievalScope(video_ids=(pending,))):
        result = await retriever.retrieve(
            session_factory(chat_engine), tenant_id=alice.tenant_id, question="what?", scope=scope
        )
        assert result.nothing_indexed and result.passages == ()
    assert counting.calls == 0


async def test_repeated_questions_come_from_the_cache_until_it_expires(
    chat_engine: AsyncEngine, minilm: LocalMiniLMEmbedder, counting: CountingEmbedder, alice: Tenant
) -> None:
    bread = await index_transcript(
        chat_engine, minilm, alice.tenant_id, "Bread", timed_lines(BREAD)
    )
    clock = FakeClock()
    cache = RetrievalCache(300, clock=clock)
    retriever = Retriever(counting, cache=cache)
    sessions = session_factory(chat_engine)

    async def ask(question: str, scope: RetrievalScope | None = None) -> bool:
        result = await retriever.retrieve(
            sessions, tenant_id=alice.tenant_id, question=question, scope=scope or RetrievalScope()
        )
        assert result.passages
        return result.cached

    assert await ask("How hot is the oven?") is False
    # Case, spacing and the question mark do not make another question.
    assert await ask("  how HOT is the   oven ") is True
    assert counting.calls == 1
    # Another scope is another question.
    assert await ask("How hot is the oven?", RetrievalScope(video_ids=(bread.video_id,))) is False
    assert counting.calls == 2
    clock.t += 299
    assert await ask("How hot is the oven?") is True
    clock.t += 2
    assert await ask("How hot is the oven?") is False
    assert counting.calls == 3


def test_the_cache_is_bounded_and_can_be_turned_off() -> None:
    clock = FakeClock()
    cache = RetrievalCache(60, max_entries=2, clock=clock)
    value = Retrieval(passages=(), context_tokens=0)
    cache.put(("a",), value)
    cache.put(("b",), value)
    assert cache.get(("a",)) is value  # now "b" is the least recently used
    cache.put(("c",), value)
    assert len(cache) == 2 and cache.get(("b",)) is None and cache.get(("a",)) is value
    off = RetrievalCache(0)
    off.put(("a",), value)
    assert off.get(("a",)) is None


def passage(text: str, score: float) -> RetrievedPassage:
    return RetrievedPassage(
        chunk_id=uuid.uuid4(),
        video_id=uuid.uuid4(),
        title="T",
        start_s=0.0,
        end_s=1.0,
        text=text,
        similarity=score,
        score=score,
    )


def test_the_budget_is_filled_best_first_skipping_what_does_not_fit() -> None:
    big = passage("word " * 400, 0.9)
    small = passage("a short passage", 0.8)
    medium = passage("word " * 100, 0.7)
    budget = passage_tokens(small) + passage_tokens(medium) + 5
    chosen, used = fill_budget([big, small, medium], budget)
    assert chosen == [small, medium] and used <= budget
    many = [passage(f"passage {i}", 1.0 - i / 100) for i in range(30)]
    chosen, _ = fill_budget(many, 100_000)
    assert chosen == many[:MAX_PASSAGES]


async def test_the_context_budget_limits_real_retrieval(
    chat_engine: AsyncEngine, minilm: LocalMiniLMEmbedder, alice: Tenant
) -> None:
    await index_transcript(chat_engine, minilm, alice.tenant_id, "Bread", timed_lines(BREAD * 4))
    sessions = session_factory(chat_engine)
    roomy = await Retriever(minilm, context_tokens=8000).retrieve(
        sessions, tenant_id=alice.tenant_id, question="bread", scope=RetrievalScope()
    )
    tight = await Retriever(minilm, context_tokens=150).retrieve(
        sessions, tenant_id=alice.tenant_id, question="bread", scope=RetrievalScope()
    )
    assert len(roomy.passages) > len(tight.passages) >= 1
    assert tight.context_tokens <= 150
    assert sum(passage_tokens(p) for p in tight.passages) == tight.context_tokens


class FixedPopularity:
    def __init__(self, scores: Mapping[uuid.UUID, float]) -> None:
        self._scores = scores

    async def scores(
        self, session: AsyncSession, tenant_id: uuid.UUID, video_ids: Sequence[uuid.UUID]
    ) -> Mapping[uuid.UUID, float]:
        return {v: s for v, s in self._scores.items() if v in video_ids}


async def test_recency_and_popularity_boosts_reorder_close_matches(
    chat_engine: AsyncEngine, minilm: LocalMiniLMEmbedder, alice: Tenant
) -> None:
    # The old video matches the question a little better than the new one.
    old = await index_transcript(
        chat_engine,
        minilm,
        alice.tenant_id,
        "Old",
        timed_lines(["Bake the bread in a very hot oven for forty minutes."]),
        created_at=now() - timedelta(days=365),
    )
    new = await index_transcript(
        chat_engine,
        minilm,
        alice.tenant_id,
        "New",
        timed_lines(["Put the loaf into a hot oven and bake it."]),
    )
    sessions = session_factory(chat_engine)
    question = "how long should the bread bake in a very hot oven"

    async def order(retriever: Retriever) -> list[uuid.UUID]:
        result = await retriever.retrieve(
            sessions, tenant_id=alice.tenant_id, question=question, scope=RetrievalScope()
        )
        return video_ids(result.passages)

    assert await order(Retriever(minilm)) == [old.video_id, new.video_id]
    assert await order(Retriever(minilm, recency_boost=0.3)) == [new.video_id, old.video_id]
    # No metrics by default: the popularity boost alone changes nothing...
    assert await order(Retriever(minilm, popularity_boost=0.3)) == [old.video_id, new.video_id]
    # ...until a source says which video is popular.
    popular = FixedPopularity({new.video_id: 1.0})
    assert await order(Retriever(minilm, popularity_boost=0.3, popularity=popular)) == [
        new.video_id,
        old.video_id,
    ]
