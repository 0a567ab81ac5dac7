"""Aggregates against numbers worked out by hand."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.core.errors import DomainError
from reelflow.improve import performance
from reelflow.improve.aggregates import (
    popularity,
    series_performance,
    spearman,
    tenant_baselines,
    video_summary,
)
from schemas.discover import Platform
from schemas.failures import FailureCode
from tests.improve.test_performance import NOW, make_tenant, make_video, snap
from tests.improve.test_performance import engine as engine
from tests.improve.test_performance import session as session


async def _add(session: AsyncSession, tenant: uuid.UUID, video: uuid.UUID, **kwargs: Any) -> None:
    await performance.add_snapshot(
        session,
        tenant_id=tenant,
        video_id=video,
        snapshot=snap(**kwargs),
        now=NOW,
    )


async def test_a_videos_summary_against_the_tenants_usual(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    video = await make_video(session, tenant)
    others = [await make_video(session, tenant) for _ in range(2)]
    silent = await make_video(session, tenant)
    # Latest TikTok views over the tenant: 100, 300 (an older 5 000 does not count), 1 000.
    await _add(session, tenant, others[0], views=100, likes=1)
    await _add(session, tenant, others[1], views=5000, likes=1, at=NOW - timedelta(days=9))
    await _add(session, tenant, others[1], views=300, likes=1)
    await _add(
        session,
        tenant,
        video,
        views=200,
        likes=10,
        at=NOW - timedelta(days=2),
        traffic_source="fyp",
    )
    await _add(
        session,
        tenant,
        video,
        views=1000,
        likes=100,
        comments=20,
        shares=10,
        saves=20,
        traffic_source="fyp",
        completion_rate=55.0,
    )
    await _add(
        session,
        tenant,
        video,
        platform=Platform.INSTAGRAM,
        views=50,
        likes=5,
        comments=0,
        shares=0,
        saves=0,
        traffic_source="profile",
    )

    assert await tenant_baselines(session, tenant_id=tenant) == {
        Platform.TIKTOK: 300.0,
        Platform.INSTAGRAM: 50.0,
    }
    summary = await video_summary(session, tenant_id=tenant, video_id=video)
    assert summary.snapshots == 3
    assert summary.totals == {
        "views": 1050,
        "likes": 105,
        "comments": 20,
        "shares": 10,
        "saves": 20,
    }
    assert summary.engagement_rate == pytest.approx(155 / 1050)
    tiktok = next(p for p in summary.platforms if p.platform == Platform.TIKTOK)
    assert tiktok.views_per_day == pytest.approx(400.0)
    assert tiktok.engagement_rate == pytest.approx(0.15)
    assert tiktok.baseline_views == 300.0
    assert tiktok.times_usual == pytest.approx(1000 / 300)
    assert tiktok.completion_rate == 55.0
    instagram = next(p for p in summary.platforms if p.platform == Platform.INSTAGRAM)
    assert (instagram.times_usual, instagram.views_per_day) == (1.0, None)
    assert summary.best_platform == Platform.TIKTOK
    assert summary.traffic_breakdown == pytest.approx({"fyp": 2 / 3, "profile": 1 / 3})

    nothing = await video_summary(session, tenant_id=tenant, video_id=silent)
    assert (nothing.snapshots, nothing.totals, nothing.best_platform) == (0, {}, None)


async def test_the_fingerprint_follows_every_add_change_and_removal(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    video = await make_video(session, tenant)

    async def fingerprint() -> str:
        return (await video_summary(session, tenant_id=tenant, video_id=video)).metrics_fingerprint

    seen = {await fingerprint()}
    added = await performance.add_snapshot(
        session, tenant_id=tenant, video_id=video, snapshot=snap(), now=NOW
    )
    seen.add(await fingerprint())
    assert await fingerprint() in seen  # reading again changes nothing
    from schemas.improve import PerformancePatch

    await performance.update_snapshot(
        session,
        tenant_id=tenant,
        video_id=video,
        snapshot_id=added.id,
        patch=PerformancePatch(comments=11),
        now=NOW,
    )
    seen.add(await fingerprint())
    await performance.delete_snapshot(
        session, tenant_id=tenant, video_id=video, snapshot_id=added.id
    )
    last = await fingerprint()
    assert len(seen) == 3
    assert last in seen  # back to no snapshots: the same as before any


async def test_popularity_is_relative_to_the_tenants_most_viewed(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    other = await make_tenant(session, "other")
    top, middle, silent = [await make_video(session, tenant) for _ in range(3)]
    theirs = await make_video(session, other)
    await _add(session, tenant, top, views=999, likes=0)
    await _add(session, tenant, middle, views=9, likes=0, platform=Platform.INSTAGRAM)
    await _add(session, other, theirs, views=10**9, likes=0)
    scores = await popularity(session, tenant_id=tenant, video_ids=[top, middle, silent, theirs])
    assert scores[top] == 1.0
    assert scores[middle] == pytest.approx(1 / 3)  # log(10) / log(1000)
    assert scores[silent] == 0.0 and scores[theirs] == 0.0
    assert await popularity(session, tenant_id=tenant, video_ids=[]) == {}


async def test_a_series_best_and_worst_cadence_and_hashtags(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    series = uuid.uuid4()
    start = NOW - timedelta(days=30)
    # Episode n is first measured (published) at start + offset days, with these views.
    plan = [
        ("Ep1 #cats #fun", 0, 1000),
        ("Ep2 #cats", 2, 4000),
        ("Ep3 #dogs", 10, 500),
        ("Ep4 #CATS #dogs", 10.5, 3000),
        ("Ep5", 14, 2000),
    ]
    ids = []
    for title, offset, views in plan:
        video = await make_video(session, tenant, title=title, collection_id=series)
        ids.append(video)
        await _add(
            session,
            tenant,
            video,
            views=views // 2,
            likes=0,
            comments=0,
            shares=0,
            saves=0,
            at=start + timedelta(days=offset),
        )
        await _add(
            session,
            tenant,
            video,
            views=views,
            likes=views // 10,
            comments=0,
            shares=0,
            saves=0,
            at=start + timedelta(days=offset + 1),
        )
    await make_video(session, tenant, title="not measured yet", collection_id=series)

    result = await series_performance(session, tenant_id=tenant, collection_id=series)
    assert (result.episodes, result.episodes_with_metrics) == (6, 5)
    assert result.total_views == 10_500
    assert result.median_views == 2000
    assert result.engagement_rate == pytest.approx(0.1)
    assert [e.title for e in result.best_episodes] == ["Ep2 #cats", "Ep4 #CATS #dogs", "Ep5"]
    assert [e.title for e in result.worst_episodes] == ["Ep3 #dogs", "Ep1 #cats #fun"]
    assert [e.gap_days for e in result.episode_list] == [None, 2.0, 8.0, 0.5, 3.5]
    assert result.episode_list[1].times_series_median == 2.0
    buckets = {b.label: (b.episodes, b.median_views) for b in result.cadence}
    assert buckets == {
        "under 1 day": (1, 3000.0),
        "1-3 days": (1, 4000.0),
        "3-7 days": (1, 2000.0),
        "7 days or more": (1, 500.0),
    }
    # Gaps 2, 8, 0.5, 3.5 → ranks 2, 4, 1, 3; views 4000, 500, 3000, 2000 → ranks 4, 1, 3, 2.
    assert result.cadence_correlation == pytest.approx(spearman([2, 4, 1, 3], [4, 1, 3, 2]))
    assert result.cadence_correlation == pytest.approx(-0.8)
    tags = {h.hashtag: (h.episodes, h.median_views, h.lift) for h in result.hashtags}
    assert tags == {
        "cats": (3, 3000.0, 1.5),
        "dogs": (2, 1750.0, 0.875),
        "fun": (1, 1000.0, 0.5),
    }
    assert [h.hashtag for h in result.hashtags] == ["cats", "dogs", "fun"]

    before = result.metrics_fingerprint
    await _add(session, tenant, ids[0], views=1, likes=0, at=start - timedelta(days=1))
    after = await series_performance(session, tenant_id=tenant, collection_id=series)
    assert after.metrics_fingerprint != before


async def test_an_unknown_or_foreign_collection_is_not_found(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    other = await make_tenant(session, "other")
    series = uuid.uuid4()
    await make_video(session, other, collection_id=series)
    with pytest.raises(DomainError) as refused:
        await series_performance(session, tenant_id=tenant, collection_id=series)
    assert refused.value.code == FailureCode.COLLECTION_NOT_FOUND
