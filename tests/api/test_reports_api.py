"""Chart and report routes: content types, revalidation with ETags, 404s, tenant isolation,
escaping, and pages that show cached insights without ever making them."""

from __future__ import annotations

import html
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from api.routers import reports as reports_routes
from reelflow.core.db import session_factory
from reelflow.core.settings import Settings
from reelflow.improve import insights, performance
from reelflow.improve.analysts import StatisticalAnalyst
from schemas.discover import Platform
from schemas.improve import PerformanceIn
from tests.api.api_support import TenantKey, assert_error
from tests.improve.test_reports import HOSTILE_TITLE, NOW, seed_series, seed_video

VIDEO_CHARTS = ["views", "engagement", "traffic", "versions"]
SERIES_CHARTS = ["episodes", "views"]


@pytest_asyncio.fixture(loop_scope="session")
async def client(app: FastAPI, api: httpx.AsyncClient) -> httpx.AsyncClient:
    """The API with the report routes, whether or not the app already mounts them."""
    paths = {getattr(route, "path", None) for route in app.routes}
    if "/v1/reports/videos/{video_id}" not in paths:
        app.include_router(reports_routes.router)
    return api


@pytest_asyncio.fixture(loop_scope="session")
async def video(api_engine: AsyncEngine, alice: TenantKey) -> AsyncIterator[uuid.UUID]:
    async with session_factory(api_engine)() as session:
        video_id = await seed_video(session, alice.tenant_id, title=HOSTILE_TITLE)
        await session.commit()
    yield video_id


@pytest_asyncio.fixture(loop_scope="session")
async def collection(api_engine: AsyncEngine, alice: TenantKey) -> uuid.UUID:
    async with session_factory(api_engine)() as session:
        collection_id, _ = await seed_series(session, alice.tenant_id, episodes=4)
        await session.commit()
    return collection_id


@pytest.mark.parametrize("name", VIDEO_CHARTS)
async def test_video_charts_come_as_svg_and_png(
    client: httpx.AsyncClient, alice: TenantKey, video: uuid.UUID, name: str
) -> None:
    base = f"/v1/videos/{video}/performance/charts/{name}"
    svg = await client.get(f"{base}.svg", headers=alice.headers)
    assert svg.status_code == 200, svg.text
    assert svg.headers["content-type"] == "image/svg+xml"
    assert ET.fromstring(svg.content).tag == "{http://www.w3.org/2000/svg}svg"
    png = await client.get(f"{base}.png", headers=alice.headers)
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    for response in (svg, png):
        assert response.headers["cache-control"] == "private, no-cache"
        assert response.headers["vary"] == "Authorization"
        assert "script-src" not in response.headers["content-security-policy"]
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert svg.headers["etag"] != png.headers["etag"]


