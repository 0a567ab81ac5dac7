"""`POST /v1/videos/import`: SSRF-guarded before anything else happens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from reelflow.core.settings import Settings
from schemas import search_attributes as sa
from tests.api.api_support import TenantKey, assert_error, count_videos, fetch_video
from tests.support import free_port


class ConnectionCounter:
    """A TCP listener on localhost that counts who connects to it."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = free_port()

    async def _handle(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()


@pytest_asyncio.fixture(loop_scope="session")
async def listener() -> AsyncIterator[ConnectionCounter]:
    counter = ConnectionCounter()
    server = await asyncio.start_server(counter._handle, "127.0.0.1", counter.port)
    async with server:
        yield counter


BLOCKED_URLS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://localhost:7233",
    "http://[::ffff:127.0.0.1]/",
    "file:///etc/passwd",
    "http://10.0.0.5/video.mp4",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://2130706433/",
    "ftp://example.com/video.mp4",
    "http://user:pass@example.com/video.mp4",
    "not a url",
]


@pytest.mark.parametrize("url", BLOCKED_URLS)
async def test_blocked_urls_are_400_url_not_allowed_and_create_nothing(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine, url: str
) -> None:
    response = await api.post("/v1/videos/import", json={"url": url}, headers=alice.headers)
    error = assert_error(response, 400, "url_not_allowed")
    assert "token" not in error["message"]
    assert await count_videos(api_engine, alice.tenant_id) == 0


async def test_a_blocked_target_is_never_contacted(
    api: httpx.AsyncClient, alice: TenantKey, listener: ConnectionCounter
) -> None:
    for host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]"):
        response = await api.post(
            "/v1/videos/import",
            json={"url": f"http://{host}:{listener.port}/video.mp4"},
            headers=alice.headers,
        )
        assert_error(response, 400, "url_not_allowed")
    await asyncio.sleep(0.1)
    assert listener.connections == 0


async def test_reason_does_not_echo_secrets_in_the_query(
    api: httpx.AsyncClient, alice: TenantKey
) -> None:
    response = await api.post(
        "/v1/videos/import",
        json={"url": "http://169.254.169.254/x?token=s3cr3t-value"},
        headers=alice.headers,
    )
    error = assert_error(response, 400, "url_not_allowed")
    assert "s3cr3t-value" not in error["message"]


async def test_public_url_creates_a_pending_import_and_starts_its_run(
    api: httpx.AsyncClient,
    alice: TenantKey,
    api_engine: AsyncEngine,
    temporal: Client,
    settings: Settings,
) -> None:
    # An IP literal of a public host: the guard needs no DNS, and nothing is fetched here.
    url = "http://93.184.215.14/media/launch-talk.mp4"
    response = await api.post("/v1/videos/import", json={"url": url}, headers=alice.headers)
    assert response.status_code == 202, response.text
    body = response.json()
    video_id = body["video_id"]
    assert body["status"] == "pending"
    video = await fetch_video(api_engine, video_id)
    assert video is not None
    assert (video.origin, video.status, video.source_url, video.title) == (
        "import",
        "pending",
        url,
        "launch-talk.mp4",
    )
    assert video.source_key == f"tenants/{alice.tenant_id}/videos/{video_id}/source.mp4"
    assert video.workflow_id == body["workflow_id"]
    description = await temporal.get_workflow_handle(body["workflow_id"]).describe()
    assert description.task_queue == f"{settings.task_queue_prefix}-workflows"
    assert description.typed_search_attributes.get(sa.TENANT_ID) == str(alice.tenant_id)
    assert description.typed_search_attributes.get(sa.VIDEO_ID) == video_id


async def test_import_body_is_validated(api: httpx.AsyncClient, alice: TenantKey) -> None:
    assert_error(
        await api.post("/v1/videos/import", json={}, headers=alice.headers), 422, "invalid_request"
    )
    assert_error(
        await api.post(
            "/v1/videos/import",
            json={"url": "http://93.184.215.14/a.mp4", "collection_id": "x"},
            headers=alice.headers,
        ),
        422,
        "invalid_request",
    )
