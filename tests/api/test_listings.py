"""`GET /v1/videos`, `/v1/generations`, `/v1/runs`: tenant-scoped, filtered, paged by cursor."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.core import concurrency
from reelflow.core.db import session_factory
from schemas.discover_tables import Project, Scrape
from schemas.generation_tables import Generation
from schemas.tables import Video
from tests.api.api_support import TenantKey, assert_error
from tests.api.test_keys import bearer, wire_access_routes

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest_asyncio.fixture(loop_scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    wire_access_routes(app)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api.test:8080"
    ) as http:
        yield http


def _video(tenant_id: uuid.UUID, at: datetime, **fields: Any) -> Video:
    video_id = fields.pop("id", uuid.uuid4())
    values: dict[str, Any] = {
        "title": "clip",
        "origin": "upload",
        "status": "completed",
        "stage": "completed",
        "source_key": f"{tenant_id}/{video_id}.mp4",
        "workflow_id": f"ingest-{video_id}",
        "cost_usd": Decimal(0),
    }
    values.update(fields)
    return Video(id=video_id, tenant_id=tenant_id, created_at=at, **values)


def _generation(tenant_id: uuid.UUID, at: datetime, **fields: Any) -> Generation:
    generation_id = uuid.uuid4()
    values: dict[str, Any] = {
        "prompt": "a cat on a skateboard",
        "requested_provider": "local",
        "provider": "local",
        "duration_s": 4,
        "aspect_ratio": "9:16",
        "resolution": "720p",
        "estimated_cost_usd": Decimal(0),
        "cost_usd": Decimal(0),
        "status": "completed",
        "approval": "not_required",
        "workflow_id": f"generate-{generation_id}",
    }
    values.update(fields)
    return Generation(id=generation_id, tenant_id=tenant_id, created_at=at, **values)


async def _add(engine: AsyncEngine, *rows: object) -> None:
    async with session_factory(engine)() as session:
        session.add_all(rows)
        await session.commit()


async def _pages(
    client: httpx.AsyncClient, path: str, api_key: str, **params: Any
) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get(path, params=query, headers=bearer(api_key))
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_videos_are_listed_newest_first_and_pages_neither_skip_nor_repeat(
    client: httpx.AsyncClient, alice: TenantKey, bob: TenantKey, api_engine: AsyncEngine
) -> None:
    same_instant = T0 + timedelta(hours=1)
    rows = [_video(alice.tenant_id, T0 + timedelta(minutes=i)) for i in range(5)]
    # Rows created in the same microsecond still page in a stable order.
    rows += [_video(alice.tenant_id, same_instant) for _ in range(4)]
    await _add(api_engine, *rows, _video(bob.tenant_id, T0))

    pages = await _pages(client, "/v1/videos", alice.api_key, limit=2)
    listed = [item["video_id"] for page in pages for item in page]
    assert [len(page) for page in pages] == [2, 2, 2, 2, 1]
    expected = sorted(rows, key=lambda v: (v.created_at, v.id), reverse=True)
    assert listed == [str(v.id) for v in expected]


async def test_videos_filter_by_status_origin_collection_and_time(
    client: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine
) -> None:
    collection = uuid.uuid4()
    failed = _video(alice.tenant_id, T0, status="failed", stage="failed")
    imported = _video(alice.tenant_id, T0 + timedelta(days=1), origin="import")
    grouped = _video(alice.tenant_id, T0 + timedelta(days=2), collection_id=collection)
    generated = _video(
        alice.tenant_id, T0 + timedelta(days=3), origin="generated", workflow_id=None
    )
    await _add(api_engine, failed, imported, grouped, generated)

    async def ids(**params: Any) -> list[str]:
        response = await client.get("/v1/videos", params=params, headers=bearer(alice.api_key))
        assert response.status_code == 200, response.text
        return [item["video_id"] for item in response.json()["items"]]

    assert await ids(status="failed") == [str(failed.id)]
    assert await ids(origin="import") == [str(imported.id)]
    assert await ids(origin="generated") == [str(generated.id)]
    assert await ids(collection_id=str(collection)) == [str(grouped.id)]
    assert await ids(
        since=(T0 + timedelta(days=1)).isoformat(), until=(T0 + timedelta(days=3)).isoformat()
    ) == [str(grouped.id), str(imported.id)]
    for bad in ({"status": "sleeping"}, {"origin": "stolen"}, {"limit": 0}, {"limit": 201}):
        response = await client.get("/v1/videos", params=bad, headers=bearer(alice.api_key))
        assert_error(response, 422, "invalid_request")
    backwards = await client.get(
        "/v1/videos",
        params={"since": T0.isoformat(), "until": (T0 - timedelta(days=1)).isoformat()},
        headers=bearer(alice.api_key),
    )
    assert_error(backwards, 422, "invalid_request")


async def test_generations_are_listed_with_filters(
    client: httpx.AsyncClient, alice: TenantKey, bob: TenantKey, api_engine: AsyncEngine
) -> None:
    done = _generation(alice.tenant_id, T0)
    waiting = _generation(
        alice.tenant_id,
        T0 + timedelta(minutes=1),
        status="queued",
        provider=None,
        requested_provider="sora",
    )
    await _add(api_engine, done, waiting, _generation(bob.tenant_id, T0))

    pages = await _pages(client, "/v1/generations", alice.api_key, limit=1)
    assert [item["generation_id"] for page in pages for item in page] == [
        str(waiting.id),
        str(done.id),
    ]
    queued = (
        await client.get(
            "/v1/generations", params={"status": "queued"}, headers=bearer(alice.api_key)
        )
    ).json()["items"]
    assert [item["generation_id"] for item in queued] == [str(waiting.id)]
    for provider in ("so\u0000ra", "x" * 41, "Sora!"):
        response = await client.get(
            "/v1/generations", params={"provider": provider}, headers=bearer(alice.api_key)
        )
        assert_error(response, 422, "invalid_request")
    sora = (
        await client.get(
            "/v1/generations", params={"provider": "sora"}, headers=bearer(alice.api_key)
        )
    ).json()["items"]
    assert [item["generation_id"] for item in sora] == [str(waiting.id)]


async def test_runs_list_every_pipeline_of_the_tenant(
    client: httpx.AsyncClient, alice: TenantKey, bob: TenantKey, api_engine: AsyncEngine
) -> None:
    project = Project(id=uuid.uuid4(), tenant_id=alice.tenant_id, name="p")
    await _add(api_engine, project)
    scrape_id = uuid.uuid4()
    scrape = Scrape(
        id=scrape_id,
        tenant_id=alice.tenant_id,
        project_id=project.id,
        source="apify",
        status="running",
        stage="scraping",
        workflow_id=f"scrape-{scrape_id}",
        created_at=T0 + timedelta(minutes=2),
    )
    video = _video(alice.tenant_id, T0, status="transcribing", stage="transcribing")
    generation = _generation(alice.tenant_id, T0 + timedelta(minutes=1), status="failed")
    never_started = _video(alice.tenant_id, T0 + timedelta(minutes=3), workflow_id=None)
    await _add(api_engine, scrape, video, generation, never_started, _video(bob.tenant_id, T0))

    pages = await _pages(client, "/v1/runs", alice.api_key, limit=2)
    runs = [item for page in pages for item in page]
    assert [(r["pipeline"], r["workflow_id"], r["status"]) for r in runs] == [
        ("scrape", scrape.workflow_id, "running"),
        ("generation", generation.workflow_id, "failed"),
        ("ingest", video.workflow_id, "transcribing"),
    ]
    assert runs[0]["subject_id"] == str(scrape_id)
    assert [r["queue_position"] for r in runs] == [None, None, None]

    # Runs waiting for one of the tenant's slots say where they stand.
    async with session_factory(api_engine)() as session:
        for workflow_id in (video.workflow_id, scrape.workflow_id):
            await concurrency.request_slot(
                session,
                tenant_id=alice.tenant_id,
                workflow_id=str(workflow_id),
                pipeline="ingest",
                limit=1,
            )
        await session.commit()
    listed = (await client.get("/v1/runs", headers=bearer(alice.api_key))).json()["items"]
    assert {r["workflow_id"]: r["queue_position"] for r in listed} == {
        scrape.workflow_id: 1,
        generation.workflow_id: None,
        video.workflow_id: 0,
    }

    only = await client.get(
        "/v1/runs",
        params={"pipeline": "generation", "status": "failed"},
        headers=bearer(alice.api_key),
    )
    assert [r["workflow_id"] for r in only.json()["items"]] == [generation.workflow_id]
    assert_error(
        await client.get("/v1/runs", params={"status": "x"}, headers=bearer(alice.api_key)),
        422,
        "invalid_request",
    )
    bobs = await client.get("/v1/runs", headers=bearer(bob.api_key))
    assert len(bobs.json()["items"]) == 1


async def test_garbage_foreign_and_cross_list_cursors_are_400(
    client: httpx.AsyncClient, alice: TenantKey, bob: TenantKey, api_engine: AsyncEngine
) -> None:
    await _add(
        api_engine,
        *[_video(alice.tenant_id, T0 + timedelta(seconds=i)) for i in range(3)],
        *[_video(bob.tenant_id, T0 + timedelta(seconds=i)) for i in range(3)],
    )
    bobs_cursor = (
        await client.get("/v1/videos", params={"limit": 1}, headers=bearer(bob.api_key))
    ).json()["next_cursor"]
    alices_cursor = (
        await client.get("/v1/videos", params={"limit": 1}, headers=bearer(alice.api_key))
    ).json()["next_cursor"]
    assert bobs_cursor and alices_cursor
    tampered = alices_cursor[:-2] + ("AA" if not alices_cursor.endswith("AA") else "BB")
    for path, cursor in [
        ("/v1/videos", bobs_cursor),
        ("/v1/videos", "garbage"),
        ("/v1/videos", "a.b"),
        ("/v1/videos", tampered),
        ("/v1/videos", "%00" * 10),
        ("/v1/generations", alices_cursor),
        ("/v1/runs", alices_cursor),
    ]:
        response = await client.get(path, params={"cursor": cursor}, headers=bearer(alice.api_key))
        assert_error(response, 400, "invalid_cursor")
    too_long = await client.get(
        "/v1/videos", params={"cursor": "x" * 2000}, headers=bearer(alice.api_key)
    )
    assert too_long.status_code in (400, 422)
