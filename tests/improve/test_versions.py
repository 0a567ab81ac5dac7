"""Versions of a video on real Postgres: the chain with each version's metrics, branches,
the side-by-side comparison, and a discover script's predicted vs actual."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.core.db import SessionFactory, create_engine, session_factory
from reelflow.core.errors import DomainError
from reelflow.core.migrate import upgrade_database
from reelflow.improve.versions import (
    NotAVersion,
    compare_versions,
    predicted_ratio,
    script_performance,
    verdict,
    version_history,
)
from schemas.discover_tables import Post, Script, WatchedAccount
from schemas.failures import FailureCode
from schemas.improvement import VersionComparison, VersionHistory
from schemas.tables import Video
from tests.improve.test_insights import add_metrics, new_tenant, new_video


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    upgrade_database(database_url)
    engine = create_engine(database_url, pool_size=4)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionFactory:
    return session_factory(engine)


async def improved(
    sessions: SessionFactory, tenant: uuid.UUID, original: uuid.UUID, title: str
) -> uuid.UUID:
    """A video linked as the next version of `original`, as the improvement run links it."""
    video_id = await new_video(sessions, tenant, title)
    async with sessions.begin() as session:
        parent = await session.get(Video, original)
        video = await session.get(Video, video_id)
        assert parent is not None and video is not None
        video.improved_from_video_id = original
        video.improvement_iteration = parent.improvement_iteration + 1
    return video_id


async def history(sessions: SessionFactory, tenant: uuid.UUID, video: uuid.UUID) -> VersionHistory:
    async with sessions() as session:
        return await version_history(session, tenant_id=tenant, video_id=video)


async def compare(
    sessions: SessionFactory, tenant: uuid.UUID, a: uuid.UUID, b: uuid.UUID
) -> VersionComparison:
    async with sessions() as session:
        return await compare_versions(session, tenant_id=tenant, video_id=a, other_id=b)


async def test_the_chain_runs_from_the_original_to_the_newest_with_each_ones_metrics(
    sessions: SessionFactory,
) -> None:
    tenant = await new_tenant(sessions, "versions")
    # Another video sets the tenant's usual at 10k views, so × usual means something.
    await add_metrics(sessions, tenant, await new_video(sessions, tenant, "usual"), views=10_000)
    original = await new_video(sessions, tenant, "Smoothie")
    await add_metrics(sessions, tenant, original, views=10_000, completion=40.0)
    v2 = await improved(sessions, tenant, original, "Smoothie · v2")
    await add_metrics(sessions, tenant, v2, views=30_000, completion=60.0)
    v3 = await improved(sessions, tenant, v2, "Smoothie · v3")

    # The same chain whichever version is asked about.
    for asked in (original, v2, v3):
        chain = await history(sessions, tenant, asked)
        assert [v.video_id for v in chain.versions] == [original, v2, v3]
    assert [v.version for v in chain.versions] == [1, 2, 3]
    assert [v.iteration for v in chain.versions] == [0, 1, 2]
    first, second, third = chain.versions
    assert (first.metrics.views, second.metrics.views) == (10_000, 30_000)
    assert second.metrics.completion_rate == 60.0
    assert second.metrics.times_usual is not None and second.metrics.times_usual > 1.0
    assert third.metrics.snapshots == 0 and third.metrics.views is None
    assert chain.branches == []


async def test_a_version_improved_twice_follows_the_newest_and_lists_the_other(
    sessions: SessionFactory,
) -> None:
    tenant = await new_tenant(sessions, "versions")
    original = await new_video(sessions, tenant, "Original")
    older = await improved(sessions, tenant, original, "first try")
    newer = await improved(sessions, tenant, original, "second try")

    from_original = await history(sessions, tenant, original)
    from_older = await history(sessions, tenant, older)

    assert [v.video_id for v in from_original.versions] == [original, newer]
    assert from_original.branches == [older]
    assert [v.video_id for v in from_older.versions] == [original, older], "asked, so shown"
    assert from_older.branches == [newer]


async def test_versions_compare_side_by_side_once_both_have_metrics(
    sessions: SessionFactory,
) -> None:
    tenant = await new_tenant(sessions, "versions")
    original = await new_video(sessions, tenant, "Original")
    await add_metrics(sessions, tenant, original, views=10_000, completion=40.0)
    v2 = await improved(sessions, tenant, original, "v2")

    early = await compare(sessions, tenant, original, v2)
    assert not early.comparable
    assert (
        early.message is not None and "version 2" in early.message and "no metrics" in early.message
    )

    await add_metrics(sessions, tenant, v2, views=25_000, completion=50.0)
    later = await compare(sessions, tenant, original, v2)

    assert later.comparable and later.message is None
    by_name = {m.name: m for m in later.metrics}
    assert (by_name["views"].base, by_name["views"].other) == (10_000, 25_000)
    assert by_name["views"].delta == 15_000 and by_name["views"].change == 1.5
    assert by_name["completion_rate"].delta == 10.0
    assert (later.base.version, later.other.version) == (1, 2)


async def test_unrelated_videos_and_other_tenants_videos_are_refused(
    sessions: SessionFactory,
) -> None:
    tenant = await new_tenant(sessions, "versions")
    stranger = await new_tenant(sessions, "versions-other")
    original = await new_video(sessions, tenant, "Original")
    unrelated = await new_video(sessions, tenant, "Unrelated")
    theirs = await new_video(sessions, stranger, "Theirs")

    with pytest.raises(NotAVersion):
        await compare(sessions, tenant, original, unrelated)
    with pytest.raises(DomainError) as raised:
        await compare(sessions, tenant, original, theirs)
    assert raised.value.code == FailureCode.VIDEO_NOT_FOUND
    with pytest.raises(DomainError):
        await history(sessions, tenant, theirs)


# --- predicted vs actual -----------------------------------------------------------------------


def test_a_viral_score_reads_as_a_multiple_of_the_usual() -> None:
    assert (predicted_ratio(10.0), predicted_ratio(3.0), predicted_ratio(0.2)) == (10.0, 3.0, 1.0)
    assert verdict(3.0, 9.0) == "outperformed"
    assert verdict(3.0, 3.5) == "as_predicted"
    assert verdict(6.0, 2.0) == "underperformed"


async def _script(
    sessions: SessionFactory,
    tenant: uuid.UUID,
    *,
    score: float | None,
    video: uuid.UUID | None = None,
    outlier: float | None = None,
) -> uuid.UUID:
    script_id = uuid.uuid4()
    async with sessions.begin() as session:
        post_id = None
        if outlier is not None:
            account = WatchedAccount(
                id=uuid.uuid4(), tenant_id=tenant, platform="tiktok", handle=f"h{uuid.uuid4().hex}"
            )
            session.add(account)
            await session.flush()
            post_id = uuid.uuid4()
            session.add(
                Post(
                    id=post_id,
                    tenant_id=tenant,
                    account_id=account.id,
                    platform="tiktok",
                    platform_post_id=uuid.uuid4().hex,
                    views=90_000,
                    outlier_score=outlier,
                )
            )
            await session.flush()
        session.add(
            Script(
                id=script_id,
                tenant_id=tenant,
                title="Coffee hook",
                content={},
                status="published" if post_id else "produced",
                status_history=[],
                predicted_viral_score=score,
                produced_video_id=video,
                published_post_id=post_id,
            )
        )
    return script_id


async def test_a_published_script_compares_its_score_with_the_posts_outlier_ratio(
    sessions: SessionFactory,
) -> None:
    tenant = await new_tenant(sessions, "predicted")
    video = await new_video(sessions, tenant, "produced")
    script = await _script(sessions, tenant, score=3.0, video=video, outlier=9.0)

    async with sessions() as session:
        performance = await script_performance(session, tenant_id=tenant, script_id=script)

    assert performance.predicted_viral_score == 3.0
    assert performance.actual_outlier_score == 9.0
    assert (performance.actual, performance.actual_source) == (9.0, "published_post")
    assert performance.verdict == "outperformed"


async def test_before_the_post_is_scored_the_videos_times_usual_is_the_actual(
    sessions: SessionFactory,
) -> None:
    tenant = await new_tenant(sessions, "predicted")
    await add_metrics(sessions, tenant, await new_video(sessions, tenant, "usual"), views=10_000)
    await add_metrics(sessions, tenant, await new_video(sessions, tenant, "usual2"), views=10_000)
    video = await new_video(sessions, tenant, "produced")
    await add_metrics(sessions, tenant, video, views=10_000)
    script = await _script(sessions, tenant, score=8.0, video=video)

    async with sessions() as session:
        performance = await script_performance(session, tenant_id=tenant, script_id=script)

    assert performance.actual_source == "produced_video"
    assert performance.actual == pytest.approx(1.0)
    assert performance.verdict == "underperformed", "predicted 8×, did the usual"


async def test_a_script_with_nothing_to_measure_says_so(sessions: SessionFactory) -> None:
    tenant = await new_tenant(sessions, "predicted")
    stranger = await new_tenant(sessions, "predicted-other")
    script = await _script(sessions, tenant, score=5.0)

    async with sessions() as session:
        performance = await script_performance(session, tenant_id=tenant, script_id=script)
        with pytest.raises(DomainError) as raised:
            await script_performance(session, tenant_id=stranger, script_id=script)

    assert performance.actual is None and performance.verdict is None
    assert performance.message == "the script has no produced video or published post yet"
    assert raised.value.code == FailureCode.OBJECT_NOT_FOUND
