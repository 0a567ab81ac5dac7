"""`/v1/scripts` through the real app and PostgreSQL: create, list, read, version, move,
link and export, with the bad input each route must refuse."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from api.app import create_app
from api.routers import scripts as script_routes
from reelflow.core.db import session_factory
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from schemas.discover import SCRIPT_TRANSITIONS, ScriptStatus
from tests.api.api_support import BagOfWordsEmbedder, assert_error
from tests.discover.test_scripts import ADAPTED, World, hand_written, make_world

# --- app -----------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def temporal() -> Client:
    # Scripts start no runs: a client that never connects keeps these tests off Temporal.
    return await Client.connect("127.0.0.1:9", lazy=True, data_converter=pydantic_data_converter)


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
    if not any(getattr(r, "path", None) == "/v1/scripts" for r in application.routes):
        application.include_router(script_routes.router)
    async with application.router.lifespan_context(application):
        yield application


@pytest_asyncio.fixture(loop_scope="session")
async def alice(api_engine: AsyncEngine) -> World:
    async with session_factory(api_engine)() as session:
        return await make_world(session, "alice")


@pytest_asyncio.fixture(loop_scope="session")
async def bob(api_engine: AsyncEngine) -> World:
    async with session_factory(api_engine)() as session:
        return await make_world(session, "bob")


def auth(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.api_key}"}


def by_hand(world: World, title: str = "Screen time, by hand") -> dict[str, Any]:
    return {
        "title": title,
        "content": hand_written().model_dump(mode="json"),
        "project_id": str(world.project_id),
        "product_id": str(world.product_id),
        "notes": "first cut",
    }


async def create(api: httpx.AsyncClient, world: World, title: str = "By hand") -> dict[str, Any]:
    response = await api.post("/v1/scripts", json=by_hand(world, title), headers=auth(world))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def move(
    api: httpx.AsyncClient, world: World, script_id: str, *path: ScriptStatus
) -> httpx.Response:
    response = None
    for status in path:
        response = await api.post(
            f"/v1/scripts/{script_id}/status", json={"status": status.value}, headers=auth(world)
        )
        assert response.status_code == 200, response.text
    assert response is not None
    return response


# --- create --------------------------------------------------------------------------------


async def test_a_script_by_hand_is_a_draft_recorded_with_the_callers_key(
    api: httpx.AsyncClient, alice: World
) -> None:
    body = await create(api, alice)
    assert body["status"] == "draft" and body["version"] == 1
    assert body["brand_id"] == str(alice.brand_id)
    assert body["content"]["hook"] == hand_written().hook
    assert body["allowed_next"] == ["review"]
    [created] = body["status_history"]
    assert created["from"] is None and created["to"] == "draft"
    assert created["by"] == alice.api_key[:10] and alice.api_key not in str(body)


async def test_a_script_from_an_adaptation_is_created_once(
    api: httpx.AsyncClient, alice: World
) -> None:
    request = {"adaptation_id": str(alice.adaptation_id), "project_id": str(alice.project_id)}
    first = await api.post("/v1/scripts", json=request, headers=auth(alice))
    again = await api.post("/v1/scripts", json=request, headers=auth(alice))
    assert first.status_code == again.status_code == 201, first.text
    assert first.json()["script_id"] == again.json()["script_id"]
    body = first.json()
    assert body["title"] == ADAPTED.title and body["predicted_viral_score"] == 7.5
    assert body["source_video_id"] == str(alice.video_id)
    assert body["content"]["call_to_action"] == ADAPTED.call_to_action


@pytest.mark.parametrize(
    "change",
    [
        {"content": None},
        {"title": None},
        {"title": "   "},
        {"title": "x" * 301},
        {"adaptation_id": str(uuid.uuid4())},
        {"content": {"hook": "nul \u0000 byte", "scenes": []}},
        {"content": {"hook": ""}},
        {"content": {"hook": "h", "scenes": [{"start_s": 5, "end_s": 2, "direction": "d"}]}},
        {"content": {"hook": "h", "scenes": [{"start_s": -1, "end_s": 2, "direction": "d"}]}},
        {"content": {"hook": "h", "scenes": [{"start_s": 0, "end_s": 2}]}},
        {"content": {"hook": "h" * 2_001}},
        {"product_id": "not-a-uuid"},
    ],
)
async def test_bad_bodies_are_422(
    api: httpx.AsyncClient, alice: World, change: dict[str, Any]
) -> None:
    body = {**by_hand(alice), **change}
    response = await api.post("/v1/scripts", json=body, headers=auth(alice))
    assert_error(response, 422, "invalid_request")


async def test_infinite_scene_times_are_422(api: httpx.AsyncClient, alice: World) -> None:
    raw = (
        '{"title": "t", "content": {"hook": "h", "scenes": '
        '[{"start_s": 0, "end_s": Infinity, "direction": "d"}]}}'
    )
    response = await api.post(
        "/v1/scripts",
        content=raw,
        headers={**auth(alice), "Content-Type": "application/json"},
    )
    assert_error(response, 422, "invalid_request")


async def test_another_tenants_product_project_or_adaptation_is_404(
    api: httpx.AsyncClient, alice: World, bob: World
) -> None:
    for body in (
        {**by_hand(alice), "product_id": str(bob.product_id)},
        {**by_hand(alice), "project_id": str(bob.project_id)},
        {"adaptation_id": str(bob.adaptation_id)},
    ):
        response = await api.post("/v1/scripts", json=body, headers=auth(alice))
        assert_error(response, 404, "not_found")


async def test_without_a_key_it_is_401(api: httpx.AsyncClient, alice: World) -> None:
    assert_error(await api.post("/v1/scripts", json=by_hand(alice)), 401, "unauthorized")
    assert_error(await api.get("/v1/scripts"), 401, "unauthorized")


# --- read and list -------------------------------------------------------------------------


async def test_another_tenants_script_is_404_everywhere(
    api: httpx.AsyncClient, alice: World, bob: World
) -> None:
    script_id = (await create(api, alice))["script_id"]
    theirs = auth(bob)
    for response in (
        await api.get(f"/v1/scripts/{script_id}", headers=theirs),
        await api.post(f"/v1/scripts/{script_id}/versions", json={"notes": "n"}, headers=theirs),
        await api.post(
            f"/v1/scripts/{script_id}/status", json={"status": "review"}, headers=theirs
        ),
        await api.patch(
            f"/v1/scripts/{script_id}/links",
            json={"produced_video_id": str(bob.video_id)},
            headers=theirs,
        ),
        await api.get(f"/v1/scripts/{script_id}/export?format=pdf", headers=theirs),
        await api.get("/v1/scripts/not-a-uuid", headers=theirs),
    ):
        assert_error(response, 404, "not_found")
    listed = await api.get("/v1/scripts", headers=theirs)
    assert script_id not in {item["script_id"] for item in listed.json()["items"]}


async def test_lists_filter_and_page_with_a_cursor(api: httpx.AsyncClient, alice: World) -> None:
    made = [(await create(api, alice, f"page {i}"))["script_id"] for i in range(5)]
    await move(api, alice, made[0], ScriptStatus.REVIEW)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"project_id": str(alice.project_id), "limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = await api.get("/v1/scripts", params=params, headers=auth(alice))
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        seen += [item["script_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert set(made) <= set(seen) and len(seen) == len(set(seen))
    in_review = await api.get(
        "/v1/scripts",
        params={"status": "review", "brand_id": str(alice.brand_id)},
        headers=auth(alice),
    )
    assert [item["script_id"] for item in in_review.json()["items"]] == [made[0]]
    by_product = await api.get(
        "/v1/scripts", params={"product_id": str(alice.product_id)}, headers=auth(alice)
    )
    assert set(made) <= {item["script_id"] for item in by_product.json()["items"]}


async def test_a_garbage_or_foreign_cursor_is_400(
    api: httpx.AsyncClient, alice: World, bob: World
) -> None:
    for _ in range(3):
        await create(api, alice)
    first = await api.get("/v1/scripts", params={"limit": 1}, headers=auth(alice))
    cursor = first.json()["next_cursor"]
    assert cursor
    for bad, who in (("garbage", alice), (cursor + "x", alice), (cursor, bob)):
        response = await api.get("/v1/scripts", params={"cursor": bad}, headers=auth(who))
        assert_error(response, 400, "invalid_cursor")
    for params in ({"status": "shipped"}, {"limit": 0}, {"limit": 10_000}, {"brand_id": "x"}):
        response = await api.get("/v1/scripts", params=params, headers=auth(alice))
        assert_error(response, 422, "invalid_request")


# --- versions ------------------------------------------------------------------------------


async def test_versions_show_in_the_detail_oldest_first(
    api: httpx.AsyncClient, alice: World
) -> None:
    v1 = await create(api, alice, "Versioned")
    new_content = hand_written("A sharper hook").model_dump(mode="json")
    response = await api.post(
        f"/v1/scripts/{v1['script_id']}/versions",
        json={"content": new_content, "notes": "Sharper hook"},
        headers=auth(alice),
    )
    assert response.status_code == 201, response.text
    v2 = response.json()
    assert (v2["version"], v2["parent_script_id"], v2["status"]) == (2, v1["script_id"], "draft")
    assert v2["title"] == "Versioned" and v2["content"]["hook"] == "A sharper hook"
    detail = (await api.get(f"/v1/scripts/{v1['script_id']}", headers=auth(alice))).json()
    assert [(v["version"], v["script_id"]) for v in detail["versions"]] == [
        (1, v1["script_id"]),
        (2, v2["script_id"]),
    ]
    assert detail["versions"][1]["notes"] == "Sharper hook"
    for body in ({}, {"notes": "  "}, {"notes": "n", "title": ""}):
        bad = await api.post(
            f"/v1/scripts/{v1['script_id']}/versions", json=body, headers=auth(alice)
        )
        assert_error(bad, 422, "invalid_request")


# --- status --------------------------------------------------------------------------------

PATH_TO = {
    ScriptStatus.DRAFT: (),
    ScriptStatus.REVIEW: (ScriptStatus.REVIEW,),
    ScriptStatus.APPROVED: (ScriptStatus.REVIEW, ScriptStatus.APPROVED),
    ScriptStatus.IN_PRODUCTION: (
        ScriptStatus.REVIEW,
        ScriptStatus.APPROVED,
        ScriptStatus.IN_PRODUCTION,
    ),
    ScriptStatus.PRODUCED: (
        ScriptStatus.REVIEW,
        ScriptStatus.APPROVED,
        ScriptStatus.IN_PRODUCTION,
        ScriptStatus.PRODUCED,
    ),
    ScriptStatus.PUBLISHED: (
        ScriptStatus.REVIEW,
        ScriptStatus.APPROVED,
        ScriptStatus.IN_PRODUCTION,
        ScriptStatus.PRODUCED,
        ScriptStatus.PUBLISHED,
    ),
}
ILLEGAL = [
    (current, requested)
    for current in ScriptStatus
    for requested in ScriptStatus
    if requested not in SCRIPT_TRANSITIONS[current]
]


@pytest.mark.parametrize(("current", "requested"), ILLEGAL, ids=str)
async def test_every_illegal_move_is_409_with_the_allowed_states(
    api: httpx.AsyncClient, alice: World, current: ScriptStatus, requested: ScriptStatus
) -> None:
    script_id = (await create(api, alice))["script_id"]
    if PATH_TO[current]:
        await move(api, alice, script_id, *PATH_TO[current])
    response = await api.post(
        f"/v1/scripts/{script_id}/status", json={"status": requested.value}, headers=auth(alice)
    )
    error = assert_error(response, 409, "transition_not_allowed")
    allowed = [s.value for s in SCRIPT_TRANSITIONS[current]]
    if allowed:
        assert error["message"].endswith("allowed next: " + ", ".join(allowed))
    else:
        assert "published is final" in error["message"]
    after = (await api.get(f"/v1/scripts/{script_id}", headers=auth(alice))).json()
    assert after["status"] == current.value
    assert after["allowed_next"] == allowed


async def test_the_way_to_published_is_recorded(api: httpx.AsyncClient, alice: World) -> None:
    script_id = (await create(api, alice))["script_id"]
    final = await move(api, alice, script_id, *PATH_TO[ScriptStatus.PUBLISHED])
    body = final.json()
    assert body["status"] == "published" and body["allowed_next"] == []
    assert [(m["from"], m["to"]) for m in body["status_history"]] == [
        (None, "draft"),
        ("draft", "review"),
        ("review", "approved"),
        ("approved", "in_production"),
        ("in_production", "produced"),
        ("produced", "published"),
    ]
    assert {m["by"] for m in body["status_history"]} == {alice.api_key[:10]}


async def test_of_two_racing_moves_exactly_one_wins(api: httpx.AsyncClient, alice: World) -> None:
    script_id = (await create(api, alice))["script_id"]
    responses = await asyncio.gather(
        *(
            api.post(
                f"/v1/scripts/{script_id}/status", json={"status": "review"}, headers=auth(alice)
            )
            for _ in range(4)
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 409, 409, 409]
    history = (await api.get(f"/v1/scripts/{script_id}", headers=auth(alice))).json()
    assert [m["to"] for m in history["status_history"]] == ["draft", "review"]


async def test_an_unknown_status_is_422(api: httpx.AsyncClient, alice: World) -> None:
    script_id = (await create(api, alice))["script_id"]
    response = await api.post(
        f"/v1/scripts/{script_id}/status", json={"status": "shipped"}, headers=auth(alice)
    )
    assert_error(response, 422, "invalid_request")


# --- links ---------------------------------------------------------------------------------


async def test_links_take_the_tenants_video_and_post(
    api: httpx.AsyncClient, alice: World, bob: World
) -> None:
    script_id = (await create(api, alice))["script_id"]
    url = f"/v1/scripts/{script_id}/links"
    assert_error(await api.patch(url, json={}, headers=auth(alice)), 422, "invalid_request")
    for body in (
        {"produced_video_id": str(bob.video_id)},
        {"published_post_id": str(bob.post_id)},
    ):
        assert_error(await api.patch(url, json=body, headers=auth(alice)), 404, "not_found")
    linked = await api.patch(
        url, json={"produced_video_id": str(alice.video_id)}, headers=auth(alice)
    )
    assert linked.status_code == 200, linked.text
    both = await api.patch(url, json={"published_post_id": str(alice.post_id)}, headers=auth(alice))
    assert both.json()["produced_video_id"] == str(alice.video_id)
    assert both.json()["published_post_id"] == str(alice.post_id)


# --- export --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("format", "media_type", "start"),
    [
        ("md", "text/markdown; charset=utf-8", b"# Caf\xc3\xa9 script \xf0\x9f\x98\x80"),
        ("json", "application/json", b"{"),
        ("pdf", "application/pdf", b"%PDF-"),
    ],
)
async def test_export_in_each_format(
    api: httpx.AsyncClient, alice: World, format: str, media_type: str, start: bytes
) -> None:
    script_id = (await create(api, alice, "Café script 😀"))["script_id"]
    response = await api.get(
        f"/v1/scripts/{script_id}/export", params={"format": format}, headers=auth(alice)
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    assert response.headers["content-disposition"] == (
        f'attachment; filename="cafe-script-v1.{format}"'
    )
    assert response.content.startswith(start)
    if format == "json":
        assert response.json()["product"]["name"] == "Core Deck"


async def test_an_unknown_export_format_is_422(api: httpx.AsyncClient, alice: World) -> None:
    script_id = (await create(api, alice))["script_id"]
    response = await api.get(
        f"/v1/scripts/{script_id}/export", params={"format": "docx"}, headers=auth(alice)
    )
    assert_error(response, 422, "invalid_request")
