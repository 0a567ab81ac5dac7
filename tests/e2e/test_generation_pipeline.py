"""Generation end to end: the API, the real worker pools and the local renderer.

Request a clip through `POST /v1/generations`, let the workers built by
`workers.pools.build_workers` render, validate and store it, then read it back through the
video endpoints, the run view and the cost ledger.
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
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from reelflow.core.db import create_engine, session_factory
from reelflow.core.storage import LocalStorage
from reelflow.core.tenants import create_tenant
from schemas.tables import LedgerEntry
from tests.api.api_support import BagOfWordsEmbedder
from tests.e2e.conftest import Pipeline, pipeline_settings
from tests.e2e.test_ingest_pipeline import running_workers


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def generation_pipeline(
    migrated_url: str, local_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    settings = pipeline_settings(
        migrated_url,
        tmp_path_factory.mktemp("home"),
        generation_poll_initial_s=0.5,
        generation_poll_max_s=2.0,
    )
    engine = create_engine(migrated_url, pool_size=4)
    sessions = session_factory(engine)
    async with sessions.begin() as session:
        tenant = await create_tenant(session, name="e2e-generation", plan="creator")
    try:
        yield Pipeline(settings, sessions, local_env.client, str(tenant.tenant_id))
    finally:
        await engine.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def api(generation_pipeline: Pipeline) -> AsyncIterator[httpx.AsyncClient]:
    pipeline = generation_pipeline
    async with pipeline.sessions.begin() as session:
        created = await create_tenant(session, name=f"gen-{uuid.uuid4().hex[:6]}", plan="creator")
    engine = create_engine(pipeline.settings.database_url, pool_size=4)
    try:
        async with running_workers(pipeline):
            app = create_app(
                pipeline.settings,
                engine=engine,
                temporal=pipeline.client,
                storage=LocalStorage(
                    Path(pipeline.settings.resolved_storage_url.removeprefix("file://"))
                ),
                embedder=BagOfWordsEmbedder(),
            )
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url="http://reelflow.test",
                    headers={"Authorization": f"Bearer {created.api_key}"},
                    timeout=60,
                ) as client,
            ):
                yield client
    finally:
        await engine.dispose()


async def wait_until_settled(api: httpx.AsyncClient, generation_id: str) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for _ in range(1200):
        state = (await api.get(f"/v1/generations/{generation_id}")).json()
        if state["status"] in ("completed", "failed", "canceled"):
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"generation {generation_id} did not settle: {state}")


async def test_a_prompt_becomes_a_stored_video_with_a_thumbnail(
    api: httpx.AsyncClient, generation_pipeline: Pipeline
) -> None:
    response = await api.post(
        "/v1/generations",
        json={
            "prompt": "A hot-air balloon over a green valley at sunrise",
            "provider": "local",
            "duration_s": 2,
            "aspect_ratio": "9:16",
            "resolution": "480p",
        },
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    generation_id = accepted["generation_id"]

    state = await wait_until_settled(api, generation_id)
    assert state["status"] == "completed", state
    assert state["validation"]["passed"] is True
    assert [a["outcome"] for a in state["attempts"]] == ["passed"]
    video_id = state["video_id"]

    video = (await api.get(f"/v1/videos/{video_id}")).json()
    assert video["origin"] == "generated" and video["status"] == "completed"
    assert (video["width"], video["height"], video["has_audio"]) == (480, 854, True)
    assert video["duration_s"] == pytest.approx(2.0, abs=0.2)
    assert video["workflow_id"] == accepted["workflow_id"]
    content = await api.get(f"/v1/videos/{video_id}/content", headers={"Range": "bytes=0-11"})
    assert content.status_code == 206 and content.content[4:8] == b"ftyp"
    thumbnail = await api.get(f"/v1/videos/{video_id}/thumbnail")
    assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"

    run = (await api.get(f"/v1/runs/{accepted['workflow_id']}")).json()
    assert (run["pipeline"], run["status"], run["stage"]) == (
        "generation",
        "completed",
        "completed",
    )
    assert run["video_id"] == video_id
    assert run["progress"]["provider_job_id"] == state["provider_job_id"]

    async with generation_pipeline.sessions() as session:
        rows = (
            await session.scalars(
                select(LedgerEntry).where(LedgerEntry.video_id == uuid.UUID(video_id))
            )
        ).all()
    assert [(r.provider, r.operation, r.unit, float(r.units)) for r in rows] == [
        ("local", "generation", "second", 2.0)
    ]
