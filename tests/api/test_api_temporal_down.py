"""When Temporal does not answer, the API says so and leaves no video stuck in `pending`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from api.app import create_app
from reelflow.core.db import session_factory
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from schemas.tables import Video
from tests.api.api_support import BagOfWordsEmbedder, TenantKey, assert_error, fetch_video
from tests.support import free_port


async def videos_of(engine: AsyncEngine, tenant: TenantKey) -> list[Video]:
    async with session_factory(engine)() as session:
        return list(await session.scalars(select(Video).where(Video.tenant_id == tenant.tenant_id)))


@pytest_asyncio.fixture(loop_scope="session")
async def no_temporal_api(
    settings: Settings, api_engine: AsyncEngine, storage: LocalStorage
) -> AsyncIterator[httpx.AsyncClient]:
    # Nothing listens on this port; lazy, so creating the client succeeds like at startup.
    dead = await Client.connect(
        f"127.0.0.1:{free_port()}", lazy=True, data_converter=pydantic_data_converter
    )
    app = create_app(
        settings, engine=api_engine, temporal=dead, storage=storage, embedder=BagOfWordsEmbedder()
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        yield client


async def test_healthz_is_503(no_temporal_api: httpx.AsyncClient) -> None:
    response = await no_temporal_api.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "database": "ok", "temporal": "error"}


async def test_upload_is_503_and_the_video_is_marked_failed(
    no_temporal_api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine
) -> None:
    response = await no_temporal_api.post(
        "/v1/videos",
        headers=alice.headers,
        data={"title": "t"},
        files={"file": ("a.mp4", b"data", "video/mp4")},
    )
    assert_error(response, 503, "temporal_unavailable")
    (video,) = await videos_of(api_engine, alice)
    detail = (await no_temporal_api.get(f"/v1/videos/{video.id}", headers=alice.headers)).json()
    assert detail["status"] == "failed"
    assert detail["error"]["code"] == "start_failed"
    assert "upload the video again" in detail["error"]["message"]


async def test_confirm_is_503_and_can_be_retried(
    no_temporal_api: httpx.AsyncClient,
    alice: TenantKey,
    api_engine: AsyncEngine,
    settings: Settings,
) -> None:
    ticket = (
        await no_temporal_api.post(
            "/v1/videos/uploads",
            json={"filename": "a.mp4", "size_bytes": 4, "content_type": "video/mp4", "title": "t"},
            headers=alice.headers,
        )
    ).json()
    path = ticket["upload_url"].removeprefix(settings.api_base_url)
    assert (await no_temporal_api.put(path, content=b"data")).status_code == 200
    response = await no_temporal_api.post(
        f"/v1/videos/{ticket['video_id']}/confirm", headers=alice.headers
    )
    assert_error(response, 503, "temporal_unavailable")
    video = await fetch_video(api_engine, ticket["video_id"])
    assert video is not None
    # Handed back, so the client's retry of confirm can start the run later.
    assert (video.status, video.workflow_id) == ("uploading", None)