async def test_an_unchanged_chart_is_a_304_and_a_new_snapshot_changes_it(
    client: httpx.AsyncClient, api_engine: AsyncEngine, alice: TenantKey, video: uuid.UUID
) -> None:
    url = f"/v1/videos/{video}/performance/charts/views.svg"
    first = await client.get(url, headers=alice.headers)
    etag = first.headers["etag"]
    for validator in (etag, f"W/{etag}", f'"something-else", {etag}', "*"):
        again = await client.get(url, headers={**alice.headers, "If-None-Match": validator})
        assert again.status_code == 304, validator
        assert again.content == b""
        assert again.headers["etag"] == etag
    same = await client.get(url, headers=alice.headers)
    assert same.content == first.content

    async with session_factory(api_engine)() as session:
        await performance.add_snapshot(
            session,
            tenant_id=alice.tenant_id,
            video_id=video,
            snapshot=PerformanceIn(platform=Platform.TIKTOK, views=500_000, recorded_at=NOW),
            now=NOW,
        )
        await session.commit()
    changed = await client.get(url, headers={**alice.headers, "If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.content != first.content


@pytest.mark.parametrize(
    "filename",
    [
        "likes.svg",
        "views.jpg",
        "views",
        "views.svg.png",
        ".svg",
        "episodes.svg",
        "VIEWS.SVG",
        "x" * 5000 + ".svg",
    ],
)
async def test_an_unknown_chart_is_a_404_naming_the_charts(
    client: httpx.AsyncClient, alice: TenantKey, video: uuid.UUID, filename: str
) -> None:
    response = await client.get(
        f"/v1/videos/{video}/performance/charts/{filename}", headers=alice.headers
    )
    error = assert_error(response, 404, "not_found")
    assert "views" in error["message"] and "versions" in error["message"]


@pytest.mark.parametrize("filename", ["views%00.svg", "..%2Fviews.svg", "%0d%0aX-A: b.svg"])
async def test_hostile_chart_names_are_plain_404s(
    client: httpx.AsyncClient, alice: TenantKey, video: uuid.UUID, filename: str
) -> None:
    response = await client.get(
        f"/v1/videos/{video}/performance/charts/{filename}", headers=alice.headers
    )
    assert_error(response, 404, "not_found")
    assert "x-a" not in response.headers


async def test_another_tenants_video_and_series_are_404s(
    client: httpx.AsyncClient,
    alice: TenantKey,
    bob: TenantKey,
    video: uuid.UUID,
    collection: uuid.UUID,
) -> None:
    for url in (
        f"/v1/videos/{video}/performance/charts/views.svg",
        f"/v1/videos/{video}/performance/charts/traffic.png",
        f"/v1/videos/{video}/performance/charts/versions.svg",
        f"/v1/reports/videos/{video}",
        f"/v1/videos/{uuid.uuid4()}/performance/charts/views.svg",
    ):
        assert_error(await client.get(url, headers=bob.headers), 404, "video_not_found")
    for url in (
        f"/v1/collections/{collection}/performance/charts/episodes.svg",
        f"/v1/collections/{collection}/performance/charts/views.png",
        f"/v1/reports/collections/{collection}",
        f"/v1/reports/collections/{uuid.uuid4()}",
    ):
        assert_error(await client.get(url, headers=bob.headers), 404, "collection_not_found")
    unauthenticated = await client.get(f"/v1/reports/videos/{video}")
    assert_error(unauthenticated, 401, "unauthorized")


async def test_the_video_report_is_one_escaped_page_with_inline_charts(
    client: httpx.AsyncClient, alice: TenantKey, video: uuid.UUID
) -> None:
    response = await client.get(f"/v1/reports/videos/{video}", headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    page = response.text
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt; Tom &amp; Jerry" in page
    assert page.count("<svg") == 4
    # Nothing the page shows needs another (authenticated) request.
    assert "src=" not in page and "<link" not in page
    assert "No insights are cached yet" in page
    revalidated = await client.get(
        f"/v1/reports/videos/{video}",
        headers={**alice.headers, "If-None-Match": response.headers["etag"]},
    )
    assert revalidated.status_code == 304


async def test_the_page_shows_cached_insights_and_never_makes_them(
    client: httpx.AsyncClient,
    app: FastAPI,
    api_engine: AsyncEngine,
    alice: TenantKey,
    video: uuid.UUID,
) -> None:
    sessions = session_factory(api_engine)
    before = await client.get(f"/v1/reports/videos/{video}", headers=alice.headers)
    async with sessions() as session:
        assert (
            await insights.cached_insights(session, tenant_id=alice.tenant_id, video_id=video)
            is None
        ), "opening a report made insights"

    settings: Settings = app.state.resources.settings
    answer = await insights.video_insights(
        sessions,
        tenant_id=alice.tenant_id,
        video_id=video,
        refresh=False,
        analyst=StatisticalAnalyst(),
        settings=settings,
    )
    assert answer.insights is not None
    after = await client.get(f"/v1/reports/videos/{video}", headers=alice.headers)
    assert after.headers["etag"] != before.headers["etag"]
    page = after.text
    assert "No insights are cached yet" not in page
    assert "By statistical analysis of your numbers" in page
    shown = answer.insights.strengths + answer.insights.recommendations
    assert shown
    for line in shown:
        assert html.escape(line) in page


@pytest.mark.parametrize("name", SERIES_CHARTS)
async def test_series_charts_and_page(
    client: httpx.AsyncClient, alice: TenantKey, collection: uuid.UUID, name: str
) -> None:
    base = f"/v1/collections/{collection}/performance/charts/{name}"
    svg = await client.get(f"{base}.svg", headers=alice.headers)
    assert svg.status_code == 200, svg.text
    assert svg.headers["content-type"] == "image/svg+xml"
    assert "Episode" in svg.text or "Series views" in svg.text
    png = await client.get(f"{base}.png", headers=alice.headers)
    assert png.headers["content-type"] == "image/png"
    cached = await client.get(
        f"{base}.svg", headers={**alice.headers, "If-None-Match": svg.headers["etag"]}
    )
    assert cached.status_code == 304
    unknown = await client.get(
        f"/v1/collections/{collection}/performance/charts/traffic.svg", headers=alice.headers
    )
    assert_error(unknown, 404, "not_found")

    page = await client.get(f"/v1/reports/collections/{collection}", headers=alice.headers)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.text.count("<svg") == 2
    assert "Best episodes" in page.text
