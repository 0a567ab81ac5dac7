"""`IndexingActivities` in `ActivityEnvironment`, with the bundled local MiniLM embedder.

No child process here either: the embedder is numpy in the executor thread, and it checks
the cancel scope between its sub-batches, so a canceled batch stops within one of them.
A retried `embed_chunks` resumes from the database (chunks already embedded with this
model are skipped), which is exact; heartbeats only say the step.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import func, select

from activities.indexing import IndexingActivities, chunk_id
from reelflow.search.embedding import Embedder, EmbeddingBatch
from reelflow.search.minilm import LocalMiniLMEmbedder
from schemas.ingest import ChunkTranscriptInput, EmbedChunksInput
from schemas.tables import Chunk, LedgerEntry, TranscriptSegment
from tests.activities.conftest import World
from tests.activities.support import (
    CANCEL_BOUND_S,
    Heartbeats,
    activity_env,
    cancel_and_wait,
    executor_is_free,
    start,
)

WORDS = [
    "durable",
    "workflows",
    "keep",
    "every",
    "upload",
    "moving",
    "from",
    "probe",
    "to",
    "transcript",
    "to",
    "vectors",
    "even",
    "when",
    "a",
    "worker",
    "restarts",
    "halfway",
    "through",
    "a",
    "long",
    "recording",
    "of",
    "a",
    "product",
    "demo",
]


@pytest.fixture(scope="module")
def embedder() -> LocalMiniLMEmbedder:
    return LocalMiniLMEmbedder()


def indexing_activities(world: World, embedder: Embedder) -> IndexingActivities:
    return IndexingActivities(
        sessions=world.sessions, embedder=embedder, settings=world.settings, executor=world.executor
    )


async def video_with_chunks(world: World, count: int) -> str:
    video_id, _ = await world.add_video()
    vid = uuid.UUID(video_id)
    async with world.sessions.begin() as session:
        session.add_all(
            Chunk(
                id=chunk_id(vid, index),
                tenant_id=world.tenant_id,
                video_id=vid,
                chunk_index=index,
                start_s=index * 10.0,
                end_s=index * 10.0 + 10.0,
                text=" ".join(WORDS[(index + n) % len(WORDS)] for n in range(40)),
                word_count=40,
            )
            for index in range(count)
        )
    return video_id


def embed_input(world: World, video_id: str, count: int) -> EmbedChunksInput:
    return EmbedChunksInput(
        tenant_id=str(world.tenant_id),
        video_id=video_id,
        start_index=0,
        end_index=count,
        run_id=f"ingest-{video_id}",
        ledger_key=f"ingest-{video_id}/embed/local/0",
    )


async def embedded_and_billed(world: World, video_id: str) -> tuple[int, int]:
    vid = uuid.UUID(video_id)
    async with world.sessions() as session:
        embedded = await session.scalar(
            select(func.count())
            .select_from(Chunk)
            .where(Chunk.video_id == vid, Chunk.embedding.is_not(None))
        )
        billed = await session.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.video_id == vid)
        )
    return embedded or 0, billed or 0


async def test_chunking_is_a_database_step_without_heartbeats(
    world: World, embedder: LocalMiniLMEmbedder
) -> None:
    video_id, _ = await world.add_video()
    vid = uuid.UUID(video_id)
    async with world.sessions.begin() as session:
        session.add_all(
            TranscriptSegment(
                tenant_id=world.tenant_id,
                video_id=vid,
                window_index=0,
                seq=seq,
                start_s=seq * 5.0,
                end_s=seq * 5.0 + 5.0,
                text=" ".join(WORDS),
            )
            for seq in range(20)
        )
    env, heartbeats = activity_env()

    out = await env.run(
        indexing_activities(world, embedder).chunk_transcript,
        ChunkTranscriptInput(tenant_id=str(world.tenant_id), video_id=video_id),
    )

    assert out.chunk_count >= 2 and out.word_count >= 20 * len(WORDS)
    assert heartbeats.details == []


class HeldUntilAHeartbeat:
    """The real embedder, whose batch is held until the activity has heartbeated once.

    How long the model takes depends on the machine's BLAS; holding the result makes the
    test about what the heartbeat says, not about how fast numpy is.
    """

    def __init__(self, inner: LocalMiniLMEmbedder, heartbeats: Heartbeats) -> None:
        self._inner = inner
        self._heartbeats = heartbeats
        self.provider = inner.provider
        self.model_name = inner.model_name

    def embed(self, texts: Sequence[str]) -> EmbeddingBatch:
        batch = self._inner.embed(texts)
        assert self._heartbeats.wait_for_sync(lambda d: True, timeout=10)
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_embedding_heartbeats_its_step(world: World, embedder: LocalMiniLMEmbedder) -> None:
    video_id = await video_with_chunks(world, 6)
    env, heartbeats = activity_env(heartbeat_timeout_s=0.15)
    held = HeldUntilAHeartbeat(embedder, heartbeats)

    out = await env.run(
        indexing_activities(world, held).embed_chunks,
        embed_input(world, video_id, 6),
    )

    assert out.embedded == 6
    assert set(heartbeats.steps) == {"embed"}
    assert all(d["done"] == {} for d in heartbeats.details)
    assert await embedded_and_billed(world, video_id) == (6, 1)


async def test_a_retry_resumes_from_what_the_database_has(
    world: World, embedder: LocalMiniLMEmbedder
) -> None:
    video_id = await video_with_chunks(world, 2)
    env, heartbeats = activity_env()
    await env.run(
        indexing_activities(world, embedder).embed_chunks, embed_input(world, video_id, 2)
    )

    retry_env, _ = activity_env(heartbeat_details=heartbeats.details[-1:], attempt=2)
    again = await retry_env.run(
        indexing_activities(world, embedder).embed_chunks, embed_input(world, video_id, 2)
    )

    assert again.embedded == 0
    assert await embedded_and_billed(world, video_id) == (2, 1)


async def test_cancel_stops_the_model_between_sub_batches(
    world: World, embedder: LocalMiniLMEmbedder
) -> None:
    video_id = await video_with_chunks(world, 320)
    env, heartbeats = activity_env(heartbeat_timeout_s=0.15)

    run = start(
        env.run(
            indexing_activities(world, embedder).embed_chunks, embed_input(world, video_id, 320)
        )
    )
    await heartbeats.wait_for(lambda d: d["step"] == "embed")
    elapsed = await cancel_and_wait(env, run)

    assert elapsed < CANCEL_BOUND_S
    # The thread finishes the sub-batch in hand (16 chunks of numpy), then stops.
    await executor_is_free(world.executor, timeout=30)
    assert await embedded_and_billed(world, video_id) == (0, 0)
