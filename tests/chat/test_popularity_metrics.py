"""The chat popularity boost reads the videos' performance metrics (closing the Improve loop)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.chat.retrieval import MetricsPopularity, RetrievalScope, Retriever
from reelflow.core.db import SessionFactory, session_factory
from reelflow.improve import performance
from reelflow.search.minilm import LocalMiniLMEmbedder
from schemas.discover import Platform
from schemas.improve import PerformanceIn
from tests.chat.chat_support import Tenant, index_transcript, now, timed_lines

QUESTION = "how long should the bread bake in a very hot oven"


async def record_views(
    sessions: SessionFactory, tenant_id: uuid.UUID, video_id: uuid.UUID, views: int
) -> None:
    async with sessions.begin() as session:
        await performance.add_snapshot(
            session,
            tenant_id=tenant_id,
            video_id=video_id,
            snapshot=PerformanceIn(
                platform=Platform.TIKTOK,
                views=views,
                likes=views // 20,
                recorded_at=now() - timedelta(hours=1),
            ),
            now=now(),
        )


async def order(
    retriever: Retriever, sessions: SessionFactory, tenant_id: uuid.UUID
) -> list[uuid.UUID]:
    result = await retriever.retrieve(
        sessions, tenant_id=tenant_id, question=QUESTION, scope=RetrievalScope()
    )
    seen: list[uuid.UUID] = []
    for passage in result.passages:
        if passage.video_id not in seen:
            seen.append(passage.video_id)
    return seen


async def test_a_popular_videos_passage_ranks_above_an_equally_relevant_unpopular_one(
    chat_engine: AsyncEngine, minilm: LocalMiniLMEmbedder, alice: Tenant
) -> None:
    text = timed_lines(["Bake the bread in a very hot oven for forty minutes."])
    created = now() - timedelta(days=3)
    quiet = await index_transcript(
        chat_engine, minilm, alice.tenant_id, "Quiet", text, created_at=created
    )
    popular = await index_transcript(
        chat_engine, minilm, alice.tenant_id, "Popular", text, created_at=created
    )
    sessions = session_factory(chat_engine)
    await record_views(sessions, alice.tenant_id, quiet.video_id, 300)
    await record_views(sessions, alice.tenant_id, popular.video_id, 250_000)

    ranked = await order(Retriever(minilm, popularity_boost=0.2), sessions, alice.tenant_id)

    assert ranked[:2] == [popular.video_id, quiet.video_id]
    async with sessions() as session:
        scores = await MetricsPopularity().scores(
            session, alice.tenant_id, [quiet.video_id, popular.video_id]
        )
    assert scores[popular.video_id] == 1.0
    assert 0 < scores[quiet.video_id] < 0.5
    # Not the index's tie order: once the quiet one is the most viewed, it leads.
    async with sessions.begin() as session:
        await performance.add_snapshot(
            session,
            tenant_id=alice.tenant_id,
            video_id=quiet.video_id,
            snapshot=PerformanceIn(
                platform=Platform.INSTAGRAM, views=900_000, recorded_at=now() - timedelta(hours=1)
            ),
            now=now(),
        )
    ranked = await order(Retriever(minilm, popularity_boost=0.2), sessions, alice.tenant_id)
    assert ranked[:2] == [quiet.video_id, popular.video_id]


async def test_metrics_can_outweigh_a_slightly_better_match_only_when_the_boost_is_on(
    chat_engine: AsyncEngine, minilm: LocalMiniLMEmbedder, alice: Tenant
) -> None:
    closer = await index_transcript(
        chat_engine,
        minilm,
        alice.tenant_id,
        "Closer",
        timed_lines(["Bake the bread in a very hot oven for forty minutes."]),
    )
    viral = await index_transcript(
        chat_engine,
        minilm,
        alice.tenant_id,
        "Viral",
        timed_lines(["Put the loaf into a hot oven and bake it."]),
    )
    sessions = session_factory(chat_engine)
    await record_views(sessions, alice.tenant_id, viral.video_id, 1_000_000)
    scope = [closer.video_id, viral.video_id]

    # Off by default: similarity alone, metrics or not.
    assert [v for v in await order(Retriever(minilm), sessions, alice.tenant_id) if v in scope] == [
        closer.video_id,
        viral.video_id,
    ]
    boosted = await order(Retriever(minilm, popularity_boost=0.3), sessions, alice.tenant_id)
    assert [v for v in boosted if v in scope] == [viral.video_id, closer.video_id]


async def test_another_tenants_metrics_do_not_make_a_video_popular(
    chat_engine: AsyncEngine, minilm: LocalMiniLMEmbedder, alice: Tenant, bob: Tenant
) -> None:
    video = await index_transcript(
        chat_engine,
        minilm,
        alice.tenant_id,
        "Alice's",
        timed_lines(["Knead the dough for ten minutes."]),
    )
    sessions = session_factory(chat_engine)
    await record_views(sessions, alice.tenant_id, video.video_id, 5_000)

    async with sessions() as session:
        scores = await MetricsPopularity().scores(session, bob.tenant_id, [video.video_id])

    assert scores.get(video.video_id, 0.0) == 0.0
