"""The discover catalog over HTTP, end to end against the real app and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.app import create_app
from api.routers import discover
from reelflow.core.db import session_factory
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from reelflow.discover import scrapes
from schemas.discover import OutlierTier, Platform
from tests.api.api_support import BagOfWordsEmbedder, TenantKey, assert_error
from tests.api.conftest import TenantFactory
from tests.discover.test_catalog import seed_analysis, seed_post, seed_video


@pytest_asyncio.fixture(loop_scope="session")
async def app(
    settings: Settings,
    api_engine: AsyncEngine,
    temporal: Client,
    storage: LocalStorage,
    embedder: BagOfWordsEmbedder,
) -> AsyncIterator[FastAPI]:
    # A token, so projects can be created with a re-scrape Schedule (nothing calls Apify).
    settings = settings.model_copy(update={"apify_token": SecretStr("apify-test-token")})
    application = create_app(
        settings, engine=api_engine, temporal=temporal, storage=storage, embedder=embedder
    )
    # Until the app factory includes the discover routes, the test app does.
    if not any(getattr(r, "path", "") == "/v1/brands" for r in application.routes):
        application.include_router(discover.router)
    async with application.router.lifespan_context(application):
        yield application


async def _brand(api: httpx.AsyncClient, who: TenantKey, name: str = "Acme") -> dict[str, Any]:
    response = await api.post("/v1/brands", json={"name": name}, headers=who.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _product(
    api: httpx.AsyncClient, who: TenantKey, brand_id: str, name: str
) -> dict[str, Any]:
    response = await api.post(
        "/v1/products",
        json={
            "brand_id": brand_id,
            "name": name,
            "description": "A card game for families",
            "audience": "parents of toddlers",
            "benefits": ["less screen time", "family fun"],
            "tone": "warm",
        },
        headers=who.headers,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_discover_routes_need_an_api_key(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/v1/brands"), 401, "unauthorized")
    assert_error(await api.post("/v1/projects", json={"name": "x"}), 401, "unauthorized")


async def test_brands_are_created_listed_renamed_and_deleted(
    api: httpx.AsyncClient, alice: TenantKey, bob: TenantKey
) -> None:
    brand = await _brand(api, alice)
    assert brand["name"] == "Acme" and brand["product_count"] == 0
    assert_error(
        await api.post("/v1/brands", json={"name": " Acme "}, headers=alice.headers),
        409,
        "conflict",
    )
    # Names are per tenant.
    await _brand(api, bob)

    listed = (await api.get("/v1/brands", headers=alice.headers)).json()
    assert [b["brand_id"] for b in listed["items"]] == [brand["brand_id"]]
    assert listed["next_cursor"] is None

    path = f"/v1/brands/{brand['brand_id']}"
    renamed = await api.patch(path, json={"description": "Games"}, headers=alice.headers)
    assert renamed.json()["description"] == "Games" and renamed.json()["name"] == "Acme"
    assert_error(await api.get(path, headers=bob.headers), 404, "not_found")
    assert_error(await api.patch(path, json={"name": "X"}, headers=bob.headers), 404, "not_found")
    assert_error(await api.delete(path, headers=bob.headers), 404, "not_found")
    assert_error(await api.get("/v1/brands/not-a-uuid", headers=alice.headers), 404, "not_found")

    await _product(api, alice, brand["brand_id"], "Deck")
    refused = assert_error(await api.delete(path, headers=alice.headers), 409, "conflict")
    assert "still has 1 product" in refused["message"]


async def test_bad_brand_and_product_bodies_are_422(
    api: httpx.AsyncClient, alice: TenantKey
) -> None:
    for body in (
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 201},
        {"name": "a\u0000b"},
        {"name": "x", "description": "a\u0000b"},
        {"name": "x", "colour": "red"},
        {},
    ):
        assert_error(
            await api.post("/v1/brands", json=body, headers=alice.headers), 422, "invalid_request"
        )
    brand = await _brand(api, alice)
    for body in (
        {"brand_id": brand["brand_id"], "name": "x", "benefits": "not a list"},
        {"brand_id": brand["brand_id"], "name": "x", "benefits": [""]},
        {"brand_id": brand["brand_id"], "name": "x", "tone": "t" * 201},
        {"brand_id": "nope", "name": "x"},
    ):
        assert_error(
            await api.post("/v1/products", json=body, headers=alice.headers),
            422,
            "invalid_request",
        )


async def test_products_live_under_the_tenants_own_brands(
    api: httpx.AsyncClient, alice: TenantKey, bob: TenantKey
) -> None:
    brand = await _brand(api, alice)
    other = await _brand(api, alice, "Other")
    product = await _product(api, alice, brand["brand_id"], "Core Deck")
    assert product["brand_name"] == "Acme" and product["benefits"] == [
        "less screen time",
        "family fun",
    ]
    await _product(api, alice, other["brand_id"], "Core Deck")
    duplicate = await api.post(
        "/v1/products",
        json={"brand_id": brand["brand_id"], "name": "Core Deck"},
        headers=alice.headers,
    )
    assert_error(duplicate, 409, "conflict")
    # A brand of another tenant is as unknown as a brand that never existed.
    foreign = await api.post(
        "/v1/products", json={"brand_id": brand["brand_id"], "name": "X"}, headers=bob.headers
    )
    assert_error(foreign, 404, "not_found")

    by_brand = await api.get(
        "/v1/products", params={"brand_id": brand["brand_id"]}, headers=alice.headers
    )
    assert [p["product_id"] for p in by_brand.json()["items"]] == [product["product_id"]]
    path = f"/v1/products/{product['product_id']}"
    changed = await api.patch(path, json={"benefits": ["calm evenings"]}, headers=alice.headers)
    assert changed.json()["benefits"] == ["calm evenings"] and changed.json()["tone"] == "warm"
    assert_error(await api.get(path, headers=bob.headers), 404, "not_found")
    assert (await api.delete(path, headers=alice.headers)).status_code == 204
    assert_error(await api.get(path, headers=alice.headers), 404, "not_found")


async def test_projects_take_accounts_as_handles_or_profile_urls(
    api: httpx.AsyncClient, alice: TenantKey, bob: TenantKey, temporal: Client
) -> None:
    brand = await _brand(api, alice)
    deck = await _product(api, alice, brand["brand_id"], "Deck")
    created = await api.post(
        "/v1/projects",
        json={
            "name": "Toddlers",
            "accounts": [
                {"platform": "instagram", "handle": "@Nursery.Makeover"},
                {"platform": "tiktok", "handle": "https://www.tiktok.com/@tiny_chef?lang=en"},
                {"platform": "instagram", "handle": "https://www.instagram.com/nursery.makeover/"},
            ],
            "product_ids": [deck["product_id"]],
            "schedule": "24h",
        },
        headers=alice.headers,
    )
    assert created.status_code == 201, created.text
    project = created.json()
    assert [(a["platform"], a["handle"]) for a in project["accounts"]] == [
        ("instagram", "nursery.makeover"),
        ("tiktok", "tiny_chef"),
    ]
    assert [p["name"] for p in project["products"]] == ["Deck"]
    assert project["schedule_interval_s"] == 86400
    schedule = await scrapes.describe_schedule(temporal, uuid.UUID(project["project_id"]))
    assert schedule is not None and schedule.every_s == 86400
    assert project["outlier_settings"]["min_posts"] == 3

    assert_error(
        await api.post("/v1/projects", json={"name": "Toddlers"}, headers=alice.headers),
        409,
        "conflict",
    )
    bad_accounts = [
        {"platform": "youtube", "handle": "x"},
        {"platform": "instagram", "handle": "two words"},
        {"platform": "instagram", "handle": "https://www.instagram.com/p/Cx123/"},
        {"platform": "tiktok", "handle": "https://evil.example/@x"},
        {"handle": "no_platform"},
    ]
    for account in bad_accounts:
        refused = await api.post(
            "/v1/projects", json={"name": "Bad", "accounts": [account]}, headers=alice.headers
        )
        error = assert_error(refused, 422, "invalid_request")
        assert "accounts.0" in error["message"], error
    for bad_body in (
        {"name": "Bad", "schedule": "5m"},
        {"name": "Bad", "schedule": "24h", "schedule_interval_s": 86400},
        {"name": "Bad", "outlier_settings": {"min_ratio": "Infinity"}},
        {"name": "Bad", "outlier_settings": {"window_days": 0}},
        {"name": "Bad", "product_ids": ["not-an-id"]},
    ):
        assert_error(
            await api.post("/v1/projects", json=bad_body, headers=alice.headers),
            422,
            "invalid_request",
        )
    # Another tenant's product inside a body is a 404, like any unknown id.
    assert_error(
        await api.post(
            "/v1/projects",
            json={"name": "Theirs", "product_ids": [deck["product_id"]]},
            headers=bob.headers,
        ),
        404,
        "not_found",
    )

    path = f"/v1/projects/{project['project_id']}"
    assert (await api.get(path, headers=alice.headers)).json() == project
    assert_error(await api.get(path, headers=bob.headers), 404, "not_found")
    updated = await api.patch(
        path,
        json={
            "remove_accounts": [{"platform": "tiktok", "handle": "@tiny_chef"}],
            "add_accounts": [{"handle": "https://www.tiktok.com/@other_one"}],
            "remove_product_ids": [deck["product_id"]],
        },
        headers=alice.headers,
    )
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert [a["handle"] for a in body["accounts"]] == ["nursery.makeover", "other_one"]
    assert body["products"] == [] and body["schedule_interval_s"] == 86400
    moved = await api.patch(path, json={"schedule_paused": True}, headers=alice.headers)
    assert "/schedule" in assert_error(moved, 422, "invalid_request")["message"]
    listed = (await api.get("/v1/projects", headers=alice.headers)).json()
    assert [p["project_id"] for p in listed["items"]] == [project["project_id"]]
    assert (await api.delete(path, headers=alice.headers)).status_code == 204
    assert_error(await api.get(path, headers=alice.headers), 404, "not_found")
    # The Schedule went with the project: nothing keeps scraping for it.
    assert await scrapes.describe_schedule(temporal, uuid.UUID(project["project_id"])) is None


async def test_a_schedule_needs_apify_on_the_deployment(
    settings: Settings,
    api_engine: AsyncEngine,
    temporal: Client,
    storage: LocalStorage,
    embedder: BagOfWordsEmbedder,
    alice: TenantKey,
) -> None:
    assert settings.apify_token is None
    application = create_app(
        settings, engine=api_engine, temporal=temporal, storage=storage, embedder=embedder
    )
    if not any(getattr(r, "path", "") == "/v1/brands" for r in application.routes):
        application.include_router(discover.router)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://api.test:8080"
        ) as api,
    ):
        body = {"name": "Scheduled", "schedule": "24h"}
        refused = await api.post("/v1/projects", json=body, headers=alice.headers)
        assert "APIFY_TOKEN" in assert_error(refused, 422, "provider_unavailable_here")["message"]
        # Nothing was created: the same project without a schedule is no duplicate.
        created = await api.post("/v1/projects", json={"name": "Scheduled"}, headers=alice.headers)
        assert created.status_code == 201, created.text


async def test_posts_page_through_without_repeats_and_refuse_foreign_cursors(
    api: httpx.AsyncClient, api_engine: AsyncEngine, alice: TenantKey, bob: TenantKey
) -> None:
    created = await api.post(
        "/v1/projects",
        json={"name": "P", "accounts": [{"platform": "instagram", "handle": "watched"}]},
        headers=alice.headers,
    )
    project_id = created.json()["project_id"]
    async with session_factory(api_engine)() as session:
        watched = [
            await seed_post(
                session,
                alice.tenant_id,
                platform=Platform.INSTAGRAM,
                handle="watched",
                tier=OutlierTier.X5 if i % 3 == 0 else None,
            )
            for i in range(8)
        ]
        others = [
            await seed_post(session, alice.tenant_id, platform=Platform.TIKTOK, handle="else")
            for _ in range(2)
        ]
        await session.commit()

    seen: list[str] = []
    cursors: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"project_id": project_id, "limit": 3}
        if cursor:
            params["cursor"] = cursor
        response = await api.get("/v1/posts", params=params, headers=alice.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [item["post_id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        cursors.append(cursor)
    assert pages == 3
    first_cursor = cursors[0]
    assert sorted(seen) == sorted(str(p) for p in watched) and len(seen) == len(set(seen))

    item = (await api.get("/v1/posts", params={"limit": 1}, headers=alice.headers)).json()
    assert set(item["items"][0]) >= {
        "post_id",
        "platform",
        "account",
        "url",
        "posted_at",
        "views",
        "likes",
        "comments",
        "shares",
        "saves",
        "outlier_score",
        "outlier_tier",
        "no_score_reason",
        "video_id",
        "platform_post_id",
    }
    everything = await api.get("/v1/posts", params={"limit": 200}, headers=alice.headers)
    assert {i["post_id"] for i in everything.json()["items"]} == {str(p) for p in watched + others}
    tiered = await api.get("/v1/posts", params={"outlier_tier": "5x"}, headers=alice.headers)
    assert len(tiered.json()["items"]) == 3
    tiktok = await api.get("/v1/posts", params={"platform": "tiktok"}, headers=alice.headers)
    assert {i["account"] for i in tiktok.json()["items"]} == {"else"}

    for garbage in ("garbage", "a.b", "x" * 600, "a." * 5000, first_cursor + "x"):
        assert_error(
            await api.get(
                "/v1/posts",
                params={"project_id": project_id, "cursor": garbage},
                headers=alice.headers,
            ),
            400,
            "invalid_cursor",
        )
    # Alice's cursor is nobody else's, and not one of another list or filter.
    assert_error(
        await api.get(
            "/v1/posts",
            params={"project_id": project_id, "cursor": first_cursor},
            headers=bob.headers,
        ),
        400,
        "invalid_cursor",
    )
    assert_error(
        await api.get("/v1/posts", params={"cursor": first_cursor}, headers=alice.headers),
        400,
        "invalid_cursor",
    )
    assert_error(
        await api.get("/v1/brands", params={"cursor": first_cursor}, headers=alice.headers),
        400,
        "invalid_cursor",
    )
    assert_error(
        await api.get("/v1/posts", params={"project_id": project_id}, headers=bob.headers),
        404,
        "not_found",
    )
    for bad in ({"platform": "youtube"}, {"outlier_tier": "4x"}, {"limit": 0}, {"limit": 201}):
        assert_error(
            await api.get("/v1/posts", params=bad, headers=alice.headers), 422, "invalid_request"
        )
    assert_error(await api.get(f"/v1/posts/{watched[0]}", headers=bob.headers), 404, "not_found")
    assert (await api.get(f"/v1/posts/{watched[0]}", headers=alice.headers)).status_code == 200


async def test_a_posts_analysis_and_the_product_fit_of_its_video(
    api: httpx.AsyncClient, api_engine: AsyncEngine, alice: TenantKey, bob: TenantKey
) -> None:
    brand = await _brand(api, alice)
    core = await _product(api, alice, brand["brand_id"], "Core Deck")
    travel = await _product(api, alice, brand["brand_id"], "Travel Edition")
    expansion = await _product(api, alice, brand["brand_id"], "Expansion Pack")
    project = (
        await api.post(
            "/v1/projects",
            json={
                "name": "P",
                "product_ids": [core["product_id"], travel["product_id"], expansion["product_id"]],
            },
            headers=alice.headers,
        )
    ).json()
    async with session_factory(api_engine)() as session:
        video_id = await seed_video(session, alice.tenant_id)
        post_id = await seed_post(
            session, alice.tenant_id, platform=Platform.INSTAGRAM, handle="a", video_id=video_id
        )
        await session.commit()

    analysis_path = f"/v1/posts/{post_id}/analysis"
    assert_error(await api.get(analysis_path, headers=alice.headers), 404, "not_analyzed")
    fit_path = f"/v1/videos/{video_id}/product-fit"
    params = {"project_id": project["project_id"]}
    before = (await api.get(fit_path, params=params, headers=alice.headers)).json()
    assert before["ranking"] == [] and before["recommended_product_id"] is None
    assert len(before["not_adapted"]) == 3

    async with session_factory(api_engine)() as session:
        await seed_analysis(
            session,
            alice.tenant_id,
            video_id=video_id,
            post_id=post_id,
            fits={
                uuid.UUID(core["product_id"]): ("Core Deck", 9, ["Perfect age fit"]),
                uuid.UUID(expansion["product_id"]): ("Expansion Pack", 7, ["Good fit"]),
            },
        )
        await session.commit()

    analysis = await api.get(analysis_path, headers=alice.headers)
    assert analysis.status_code == 200, analysis.text
    assert analysis.json()["analysis"]["hook"]["text"] == "Stop scrolling"
    assert [a["product_name"] for a in analysis.json()["adaptations"]] == [
        "Core Deck",
        "Expansion Pack",
    ]
    assert_error(await api.get(analysis_path, headers=bob.headers), 404, "not_found")

    fit = (await api.get(fit_path, params=params, headers=alice.headers)).json()
    assert [f["product_name"] for f in fit["ranking"]] == ["Core Deck", "Expansion Pack"]
    assert fit["recommended_product_name"] == "Core Deck" and fit["why"] == "Perfect age fit"
    assert [p["product_name"] for p in fit["not_adapted"]] == ["Travel Edition"]

    assert_error(await api.get(fit_path, params=params, headers=bob.headers), 404, "not_found")
    assert_error(await api.get(fit_path, headers=alice.headers), 422, "invalid_request")
    assert_error(
        await api.get(
            f"/v1/videos/{uuid.uuid4()}/product-fit", params=params, headers=alice.headers
        ),
        404,
        "not_found",
    )


async def test_a_free_plan_gets_five_projects_and_the_sixth_is_a_402(
    api: httpx.AsyncClient, make_tenant: TenantFactory
) -> None:
    frank = await make_tenant("frank")  # Free: 5 projects (seed 001)
    for index in range(5):
        created = await api.post(
            "/v1/projects", json={"name": f"Project {index}"}, headers=frank.headers
        )
        assert created.status_code == 201, created.text
    refused = await api.post("/v1/projects", json={"name": "One too many"}, headers=frank.headers)
    message = assert_error(refused, 402, "quota_exceeded")["message"]
    assert "projects" in message and "upgrade" in message
    listed = await api.get("/v1/projects", headers=frank.headers)
    assert len(listed.json()["items"]) == 5


async def test_a_projects_schedule_is_set_paused_resumed_triggered_and_removed(
    api: httpx.AsyncClient, alice: TenantKey
) -> None:
    created = await api.post("/v1/projects", json={"name": "Cadence"}, headers=alice.headers)
    project_id = created.json()["project_id"]
    path = f"/v1/projects/{project_id}/schedule"
    assert_error(await api.get(path, headers=alice.headers), 404, "not_found")
    too_often = await api.put(path, json={"every_hours": 0.25}, headers=alice.headers)
    assert "at most every" in assert_error(too_often, 422, "unsupported_request")["message"]

    set_ = await api.put(path, json={"every_hours": 24}, headers=alice.headers)
    assert set_.status_code == 200, set_.text
    assert (set_.json()["every_s"], set_.json()["paused"]) == (86400, False)
    paused = await api.post(f"{path}/pause", headers=alice.headers)
    assert paused.json()["paused"] is True
    shown = await api.get(f"/v1/projects/{project_id}", headers=alice.headers)
    assert shown.json()["schedule_paused"] is True
    resumed = await api.post(f"{path}/resume", headers=alice.headers)
    assert resumed.json()["paused"] is False
    triggered = await api.post(f"{path}/trigger", headers=alice.headers)
    assert triggered.status_code == 200, triggered.text

    removed = await api.delete(path, headers=alice.headers)
    assert removed.status_code == 204
    assert_error(await api.get(path, headers=alice.headers), 404, "not_found")
    assert_error(await api.post(f"{path}/pause", headers=alice.headers), 404, "not_found")
