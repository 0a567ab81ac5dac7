"""Indexing activities: chunk a transcript with time spans, embed chunks into pgvector."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import Executor
from decimal import Decimal
from typing import cast

from pgvector.sqlalchemy import Vector
from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert
from temporalio import activity

from activities._support import run_blocking
from reelflow.core.db import SessionFactory
from reelflow.core.ledger import Usage, record_usage
from reelflow.core.pricing import priced_model
from reelflow.core.settings import Settings
from reelflow.ingest.chunking import ChunkSizes, TimedText, build_chunks
from reelflow.search.embedding import Embedder, EmbeddingBatch
from schemas.ingest import (
    ChunkTranscriptInput,
    ChunkTranscriptOutput,
    EmbedChunksInput,
    EmbedChunksOutput,
)
from schemas.ingest_activities import CHUNK_TRANSCRIPT, EMBED_CHUNKS
from schemas.tables import EMBEDDING_DIMENSIONS, Chunk, TranscriptSegment, Video

_CHUNK_NAMESPACE = uuid.UUID("6f1c3c57-3a1e-4e55-9a53-1f1f5b0c9e01")


def chunk_id(video_id: uuid.UUID, chunk_index: int) -> uuid.UUID:
    """Deterministic chunk ids: ingesting a video again rewrites the same rows."""
    return uuid.uuid5(_CHUNK_NAMESPACE, f"{video_id}:{chunk_index}")


def chunk_sizes(settings: Settings, embedder: Embedder) -> ChunkSizes:
    """Seed 004's sizes, shrunk when the embedder reads fewer words than a chunk holds."""
    sizes = ChunkSizes(
        target_words=settings.chunk_target_words,
        max_words=settings.chunk_max_words,
        overlap_words=settings.chunk_overlap_words,
    )
    if embedder.provider == "local":
        return sizes.capped(settings.local_chunk_max_words)
    return sizes


class IndexingActivities:
    """Makes a transcript searchable."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        embedder: Embedder,
        settings: Settings,
        executor: Executor,
    ) -> None:
        self._sessions = sessions
        self._embedder = embedder
        self._sizes = chunk_sizes(settings, embedder)
        self._executor = executor

    @activity.defn(name=CHUNK_TRANSCRIPT.name)
    async def chunk_transcript(self, input: ChunkTranscriptInput) -> ChunkTranscriptOutput:
        """Replace the video's chunks with fresh ones cut from its transcript."""
        video_id = uuid.UUID(input.video_id)
        tenant_id = uuid.UUID(input.tenant_id)
        async with self._sessions.begin() as session:
            video = await session.get(Video, video_id)
            if video is None or video.tenant_id != tenant_id:
                raise LookupError(f"video {video_id} is gone")
            segments = (
                await session.execute(
                    select(
                        TranscriptSegment.start_s, TranscriptSegment.end_s, TranscriptSegment.text
                    )
                    .where(TranscriptSegment.video_id == video_id)
                    .order_by(TranscriptSegment.window_index, TranscriptSegment.seq)
                )
            ).all()
            chunks = build_chunks(
                [TimedText(s.start_s, s.end_s, s.text) for s in segments], self._sizes
            )
            await session.execute(delete(Chunk).where(Chunk.video_id == video_id))
            if chunks:
                await session.execute(
                    insert(Chunk),
                    [
                        {
                            "id": chunk_id(video_id, chunk.index),
                            "tenant_id": tenant_id,
                            "video_id": video_id,
                            "collection_id": video.collection_id,
                            "chunk_index": chunk.index,
                            "start_s": chunk.start_s,
                            "end_s": chunk.end_s,
                            "text": chunk.text,
                            "word_count": chunk.word_count,
                        }
                        for chunk in chunks
                    ],
                )
            video.chunk_count = len(chunks)
            video.embedding_model = None
        return ChunkTranscriptOutput(
            chunk_count=len(chunks), word_count=sum(c.word_count for c in chunks)
        )

    @activity.defn(name=EMBED_CHUNKS.name)
    async def embed_chunks(self, input: EmbedChunksInput) -> EmbedChunksOutput:
        """Embed the chunks in `[start_index, end_index)` not yet embedded with this model."""
        video_id = uuid.UUID(input.video_id)
        model = self._embedder.model_name
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(Chunk.id, Chunk.text)
                    .where(
                        Chunk.video_id == video_id,
                        Chunk.chunk_index >= input.start_index,
                        Chunk.chunk_index < input.end_index,
                        (Chunk.embedding_model.is_distinct_from(model)) | Chunk.embedding.is_(None),
                    )
                    .order_by(Chunk.chunk_index)
                )
            ).all()
        if not rows:
            return EmbedChunksOutput(embedded=0, input_tokens=0, cost_usd=0.0, model=model)

        def embed() -> tuple[EmbeddingBatch, float]:
            started = time.monotonic()
            batch = self._embedder.embed([row.text for row in rows])
            return batch, time.monotonic() - started

        batch, compute_s = await run_blocking(self._executor, embed, heartbeat_details="embed")
        async with self._sessions.begin() as session:
            chunks = cast(Table, Chunk.__table__)
            # Core executemany: one round trip for the whole batch of vectors.
            await session.execute(
                update(chunks)
                .where(chunks.c.id == bindparam("chunk_id"))
                .values(
                    embedding=bindparam("vector", type_=Vector(EMBEDDING_DIMENSIONS)),
                    embedding_model=model,
                ),
                [
                    {"chunk_id": row.id, "vector": vector.tolist()}
                    for row, vector in zip(rows, batch.vectors, strict=True)
                ],
            )
            await session.execute(
                update(Video).where(Video.id == video_id).values(embedding_model=model)
            )
            cost = await record_usage(
                session,
                Usage(
                    idempotency_key=f"{input.ledger_key}/{model}",
                    tenant_id=uuid.UUID(input.tenant_id),
                    run_id=input.run_id,
                    step=f"embed[{input.start_index}:{input.end_index}]",
                    video_id=video_id,
                    provider=self._embedder.provider,
                    operation="embedding",
                    model=priced_model(model),
                    units=Decimal(batch.input_tokens),
                    compute_seconds=round(compute_s, 3),
                ),
            )
        return EmbedChunksOutput(
            embedded=len(rows), input_tokens=batch.input_tokens, cost_usd=float(cost), model=model
        )
