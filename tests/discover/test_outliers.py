"""Outlier scoring: hand-computed cases of the rule, then the database pass on real Postgres.

Default settings throughout unless a test says otherwise: 30-day trailing window, 3
comparable posts needed, 48 h minimum age, 3× ratio and robust z ≥ 2.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from reelflow.core.db import session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.statistics import MAD_TO_Z
from reelflow.core.tenants import create_tenant
from reelflow.discover.outliers import PostForScoring, PostScore, score_account, score_accounts
from schemas.discover import NoScoreReason, OutlierSettings, OutlierTier
from schemas.discover_tables import Post, WatchedAccount

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
DEFAULTS = OutlierSettings()


def video(days_ago: float, views: int | None, *, is_video: bool = True) -> PostForScoring:
    return PostForScoring(uuid.uuid4(), NOW - timedelta(days=days_ago), views, is_video)


def score(posts: Sequence[PostForScoring], settings: OutlierSettings = DEFAULTS) -> list[PostScore]:
    return score_account(posts, settings, NOW)


def z_by_hand(views: int, baseline: Sequence[int]) -> float:
    logs = sorted(math.log1p(v) for v in baseline)
    mid = len(logs) // 2
    center = logs[mid] if len(logs) % 2 else (logs[mid - 1] + logs[mid]) / 2
    deviations = sorted(abs(x - center) for x in logs)
    mad = deviations[mid] if len(logs) % 2 else (deviations[mid - 1] + deviations[mid]) / 2
    return MAD_TO_Z * (math.log1p(views) - center) / mad


def test_an_account_with_two_posts_has_too_few_posts() -> None:
    results = score([video(10, 100), video(5, 900)])
    assert [r.no_score_reason for r in results] == [NoScoreReason.TOO_FEW_POSTS] * 2
    assert all(r.score is None and r.tier is None for r in results)


def test_the_oldest_posts_wait_for_enough_history_before_them() -> None:
    posts = [video(20, 90), video(19, 100), video(18, 110), video(10, 1000)]
    results = score(posts)
    assert [r.no_score_reason for r in results[:3]] == [NoScoreReason.TOO_FEW_POSTS] * 3
    assert results[3].score == 1000 / 100
    assert results[3].tier is OutlierTier.X10
    assert results[3].robust_z == pytest.approx(z_by_hand(1000, [90, 100, 110]))


@pytest.mark.parametrize(
    ("views", "tier"),
    [
        (299, None),
        (300, OutlierTier.X3),
        (499, OutlierTier.X3),
        (500, OutlierTier.X5),
        (999, OutlierTier.X5),
        (1000, OutlierTier.X10),
        (25_000, OutlierTier.X10),
    ],
)
def test_tiers_start_exactly_at_3_5_and_10_times(views: int, tier: OutlierTier | None) -> None:
    results = score([video(20, 90), video(19, 100), video(18, 110), video(10, views)])
    assert results[3].score == views / 100
    assert results[3].robust_z is not None and results[3].robust_z > 2
    assert results[3].tier is tier
    assert results[3].no_score_reason is None


def test_ties_in_views_take_the_mean_of_the_middle_pair() -> None:
    # Baseline 100, 100, 200, 200: median 150, so 450 is exactly 3×; log MAD is
    # half the distance between the two levels, z ≈ 2.26.
    results = score([video(20, 100), video(19, 200), video(18, 100), video(17, 200), video(9, 450)])
    assert results[4].score == 3.0
    assert results[4].robust_z == pytest.approx(z_by_hand(450, [100, 100, 200, 200]))
    assert results[4].robust_z == pytest.approx(2.259, abs=1e-3)
    assert results[4].tier is OutlierTier.X3


def test_posts_at_the_same_instant_count_for_each_other_but_not_for_themselves() -> None:
    same = NOW - timedelta(days=5)
    posts = [video(20, 100), video(19, 100)] + [
        PostForScoring(uuid.uuid4(), same, v, True) for v in (100, 400)
    ]
    results = score(posts)
    # each twin's baseline: the two older posts and the other twin → 3 posts
    assert results[2].score == 1.0
    assert results[3].score == 4.0
    assert results[3].tier is OutlierTier.X3  # flat baseline: MAD 0, the ratio decides
    assert results[3].robust_z is None


def test_posts_younger_than_the_age_limit_are_too_recent() -> None:
    posts = [video(20, 100), video(19, 100), video(18, 100)]
    just_old_enough = PostForScoring(uuid.uuid4(), NOW - timedelta(hours=48), 1000, True)
    too_young = PostForScoring(uuid.uuid4(), NOW - timedelta(hours=47, minutes=59), 5000, True)
    results = score([*posts, just_old_enough, too_young])
    assert results[3].tier is OutlierTier.X10
    assert results[4].no_score_reason is NoScoreReason.TOO_RECENT
    assert results[4].score is None
    # A post in the future (clock skew at the platform) is too recent too.
    future = PostForScoring(uuid.uuid4(), NOW + timedelta(hours=1), 10, True)
    assert score([future])[0].no_score_reason is NoScoreReason.TOO_RECENT


def test_window_includes_a_post_exactly_window_days_before_and_not_one_microsecond_more() -> None:
    target_at = NOW - timedelta(days=3)

    def account(oldest: datetime) -> list[PostScore]:
        posts = [
            PostForScoring(uuid.uuid4(), oldest, 100, True),
            PostForScoring(uuid.uuid4(), target_at - timedelta(days=15), 100, True),
            PostForScoring(uuid.uuid4(), target_at - timedelta(days=1), 100, True),
            PostForScoring(uuid.uuid4(), target_at, 300, True),
        ]
        return score(posts)

    assert account(target_at - timedelta(days=30))[3].tier is OutlierTier.X3
    outside = account(target_at - timedelta(days=30, microseconds=1))[3]
    assert outside.no_score_reason is NoScoreReason.TOO_FEW_POSTS

    # A 7-day window: the post 13 days ago is exactly 7 days before the target at 6 days;
    # the older, much bigger posts would make the median 100 000 if they counted.
    narrow = OutlierSettings(window_days=7)
    old = [video(40, 100_000) for _ in range(4)]
    results = score([*old, video(13, 100), video(10, 100), video(8, 100), video(6, 300)], narrow)
    assert results[7].score == 3.0
    assert results[7].tier is OutlierTier.X3


def test_a_median_of_zero_views_gives_no_score() -> None:
    results = score([video(20, 0), video(19, 0), video(18, 7), video(10, 500)])
    assert results[3].no_score_reason is NoScoreReason.ZERO_MEDIAN
    assert results[3].score is None and results[3].tier is None


def test_a_zero_view_post_among_viewed_posts_scores_zero() -> None:
    results = score([video(20, 100), video(19, 150), video(18, 200), video(10, 0)])
    assert results[3].score == 0.0
    assert results[3].robust_z is not None and results[3].robust_z < 0
    assert results[3].tier is None
    assert results[3].no_score_reason is None


def test_robust_z_rejects_a_3x_post_on_an_account_whose_views_swing_wildly() -> None:
    baseline = [10, 100_000, 1_000, 100, 10_000]  # median 1 000, a decade per post
    results = score([video(20 - i, v) for i, v in enumerate(baseline)] + [video(9, 3_500)])
    assert results[5].score == 3.5
    assert results[5].robust_z == pytest.approx(z_by_hand(3_500, baseline))
    assert results[5].robust_z is not None and results[5].robust_z < 1
    assert results[5].tier is None
    # The same 3.5× on a steady account is an outlier.
    steady = score([video(20 - i, v) for i, v in enumerate([900, 1000, 1100])] + [video(9, 3_500)])
    assert steady[3].tier is OutlierTier.X3


def test_min_ratio_above_a_tier_keeps_lower_scores_out() -> None:
    strict = OutlierSettings(min_ratio=4.0)
    results = score([video(20, 90), video(19, 100), video(18, 110), video(10, 350)], strict)
    assert results[3].score == 3.5
    assert results[3].tier is None
    results = score([video(20, 90), video(19, 100), video(18, 110), video(10, 450)], strict)
    assert results[3].tier is OutlierTier.X3


def test_posts_without_a_usable_count_or_time_get_their_reason_and_stay_out_of_baselines() -> None:
    photo = video(19, 1_000_000, is_video=False)
    hidden = video(18, None)
    undated = PostForScoring(uuid.uuid4(), None, 100, True)
    photo_without_views = video(17, None, is_video=False)
    posts = [video(20, 100), photo, hidden, undated, photo_without_views, video(16, 100),
             video(10, 300)]  # fmt: skip
    results = score(posts)
    assert [r.no_score_reason for r in results[1:5]] == [
        NoScoreReason.NOT_A_VIDEO,
        NoScoreReason.NO_VIEWS,
        NoScoreReason.NO_POSTED_AT,
        NoScoreReason.NOT_A_VIDEO,
    ]
    assert results[6].no_score_reason is NoScoreReason.TOO_FEW_POSTS  # only 2 comparable before
    assert [r.id for r in results] == [p.id for p in posts]


# --- database --------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    upgrade_database(database_url)
    engine = create_async_engine(database_url, pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_score_accounts_writes_scores_of_the_given_accounts_only(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    async with sessions() as session:
        tenant_id = (await create_tenant(session, name="scoring")).tenant_id
        watched, other = uuid.uuid4(), uuid.uuid4()
        for account_id, handle in ((watched, "steady"), (other, "untouched")):
            await session.execute(
                insert(WatchedAccount).values(
                    id=account_id, tenant_id=tenant_id, platform="tiktok", handle=handle
                )
            )
        plan = [  # (days ago, views, is_video)
            (20.0, 900, True),
            (19.0, 1000, True),
            (18.0, 1100, True),
            (15.0, 5200, True),  # 5.2× the median of 900/1000/1100 → 5x
            (14.0, 1000, True),  # median of 900,1000,1100,5200 = 1050 → 0.952…
            (13.0, 50_000, False),  # a photo
            (1.0, 90_000, True),  # too recent
        ]
        ids = [uuid.uuid4() for _ in plan]
        rows = [
            {
                "id": post_id,
                "tenant_id": tenant_id,
                "account_id": watched,
                "platform": "tiktok",
                "platform_post_id": f"p{i}",
                "posted_at": NOW - timedelta(days=days),
                "views": views,
                "is_video": is_video,
            }
            for i, (post_id, (days, views, is_video)) in enumerate(zip(ids, plan, strict=True))
        ]
        foreign_id = uuid.uuid4()
        rows.append(
            {
                "id": foreign_id,
                "tenant_id": tenant_id,
                "account_id": other,
                "platform": "tiktok",
                "platform_post_id": "other",
                "posted_at": NOW - timedelta(days=3),
                "views": 10,
                "is_video": True,
                "outlier_score": 42.0,
            }
        )
        for row in rows:  # one by one: rows differ in which columns they set
            await session.execute(insert(Post).values(**row))
        await session.commit()

    async with sessions() as session:
        summary = await score_accounts(
            session, tenant_id=tenant_id, account_ids=[watched], settings=DEFAULTS, now=NOW
        )
        await session.commit()
    assert summary.scored == 2
    assert summary.outliers == 1
    assert summary.by_tier == {"5x": 1}
    assert summary.no_score == {"too_few_posts": 3, "not_a_video": 1, "too_recent": 1}
    assert summary.changed == len(plan)

    async with sessions() as session:
        stored = {p.id: p for p in (await session.scalars(select(Post))).all()}
    spike = stored[ids[3]]
    assert spike.outlier_score == pytest.approx(5.2)
    assert spike.outlier_tier == "5x"
    assert spike.outlier_z == pytest.approx(z_by_hand(5200, [900, 1000, 1100]))
    assert spike.no_score_reason is None and spike.scored_at == NOW
    after = stored[ids[4]]
    assert after.outlier_score == pytest.approx(1000 / 1050)
    assert after.outlier_tier is None and after.no_score_reason is None
    assert [stored[i].no_score_reason for i in (ids[0], ids[5], ids[6])] == [
        "too_few_posts",
        "not_a_video",
        "too_recent",
    ]
    assert all(stored[i].scored_at == NOW for i in ids)
    assert stored[foreign_id].outlier_score == 42.0
    assert stored[foreign_id].scored_at is None

    # Rescoring later overwrites, and two calls in one
    # transaction do not mix their results.
    later = NOW + timedelta(days=1)
    async with sessions() as session:
        first = await score_accounts(
            session, tenant_id=tenant_id, account_ids=[watched], settings=DEFAULTS, now=later
        )
        second = await score_accounts(
            session, tenant_id=tenant_id, account_ids=[other], settings=DEFAULTS, now=later
        )
        await session.commit()
    # A day later the fresh post is old enough: 90 000 ÷ median(900…5200) = 90×.
    assert first.no_score == {"too_few_posts": 3, "not_a_video": 1}
    assert first.by_tier == {"5x": 1, "10x": 1}
    assert first.changed == 1  # only the post that came of age
    assert second.no_score == {"too_few_posts": 1}
    async with sessions() as session:
        refreshed = await session.get(Post, foreign_id)
        assert refreshed is not None
        assert refreshed.outlier_score is None
        assert refreshed.no_score_reason == "too_few_posts"
        unchanged = await session.get(Post, ids[0])
        assert unchanged is not None
        assert unchanged.no_score_reason == "too_few_posts"
        assert unchanged.scored_at == NOW  # same result: the row was not rewritten
        grown = await session.get(Post, ids[6])
        assert grown is not None
        assert grown.outlier_score == 90.0 and grown.outlier_tier == "10x"
        assert grown.scored_at == later


async def test_no_accounts_is_a_no_op(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        summary = await score_accounts(
            session, tenant_id=uuid.uuid4(), account_ids=[], settings=DEFAULTS, now=NOW
        )
    assert summary.scored == 0 and summary.outliers == 0 and summary.no_score == {}


async def test_posts_added_in_the_same_session_are_scored(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        tenant_id = (await create_tenant(session, name="same-session")).tenant_id
        account_id = uuid.uuid4()
        session.add(WatchedAccount(id=account_id, tenant_id=tenant_id, platform="instagram",
                                   handle="fresh"))  # fmt: skip
        await session.flush()
        posts = [
            Post(id=uuid.uuid4(), tenant_id=tenant_id, account_id=account_id,
                 platform="instagram", platform_post_id=f"f{i}",
                 posted_at=NOW - timedelta(days=days), views=views, is_video=True)
            for i, (days, views) in enumerate([(9, 100), (8, 100), (7, 100), (5, 1000)])
        ]  # fmt: skip
        session.add_all(posts)  # not flushed: scoring must see them anyway
        summary = await score_accounts(
            session, tenant_id=tenant_id, account_ids=[account_id], settings=DEFAULTS, now=NOW
        )
        await session.commit()
    assert summary.by_tier == {"10x": 1}
    async with session_factory(engine)() as session:
        stored = await session.get(Post, posts[3].id)
        assert stored is not None and stored.outlier_tier == "10x"
