"""Reading a video: detail, transcript, source bytes with Range, thumbnail."""

from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.core.db import session_factory
from reelflow.core.storage import LocalStorage
from schemas.tables import TranscriptSegment, Video
from tests.api.api_support import TenantKey, assert_error

SOURCE = bytes(range(256)) * 40  # 10 240 bytes


async def upload(api: httpx.AsyncClient, tenant: TenantKey, data: bytes = SOURCE) -> str:
    response = await api.post(
        "/v1/videos",
        headers=tenant.headers,
        data={"title": "Readable"},
        files={"file": ("read.mp4", data, "video/mp4")},
    )
    assert response.status_code == 202, response.text
    video_id: str = response.json()["video_id"]
    return video_id


async def test_detail_shows_what_the_workflow_recorded(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine
) -> None:
    video_id = await upload(api, alice)
    response = await api.get(f"/v1/videos/{video_id}", headers=alice.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["video_id"] == video_id
    assert (body["title"], body["status"], body["stage"], body["progress"]) == (
        "Readable",
        "pending",
        "queued",
        0.0,
    )
    assert body["error"] is None
    assert body["note"] is None
    assert body["workflow_id"] == f"ingest-{video_id}"
    assert body["size_bytes"] == len(SOURCE)
    assert body["cost_usd"] == 0.0
    assert body["created_at"]

    # What the ingest run writes as it goes is what the API shows.
    async with session_factory(api_engine)() as session:
        await session.execute(
            update(Video)
            .where(Video.id == uuid.UUID(video_id))
            .values(
                status="failed",
                stage="failed",
                progress=0.4,
                error_code="no_audio",
                error_message="the video has no audio track",
                duration_s=12.5,
                chunk_count=3,
                cost_usd=Decimal("0.0125"),
            )
        )
        await session.commit()
    body = (await api.get(f"/v1/videos/{video_id}", headers=alice.headers)).json()
    assert (body["status"], body["stage"], body["progress"]) == ("failed", "failed", 0.4)
    assert body["error"] == {"code": "no_audio", "message": "the video has no audio track"}
    assert (body["duration_s"], body["chunk_count"], body["cost_usd"]) == (12.5, 3, 0.0125)

    async with session_factory(api_engine)() as session:
        await session.execute(
            update(Video)
            .where(Video.id == uuid.UUID(video_id))
            .values(
                status="completed",
                stage="completed",
                progress=1.0,
                error_code=None,
                error_message=None,
                chunk_count=0,
                note="the video has no audio track, so there is nothing to search",
            )
        )
        await session.commit()
    body = (await api.get(f"/v1/videos/{video_id}", headers=alice.headers)).json()
    assert (body["status"], body["error"], body["chunk_count"]) == ("completed", None, 0)
    assert body["note"] == "the video has no audio track, so there is nothing to search"


async def test_transcript_is_ordered_by_window_then_position(
    api: httpx.AsyncClient, alice: TenantKey, bob: TenantKey, api_engine: AsyncEngine
) -> None:
    video_id = await upload(api, alice)
    vid = uuid.UUID(video_id)
    rows = [  # inserted out of order on purpose
        (1, 0, 120.0, 125.0, "third line"),
        (0, 1, 5.0, 9.5, " second line "),
        (0, 0, 0.0, 5.0, "first line"),
        (1, 1, 125.0, 130.0, "fourth line"),
    ]
    async with session_factory(api_engine)() as session:
        session.add_all(
            TranscriptSegment(
                tenant_id=alice.tenant_id,
                video_id=vid,
                window_index=w,
                seq=s,
                start_s=a,
                end_s=b,
                text=t,
            )
            for w, s, a, b, t in rows
        )
        await session.commit()
    response = await api.get(f"/v1/videos/{video_id}/transcript", headers=alice.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["video_id"] == video_id
    assert body["status"] == "pending"
    assert body["segments"] == [
        {"start_s": 0.0, "end_s": 5.0, "text": "first line"},
        {"start_s": 5.0, "end_s": 9.5, "text": "second line"},
        {"start_s": 120.0, "end_s": 125.0, "text": "third line"},
        {"start_s": 125.0, "end_s": 130.0, "text": "fourth line"},
    ]
    assert body["text"] == "first line second line third line fourth line"

    response = await api.get(f"/v1/videos/{video_id}/transcript", headers=bob.headers)
    assert_error(response, 404, "not_found")


async def test_transcript_of_an_untranscribed_video_is_empty(
    api: httpx.AsyncClient, alice: TenantKey
) -> None:
    video_id = await upload(api, alice)
    body = (await api.get(f"/v1/videos/{video_id}/transcript", headers=alice.headers)).json()
    assert (body["segments"], body["text"]) == ([], "")


async def test_content_streams_the_whole_file(api: httpx.AsyncClient, alice: TenantKey) -> None:
    video_id = await upload(api, alice)
    response = await api.get(f"/v1/videos/{video_id}/content", headers=alice.headers)
    assert response.status_code == 200
    assert response.content == SOURCE
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-type"] == "video/mp4"
    assert int(response.headers["content-length"]) == len(SOURCE)


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=100-", 100, len(SOURCE)),
        ("bytes=-500", len(SOURCE) - 500, len(SOURCE)),
        ("bytes=10000-99999", 10000, len(SOURCE)),  # end past the file is clamped
        ("bytes=5-5", 5, 6),
    ],
)
async def test_content_serves_byte_ranges(
    api: httpx.AsyncClient, alice: TenantKey, header: str, start: int, end: int
) -> None:
    video_id = await upload(api, alice)
    response = await api.get(
        f"/v1/videos/{video_id}/content", headers={**alice.headers, "Range": header}
    )
    assert response.status_code == 206
    assert response.content == SOURCE[start:end]
    assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{len(SOURCE)}"
    assert int(response.headers["content-length"]) == end - start


