"""`GET /v1/videos/{id}/insights` and `GET /v1/collections/{id}/insights` on the real app."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from api.routers.insights import router as insights_router
from reelflow.core.db import SessionFactory, session_factory
from reelflow.core.settings import Settings
from reelflow.improve.analysts import StatisticalAnalyst
from tests.api.api_support import TenantKey
from tests.improve.test_insights import add_metrics, new_video

FRESH_PER_HOUR = 2


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"insights_fresh_per_hour": FRESH_PER_HOUR})


@pytest.fixture
def sessions(api_engine: AsyncEngine) -> SessionFactory:
    return session_factory(api_engine)


@pytest.fixture
def insights_api(app: FastAPI, api: httpx.AsyncClient) -> httpx.AsyncClient:
    """The client, on an app that serves the insights routes with the statistical analyst."""
    paths = {getattr(route, "path", None) for route in app.routes}
    if "/v1/videos/{video_id}/insights" not in paths:
        app.include_router(insights_router)
    app.state.insight_analyst = StatisticalAnalyst()
    return api


async def test_a_video_without_metrics_is_a_clear_answer(
    insights_api: httpx.AsyncClient, alice: TenantKey, sessions: SessionFactory
) -> None:
    video = await new_video(sessions, alice.tenant_id)

    response = await insights_api.get(f"/v1/videos/{video}/insights", headers=alice.headers)

    assert response.status_code == 200
    body = response.json()
    assert body["insights"] is None and body["generated_at"] is None
    assert "no performance metrics" in body["message"]


async def test_insights_are_cached_then_limited_with_retry_after(
    insights_api: httpx.AsyncClient, alice: TenantKey, sessions: SessionFactory
) -> None:
    video = await new_video(sessions, alice.tenant_id)
    await add_metrics(sessions, alice.tenant_id, video, views=12_000, completion=80)
    url = f"/v1/videos/{video}/insights"

    first = await insights_api.get(url, headers=alice.headers)
    assert first.status_code == 200
    made = first.json()
    assert made["cached"] is False and made["statistical"] is True
    assert made["analyst"] == "statistical" and "statistical" in made["message"]
    assert set(made["insights"]) == {
        "strengths",
        "weaknesses",
        "traffic_insights",
        "patterns",
        "recommendations",
        "next_video_suggestions",
    }
    again = (await insights_api.get(url, headers=alice.headers)).json()
    assert again["cached"] is True and again["generated_at"] == made["generated_at"]

    refreshed = await insights_api.get(url, params={"refresh": "true"}, headers=alice.headers)
    assert refreshed.status_code == 200 and refreshed.json()["cached"] is False
    limited = await insights_api.get(url, params={"refresh": "true"}, headers=alice.headers)
    assert limited.status_code == 429
    assert 0 < int(limited.headers["retry-after"]) <= 3600
    assert limited.json()["error"]["code"] == "rate_limited"
    assert f"at most {FRESH_PER_HOUR} fresh insights per hour" in limited.json()["error"]["message"]
    # The cached answer is still served while fresh ones are refused.
    assert (await insights_api.get(url, headers=alice.headers)).json()["cached"] is True


async def test_another_tenants_video_or_collection_is_not_found(
    insights_api: httpx.AsyncClient, alice: TenantKey, bob: TenantKey, sessions: SessionFactory
) -> None:
    collection = uuid.uuid4()
    video = await new_video(sessions, alice.tenant_id, collection_id=collection)
    await add_metrics(sessions, alice.tenant_id, video, views=500)

    for url in (
        f"/v1/videos/{video}/insights",
        f"/v1/collections/{collection}/insights",
        "/v1/videos/not-a-uuid/insights",
    ):
        response = await insights_api.get(url, headers=bob.headers)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found"
    unauthenticated = await insights_api.get(f"/v1/videos/{video}/insights")
    assert unauthenticated.status_code == 401


async def test_series_insights(
    insights_api: httpx.AsyncClient, alice: TenantKey, sessions: SessionFactory
) -> None:
    collection = uuid.uuid4()
    for index, views in enumerate((1_000, 20_000, 3_000)):
        video = await new_video(
            sessions, alice.tenant_id, f"Episode {index + 1}", collection_id=collection
        )
        await add_metrics(sessions, alice.tenant_id, video, views=views, day=index)

    url = f"/v1/collections/{collection}/insights"
    first = await insights_api.get(url, headers=alice.headers)
    assert first.status_code == 200
    body = first.json()
    assert body["cached"] is False and body["statistical"] is True
    assert any("Episode 2" in s for s in body["insights"]["strengths"])
    assert (await insights_api.get(url, headers=alice.headers)).json()["cached"] is True
