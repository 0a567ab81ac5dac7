"""`POST /v1/videos`: multipart upload streamed into storage, limits enforced while reading."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from schemas import search_attributes as sa
from tests.api.api_support import (
    MAX_UPLOAD_BYTES,
    PulledBody,
    TenantKey,
    assert_error,
    count_videos,
    fetch_video,
    multipart_parts,
)

BOUNDARY = "reelflowtestboundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def stored_files(storage: LocalStorage) -> list[str]:
    return sorted(str(p.relative_to(storage.root)) for p in storage.root.rglob("*") if p.is_file())


async def test_upload_stores_file_creates_row_and_starts_ingest(
    api: httpx.AsyncClient,
    alice: TenantKey,
    storage: LocalStorage,
    api_engine: AsyncEngine,
    temporal: Client,
    settings: Settings,
) -> None:
    data = bytes(range(256)) * 1000  # 256 000 bytes, just under the limit
    collection = uuid.uuid4()
    response = await api.post(
        "/v1/videos",
        headers=alice.headers,
        data={"title": "  My first video ", "collection_id": str(collection)},
        files={"file": ("clip.MP4", data, "video/mp4")},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    video_id = body["video_id"]
    assert body == {"video_id": video_id, "workflow_id": f"ingest-{video_id}", "status": "pending"}

    key = f"tenants/{alice.tenant_id}/videos/{video_id}/source.mp4"
    assert stored_files(storage) == [key]
    assert (storage.root / key).read_bytes() == data

    video = await fetch_video(api_engine, video_id)
    assert video is not None
    assert video.tenant_id == alice.tenant_id
    assert (video.title, video.origin, video.status, video.stage) == (
        "My first video",
        "upload",
        "pending",
        "queued",
    )
    assert (video.source_key, video.size_bytes, video.filename) == (key, len(data), "clip.MP4")
    assert video.collection_id == collection
    assert video.workflow_id == f"ingest-{video_id}"

    description = await temporal.get_workflow_handle(f"ingest-{video_id}").describe()
    assert description.workflow_type == "IngestWorkflow"
    assert description.task_queue == f"{settings.task_queue_prefix}-workflows"
    attributes = description.typed_search_attributes
    assert attributes.get(sa.TENANT_ID) == str(alice.tenant_id)
    assert attributes.get(sa.VIDEO_ID) == video_id
    assert attributes.get(sa.PIPELINE) == "ingest"


async def test_empty_file_is_400_and_leaves_nothing(
    api: httpx.AsyncClient, alice: TenantKey, storage: LocalStorage, api_engine: AsyncEngine
) -> None:
    response = await api.post(
        "/v1/videos",
        headers=alice.headers,
        data={"title": "empty"},
        files={"file": ("empty.mp4", b"", "video/mp4")},
    )
    assert_error(response, 400, "empty_file")
    assert stored_files(storage) == []
    assert await count_videos(api_engine, alice.tenant_id) == 0


async def test_content_length_over_limit_is_413_before_reading_the_body(
    api: httpx.AsyncClient, alice: TenantKey, storage: LocalStorage, api_engine: AsyncEngine
) -> None:
    parts = multipart_parts(
        BOUNDARY,
        fields={"title": "big"},
        filename="big.mp4",
        file_chunks=[b"x" * 64 * 1024] * 64,  # 4 MiB against a 256 KiB limit
    )
    body = PulledBody(parts)
    response = await api.post(
        "/v1/videos",
        headers={
            **alice.headers,
            "Content-Type": CONTENT_TYPE,
            "Content-Length": str(body.total),
        },
        content=body.stream(),
    )
    assert_error(response, 413, "payload_too_large")
    assert body.pulled == 0
    assert stored_files(storage) == []
    assert await count_videos(api_engine, alice.tenant_id) == 0


async def test_chunked_body_over_limit_is_cut_off_as_soon_as_it_passes(
    api: httpx.AsyncClient, alice: TenantKey, storage: LocalStorage, api_engine: AsyncEngine
) -> None:
    chunk = b"y" * 16 * 1024
    parts = multipart_parts(
        BOUNDARY,
        fields={"title": "streamed"},
        filename="big.mp4",
        file_chunks=[chunk] * 1024,  # 16 MiB, no Content-Length
    )
    body = PulledBody(parts)
    response = await api.post(
        "/v1/videos",
        headers={**alice.headers, "Content-Type": CONTENT_TYPE},
        content=body.stream(),
    )
    assert_error(response, 413, "payload_too_large")
    assert not body.finished
    # The file passed the limit within the chunk that crossed it; nothing more was read.
    assert body.pulled <= len(parts[0]) + MAX_UPLOAD_BYTES + len(chunk)
    assert stored_files(storage) == []
    assert await count_videos(api_engine, alice.tenant_id) == 0


async def test_file_of_exactly_the_limit_is_accepted(
    api: httpx.AsyncClient, alice: TenantKey, storage: LocalStorage
) -> None:
    response = await api.post(
        "/v1/videos",
        headers=alice.headers,
        data={"title": "exact"},
        files={"file": ("exact.webm", b"z" * MAX_UPLOAD_BYTES, "video/webm")},
    )
    assert response.status_code == 202, response.text
    video_id = response.json()["video_id"]
    key = f"tenants/{alice.tenant_id}/videos/{video_id}/source.webm"
    assert (storage.root / key).stat().st_size == MAX_UPLOAD_BYTES


async def test_missing_title_is_422_and_the_stored_bytes_are_removed(
    api: httpx.AsyncClient, alice: TenantKey, storage: LocalStorage, api_engine: AsyncEngine
) -> None:
    response = await api.post(
        "/v1/videos",
        headers=alice.headers,
        files={"file": ("a.mp4", b"data", "video/mp4")},
    )
    error = assert_error(response, 422, "invalid_request")
    assert "title" in error["message"]
    assert stored_files(storage) == []
    assert await count_videos(api_engine, alice.tenant_id) == 0


async def test_missing_file_part_is_422(api: httpx.AsyncClient, alice: TenantKey) -> None:
    response = await api.post("/v1/videos", headers=alice.headers, files={"title": (None, "t")})
    error = assert_error(response, 422, "invalid_request")
    assert "file" in error["message"]


async def test_bad_collection_id_is_422(
    api: httpx.AsyncClient, alice: TenantKey, storage: LocalStorage
) -> None:
    response = await api.post(
        "/v1/videos",
        headers=alice.headers,
        data={"title": "t", "collection_id": "nope"},
        files={"file": ("a.mp4", b"data", "video/mp4")},
    )
    assert_error(response, 422, "invalid_request")
    assert stored_files(storage) == []


async def test_json_body_is_415(api: httpx.AsyncClient, alice: TenantKey) -> None:
    response = await api.post("/v1/videos", headers=alice.headers, json={"title": "t"})
    assert_error(response, 415, "unsupported_media_type")


async def test_truncated_multipart_body_is_400_and_leaves_nothing(
    api: httpx.AsyncClient, alice: TenantKey, storage: LocalStorage, api_engine: AsyncEngine
) -> None:
    parts = multipart_parts(
        BOUNDARY, fields={"title": "t"}, filename="a.mp4", file_chunks=[b"abc" * 100]
    )
    response = await api.post(
        "/v1/videos",
        headers={**alice.headers, "Content-Type": CONTENT_TYPE},
        content=b"".join(parts[:-1]),  # no closing boundary
    )
    assert_error(response, 400, "invalid_request")
    assert stored_files(storage) == []
    assert await count_videos(api_engine, alice.tenant_id) == 0


async def test_unauthenticated_upload_is_401_without_reading_the_body(
    api: httpx.AsyncClient, storage: LocalStorage
) -> None:
    parts = multipart_parts(
        BOUNDARY, fields={"title": "t"}, filename="a.mp4", file_chunks=[b"q" * 1024] * 8
    )
    body = PulledBody(parts)
    response = await api.post(
        "/v1/videos", headers={"Content-Type": CONTENT_TYPE}, content=body.stream()
    )
    assert_error(response, 401, "unauthorized")
    assert body.pulled == 0
    assert stored_files(storage) == []


async def test_hostile_filename_cannot_shape_the_storage_key(
    api: httpx.AsyncClient, alice: TenantKey, storage: LocalStorage
) -> None:
    response = await api.post(
        "/v1/videos",
        headers=alice.headers,
        data={"title": "t"},
        files={"file": ("../../etc/passwd", b"data", "video/mp4")},
    )
    assert response.status_code == 202, response.text
    video_id = response.json()["video_id"]
    assert stored_files(storage) == [f"tenants/{alice.tenant_id}/videos/{video_id}/source"]


async def test_file_part_without_filename_is_accepted(
    api: httpx.AsyncClient, alice: TenantKey, storage: LocalStorage
) -> None:
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="title"\r\n\r\nraw\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"\r\n\r\n'
        "some video bytes"
        f"\r\n--{BOUNDARY}--\r\n"
    ).encode()
    response = await api.post(
        "/v1/videos", headers={**alice.headers, "Content-Type": CONTENT_TYPE}, content=body
    )
    assert response.status_code == 202, response.text
    video_id = response.json()["video_id"]
    key = f"tenants/{alice.tenant_id}/videos/{video_id}/source"
    assert (storage.root / key).read_bytes() == b"some video bytes"


async def test_two_file_parts_are_400_and_leave_nothing(
    api: httpx.AsyncClient, alice: TenantKey, storage: LocalStorage, api_engine: AsyncEngine
) -> None:
    one = multipart_parts(BOUNDARY, fields={"title": "t"}, filename="a.mp4", file_chunks=[b"1"])
    two = (
        f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="b.mp4"'
        f"\r\n\r\n2\r\n--{BOUNDARY}--\r\n"
    ).encode()
    body = b"".join(one[:-1]) + two
    response = await api.post(
        "/v1/videos", headers={**alice.headers, "Content-Type": CONTENT_TYPE}, content=body
    )
    assert_error(response, 400, "invalid_request")
    assert stored_files(storage) == []
    assert await count_videos(api_engine, alice.tenant_id) == 0


async def test_oversized_text_field_is_413(api: httpx.AsyncClient, alice: TenantKey) -> None:
    response = await api.post(
        "/v1/videos",
        headers=alice.headers,
        data={"title": "t" * 10_000},
        files={"file": ("a.mp4", b"data", "video/mp4")},
    )
    assert_error(response, 413, "payload_too_large")
