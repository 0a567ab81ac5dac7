"""`POST /v1/videos/{id}/ingest`: (re)index any stored video of the tenant.

Against the real API app, Postgres and the Temporal dev server; no worker serves these
tests' queue family, so a started run stays running exactly as the API left it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client, WorkflowExecutionStatus

from api.routers import reindex
from reelflow.assets import videos
from reelflow.core.db import session_factory
from reelflow.core.storage import LocalStorage
from schemas.ingest import VideoStatus
from tests.api.api_support import TenantKey, assert_error


@pytest_asyncio.fixture(loop_scope="session")
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    # The endpoint's router, in case the app does not include it yet.
    if not any(getattr(r, "path", "") == "/v1/videos/{video_id}/ingest" for r in app.routes):
        app.include_router(reindex.router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test:8080") as client:
        yield client


async def add_video(
    engine: AsyncEngine,
    storage: LocalStorage,
    tenant: TenantKey,
    *,
    origin: str,
    status: VideoStatus,
    stored: bool = True,
    size_known: bool = True,
) -> uuid.UUID:
    video_id = uuid.uuid4()
    key = videos.source_key(tenant.tenant_id, video_id, ".mp4")
    if stored:
        storage.put_bytes(key, b"\x00\x00\x00\x18ftypmp42 a stored file")
    async with session_factory(engine)() as session:
        await videos.create_video(
            session,
            tenant_id=tenant.tenant_id,
            video_id=video_id,
            title=f"{origin} video",
            origin=origin,
            source_key=key,
            status=status,
            size_bytes=32 if size_known else None,
            source_url="https://example.com/v.mp4" if origin in ("import", "scraped") else None,
        )
        await session.commit()
    return video_id


async def test_a_generated_video_starts_its_ingest_run(
    api: httpx.AsyncClient,
    api_engine: AsyncEngine,
    storage: LocalStorage,
    alice: TenantKey,
    temporal: Client,
) -> None:
    video_id = await add_video(
        api_engine, storage, alice, origin="generated", status=VideoStatus.COMPLETED
    )
    response = await api.post(f"/v1/videos/{video_id}/ingest", headers=alice.headers)
    assert response.status_code == 202, response.text
    assert response.json() == {
        "video_id": str(video_id),
        "workflow_id": f"ingest-{video_id}",
        "status": "pending",
    }
    description = await temporal.get_workflow_handle(f"ingest-{video_id}").describe()
    assert description.status == WorkflowExecutionStatus.RUNNING
    run = (await api.get(f"/v1/runs/ingest-{video_id}", headers=alice.headers)).json()
    assert (run["pipeline"], run["video_id"]) == ("ingest", str(video_id))
    video = (await api.get(f"/v1/videos/{video_id}", headers=alice.headers)).json()
    assert video["workflow_id"] == f"ingest-{video_id}"


async def test_asking_again_while_it_runs_joins_the_same_run(
    api: httpx.AsyncClient,
    api_engine: AsyncEngine,
    storage: LocalStorage,
    alice: TenantKey,
    temporal: Client,
) -> None:
    video_id = await add_video(
        api_engine, storage, alice, origin="scraped", status=VideoStatus.COMPLETED
    )
    first = await api.post(f"/v1/videos/{video_id}/ingest", headers=alice.headers)
    run_id = (await temporal.get_workflow_handle(f"ingest-{video_id}").describe()).run_id
    second = await api.post(f"/v1/videos/{video_id}/ingest", headers=alice.headers)
    assert first.status_code == second.status_code == 202, second.text
    assert second.json()["workflow_id"] == first.json()["workflow_id"]
    assert second.json()["status"] == "completed"  # the row's status: nothing new started
    assert (await temporal.get_workflow_handle(f"ingest-{video_id}").describe()).run_id == run_id


async def test_a_finished_run_is_started_again(
    api: httpx.AsyncClient,
    api_engine: AsyncEngine,
    storage: LocalStorage,
    alice: TenantKey,
    temporal: Client,
) -> None:
    video_id = await add_video(
        api_engine, storage, alice, origin="upload", status=VideoStatus.COMPLETED
    )
    await api.post(f"/v1/videos/{video_id}/ingest", headers=alice.headers)
    handle = temporal.get_workflow_handle(f"ingest-{video_id}")
    first_run = (await handle.describe()).run_id
    await handle.terminate("the first index is done")

    response = await api.post(f"/v1/videos/{video_id}/ingest", headers=alice.headers)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"
    again = await temporal.get_workflow_handle(f"ingest-{video_id}").describe()
    assert again.run_id != first_run
    assert again.status == WorkflowExecutionStatus.RUNNING


async def test_another_tenants_video_is_404(
    api: httpx.AsyncClient,
    api_engine: AsyncEngine,
    storage: LocalStorage,
    alice: TenantKey,
    bob: TenantKey,
    temporal: Client,
) -> None:
    video_id = await add_video(
        api_engine, storage, alice, origin="generated", status=VideoStatus.COMPLETED
    )
    assert_error(
        await api.post(f"/v1/videos/{video_id}/ingest", headers=bob.headers), 404, "not_found"
    )
    assert_error(
        await api.post("/v1/videos/not-a-uuid/ingest", headers=bob.headers), 404, "not_found"
    )
    async for _ in temporal.list_workflows(f"WorkflowId = 'ingest-{video_id}'"):
        raise AssertionError("bob's request started a run for alice's video")


@pytest.mark.parametrize(
    ("origin", "status", "stored", "size_known", "reason"),
    [
        ("upload", VideoStatus.UPLOADING, False, False, "not confirmed"),
        ("import", VideoStatus.PENDING, False, False, "not downloaded"),
        ("scraped", VideoStatus.FAILED, False, False, "never downloaded"),
        ("generated", VideoStatus.COMPLETED, False, True, "missing from storage"),
    ],
)
async def test_a_video_whose_file_is_not_stored_is_409_with_the_reason(
    api: httpx.AsyncClient,
    api_engine: AsyncEngine,
    storage: LocalStorage,
    alice: TenantKey,
    temporal: Client,
    origin: str,
    status: VideoStatus,
    stored: bool,
    size_known: bool,
    reason: str,
) -> None:
    video_id = await add_video(
        api_engine,
        storage,
        alice,
        origin=origin,
        status=status,
        stored=stored,
        size_known=size_known,
    )
    error = assert_error(
        await api.post(f"/v1/videos/{video_id}/ingest", headers=alice.headers),
        409,
        "source_not_stored",
    )
    assert reason in error["message"]
    async for _ in temporal.list_workflows(f"WorkflowId = 'ingest-{video_id}'"):
        raise AssertionError("a run was started for a video with nothing to index")


async def test_the_endpoint_is_in_the_openapi_document(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    assert set(paths["/v1/videos/{video_id}/ingest"]) == {"post"}
