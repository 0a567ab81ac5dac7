"""Performance snapshots: one per video, platform and time; rules a person can read; Discover
posts' snapshots taken over."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from reelflow.core.db import create_engine, session_factory
from reelflow.core.errors import DomainError
from reelflow.core.migrate import upgrade_database
from reelflow.core.tenants import create_tenant
from reelflow.improve import performance
from reelflow.improve.aggregates import video_summary
from schemas.discover import Platform
from schemas.discover_tables import PostSnapshot, Project, Scrape
from schemas.failures import FailureCode
from schemas.improve import PerformanceIn, PerformancePatch
from schemas.tables import Video
from tests.discover.test_catalog import seed_post

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    upgrade_database(database_url)
    engine = create_engine(database_url, pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with session_factory(engine)() as session:
        yield session
        await session.rollback()


async def make_tenant(session: AsyncSession, name: str = "creator") -> uuid.UUID:
    return (await create_tenant(session, name=name)).tenant_id


async def make_video(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    title: str = "a video",
    collection_id: uuid.UUID | None = None,
    created_at: datetime | None = None,
) -> uuid.UUID:
    video = Video(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        collection_id=collection_id,
        title=title,
        origin="generated",
        source_key=f"videos/{uuid.uuid4()}",
        status="completed",
        stage="done",
    )
    if created_at is not None:
        video.created_at = created_at
    session.add(video)
    await session.flush()
    return video.id


def snap(
    platform: Platform = Platform.TIKTOK, *, at: datetime = NOW, **counts: Any
) -> PerformanceIn:
    values: dict[str, Any] = {"views": 1000, "likes": 100, "comments": 10, "shares": 5, "saves": 3}
    values.update(counts)
    return PerformanceIn(platform=platform, recorded_at=at, **values)


async def test_a_snapshot_is_stored_and_listed_oldest_first(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    video = await make_video(session, tenant)
    later = await performance.add_snapshot(
        session, tenant_id=tenant, video_id=video, snapshot=snap(views=2000), now=NOW
    )
    earlier = await performance.add_snapshot(
        session,
        tenant_id=tenant,
        video_id=video,
        snapshot=snap(at=NOW - timedelta(days=1), views=500, traffic_source="fyp"),
        now=NOW,
    )
    instagram = await performance.add_snapshot(
        session, tenant_id=tenant, video_id=video, snapshot=snap(Platform.INSTAGRAM), now=NOW
    )
    history = await performance.list_snapshots(session, tenant_id=tenant, video_id=video)
    assert [s.id for s in history] == [earlier.id, instagram.id, later.id]
    assert history[0].traffic_source == "fyp"
    tiktok = await performance.list_snapshots(
        session, tenant_id=tenant, video_id=video, platform=Platform.TIKTOK
    )
    assert [s.views for s in tiktok] == [500, 2000]


async def test_the_same_moment_twice_is_a_duplicate_not_a_second_row(
    session: AsyncSession,
) -> None:
    tenant = await make_tenant(session)
    video = await make_video(session, tenant)
    await performance.add_snapshot(
        session, tenant_id=tenant, video_id=video, snapshot=snap(), now=NOW
    )
    with pytest.raises(DomainError) as refused:
        await performance.add_snapshot(
            session, tenant_id=tenant, video_id=video, snapshot=snap(views=9000), now=NOW
        )
    assert refused.value.code == FailureCode.DUPLICATE_SNAPSHOT
    # The same time on another platform is another snapshot.
    await performance.add_snapshot(
        session, tenant_id=tenant, video_id=video, snapshot=snap(Platform.INSTAGRAM), now=NOW
    )
    assert len(await performance.list_snapshots(session, tenant_id=tenant, video_id=video)) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("views", -1),
        ("likes", -5),
        ("completion_rate", 101),
        ("completion_rate", -0.1),
        ("traffic_source", "billboard"),
        ("watch_time_seconds", -3),
    ],
)
def test_impossible_values_are_refused_by_the_contract(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        snap(**{field: value})


async def test_likes_above_views_only_where_the_platform_allows_it(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    video = await make_video(session, tenant)
    with pytest.raises(DomainError) as refused:
        await performance.add_snapshot(
            session, tenant_id=tenant, video_id=video, snapshot=snap(views=10, likes=11), now=NOW
        )
    assert refused.value.code == FailureCode.INVALID_METRICS
    assert "tiktok" in refused.value.message
    stored = await performance.add_snapshot(
        session,
        tenant_id=tenant,
        video_id=video,
        snapshot=snap(Platform.INSTAGRAM, views=10, likes=11),
        now=NOW,
    )
    assert stored.likes == 11


async def test_a_future_time_is_refused_but_small_clock_skew_is_not(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    video = await make_video(session, tenant)
    with pytest.raises(DomainError) as refused:
        await performance.add_snapshot(
            session,
            tenant_id=tenant,
            video_id=video,
            snapshot=snap(at=NOW + timedelta(days=1)),
            now=NOW,
        )
    assert refused.value.code == FailureCode.INVALID_METRICS
    assert "future" in refused.value.message
    await performance.add_snapshot(
        session,
        tenant_id=tenant,
        video_id=video,
        snapshot=snap(at=NOW + timedelta(minutes=2)),
        now=NOW,
    )


async def test_another_tenants_video_is_not_found(session: AsyncSession) -> None:
    owner = await make_tenant(session, "owner")
    stranger = await make_tenant(session, "stranger")
    video = await make_video(session, owner)
    stored = await performance.add_snapshot(
        session, tenant_id=owner, video_id=video, snapshot=snap(), now=NOW
    )
    for attempt in (
        performance.add_snapshot(
            session, tenant_id=stranger, video_id=video, snapshot=snap(), now=NOW
        ),
        performance.list_snapshots(session, tenant_id=stranger, video_id=video),
        performance.delete_snapshot(
            session, tenant_id=stranger, video_id=video, snapshot_id=stored.id
        ),
        video_summary(session, tenant_id=stranger, video_id=video),
    ):
        with pytest.raises(DomainError) as refused:
            await attempt
        assert refused.value.code == FailureCode.VIDEO_NOT_FOUND


async def test_a_snapshot_is_changed_checked_and_removed(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    video = await make_video(session, tenant)
    first = await performance.add_snapshot(
        session, tenant_id=tenant, video_id=video, snapshot=snap(), now=NOW
    )
    second = await performance.add_snapshot(
        session,
        tenant_id=tenant,
        video_id=video,
        snapshot=snap(at=NOW - timedelta(hours=1)),
        now=NOW,
    )
    changed = await performance.update_snapshot(
        session,
        tenant_id=tenant,
        video_id=video,
        snapshot_id=first.id,
        patch=PerformancePatch(views=5000, completion_rate=42.5),
        now=NOW,
    )
    assert (changed.views, changed.completion_rate, changed.likes) == (5000, 42.5, 100)
    with pytest.raises(DomainError) as clash:
        await performance.update_snapshot(
            session,
            tenant_id=tenant,
            video_id=video,
            snapshot_id=first.id,
            patch=PerformancePatch(recorded_at=second.recorded_at),
            now=NOW,
        )
    assert clash.value.code == FailureCode.DUPLICATE_SNAPSHOT
    with pytest.raises(DomainError) as impossible:
        await performance.update_snapshot(
            session,
            tenant_id=tenant,
            video_id=video,
            snapshot_id=first.id,
            patch=PerformancePatch(likes=999_999),
            now=NOW,
        )
    assert impossible.value.code == FailureCode.INVALID_METRICS
    await performance.delete_snapshot(
        session, tenant_id=tenant, video_id=video, snapshot_id=first.id
    )
    remaining = await performance.list_snapshots(session, tenant_id=tenant, video_id=video)
    assert [s.id for s in remaining] == [second.id]
    with pytest.raises(DomainError) as gone:
        await performance.delete_snapshot(
            session, tenant_id=tenant, video_id=video, snapshot_id=first.id
        )
    assert gone.value.code == FailureCode.SNAPSHOT_NOT_FOUND


async def add_post_snapshot(
    session: AsyncSession, tenant: uuid.UUID, post_id: uuid.UUID, at: datetime, views: int | None
) -> None:
    project = await session.get(Project, await _project(session, tenant))
    assert project is not None
    scrape = Scrape(
        id=uuid.uuid4(),
        tenant_id=tenant,
        project_id=project.id,
        source="dataset_file",
        status="completed",
        stage="done",
    )
    session.add(scrape)
    await session.flush()
    session.add(
        PostSnapshot(
            post_id=post_id,
            scrape_id=scrape.id,
            recorded_at=at,
            views=views,
            likes=7,
            comments=None,
            shares=1,
            saves=None,
        )
    )
    await session.flush()


async def _project(session: AsyncSession, tenant: uuid.UUID) -> uuid.UUID:
    from sqlalchemy import select

    existing = await session.scalar(select(Project.id).where(Project.tenant_id == tenant))
    if existing is not None:
        return existing
    project = Project(id=uuid.uuid4(), tenant_id=tenant, name="watch")
    session.add(project)
    await session.flush()
    return project.id


async def test_a_linked_posts_snapshots_are_copied_once_and_later_scrapes_follow(
    session: AsyncSession,
) -> None:
    tenant = await make_tenant(session)
    video = await make_video(session, tenant)
    post = await seed_post(session, tenant, platform=Platform.TIKTOK, handle="me")
    await add_post_snapshot(session, tenant, post, NOW - timedelta(days=2), 100)
    await add_post_snapshot(session, tenant, post, NOW - timedelta(days=1), 400)
    await add_post_snapshot(session, tenant, post, NOW - timedelta(hours=30), None)

    assert await performance.link_post(session, tenant_id=tenant, video_id=video, post_id=post) == 2
    assert await performance.link_post(session, tenant_id=tenant, video_id=video, post_id=post) == 0
    history = await performance.list_snapshots(session, tenant_id=tenant, video_id=video)
    assert [(s.views, s.likes, s.comments, s.post_id) for s in history] == [
        (100, 7, 0, post),
        (400, 7, 0, post),
    ]
    before = (await video_summary(session, tenant_id=tenant, video_id=video)).metrics_fingerprint

    # The user removes one copied snapshot: it stays removed.
    await performance.delete_snapshot(
        session, tenant_id=tenant, video_id=video, snapshot_id=history[0].id
    )
    # A later scrape: the next read shows it.
    await add_post_snapshot(session, tenant, post, NOW, 900)
    summary = await video_summary(session, tenant_id=tenant, video_id=video)
    assert summary.snapshots == 2
    assert summary.totals["views"] == 900
    assert summary.metrics_fingerprint != before


async def test_linking_another_tenants_post_is_not_found(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    other = await make_tenant(session, "other")
    video = await make_video(session, tenant)
    post = await seed_post(session, other, platform=Platform.TIKTOK, handle="them")
    with pytest.raises(DomainError) as refused:
        await performance.link_post(session, tenant_id=tenant, video_id=video, post_id=post)
    assert refused.value.code == FailureCode.POST_NOT_FOUND
