"""Bulk import: every line accounted for, the same file twice changes nothing, a broken file
writes nothing."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.core.db import session_factory
from reelflow.core.errors import DomainError
from reelflow.improve.performance_import import import_snapshots
from schemas.failures import FailureCode
from schemas.improve import ImportReport
from schemas.improve_tables import VideoPerformance
from tests.improve.test_performance import engine as engine
from tests.improve.test_performance import make_tenant, make_video

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
HEADER = (
    "video_id,platform,views,likes,comments,shares,saves,watch_time_seconds,"
    "completion_rate,traffic_source,recorded_at,post_id"
)


@pytest_asyncio.fixture(loop_scope="session")
async def tenant_video(engine: AsyncEngine) -> AsyncIterator[tuple[uuid.UUID, uuid.UUID]]:
    async with session_factory(engine)() as session:
        tenant = await make_tenant(session)
        video = await make_video(session, tenant)
        await session.commit()
    yield tenant, video


async def _import(
    engine: AsyncEngine, tenant: uuid.UUID, data: bytes, filename: str | None = "m.csv"
) -> ImportReport:
    async with session_factory(engine)() as session:
        try:
            report = await import_snapshots(
                session, tenant_id=tenant, stream=io.BytesIO(data), filename=filename, now=NOW
            )
        except BaseException:
            await session.rollback()
            raise
        await session.commit()
        return report


async def _count(engine: AsyncEngine, video: uuid.UUID) -> int:
    async with session_factory(engine)() as session:
        return int(
            await session.scalar(select(func.count()).where(VideoPerformance.video_id == video))
            or 0
        )


def _rows(video: uuid.UUID, days: int, *, platform: str = "tiktok") -> list[str]:
    return [
        f"{video},{platform},{1000 * (d + 1)},{50 * (d + 1)},3,2,1,12.5,44,fyp,"
        f"{(NOW - timedelta(days=days - d)).isoformat()},"
        for d in range(days)
    ]


async def test_a_csv_file_is_imported_and_importing_it_again_changes_nothing(
    engine: AsyncEngine, tenant_video: tuple[uuid.UUID, uuid.UUID]
) -> None:
    tenant, video = tenant_video
    data = "\n".join([HEADER, *_rows(video, 5)]).encode()
    first = await _import(engine, tenant, data)
    assert (first.format, first.lines, first.accepted, first.inserted, first.rejected) == (
        "csv",
        5,
        5,
        5,
        0,
    )
    again = await _import(engine, tenant, data)
    assert (again.accepted, again.inserted, again.unchanged, again.rejected) == (5, 0, 5, 0)
    assert await _count(engine, video) == 5


async def test_bom_semicolons_quoted_newlines_and_missing_optional_columns(
    engine: AsyncEngine, tenant_video: tuple[uuid.UUID, uuid.UUID]
) -> None:
    tenant, video = tenant_video
    at = (NOW - timedelta(days=20)).isoformat()
    at2 = (NOW - timedelta(days=19)).isoformat()
    data = (
        "\ufeffvideo_id;platform;views;recorded_at;note\r\n"
        f'{video};instagram;1200;{at};"a note\r\nover; two lines"\r\n'
        f"{video};instagram;1500;{at2};\r\n"
    ).encode()
    report = await _import(engine, tenant, data, filename="export.csv")
    assert (report.accepted, report.rejected) == (2, 0), report
    assert report.ignored_columns == ["note"]


async def test_bad_lines_are_reported_with_their_line_numbers_and_the_rest_imported(
    engine: AsyncEngine, tenant_video: tuple[uuid.UUID, uuid.UUID]
) -> None:
    tenant, video = tenant_video
    stranger_tenant_video = uuid.uuid4()
    base = NOW - timedelta(days=40)
    lines = [
        HEADER,
        f"{video},tiktok,100,10,0,0,0,,,,{base.isoformat()},",  # 2: fine
        f"{stranger_tenant_video},tiktok,100,1,0,0,0,,,,{base.isoformat()},",  # 3: unknown video
        f"{video},tiktok,-5,0,0,0,0,,,,{(base + timedelta(hours=1)).isoformat()},",  # 4
        f"{video},tiktok,10,50,0,0,0,,,,{(base + timedelta(hours=2)).isoformat()},",  # 5
        f"{video},tiktok,10,1,0,0,0,,150,,{(base + timedelta(hours=3)).isoformat()},",  # 6
        f"{video},tiktok,10,1,0,0,0,,,billboard,{(base + timedelta(hours=4)).isoformat()},",
        f"{video},tiktok,10,1,0,0,0,,,,{(NOW + timedelta(days=3)).isoformat()},",  # 8: future
        f"not-a-uuid,tiktok,10,1,0,0,0,,,,{base.isoformat()},",  # 9
        f"{video},tiktok",  # 10: missing cells
        f"{video},tiktok,100,10,0,0,0,,,,{base.isoformat()},",  # 11: repeats line 2
        f"{video},tiktok,100,10,0,0,0,,,,{(base + timedelta(hours=5)).isoformat()},,extra",
        f"{video},tiktok,10,1,0,0,0,,,,{(base + timedelta(hours=6)).isoformat()},{uuid.uuid4()}",
    ]
    report = await _import(engine, tenant, "\n".join(lines).encode())
    reasons = {r.line: r.reason for r in report.rejections}
    assert report.accepted == 1
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    assert "no video with id" in reasons[3]
    assert "views" in reasons[4]
    assert "likes" in reasons[5] and "tiktok" in reasons[5]
    assert "completion_rate" in reasons[6]
    assert "traffic_source" in reasons[7]
    assert "future" in reasons[8]
    assert "UUID" in reasons[9]
    assert "missing" in reasons[10]
    assert "line 2" in reasons[11]
    assert "fields" in reasons[12]
    assert "no post" in reasons[13]


async def test_a_row_disagreeing_with_a_stored_snapshot_is_rejected_not_merged(
    engine: AsyncEngine, tenant_video: tuple[uuid.UUID, uuid.UUID]
) -> None:
    tenant, video = tenant_video
    at = (NOW - timedelta(days=60)).isoformat()
    await _import(
        engine, tenant, f"video_id,platform,views,recorded_at\n{video},tiktok,5,{at}".encode()
    )
    report = await _import(
        engine, tenant, f"video_id,platform,views,recorded_at\n{video},tiktok,6,{at}".encode()
    )
    assert report.accepted == 0
    assert "already stored" in report.rejections[0].reason


async def test_json_and_jsonl_files(
    engine: AsyncEngine, tenant_video: tuple[uuid.UUID, uuid.UUID]
) -> None:
    tenant, video = tenant_video
    records = [
        {
            "video_id": str(video),
            "platform": "instagram",
            "views": 10 * (i + 1),
            "likes": 1,
            "recorded_at": (NOW - timedelta(days=80 - i)).isoformat(),
            "traffic_source": None,
        }
        for i in range(3)
    ]
    as_array = await _import(engine, tenant, json.dumps(records).encode(), filename=None)
    assert (as_array.format, as_array.inserted) == ("json", 3)
    records.append(
        {"video_id": str(video), "platform": "myspace", "views": 1, "recorded_at": NOW.isoformat()}
    )
    jsonl = "\n".join(json.dumps(r) for r in records) + "\n{broken\n"
    as_lines = await _import(engine, tenant, jsonl.encode(), filename="m.jsonl")
    assert (as_lines.format, as_lines.unchanged, as_lines.inserted) == ("jsonl", 3, 0)
    assert [r.line for r in as_lines.rejections] == [4, 5]


@pytest.mark.parametrize(
    ("data", "filename", "why"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR", "m.csv", "binary"),
        (b"", "m.csv", "empty"),
        (b"name,age\nbob,3\n", "m.csv", "none of the columns"),
        (b"video_id,views,recorded_at\nx,1,2026-01-01\n", "m.csv", "platform"),
    ],
)
async def test_a_file_that_is_not_an_import_is_refused_whole(
    engine: AsyncEngine, data: bytes, filename: str, why: str
) -> None:
    async with session_factory(engine)() as session:
        tenant = await make_tenant(session)
        await session.commit()
    with pytest.raises(DomainError) as refused:
        await _import(engine, tenant, data, filename)
    assert refused.value.code == FailureCode.INVALID_DATASET
    assert why in refused.value.message


async def test_json_that_breaks_off_writes_nothing(
    engine: AsyncEngine, tenant_video: tuple[uuid.UUID, uuid.UUID]
) -> None:
    tenant, video = tenant_video
    before = await _count(engine, video)
    good = [
        {
            "video_id": str(video),
            "platform": "tiktok",
            "views": i,
            "recorded_at": (NOW - timedelta(days=200, hours=i)).isoformat(),
        }
        for i in range(20_000)
    ]
    # Good records well past the first batch, then the file breaks off mid-record.
    data = json.dumps(good).encode()[:-40]
    with pytest.raises(DomainError) as refused:
        await _import(engine, tenant, data, filename="m.json")
    assert refused.value.code == FailureCode.INVALID_DATASET
    assert "Nothing was imported" in refused.value.message
    assert await _count(engine, video) == before


async def test_a_large_file_with_some_unknown_videos(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        tenant = await make_tenant(session)
        videos = [await make_video(session, tenant) for _ in range(20)]
        await session.commit()
    lines = [HEADER]
    unknown_lines = []
    for i in range(50_000):
        line_number = len(lines) + 1
        if i % 5_000 == 7:
            video = uuid.uuid4()
            unknown_lines.append(line_number)
        else:
            video = videos[i % 20]
        at = (NOW - timedelta(days=300) + timedelta(minutes=i)).isoformat()
        lines.append(f"{video},tiktok,{i + 10},1,0,0,0,,,,{at},")
    report = await _import(engine, tenant, "\n".join(lines).encode())
    assert report.lines == 50_000
    assert [r.line for r in report.rejections] == unknown_lines
    assert report.inserted == 50_000 - len(unknown_lines)
