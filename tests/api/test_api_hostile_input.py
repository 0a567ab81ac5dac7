"""Hostile input found from outside: each case is a 4xx with the envelope, never a 500.

NUL in any text that reaches Postgres, timestamps that overflow, prices past the column,
a canceled-too-late run: refused at the boundary, with nothing stored and no run started.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from temporalio import workflow
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from api.app import create_app
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from schemas import search_attributes as sa
from schemas.chat_tables import ChatSession
from schemas.generation_tables import Generation
from tests.api.api_support import (
    BagOfWordsEmbedder,
    TenantKey,
    assert_error,
    count_videos,
    multipart_parts,
)
from tests.support import free_port, new_task_queue

NUL_VALUES = ["\x00", "a title\x00with a NUL"]
UPLOAD = {"filename": "a.mp4", "size_bytes": 10, "content_type": "video/mp4", "title": "t"}
LOCAL = {"provider": "local", "duration_s": 2, "aspect_ratio": "16:9", "resolution": "480p"}
PUBLIC_URL = "http://93.184.216.34/talk.mp4"
"""A public IP literal: allowed without a DNS lookup, and no worker ever downloads it."""


def stored_files(settings: Settings) -> list[Path]:
    root = Path(settings.reelflow_home) / "media"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def invalid_field(response: httpx.Response, field: str) -> str:
    """A 422 `invalid_request` whose message names `field`; the message is returned."""
    message = assert_error(response, 422, "invalid_request")["message"]
    assert field in message, message
    assert "Value error" not in message and "Error" not in message, message
    return message


async def count_rows(
    engine: AsyncEngine, table: type[ChatSession] | type[Generation], tenant: TenantKey
) -> int:
    async with async_sessionmaker(engine)() as session:
        count = await session.scalar(
            select(func.count()).select_from(table).where(table.tenant_id == tenant.tenant_id)
        )
    return int(count or 0)


# --- NUL and unpaired surrogates in text -----------------------------------------------------


@pytest.mark.parametrize("title", NUL_VALUES)
async def test_nul_in_a_multipart_title_is_422_and_stores_nothing(
    api: httpx.AsyncClient,
    alice: TenantKey,
    api_engine: AsyncEngine,
    settings: Settings,
    title: str,
) -> None:
    response = await api.post(
        "/v1/videos",
        headers=alice.headers,
        data={"title": title},
        files={"file": ("a.mp4", b"video bytes", "video/mp4")},
    )
    assert "NUL" in invalid_field(response, "title")
    assert await count_videos(api_engine, alice.tenant_id) == 0
    assert stored_files(settings) == []


async def test_nul_in_a_multipart_filename_is_422_before_any_byte_is_stored(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine, settings: Settings
) -> None:
    boundary = "hostileboundary"
    parts = multipart_parts(
        boundary, fields={"title": "t"}, filename="a\x00.mp4", file_chunks=[b"video bytes"]
    )
    response = await api.post(
        "/v1/videos",
        headers={**alice.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=b"".join(parts),
    )
    invalid_field(response, "filename")
    assert await count_videos(api_engine, alice.tenant_id) == 0
    assert stored_files(settings) == []


@pytest.mark.parametrize("content_type", ["x" * 200, "video/mp4\x00", "not a media type"])
async def test_a_file_part_with_an_unstorable_content_type_is_422(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine, content_type: str
) -> None:
    boundary = "hostileboundary"
    parts = multipart_parts(
        boundary,
        fields={"title": "t"},
        filename="a.mp4",
        file_chunks=[b"video bytes"],
        content_type=content_type,
    )
    response = await api.post(
        "/v1/videos",
        headers={**alice.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=b"".join(parts),
    )
    invalid_field(response, "Content-Type")
    assert await count_videos(api_engine, alice.tenant_id) == 0


@pytest.mark.parametrize("field", ["title", "filename", "content_type"])
@pytest.mark.parametrize("value", [*NUL_VALUES, "\ud800"])
async def test_nul_or_a_lone_surrogate_in_a_signed_upload_field_is_422(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine, field: str, value: str
) -> None:
    # json.dumps escapes the surrogate as `\ud800`: valid JSON, but not valid UTF-8 text.
    content = json.dumps({**UPLOAD, field: f"video/{value}" if field == "content_type" else value})
    response = await api.post(
        "/v1/videos/uploads",
        headers={**alice.headers, "Content-Type": "application/json"},
        content=content,
    )
    invalid_field(response, field)
    assert await count_videos(api_engine, alice.tenant_id) == 0


@pytest.mark.parametrize("title", [*NUL_VALUES, "\ud800"])
async def test_nul_in_an_import_title_is_422_and_starts_nothing(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine, title: str
) -> None:
    response = await api.post(
        "/v1/videos/import",
        headers={**alice.headers, "Content-Type": "application/json"},
        content=json.dumps({"url": PUBLIC_URL, "title": title}),
    )
    invalid_field(response, "title")
    assert await count_videos(api_engine, alice.tenant_id) == 0


async def test_an_import_without_a_title_is_still_accepted(
    api: httpx.AsyncClient, alice: TenantKey
) -> None:
    response = await api.post("/v1/videos/import", headers=alice.headers, json={"url": PUBLIC_URL})
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("message", [*NUL_VALUES, "lone \udfff surrogate"])
async def test_nul_in_a_chat_message_is_422_and_opens_no_session(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine, message: str
) -> None:
    for stream in (False, True):
        response = await api.post(
            "/v1/chat",
            headers={**alice.headers, "Content-Type": "application/json"},
            content=json.dumps({"message": message, "stream": stream}),
        )
        invalid_field(response, "message")
    assert await count_rows(api_engine, ChatSession, alice) == 0


@pytest.mark.parametrize("path", ["/v1/generations", "/v1/generations/estimate"])
@pytest.mark.parametrize("prompt", NUL_VALUES)
async def test_nul_in_a_generation_prompt_is_422_and_reserves_nothing(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine, path: str, prompt: str
) -> None:
    response = await api.post(path, headers=alice.headers, json={**LOCAL, "prompt": prompt})
    invalid_field(response, "prompt")
    assert await count_rows(api_engine, Generation, alice) == 0


async def test_nul_in_an_approval_note_is_422(api: httpx.AsyncClient, alice: TenantKey) -> None:
    response = await api.post(
        f"/v1/generations/{uuid.uuid4()}/approve",
        headers=alice.headers,
        json={"approve": False, "note": "too\x00dear"},
    )
    invalid_field(response, "note")


@pytest.mark.parametrize(
    "raw", ["1000000", "1e300", "1e400", "Infinity", "999999.999999999", "99999999999999999999"]
)
async def test_a_max_cost_past_what_can_be_stored_is_422(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine, raw: str
) -> None:
    # Raw JSON: Python's parser reads 1e400 and Infinity as float('inf').
    body = json.dumps({**LOCAL, "prompt": "a kite"})[:-1] + f', "max_cost_usd": {raw}}}'
    for path in ("/v1/generations/estimate", "/v1/generations"):
        response = await api.post(
            path, headers={**alice.headers, "Content-Type": "application/json"}, content=body
        )
        invalid_field(response, "max_cost_usd")
    assert await count_rows(api_engine, Generation, alice) == 0


async def test_the_largest_storable_max_cost_is_accepted(
    api: httpx.AsyncClient, alice: TenantKey
) -> None:
    response = await api.post(
        "/v1/generations",
        headers=alice.headers,
        json={**LOCAL, "prompt": "a kite", "max_cost_usd": 999_999.99},
    )
    assert response.status_code == 202, response.text


# --- timestamps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"until": "0001-01-02T00:00:00Z"},
        {"until": "9999-12-31T23:59:59-14:00"},
        {"until": "0001-01-01T00:00:00+14:00"},
        {"since": "9999-12-31T23:59:59-14:00"},
        {"since": "0001-01-01T00:00:00+14:00", "until": "2025-01-01T00:00:00Z"},
        {"since": "1969-12-31T23:59:59Z"},
        {"until": "9999-06-01T00:00:00Z"},
    ],
)
async def test_usage_timestamps_outside_the_supported_range_are_422(
    api: httpx.AsyncClient, alice: TenantKey, query: dict[str, str]
) -> None:
    response = await api.get("/v1/usage", headers=alice.headers, params=query)
    message = invalid_field(response, next(iter(query)))
    assert "1970-01-01T00:00:00Z and 9999-01-01T00:00:00Z" in message
    assert message.count(";") == 0, message  # one reason, not one per type tried


async def test_usage_accepts_the_whole_supported_range(
    api: httpx.AsyncClient, alice: TenantKey
) -> None:
    response = await api.get(
        "/v1/usage",
        headers=alice.headers,
        params={"since": "1970-01-01T00:00:00Z", "until": "9999-01-01T00:00:00+00:00"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["since"].startswith("1970-01-01T00:00:00") and body["groups"] == []
    # The earliest `until` still has the default 30 days before it.
    response = await api.get(
        "/v1/usage", headers=alice.headers, params={"until": "1970-01-01T00:00:00"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["since"].startswith("1969-12-02T00:00:00")


# --- the signed upload URL -------------------------------------------------------------------


@pytest.mark.parametrize("expires", ["²", "١٢٣", "12 ", "-1", "1" * 13])
async def test_an_expiry_that_is_not_ascii_digits_is_an_invalid_signature(
    api: httpx.AsyncClient, expires: str
) -> None:
    response = await api.put(
        f"/v1/videos/{uuid.uuid4()}/upload",
        params={"expires": expires, "signature": "0" * 64},
        content=b"0123456789",
    )
    assert_error(response, 403, "invalid_signature")


# --- ids in paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("workflow_id", ["ingest-\x00", "x" * 5000, "run\nid"])
async def test_a_run_id_that_cannot_name_a_run_is_404(
    api: httpx.AsyncClient, alice: TenantKey, workflow_id: str
) -> None:
    for method, suffix in (("GET", ""), ("POST", "/retry"), ("POST", "/cancel")):
        path = f"/v1/runs/{quote(workflow_id, safe='')}{suffix}"
        response = await api.request(method, path, headers=alice.headers)
        message = assert_error(response, 404, "not_found")["message"]
        assert len(message) < 200, message  # the id is echoed shortened


async def test_a_huge_id_is_echoed_shortened(api: httpx.AsyncClient, alice: TenantKey) -> None:
    response = await api.get(f"/v1/videos/{'v' * 10_000}", headers=alice.headers)
    message = assert_error(response, 404, "not_found")["message"]
    assert len(message) < 200 and message.endswith("…"), message


# --- canceling runs that have finished -------------------------------------------------------


@workflow.defn(name="HostileInputFinishedWorkflow", sandboxed=False)
class FinishedWorkflow:
    """A run that completes at once."""

    @workflow.run
    async def run(self) -> str:
        return "done"


async def _finished_run(temporal: Client, tenant: TenantKey) -> str:
    """A completed run of `tenant`, carrying its search attributes like our pipelines'."""
    task_queue = new_task_queue("hostile")
    workflow_id = f"ingest-{uuid.uuid4()}"
    async with Worker(temporal, task_queue=task_queue, workflows=[FinishedWorkflow]):
        handle = await temporal.start_workflow(
            FinishedWorkflow.run,
            id=workflow_id,
            task_queue=task_queue,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.TENANT_ID, str(tenant.tenant_id)),
                    SearchAttributePair(sa.PIPELINE, "ingest"),
                ]
            ),
        )
        assert await handle.result() == "done"
    return workflow_id


