"""Signed-URL uploads: register, PUT the exact bytes, confirm once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.signing import upload_signature
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from schemas import search_attributes as sa
from tests.api.api_support import (
    MAX_UPLOAD_BYTES,
    PulledBody,
    TenantKey,
    assert_error,
    fetch_video,
)
from tests.support import assert_eventually

DATA = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 100


async def register(
    api: httpx.AsyncClient, tenant: TenantKey, size: int = len(DATA), **overrides: object
) -> dict[str, str]:
    body: dict[str, object] = {
        "filename": "talk.mp4",
        "size_bytes": size,
        "content_type": "video/mp4",
        "title": "A talk",
    }
    body.update(overrides)
    response = await api.post("/v1/videos/uploads", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    ticket: dict[str, str] = response.json()
    return ticket


def path_of(url: str) -> str:
    """The signed URL without scheme and host (the test client has its own base URL)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def test_register_returns_a_signed_url_and_an_uploading_row(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine, settings: Settings
) -> None:
    before = datetime.now(UTC)
    ticket = await register(api, alice, collection_id=str(uuid.uuid4()))
    url = urlsplit(ticket["upload_url"])
    assert f"{url.scheme}://{url.netloc}" == settings.api_base_url
    assert url.path == f"/v1/videos/{ticket['video_id']}/upload"
    query = parse_qs(url.query)
    expires = int(query["expires"][0])
    expires_at = datetime.fromisoformat(ticket["expires_at"])
    assert int(expires_at.timestamp()) == expires
    assert (
        before + timedelta(seconds=599) <= expires_at <= datetime.now(UTC) + timedelta(seconds=601)
    )

    video = await fetch_video(api_engine, ticket["video_id"])
    assert video is not None
    assert (video.status, video.origin, video.declared_size_bytes) == (
        "uploading",
        "upload",
        len(DATA),
    )
    assert video.source_key == f"tenants/{alice.tenant_id}/videos/{video.id}/source.mp4"
    assert video.upload_expires_at == expires_at


async def test_register_validates_size_and_type(api: httpx.AsyncClient, alice: TenantKey) -> None:
    base = {"filename": "a.mp4", "content_type": "video/mp4", "title": "t"}
    for size in (0, -1):
        response = await api.post(
            "/v1/videos/uploads", json={**base, "size_bytes": size}, headers=alice.headers
        )
        assert_error(response, 422, "invalid_request")
    response = await api.post(
        "/v1/videos/uploads",
        json={**base, "size_bytes": MAX_UPLOAD_BYTES + 1},
        headers=alice.headers,
    )
    assert_error(response, 413, "payload_too_large")
    response = await api.post(
        "/v1/videos/uploads",
        json={**base, "size_bytes": 10, "content_type": "text/plain"},
        headers=alice.headers,
    )
    error = assert_error(response, 422, "invalid_request")
    assert "content_type" in error["message"]
    response = await api.post(
        "/v1/videos/uploads", json={**base, "size_bytes": 10, "title": "   "}, headers=alice.headers
    )
    assert_error(response, 422, "invalid_request")


