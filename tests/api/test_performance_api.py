"""Performance metrics over HTTP, against the real app and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.app import create_app
from api.routers import performance as performance_routes
from reelflow.core.db import session_factory
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from schemas.discover import Platform
from tests.api.api_support import BagOfWordsEmbedder, TenantKey, assert_error
from tests.discover.test_catalog import seed_post
from tests.improve.test_performance import add_post_snapshot, make_video


@pytest_asyncio.fixture(loop_scope="session")
async def app(
    settings: Settings,
    api_engine: AsyncEngine,
    temporal: Client,
    storage: LocalStorage,
    embedder: BagOfWordsEmbedder,
) -> AsyncIterator[FastAPI]:
    application = create_app(
        settings, engine=api_engine, temporal=temporal, storage=storage, embedder=embedder
    )
    # Until the app factory includes the performance routes, the test app does.
    if not any(getattr(r, "path", "") == "/v1/performance/import" for r in application.routes):
        application.include_router(performance_routes.router)
    async with application.router.lifespan_context(application):
        yield application


async def _video(api_engine: AsyncEngine, who: TenantKey, **kwargs: Any) -> uuid.UUID:
    async with session_factory(api_engine)() as session:
        video = await make_video(session, who.tenant_id, **kwargs)
        await session.commit()
    return video


def _snapshot(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "platform": "tiktok",
        "views": 1000,
        "likes": 100,
        "comments": 10,
        "shares": 5,
        "saves": 2,
        "traffic_source": "fyp",
        "recorded_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
    }
    body.update(overrides)
    return body


async def test_snapshots_are_added_listed_changed_and_deleted(
    api: httpx.AsyncClient, api_engine: AsyncEngine, alice: TenantKey
) -> None:
    video = await _video(api_engine, alice)
    path = f"/v1/videos/{video}/performance"
    body = _snapshot()
    created = await api.post(path, json=body, headers=alice.headers)
    assert created.status_code == 201, created.text
    snapshot = created.json()
    assert snapshot["views"] == 1000 and snapshot["video_id"] == str(video)
    again = await api.post(path, json={**body, "views": 5000}, headers=alice.headers)
    assert_error(again, 409, "duplicate_snapshot")
    await api.post(path, json={**body, "platform": "instagram"}, headers=alice.headers)

    history = (await api.get(path, headers=alice.headers)).json()
    assert [item["platform"] for item in history["items"]] == ["instagram", "tiktok"]
    only = (await api.get(path, params={"platform": "tiktok"}, headers=alice.headers)).json()
    assert len(only["items"]) == 1

    changed = await api.patch(
        f"{path}/{snapshot['id']}", json={"views": 2500}, headers=alice.headers
    )
    assert changed.status_code == 200 and changed.json()["views"] == 2500
    summary = (await api.get(f"{path}/summary", headers=alice.headers)).json()
    assert summary["totals"]["views"] == 3500 and summary["snapshots"] == 2

    assert (await api.delete(f"{path}/{snapshot['id']}", headers=alice.headers)).status_code == 204
    assert_error(
        await api.delete(f"{path}/{snapshot['id']}", headers=alice.headers), 404, "not_found"
    )


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"views": -1}, "invalid_request"),
        ({"completion_rate": 150}, "invalid_request"),
        ({"traffic_source": "billboard"}, "invalid_request"),
        ({"views": 10, "likes": 20}, "invalid_metrics"),
        ({"recorded_at": (datetime.now(UTC) + timedelta(days=2)).isoformat()}, "invalid_metrics"),
    ],
)
async def test_bad_numbers_are_a_clear_422(
    api: httpx.AsyncClient,
    api_engine: AsyncEngine,
    alice: TenantKey,
    overrides: dict[str, Any],
    code: str,
) -> None:
    video = await _video(api_engine, alice)
    response = await api.post(
        f"/v1/videos/{video}/performance", json=_snapshot(**overrides), headers=alice.headers
    )
    assert_error(response, 422, code)


async def test_another_tenants_video_is_a_404_everywhere(
    api: httpx.AsyncClient, api_engine: AsyncEngine, alice: TenantKey, bob: TenantKey
) -> None:
    video = await _video(api_engine, alice, collection_id=uuid.uuid4())
    path = f"/v1/videos/{video}/performance"
    created = (await api.post(path, json=_snapshot(), headers=alice.headers)).json()
    for response in (
        await api.post(path, json=_snapshot(), headers=bob.headers),
        await api.get(path, headers=bob.headers),
        await api.get(f"{path}/summary", headers=bob.headers),
        await api.patch(f"{path}/{created['id']}", json={"views": 1}, headers=bob.headers),
        await api.delete(f"{path}/{created['id']}", headers=bob.headers),
        await api.post(
            f"{path}/link-post", json={"post_id": str(uuid.uuid4())}, headers=bob.headers
        ),
        await api.get("/v1/videos/not-a-uuid/performance", headers=bob.headers),
    ):
        assert_error(response, 404, "not_found")
    assert_error(await api.get(path), 401, "unauthorized")


async def test_an_import_reports_every_line_and_twice_changes_nothing(
    api: httpx.AsyncClient, api_engine: AsyncEngine, alice: TenantKey
) -> None:
    video = await _video(api_engine, alice)
    base = datetime.now(UTC) - timedelta(days=10)
    csv = (
        "\ufeffvideo_id;platform;views;recorded_at\n"
        + "".join(
            f"{video};tiktok;{100 * (i + 1)};{(base + timedelta(days=i)).isoformat()}\n"
            for i in range(5)
        )
        + f"{uuid.uuid4()};tiktok;5;{base.isoformat()}\n"
    )
    files = {"file": ("metrics.csv", csv.encode(), "text/csv")}
    first = await api.post("/v1/performance/import", files=files, headers=alice.headers)
    assert first.status_code == 200, first.text
    report = first.json()
    assert (report["inserted"], report["rejected"]) == (5, 1)
    assert report["rejections"][0]["line"] == 7
    again = (await api.post("/v1/performance/import", files=files, headers=alice.headers)).json()
    assert (again["inserted"], again["unchanged"]) == (0, 5)

    junk = {"file": ("metrics.csv", b"\x00\x01\x02garbage", "text/csv")}
    assert_error(
        await api.post("/v1/performance/import", files=junk, headers=alice.headers),
        422,
        "invalid_dataset",
    )
    assert_error(
        await api.post("/v1/performance/import", json={}, headers=alice.headers),
        415,
        "unsupported_media_type",
    )


async def test_series_and_a_linked_discover_post(
    api: httpx.AsyncClient, api_engine: AsyncEngine, alice: TenantKey
) -> None:
    series = uuid.uuid4()
    episodes = [
        await _video(api_engine, alice, title=f"Ep{i} #tag", collection_id=series) for i in range(3)
    ]
    for i, episode in enumerate(episodes):
        await api.post(
            f"/v1/videos/{episode}/performance",
            json=_snapshot(
                views=1000 * (i + 1),
                recorded_at=(datetime.now(UTC) - timedelta(days=10 - i)).isoformat(),
            ),
            headers=alice.headers,
        )
    result = await api.get(f"/v1/collections/{series}/performance", headers=alice.headers)
    assert result.status_code == 200, result.text
    body = result.json()
    assert body["episodes"] == 3 and body["best_episodes"][0]["title"] == "Ep2 #tag"
    assert_error(
        await api.get(f"/v1/collections/{uuid.uuid4()}/performance", headers=alice.headers),
        404,
        "not_found",
    )

    async with session_factory(api_engine)() as session:
        post = await seed_post(session, alice.tenant_id, platform=Platform.TIKTOK, handle="me")
        await add_post_snapshot(
            session, alice.tenant_id, post, datetime.now(UTC) - timedelta(days=1), 777
        )
        await session.commit()
    linked = await api.post(
        f"/v1/videos/{episodes[0]}/performance/link-post",
        json={"post_id": str(post)},
        headers=alice.headers,
    )
    assert linked.status_code == 200, linked.text
    assert linked.json()["copied"] == 1
    history = await api.get(f"/v1/videos/{episodes[0]}/performance", headers=alice.headers)
    assert [item["views"] for item in history.json()["items"]][-1] == 777