async def test_canceling_a_completed_run_is_409(
    api: httpx.AsyncClient, alice: TenantKey, temporal: Client
) -> None:
    workflow_id = await _finished_run(temporal, alice)
    response = await api.post(f"/v1/runs/{workflow_id}/cancel", headers=alice.headers)
    message = assert_error(response, 409, "already_finished")["message"]
    assert "completed" in message
    # As retrying it is.
    assert_error(
        await api.post(f"/v1/runs/{workflow_id}/retry", headers=alice.headers),
        409,
        "not_retryable",
    )


async def test_canceling_a_terminated_run_is_409_and_a_running_one_202(
    api: httpx.AsyncClient, alice: TenantKey, temporal: Client
) -> None:
    started = await api.post(
        "/v1/videos",
        headers=alice.headers,
        data={"title": "run me"},
        files={"file": ("r.mp4", b"bytes", "video/mp4")},
    )
    workflow_id = started.json()["workflow_id"]
    response = await api.post(f"/v1/runs/{workflow_id}/cancel", headers=alice.headers)
    assert response.status_code == 202 and response.json()["status"] == "cancel_requested"
    await temporal.get_workflow_handle(workflow_id).terminate("test")
    response = await api.post(f"/v1/runs/{workflow_id}/cancel", headers=alice.headers)
    assert_error(response, 409, "already_finished")