async def test_put_confirm_starts_exactly_one_ingest(
    api: httpx.AsyncClient,
    alice: TenantKey,
    storage: LocalStorage,
    api_engine: AsyncEngine,
    temporal: Client,
) -> None:
    ticket = await register(api, alice)
    video_id = ticket["video_id"]
    # No API key: the signature is the authorization.
    response = await api.put(path_of(ticket["upload_url"]), content=DATA)
    assert response.status_code == 200, response.text
    assert response.json() == {"video_id": video_id, "size_bytes": len(DATA), "status": "uploading"}
    key = f"tenants/{alice.tenant_id}/videos/{video_id}/source.mp4"
    assert (storage.root / key).read_bytes() == DATA

    response = await api.post(f"/v1/videos/{video_id}/confirm", headers=alice.headers)
    assert response.status_code == 202, response.text
    assert response.json() == {
        "video_id": video_id,
        "workflow_id": f"ingest-{video_id}",
        "status": "pending",
    }
    video = await fetch_video(api_engine, video_id)
    assert video is not None
    assert (video.status, video.size_bytes, video.workflow_id) == (
        "pending",
        len(DATA),
        f"ingest-{video_id}",
    )
    description = await temporal.get_workflow_handle(f"ingest-{video_id}").describe()
    assert description.typed_search_attributes.get(sa.TENANT_ID) == str(alice.tenant_id)
    assert description.typed_search_attributes.get(sa.VIDEO_ID) == video_id

    # Confirming again changes nothing and starts nothing.
    again = await api.post(f"/v1/videos/{video_id}/confirm", headers=alice.headers)
    assert again.status_code == 202
    assert again.json()["workflow_id"] == f"ingest-{video_id}"
    assert (await temporal.get_workflow_handle(f"ingest-{video_id}").describe()).run_id == (
        description.run_id
    )

    # The upload is closed once confirmed.
    assert_error(await api.put(path_of(ticket["upload_url"]), content=DATA), 409, "conflict")


async def test_concurrent_confirms_start_one_run(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine, temporal: Client
) -> None:
    ticket = await register(api, alice)
    video_id = ticket["video_id"]
    assert (await api.put(path_of(ticket["upload_url"]), content=DATA)).status_code == 200

    responses = await asyncio.gather(
        *(api.post(f"/v1/videos/{video_id}/confirm", headers=alice.headers) for _ in range(5))
    )
    assert [r.status_code for r in responses] == [202] * 5
    assert {r.json()["workflow_id"] for r in responses} == {f"ingest-{video_id}"}
    assert {r.json()["status"] for r in responses} == {"pending"}

    query = f'WorkflowId = "ingest-{video_id}"'

    async def one_run_visible() -> None:
        assert (await temporal.count_workflows(query)).count == 1

    await assert_eventually(one_run_visible)
    await asyncio.sleep(0.5)  # visibility is eventually consistent: give a duplicate time
    runs = [execution async for execution in temporal.list_workflows(query)]
    assert len(runs) == 1
    video = await fetch_video(api_engine, video_id)
    assert video is not None
    assert video.workflow_id == f"ingest-{video_id}"


async def test_confirm_before_upload_is_400_upload_incomplete(
    api: httpx.AsyncClient, alice: TenantKey, temporal: Client
) -> None:
    ticket = await register(api, alice)
    response = await api.post(f"/v1/videos/{ticket['video_id']}/confirm", headers=alice.headers)
    assert_error(response, 400, "upload_incomplete")
    count = await temporal.count_workflows(f'WorkflowId = "ingest-{ticket["video_id"]}"')
    assert count.count == 0


async def test_confirm_with_a_wrong_sized_object_is_400(
    api: httpx.AsyncClient, alice: TenantKey, storage: LocalStorage, api_engine: AsyncEngine
) -> None:
    ticket = await register(api, alice)
    video = await fetch_video(api_engine, ticket["video_id"])
    assert video is not None
    # Something other than our PUT left a short object under the key.
    storage.put_bytes(video.source_key, DATA[:-1])
    response = await api.post(f"/v1/videos/{ticket['video_id']}/confirm", headers=alice.headers)
    assert_error(response, 400, "upload_incomplete")


async def test_more_bytes_than_declared_is_413_and_nothing_stored(
    api: httpx.AsyncClient, alice: TenantKey, storage: LocalStorage, api_engine: AsyncEngine
) -> None:
    ticket = await register(api, alice)
    video = await fetch_video(api_engine, ticket["video_id"])
    assert video is not None
    response = await api.put(path_of(ticket["upload_url"]), content=DATA + b"!")
    assert_error(response, 413, "payload_too_large")
    assert not storage.exists(video.source_key)


