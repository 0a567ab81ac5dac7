"""The app behind a real uvicorn server: early 413s on the wire, and the live usage feed.

httpx's ASGI transport cannot show what a client on a socket sees (when the response
arrives relative to the body being sent), and it buffers streaming responses; these tests
talk HTTP over TCP instead.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest_asyncio
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.app import create_app
from reelflow.core.db import session_factory
from reelflow.core.ledger import Usage, record_usage
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from tests.api.api_support import MAX_UPLOAD_BYTES, BagOfWordsEmbedder, TenantKey
from tests.support import free_port

BOUNDARY = "rawsocketboundary"


@pytest_asyncio.fixture(loop_scope="session")
async def server_url(
    settings: Settings, api_engine: AsyncEngine, temporal: Client, storage: LocalStorage
) -> AsyncIterator[str]:
    app = create_app(
        settings,
        engine=api_engine,
        temporal=temporal,
        storage=storage,
        embedder=BagOfWordsEmbedder(),
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    }
    body = await asyncio.wait_for(
        reader.readexactly(int(headers.get("content-length", "0"))), timeout=10
    )
    return status, headers, body


async def test_declared_oversize_upload_is_refused_before_any_body_is_sent(
    server_url: str, alice: TenantKey, storage: LocalStorage
) -> None:
    port = int(server_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            (
                "POST /v1/videos HTTP/1.1\r\n"
                "Host: 127.0.0.1\r\n"
                f"Authorization: Bearer {alice.api_key}\r\n"
                f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                "Content-Length: 5000000000\r\n"
                "\r\n"
            ).encode()
        )
        await writer.drain()
        # Not one byte of the 5 GB body is sent: the answer must come anyway.
        status, _, body = await read_response(reader)
    finally:
        writer.close()
    assert status == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    assert [p for p in storage.root.rglob("*") if p.is_file()] == []


async def test_endless_chunked_upload_is_cut_off_just_past_the_limit(
    server_url: str, alice: TenantKey, storage: LocalStorage
) -> None:
    port = int(server_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="title"\r\n\r\nendless\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="e.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    sent = 0
    response: asyncio.Task[tuple[int, dict[str, str], bytes]] = asyncio.create_task(
        read_response(reader)
    )
    try:
        writer.write(
            (
                "POST /v1/videos HTTP/1.1\r\n"
                "Host: 127.0.0.1\r\n"
                f"Authorization: Bearer {alice.api_key}\r\n"
                f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                "Transfer-Encoding: chunked\r\n"
                "\r\n"
            ).encode()
        )
        writer.write(f"{len(head):x}\r\n".encode() + head + b"\r\n")
        chunk = b"v" * 8192
        # A body without end: keep sending until the server answers.
        while not response.done() and sent < 50 * MAX_UPLOAD_BYTES:
            try:
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                await writer.drain()
            except ConnectionError:
                break
            sent += len(chunk)
            await asyncio.sleep(0.001)
        status, _, body = await response
    finally:
        writer.close()
    assert status == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    # Socket buffers let the client run ahead a little, but nowhere near the 50x it would
    # have sent had the server kept reading.
    assert sent < 10 * MAX_UPLOAD_BYTES
    assert [p for p in storage.root.rglob("*") if p.is_file()] == []


async def test_usage_stream_delivers_only_the_tenants_new_ledger_rows(
    server_url: str, alice: TenantKey, bob: TenantKey, api_engine: AsyncEngine
) -> None:
    async def record(tenant: TenantKey, minutes: str) -> None:
        async with session_factory(api_engine)() as session:
            await record_usage(
                session,
                Usage(
                    idempotency_key=f"stream-test-{uuid.uuid4()}",
                    tenant_id=tenant.tenant_id,
                    step="transcribe",
                    provider="openai",
                    operation="transcription",
                    model="whisper-1",
                    units=Decimal(minutes),
                    run_id="ingest-stream-test",
                ),
            )
            await session.commit()

    events: list[tuple[str, dict[str, object]]] = []
    async with (
        httpx.AsyncClient(base_url=server_url, timeout=10) as client,
        client.stream("GET", "/v1/usage/stream", headers=alice.headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event_name = ""
        lines = response.aiter_lines()
        async with asyncio.timeout(15):
            async for line in lines:
                if line.startswith("event:"):
                    event_name = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    payload = json.loads(line.split(":", 1)[1])
                    events.append((event_name, payload))
                    if event_name == "ready":
                        # Listening now: Bob's row first, then Alice's.
                        await record(bob, "7")
                        await record(alice, "2.5")
                    elif event_name == "usage":
                        break
    assert events[0] == ("ready", {"tenant_id": str(alice.tenant_id)})
    name, usage = events[1]
    assert name == "usage"
    assert usage["tenant_id"] == str(alice.tenant_id)
    assert (usage["provider"], usage["operation"], usage["units"]) == (
        "openai",
        "transcription",
        "2.5",
    )
    assert Decimal(str(usage["cost_usd"])) == Decimal("0.015")


async def test_usage_stream_needs_an_api_key(server_url: str) -> None:
    async with httpx.AsyncClient(base_url=server_url, timeout=10) as client:
        response = await client.get("/v1/usage/stream")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
