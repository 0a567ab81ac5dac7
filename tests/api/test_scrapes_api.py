"""Scrapes through the API: started from a dataset upload or a post URL, shown, listed a page
at a time, canceled; bad files and sources refused before anything is stored or started.

No worker serves this module's queues, so a started scrape stays exactly as the API left it.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.core.db import session_factory
from reelflow.core.storage import LocalStorage
from schemas.discover_tables import Scrape
from tests.api.api_support import TenantKey, assert_error

EXPORT = b'{"shortCode": "A1", "ownerUsername": "glowlab.demo", "videoPlayCount": 100}\n'


async def _project(api: httpx.AsyncClient, who: TenantKey, name: str = "Watched") -> str:
    created = await api.post("/v1/projects", json={"name": name}, headers=who.headers)
    assert created.status_code == 201, created.text
    return str(created.json()["project_id"])


async def _upload(
    api: httpx.AsyncClient, who: TenantKey, project_id: str, name: str, body: bytes
) -> httpx.Response:
    return await api.post(
        f"/v1/projects/{project_id}/scrapes",
        files={"file": (name, body, "application/octet-stream")},
        headers=who.headers,
    )


async def test_a_dataset_upload_is_stored_and_its_scrape_started(
    api: httpx.AsyncClient, alice: TenantKey, storage: LocalStorage
) -> None:
    project_id = await _project(api, alice)
    accepted = await _upload(api, alice, project_id, "dataset_items.jsonl", EXPORT)
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["status"] == "queued"
    assert body["workflow_id"] == f"discover-{body['scrape_id']}"

    shown = await api.get(f"/v1/scrapes/{body['scrape_id']}", headers=alice.headers)
    assert shown.status_code == 200
    view = shown.json()
    assert (view["source"], view["status"], view["project_id"]) == (
        "dataset_file",
        "queued",
        project_id,
    )
    key = f"tenants/{alice.tenant_id}/scrapes/{body['scrape_id']}/dataset.jsonl"
    assert storage.exists(key)


async def test_scrapes_list_a_page_at_a_time_and_refuse_a_foreign_cursor(
    api: httpx.AsyncClient, alice: TenantKey, bob: TenantKey
) -> None:
    project_id = await _project(api, alice, "Paged")
    started = []
    for _ in range(3):
        response = await _upload(api, alice, project_id, "d.json", b"[]")
        assert response.status_code == 202, response.text
        started.append(response.json()["scrape_id"])
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await api.get(
            f"/v1/projects/{project_id}/scrapes", params=params, headers=alice.headers
        )
        assert page.status_code == 200, page.text
        seen += [item["scrape_id"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(started))  # newest first, no repeats, no gaps

    first = await api.get(
        f"/v1/projects/{project_id}/scrapes", params={"limit": 1}, headers=alice.headers
    )
    foreign = first.json()["next_cursor"]
    bobs = await _project(api, bob, "Bob's")
    refused = await api.get(
        f"/v1/projects/{bobs}/scrapes", params={"cursor": foreign}, headers=bob.headers
    )
    assert_error(refused, 400, "invalid_cursor")


@pytest.mark.parametrize(
    ("name", "body", "status", "code"),
    [
        ("report.pdf", b"%PDF-1.4", 415, "unsupported_media_type"),
        ("empty.jsonl", b"", 400, "empty_file"),
    ],
)
async def test_a_file_that_is_not_an_export_is_refused_and_nothing_is_kept(
    api: httpx.AsyncClient,
    alice: TenantKey,
    api_engine: AsyncEngine,
    name: str,
    body: bytes,
    status: int,
    code: str,
) -> None:
    project_id = await _project(api, alice, f"Refused {name}")
    refused = await _upload(api, alice, project_id, name, body)
    assert_error(refused, status, code)
    async with session_factory(api_engine)() as session:
        kept = await session.scalar(
            select(Scrape.id).where(Scrape.project_id == uuid.UUID(project_id))
        )
    assert kept is None


async def test_sources_this_deployment_cannot_use_are_422s(
    api: httpx.AsyncClient, alice: TenantKey
) -> None:
    project_id = await _project(api, alice, "Sources")
    apify = await api.post(
        f"/v1/projects/{project_id}/scrapes", json={"source": "apify"}, headers=alice.headers
    )
    assert "APIFY_TOKEN" in assert_error(apify, 422, "provider_unavailable_here")["message"]
    private = await api.post(
        f"/v1/projects/{project_id}/scrapes",
        json={"source": "post_url", "url": "http://10.0.0.7/p/1"},
        headers=alice.headers,
    )
    assert "private" in assert_error(private, 422, "url_not_allowed")["message"]
    missing = await api.post(
        f"/v1/projects/{project_id}/scrapes", json={"source": "post_url"}, headers=alice.headers
    )
    assert_error(missing, 422, "invalid_request")


async def test_another_tenants_project_and_scrape_are_not_found(
    api: httpx.AsyncClient, alice: TenantKey, bob: TenantKey
) -> None:
    project_id = await _project(api, alice, "Private")
    started = await _upload(api, alice, project_id, "d.jsonl", EXPORT)
    scrape_id = started.json()["scrape_id"]
    assert_error(await _upload(api, bob, project_id, "d.jsonl", EXPORT), 404, "project_not_found")
    assert_error(await api.get(f"/v1/scrapes/{scrape_id}", headers=bob.headers), 404, "not_found")
    assert_error(
        await api.post(f"/v1/scrapes/{scrape_id}/cancel", headers=bob.headers), 404, "not_found"
    )


async def test_a_finished_scrape_cannot_be_canceled(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine
) -> None:
    project_id = await _project(api, alice, "Done")
    scrape_id = (await _upload(api, alice, project_id, "d.jsonl", EXPORT)).json()["scrape_id"]
    async with session_factory(api_engine).begin() as session:
        row = await session.get(Scrape, uuid.UUID(scrape_id))
        assert row is not None
        row.status = "completed"
    refused = await api.post(f"/v1/scrapes/{scrape_id}/cancel", headers=alice.headers)
    assert "completed" in assert_error(refused, 409, "not_cancelable")["message"]