async def test_more_bytes_than_declared_without_length_stops_reading(
    api: httpx.AsyncClient, alice: TenantKey, storage: LocalStorage, api_engine: AsyncEngine
) -> None:
    ticket = await register(api, alice, size=1000)
    video = await fetch_video(api_engine, ticket["video_id"])
    assert video is not None
    body = PulledBody([b"a" * 600] * 100)
    response = await api.put(path_of(ticket["upload_url"]), content=body.stream())
    assert_error(response, 413, "payload_too_large")
    assert body.chunks_pulled == 2
    assert not storage.exists(video.source_key)


async def test_fewer_bytes_than_declared_is_400_and_nothing_stored(
    api: httpx.AsyncClient, alice: TenantKey, storage: LocalStorage, api_engine: AsyncEngine
) -> None:
    ticket = await register(api, alice)
    video = await fetch_video(api_engine, ticket["video_id"])
    assert video is not None
    response = await api.put(path_of(ticket["upload_url"]), content=DATA[:-10])
    assert_error(response, 400, "size_mismatch")
    assert not storage.exists(video.source_key)
    # Streamed without a length, the shortfall is only known at the end: still nothing kept.
    body = PulledBody([DATA[:100], DATA[100:200]])
    response = await api.put(path_of(ticket["upload_url"]), content=body.stream())
    assert_error(response, 400, "size_mismatch")
    assert body.finished
    assert not storage.exists(video.source_key)
    assert storage.root.exists()
    assert [p for p in storage.root.rglob("*") if p.is_file()] == []


async def test_bad_or_missing_signature_is_403(
    api: httpx.AsyncClient, alice: TenantKey, storage: LocalStorage
) -> None:
    ticket = await register(api, alice)
    url = urlsplit(ticket["upload_url"])
    query = parse_qs(url.query)
    expires, signature = query["expires"][0], query["signature"][0]
    base = url.path
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    for target in (
        f"{base}?expires={expires}&signature={flipped}",
        f"{base}?expires={int(expires) + 3600}&signature={signature}",  # extended expiry
        f"{base}?expires={expires}",
        base,
        f"{base}?expires=soon&signature={signature}",
    ):
        assert_error(await api.put(target, content=DATA), 403, "invalid_signature")
    # A signature for one video does not open another.
    other = await register(api, alice)
    other_path = urlsplit(other["upload_url"]).path
    response = await api.put(f"{other_path}?expires={expires}&signature={signature}", content=DATA)
    assert_error(response, 403, "invalid_signature")
    assert [p for p in storage.root.rglob("*") if p.is_file()] == []


async def test_expired_upload_url_is_403(
    api: httpx.AsyncClient, alice: TenantKey, settings: Settings
) -> None:
    ticket = await register(api, alice)
    video_id = uuid.UUID(ticket["video_id"])
    expired = int(datetime.now(UTC).timestamp()) - 1
    signature = upload_signature(settings.secret_key, video_id, expired)
    response = await api.put(
        f"/v1/videos/{video_id}/upload?expires={expired}&signature={signature}", content=DATA
    )
    assert_error(response, 403, "upload_expired")


async def test_another_tenant_cannot_confirm_or_read(
    api: httpx.AsyncClient, alice: TenantKey, bob: TenantKey
) -> None:
    ticket = await register(api, alice)
    assert (await api.put(path_of(ticket["upload_url"]), content=DATA)).status_code == 200
    video_id = ticket["video_id"]
    assert_error(
        await api.post(f"/v1/videos/{video_id}/confirm", headers=bob.headers), 404, "not_found"
    )
    assert_error(await api.get(f"/v1/videos/{video_id}", headers=bob.headers), 404, "not_found")
    # Alice's video is untouched by Bob's attempt.
    response = await api.get(f"/v1/videos/{video_id}", headers=alice.headers)
    assert response.json()["status"] == "uploading"
