"""The product path through the HTTP API with real workers behind it.

Upload a speech video, watch it reach `completed`, read its transcript and thumbnail,
search it, and see its cost on the usage report.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from reelflow.core.db import create_engine
from reelflow.core.storage import LocalStorage
from reelflow.dev.samples import SpeechVideo
from tests.e2e.conftest import Pipeline
from tests.e2e.test_ingest_pipeline import running_workers


@pytest_asyncio.fixture(loop_scope="session")
async def api_engine(pipeline: Pipeline) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(pipeline.settings.database_url, pool_size=4)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def api_key(pipeline: Pipeline) -> str:
    from reelflow.core.tenants import create_tenant

    async with pipeline.sessions.begin() as session:
        created = await create_tenant(session, name=f"api-{uuid.uuid4().hex[:6]}")
    return created.api_key


@pytest_asyncio.fixture(loop_scope="session")
async def api(
    pipeline: Pipeline, api_engine: AsyncEngine, api_key: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_workers(pipeline) as deps:
        app = create_app(
            pipeline.settings,
            engine=api_engine,
            temporal=pipeline.client,
            storage=LocalStorage(
                Path(pipeline.settings.resolved_storage_url.removeprefix("file://"))
            ),
            embedder=deps.embedder,
        )
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://reelflow.test",
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=60,
            ) as client,
        ):
            yield client


async def wait_until_settled(api: httpx.AsyncClient, video_id: str) -> dict[str, Any]:
    for _ in range(1200):
        state: dict[str, Any] = (await api.get(f"/v1/videos/{video_id}")).json()
        if state["status"] in ("completed", "failed"):
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"video {video_id} did not settle: {state}")


async def test_upload_ingest_search_and_usage_through_the_api(
    api: httpx.AsyncClient, speech_video: SpeechVideo
) -> None:
    with speech_video.path.open("rb") as file:
        response = await api.post(
            "/v1/videos",
            files={"file": ("bread.mp4", file, "video/mp4")},
            data={"title": "Baking bread"},
        )
    assert response.status_code == 202, response.text
    video_id = response.json()["video_id"]

    state = await wait_until_settled(api, video_id)
    assert state["status"] == "completed", state
    assert state["progress"] == 1.0 and state["chunk_count"] >= 1
    assert state["duration_s"] == pytest.approx(speech_video.duration_s, abs=0.5)

    transcript = (await api.get(f"/v1/videos/{video_id}/transcript")).json()
    assert "dough" in transcript["text"].lower()
    thumbnail = await api.get(f"/v1/videos/{video_id}/thumbnail")
    assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"

    hits = (await api.get("/v1/search", params={"q": "how hot is the oven", "k": 3})).json()
    oven = next(line for line in speech_video.spoken if "oven" in line.text)
    best = hits["results"][0]
    assert best["video_id"] == video_id
    assert best["start_s"] <= oven.start_s + 1.0 and best["end_s"] >= oven.end_s - 1.0

    run = (await api.get(f"/v1/runs/ingest-{video_id}")).json()
    assert run["status"] == "completed" and run["pipeline"] == "ingest"

    usage = (await api.get("/v1/usage", params={"group_by": "operation"})).json()
    operations = {group["operation"] for group in usage["groups"]}
    assert {"transcription", "embedding"} <= operations
