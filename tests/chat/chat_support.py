"""Helpers for the chat tests: indexed transcripts, apps on ASGI or uvicorn, SSE parsing."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from reelflow.chat.answerers import Answerer
from reelflow.chat.providers.claude import AnthropicAnswerer, build_anthropic_client
from reelflow.core.db import session_factory
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from reelflow.core.tenants import create_tenant
from reelflow.ingest.chunking import ChunkSizes, TimedText, build_chunks
from reelflow.search.embedding import Embedder
from schemas.tables import Chunk, LedgerEntry, TranscriptSegment, Video
from tests.support import free_port

HAIKU = "claude-haiku-4-5"
SMALL_CHUNKS = ChunkSizes(target_words=30, max_words=60, overlap_words=8)
"""About three sentences per chunk, so a question has to find the right part of a video."""


@dataclass(frozen=True)
class Tenant:
    tenant_id: uuid.UUID
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass(frozen=True)
class IndexedVideo:
    video_id: uuid.UUID
    title: str
    lines: tuple[TimedText, ...]
    chunk_count: int


async def new_tenant(engine: AsyncEngine, name: str = "chat") -> Tenant:
    async with session_factory(engine).begin() as session:
        created = await create_tenant(session, name=f"{name}-{uuid.uuid4().hex[:6]}")
    return Tenant(created.tenant_id, created.api_key)


def timed_lines(
    sentences: Sequence[str], *, start_s: float = 0.0, each_s: float = 4.0
) -> list[TimedText]:
    """Sentences as consecutive transcript segments of `each_s` seconds."""
    return [
        TimedText(round(start_s + i * each_s, 3), round(start_s + (i + 1) * each_s - 0.2, 3), s)
        for i, s in enumerate(sentences)
    ]


def completed_video(
    tenant_id: uuid.UUID,
    title: str,
    *,
    chunk_count: int,
    embedding_model: str | None,
    collection_id: uuid.UUID | None = None,
    **columns: Any,
) -> Video:
    """The row of a video that finished ingesting with `chunk_count` chunks of that model."""
    video_id = uuid.uuid4()
    return Video(
        id=video_id,
        tenant_id=tenant_id,
        collection_id=collection_id,
        title=title,
        origin="upload",
        source_key=f"tenants/{tenant_id}/videos/{video_id}/source.mp4",
        status="completed",
        stage="completed",
        progress=1.0,
        cost_usd=Decimal(0),
        chunk_count=chunk_count,
        embedding_model=embedding_model,
        **columns,
    )


async def index_transcript(
    engine: AsyncEngine,
    embedder: Embedder,
    tenant_id: uuid.UUID,
    title: str,
    lines: Sequence[TimedText],
    *,
    collection_id: uuid.UUID | None = None,
    sizes: ChunkSizes = SMALL_CHUNKS,
    created_at: datetime | None = None,
) -> IndexedVideo:
    """A completed video whose transcript is `lines`, chunked and embedded as ingest does."""
    chunks = build_chunks(lines, sizes)
    vectors = (
        [v.tolist() for v in embedder.embed([c.text for c in chunks]).vectors] if chunks else []
    )
    video = completed_video(
        tenant_id,
        title,
        chunk_count=len(chunks),
        embedding_model=embedder.model_name if chunks else None,
        collection_id=collection_id,
        duration_s=lines[-1].end_s if lines else 0.0,
        **({"created_at": created_at} if created_at else {}),
    )
    video_id = video.id
    async with session_factory(engine).begin() as session:
        session.add(video)
        await session.flush()
        session.add_all(
            TranscriptSegment(
                tenant_id=tenant_id,
                video_id=video_id,
                window_index=0,
                seq=i,
                start_s=line.start_s,
                end_s=line.end_s,
                text=line.text,
            )
            for i, line in enumerate(lines)
        )
        session.add_all(
            Chunk(
                id=uuid.uuid4(),
                tenant_id=tenant_id,
                video_id=video_id,
                collection_id=collection_id,
                chunk_index=chunk.index,
                start_s=chunk.start_s,
                end_s=chunk.end_s,
                text=chunk.text,
                word_count=chunk.word_count,
                embedding_model=embedder.model_name,
                embedding=vector,
            )
            for chunk, vector in zip(chunks, vectors, strict=True)
        )
    return IndexedVideo(video_id, title, tuple(lines), len(chunks))


async def add_unindexed_video(engine: AsyncEngine, tenant_id: uuid.UUID, title: str) -> uuid.UUID:
    """A video still being transcribed: no chunks yet."""
    video_id = uuid.uuid4()
    async with session_factory(engine).begin() as session:
        session.add(
            Video(
                id=video_id,
                tenant_id=tenant_id,
                title=title,
                origin="upload",
                source_key=f"tenants/{tenant_id}/videos/{video_id}/source.mp4",
                status="transcribing",
                stage="transcribing",
                progress=0.3,
                cost_usd=Decimal(0),
            )
        )
    return video_id


async def ledger_rows(engine: AsyncEngine, prefix: str) -> list[LedgerEntry]:
    """Ledger rows whose idempotency key starts with `prefix`, by key."""
    async with session_factory(engine)() as session:
        rows = await session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.idempotency_key.startswith(prefix))
            .order_by(LedgerEntry.idempotency_key)
        )
        return list(rows)


def chat_settings(database_url: str, home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "storage_url": (home / "media").as_uri(),
        "reelflow_home": home,
        "secret_key": SecretStr("test-secret-key"),
        "task_queue_prefix": f"chattest-{uuid.uuid4().hex[:12]}",
        # Chat never talks to Temporal: the app's lazy client points at a closed port.
        "temporal_address": f"127.0.0.1:{free_port()}",
    }
    values.update(overrides)
    return Settings(**values)


def anthropic_answerer(url: str) -> AnthropicAnswerer:
    """Claude Haiku through the official SDK, pointed at a local wire-format server."""
    return AnthropicAnswerer(build_anthropic_client("sk-ant-test", url), model=HAIKU)


@dataclass
class AppFactory:
    """Builds the real app over the test database with the chosen answerer and settings."""

    engine: AsyncEngine
    embedder: Embedder
    database_url: str
    home: Path

    def build(self, answerer: Answerer | None = None, **overrides: Any) -> FastAPI:
        settings = chat_settings(self.database_url, self.home, **overrides)
        return create_app(
            settings,
            engine=self.engine,
            storage=LocalStorage(self.home / "media"),
            embedder=self.embedder,
            answerer=answerer,
        )

    @asynccontextmanager
    async def client(
        self, answerer: Answerer | None = None, **overrides: Any
    ) -> AsyncIterator[httpx.AsyncClient]:
        """The app over httpx's ASGI transport (which buffers streamed responses)."""
        app = self.build(answerer, **overrides)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://chat.test", timeout=60
            ) as client,
        ):
            yield client

    @asynccontextmanager
    async def served(
        self, answerer: Answerer | None = None, **overrides: Any
    ) -> AsyncIterator[str]:
        """The app behind a real uvicorn server: streaming and disconnects as on the wire."""
        app = self.build(answerer, **overrides)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await task


@dataclass(frozen=True)
class Event:
    event: str
    data: Any


async def read_events(response: httpx.Response, *, stop_after: int | None = None) -> list[Event]:
    """Parse a server-sent event stream into events with JSON data (comments skipped)."""
    events: list[Event] = []
    name: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if line == "":
            if name is not None or data:
                events.append(Event(name or "message", json.loads("\n".join(data))))
                if stop_after is not None and len(events) >= stop_after:
                    return events
            name, data = None, []
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    return events


def now() -> datetime:
    return datetime.now(UTC)