async def test_canceling_a_finished_generation_is_409(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine, temporal: Client
) -> None:
    created = await api.post(
        "/v1/generations", headers=alice.headers, json={**LOCAL, "prompt": "a"}
    )
    assert created.status_code == 202, created.text
    generation_id = created.json()["generation_id"]
    # The row says completed (no worker runs here; the row is what the route reads first).
    async with async_sessionmaker(api_engine)() as session:
        await session.execute(
            update(Generation)
            .where(Generation.id == uuid.UUID(generation_id))
            .values(status="completed", completed_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()
    response = await api.post(f"/v1/generations/{generation_id}/cancel", headers=alice.headers)
    assert "completed" in assert_error(response, 409, "already_finished")["message"]


async def test_canceling_a_generation_whose_run_has_ended_is_409(
    api: httpx.AsyncClient, alice: TenantKey, temporal: Client
) -> None:
    created = await api.post(
        "/v1/generations", headers=alice.headers, json={**LOCAL, "prompt": "a"}
    )
    body = created.json()
    # The run ended without updating the row (it was terminated by an operator).
    await temporal.get_workflow_handle(body["workflow_id"]).terminate("test")
    response = await api.post(
        f"/v1/generations/{body['generation_id']}/cancel", headers=alice.headers
    )
    assert_error(response, 409, "already_finished")


# --- the workflow engine not answering -------------------------------------------------------


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


async def test_run_routes_are_503_when_the_engine_does_not_answer(
    no_temporal_api: httpx.AsyncClient, alice: TenantKey
) -> None:
    workflow_id = f"ingest-{uuid.uuid4()}"
    for method, suffix in (("GET", ""), ("POST", "/retry"), ("POST", "/cancel")):
        response = await no_temporal_api.request(
            method, f"/v1/runs/{workflow_id}{suffix}", headers=alice.headers
        )
        assert_error(response, 503, "temporal_unavailable")


async def test_a_generation_cancel_is_503_when_the_engine_does_not_answer(
    api: httpx.AsyncClient, no_temporal_api: httpx.AsyncClient, alice: TenantKey
) -> None:
    created = await api.post(
        "/v1/generations", headers=alice.headers, json={**LOCAL, "prompt": "a"}
    )
    generation_id = created.json()["generation_id"]
    response = await no_temporal_api.post(
        f"/v1/generations/{generation_id}/cancel", headers=alice.headers
    )
    assert_error(response, 503, "temporal_unavailable")
