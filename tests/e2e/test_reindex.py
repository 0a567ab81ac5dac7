"""`POST /v1/videos/{id}/ingest` end to end: a scraped video that was stored but never
indexed is ingested through the endpoint by the real workers, found by `/v1/search` at the
right sentence, and indexed again at no cost when its index is current."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy import func, select

from api.app import create_app
from api.routers import reindex
from reelflow.core.db import create_engine
from reelflow.core.storage import LocalStorage
from reelflow.core.tenants import create_tenant
from reelflow.dev.samples import SpeechVideo
from schemas.ingest import VideoStatus
from schemas.tables import Chunk, LedgerEntry, Video
from tests.e2e.conftest import Pipeline
from tests.e2e.test_ingest_pipeline import running_workers


@pytest_asyncio.fixture(loop_scope="session")
async def api(pipeline: Pipeline) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The API with the workers' own embedder (search must use the model chunks have),
    for a tenant of its own; yields the client and the tenant id."""
    async with pipeline.sessions.begin() as session:
        tenant = await create_tenant(session, name=f"reindex-{uuid.uuid4().hex[:6]}")
    engine = create_engine(pipeline.settings.database_url, pool_size=4)
    try:
        async with running_workers(pipeline) as deps:
            app = create_app(
                pipeline.settings,
                engine=engine,
                temporal=pipeline.client,
                storage=LocalStorage(storage_root(pipeline)),
                embedder=deps.embedder,
            )
            if not any(
                getattr(r, "path", "") == "/v1/videos/{video_id}/ingest" for r in app.routes
            ):
                app.include_router(reindex.router)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url="http://reelflow.test",
                    headers={"Authorization": f"Bearer {tenant.api_key}"},
                    timeout=60,
                ) as client,
            ):
                yield client, str(tenant.tenant_id)
    finally:
        await engine.dispose()


def storage_root(pipeline: Pipeline) -> Path:
    return Path(pipeline.settings.resolved_storage_url.removeprefix("file://"))


async def add_scraped_video(pipeline: Pipeline, tenant_id: str, source: Path) -> uuid.UUID:
    """A scraped post whose file was downloaded and stored but never ingested."""
    video_id = uuid.uuid4()
    key = f"tenants/{tenant_id}/videos/{video_id}/source.mp4"
    LocalStorage(storage_root(pipeline)).put_file(key, source)
    async with pipeline.sessions.begin() as session:
        session.add(
            Video(
                id=video_id,
                tenant_id=uuid.UUID(tenant_id),
                title="@baker · sourdough at home",
                origin="scraped",
                source_url="https://cdn.example.com/post.mp4",
                source_key=key,
                size_bytes=source.stat().st_size,
                status=VideoStatus.PENDING.value,
                stage="queued",
                progress=0.0,
                cost_usd=Decimal(0),
            )
        )
    return video_id


async def settled(client: httpx.AsyncClient, video_id: uuid.UUID) -> dict[str, Any]:
    video: dict[str, Any] = {}
    for _ in range(1200):
        video = (await client.get(f"/v1/videos/{video_id}")).json()
        if video["status"] in ("completed", "failed"):
            return video
        await asyncio.sleep(0.1)
    raise AssertionError(f"video {video_id} did not settle: {video}")


async def embedding_rows(pipeline: Pipeline, video_id: uuid.UUID) -> int:
    async with pipeline.sessions() as session:
        count = await session.scalar(
            select(func.count()).where(
                LedgerEntry.video_id == video_id, LedgerEntry.operation == "embedding"
            )
        )
    return int(count or 0)


async def test_a_scraped_video_is_indexed_through_the_endpoint_and_found(
    api: tuple[httpx.AsyncClient, str], pipeline: Pipeline, speech_video: SpeechVideo
) -> None:
    client, tenant_id = api
    video_id = await add_scraped_video(pipeline, tenant_id, speech_video.path)
    assert (await client.get("/v1/search", params={"q": "sourdough"})).json()["results"] == []

    response = await client.post(f"/v1/videos/{video_id}/ingest")
    assert response.status_code == 202, response.text
    assert response.json()["workflow_id"] == f"ingest-{video_id}"
    video = await settled(client, video_id)
    assert video["status"] == "completed", video
    assert video["chunk_count"] >= 1

    found = (await client.get("/v1/search", params={"q": "history of sourdough", "k": 3})).json()
    best = found["results"][0]
    said = next(line for line in speech_video.spoken if "sourdough" in line.text)
    assert best["video_id"] == str(video_id)
    assert best["match_start_s"] - 1.0 <= said.start_s <= best["match_end_s"]

    # Indexed again: a new run that keeps the transcript and finds every chunk already
    # embedded with the current model, so nothing is embedded (or charged) twice.
    chunks, embeddings = video["chunk_count"], await embedding_rows(pipeline, video_id)
    again = await client.post(f"/v1/videos/{video_id}/ingest")
    assert again.status_code == 202, again.text
    assert again.json()["status"] == "pending"
    handle = pipeline.client.get_workflow_handle(f"ingest-{video_id}")
    await handle.result()
    video = await settled(client, video_id)
    assert (video["status"], video["chunk_count"]) == ("completed", chunks)
    assert await embedding_rows(pipeline, video_id) == embeddings
    async with pipeline.sessions() as session:
        models = (
            await session.scalars(select(Chunk.embedding_model).where(Chunk.video_id == video_id))
        ).all()
    assert len(set(models)) == 1 and models[0] == video["embedding_model"]


async def test_a_generation_asked_to_be_indexed_is_ingested_once_it_is_stored(
    api: tuple[httpx.AsyncClient, str], pipeline: Pipeline
) -> None:
    client, _ = api
    response = await client.post(
        "/v1/generations",
        json={
            "prompt": "a lighthouse at dusk",
            "provider": "local",
            "duration_s": 1,
            "aspect_ratio": "16:9",
            "resolution": "480p",
            "index": True,
        },
    )
    assert response.status_code == 202, response.text
    generation_id = response.json()["generation_id"]
    state: dict[str, Any] = {}
    for _ in range(600):
        state = (await client.get(f"/v1/generations/{generation_id}")).json()
        if state["status"] in ("completed", "failed", "canceled"):
            break
        await asyncio.sleep(0.2)
    assert state["status"] == "completed", state
    video_id = state["video_id"]
    video: dict[str, Any] = {}
    for _ in range(600):
        video = (await client.get(f"/v1/videos/{video_id}")).json()
        # The stored clip reads `completed` before its ingest starts: wait for the ingest's
        # own outcome (a chunk count, or a failure).
        if video["status"] == "failed" or video["chunk_count"] is not None:
            break
        await asyncio.sleep(0.2)
    # The local renderer's clip carries a tone, not speech: indexed, with nothing to find,
    # and it says so.
    assert video["status"] == "completed", video
    assert video["chunk_count"] == 0 and "no speech" in (video["note"] or "")