@pytest.mark.parametrize("header", ["bytes=10240-", "bytes=99999-100000", "bytes=-0", "bytes=9-3"])
async def test_unsatisfiable_range_is_416(
    api: httpx.AsyncClient, alice: TenantKey, header: str
) -> None:
    video_id = await upload(api, alice)
    response = await api.get(
        f"/v1/videos/{video_id}/content", headers={**alice.headers, "Range": header}
    )
    assert_error(response, 416, "range_not_satisfiable")
    assert response.headers["content-range"] == f"bytes */{len(SOURCE)}"


async def test_unparseable_range_gets_the_whole_file(
    api: httpx.AsyncClient, alice: TenantKey
) -> None:
    video_id = await upload(api, alice)
    response = await api.get(
        f"/v1/videos/{video_id}/content", headers={**alice.headers, "Range": "pages=1-2"}
    )
    assert response.status_code == 200
    assert response.content == SOURCE


async def test_content_of_another_tenant_is_404(
    api: httpx.AsyncClient, alice: TenantKey, bob: TenantKey
) -> None:
    video_id = await upload(api, alice)
    response = await api.get(f"/v1/videos/{video_id}/content", headers=bob.headers)
    assert_error(response, 404, "not_found")


async def test_content_of_a_video_still_uploading_is_not_ready(
    api: httpx.AsyncClient, alice: TenantKey
) -> None:
    ticket = await api.post(
        "/v1/videos/uploads",
        json={"filename": "a.mp4", "size_bytes": 10, "content_type": "video/mp4", "title": "t"},
        headers=alice.headers,
    )
    video_id = ticket.json()["video_id"]
    response = await api.get(f"/v1/videos/{video_id}/content", headers=alice.headers)
    assert_error(response, 404, "not_ready")


async def test_thumbnail_is_not_ready_until_extracted(
    api: httpx.AsyncClient,
    alice: TenantKey,
    bob: TenantKey,
    api_engine: AsyncEngine,
    storage: LocalStorage,
) -> None:
    video_id = await upload(api, alice)
    response = await api.get(f"/v1/videos/{video_id}/thumbnail", headers=alice.headers)
    assert_error(response, 404, "not_ready")

    jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 200 + b"\xff\xd9"
    key = f"tenants/{alice.tenant_id}/videos/{video_id}/thumbnail.jpg"
    storage.put_bytes(key, jpeg)
    async with session_factory(api_engine)() as session:
        await session.execute(
            update(Video).where(Video.id == uuid.UUID(video_id)).values(thumbnail_key=key)
        )
        await session.commit()
    response = await api.get(f"/v1/videos/{video_id}/thumbnail", headers=alice.headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == jpeg
    response = await api.get(f"/v1/videos/{video_id}/thumbnail", headers=bob.headers)
    assert_error(response, 404, "not_found")
