"""Report pages: self-contained HTML with inline charts, numbers people read at a glance,
cached insights or a line saying there are none, and user text that stays text.

`seed_video` and `seed_series` make realistic metric histories in the database; the API and
browser tests use them too.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from reelflow.core.db import create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.tenants import create_tenant
from reelflow.improve import charts, performance, reports
from schemas.discover import Platform
from schemas.improve import (
    Insights,
    InsightsAnswer,
    PerformanceIn,
    PlatformLatest,
    TrafficSource,
    VideoPerformanceSummary,
)
from schemas.tables import Video

START = datetime(2026, 9, 1, 18, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
HOSTILE_TITLE = '<script>alert("owned")</script> Tom & Jerry\'s "best" $5 <b>hack</b>'
TWO_PLATFORMS = ((Platform.TIKTOK, 1.0), (Platform.INSTAGRAM, 0.35))
SOURCES = [TrafficSource.FYP, TrafficSource.FYP, TrafficSource.PROFILE, TrafficSource.HASHTAG]


async def seed_video(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    title: str = "Morning routine in 30 seconds",
    collection_id: uuid.UUID | None = None,
    days: int = 30,
    start: datetime = START,
    scale: int = 800,
    platforms: Sequence[tuple[Platform, float]] = (
        (Platform.TIKTOK, 1.0),
        (Platform.INSTAGRAM, 0.35),
    ),
    improved_from: uuid.UUID | None = None,
    iteration: int = 0,
) -> uuid.UUID:
    """A video with a daily history per platform that grows like a real post: fast, then
    slower; engagement a few percent; mostly For You traffic. The caller commits."""
    video = Video(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        collection_id=collection_id,
        title=title,
        origin="generated",
        source_key=f"videos/{uuid.uuid4()}",
        status="completed",
        stage="done",
        improved_from_video_id=improved_from,
        improvement_iteration=iteration,
    )
    session.add(video)
    await session.flush()
    for platform, share in platforms:
        for day in range(days):
            views = int(scale * share * (day + 1) ** 1.4)
            await performance.add_snapshot(
                session,
                tenant_id=tenant_id,
                video_id=video.id,
                snapshot=PerformanceIn(
                    platform=platform,
                    views=views,
                    likes=views * 7 // 100,
                    comments=views // 180,
                    shares=views // 120,
                    saves=views // 95,
                    completion_rate=38.0 + day % 7,
                    watch_time_seconds=views * 11.5,
                    traffic_source=SOURCES[day % len(SOURCES)],
                    recorded_at=start + timedelta(days=day),
                ),
                now=NOW,
            )
    return video.id


async def seed_series(
    session: AsyncSession, tenant_id: uuid.UUID, *, episodes: int = 6
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A collection of episodes posted every few days, some doing better than others."""
    collection_id = uuid.uuid4()
    videos = []
    for n in range(episodes):
        videos.append(
            await seed_video(
                session,
                tenant_id,
                title=f"Episode {n + 1}: {'#cooking ' if n % 2 else ''}quick pasta",
                collection_id=collection_id,
                days=10,
                start=START + timedelta(days=3 * n + n % 2),
                scale=300 + 250 * ((n * 7) % 5),
                platforms=((Platform.TIKTOK, 1.0),),
            )
        )
    return collection_id, videos


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


async def make_tenant(session: AsyncSession) -> uuid.UUID:
    return (await create_tenant(session, name="creator")).tenant_id


def page_svgs(page: str) -> list[ET.Element]:
    """Every inline chart, parsed as XML (each must stand on its own)."""
    return [ET.fromstring(svg) for svg in re.findall(r"<svg\b.*?</svg>", page, flags=re.DOTALL)]


# --- from the database ----------------------------------------------------------------------


async def test_a_video_page_shows_its_numbers_every_chart_and_no_cached_insights_yet(
    session: AsyncSession,
) -> None:
    tenant = await make_tenant(session)
    video = await seed_video(session, tenant)
    report = await reports.video_report(session, tenant_id=tenant, video_id=video)
    page = reports.render_video_page(report)

    assert page.startswith("<!DOCTYPE html>")
    assert "Morning routine in 30 seconds" in page
    totals = report.summary.totals["views"]
    assert totals > 1000
    assert f"{totals:,}" in page  # 158,034 — thousands separators, as on the charts
    assert "TikTok" in page and "Instagram" in page
    assert [plan.name for plan in report.charts] == ["views", "engagement", "traffic", "versions"]
    assert len(re.findall(r'<figure class="chart" data-chart="', page)) == 4
    assert len(page_svgs(page)) == 4
    assert "No insights are cached yet" in page
    assert f"/v1/videos/{video}/insights" in page


async def test_an_improved_video_is_compared_with_its_original(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    original = await seed_video(session, tenant, title="Original cut")
    improved = await seed_video(
        session,
        tenant,
        title="Original cut, tighter hook",
        start=START + timedelta(days=45),
        days=8,
        scale=1500,
        improved_from=original,
        iteration=1,
    )
    for video, expected in (
        (original, ["Original (this video)", "Improvement 1"]),
        (improved, ["Original", "Improvement 1 (this video)"]),
    ):
        plan = await reports.video_chart(session, tenant_id=tenant, video_id=video, name="versions")
        svg = plan.render("svg").decode()
        assert all(label in svg for label in expected), (video, expected)


async def test_a_series_page_lists_best_and_worst_episodes(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    collection, _ = await seed_series(session, tenant)
    report = await reports.series_report(session, tenant_id=tenant, collection_id=collection)
    page = reports.render_series_page(report)
    assert "Best episodes" in page and "Worst episodes" in page
    assert len(page_svgs(page)) == 2
    assert "Episode 1: quick pasta" in page
    assert report.performance.best_episodes[0].title in page
    assert "No insights are cached yet" in page


async def test_the_fingerprint_changes_with_a_new_snapshot_only(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    video = await seed_video(session, tenant, days=3)
    first = await reports.video_report(session, tenant_id=tenant, video_id=video)
    again = await reports.video_report(session, tenant_id=tenant, video_id=video)
    assert first.fingerprint == again.fingerprint
    await performance.add_snapshot(
        session,
        tenant_id=tenant,
        video_id=video,
        snapshot=PerformanceIn(platform=Platform.TIKTOK, views=99_999, recorded_at=NOW),
        now=NOW,
    )
    changed = await reports.video_report(session, tenant_id=tenant, video_id=video)
    assert changed.fingerprint != first.fingerprint
    assert changed.charts[0].fingerprint != first.charts[0].fingerprint


# --- pages from hand-made numbers -----------------------------------------------------------


def hand_made_report(title: str, insights: InsightsAnswer | None) -> reports.VideoReport:
    video_id = uuid.uuid4()
    summary = VideoPerformanceSummary(
        video_id=video_id,
        snapshots=2,
        first_recorded_at=START,
        last_recorded_at=START + timedelta(days=1),
        totals={"views": 12_345, "likes": 800, "comments": 40, "shares": 30, "saves": 20},
        engagement_rate=0.0719,
        platforms=[
            PlatformLatest(
                platform=Platform.TIKTOK,
                recorded_at=START + timedelta(days=1),
                views=12_345,
                likes=800,
                comments=40,
                shares=30,
                saves=20,
                engagement_rate=0.0719,
                times_usual=2.4,
            )
        ],
        best_platform=Platform.TIKTOK,
        traffic_breakdown={"fyp": 1.0},
    )
    plan = reports.ChartPlan(
        name="traffic",
        description="Where views came from",
        fingerprint=charts.fingerprint("t", title),
        draw=lambda: charts.traffic_sources({"fyp": 1.0}),
    )
    return reports.VideoReport(
        video_id=video_id, title=title, summary=summary, insights=insights, charts=[plan]
    )


def test_titles_and_insights_are_escaped_everywhere() -> None:
    insights = InsightsAnswer(
        insights=Insights(
            strengths=["Hook <img src=x onerror=alert(1)> in the first second"],
            weaknesses=["</li></ul><script>alert(2)</script>"],
            traffic_insights='Mostly For You & "profile"',
            patterns="Growth slows after day 3",
            recommendations=["Keep the hook"],
            next_video_suggestions=["Part 2"],
        ),
        generated_at=NOW,
        cached=True,
        analyst="statistical",
        statistical=True,
    )
    page = reports.render_video_page(hand_made_report(HOSTILE_TITLE, insights))
    assert "<script" not in page
    assert "<img" not in page
    assert "<b>hack" not in page
    assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt; Tom &amp; Jerry" in page
    assert "<title>&lt;script&gt;" in page
    assert "Hook &lt;img src=x onerror=alert(1)&gt; in the first second" in page
    assert "By statistical analysis of your numbers, generated 2026-11-28 12:00 UTC." in page
    assert "12,345" in page and "7.2%" in page and "2.4×" in page
    assert "What worked" in page and "Ideas for the next video" in page


def test_an_answer_without_insights_shows_its_reason() -> None:
    answer = InsightsAnswer(
        insights=None,
        generated_at=None,
        cached=False,
        analyst="statistical",
        statistical=True,
        message="No numbers yet: add a snapshot first.",
    )
    page = reports.render_video_page(hand_made_report("Plain", answer))
    assert "No numbers yet: add a snapshot first." in page


def test_inlined_charts_keep_ids_of_their_own() -> None:
    first = charts.to_svg(charts.views_over_time([]))
    page = reports.inline_svg(first, prefix="views") + reports.inline_svg(first, prefix="versions")
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert ids and len(ids) == len(set(ids))
    for reference in re.findall(r"url\(#([^)]+)\)|href=\"#([^\"]+)\"", page):
        target = next(r for r in reference if r)
        assert target in ids
    assert "<?xml" not in page and "<!DOCTYPE" not in page and "<metadata>" not in page


def test_inlining_leaves_chart_text_as_drawn() -> None:
    svg = charts.to_svg(
        charts.series_comparison(
            charts.SeriesEpisodes([charts.EpisodeBar('id="x" url(#y)', 10, 1.0)])
        )
    )
    assert 'id="x" url(#y)' in "".join(
        "".join(t.itertext()) for t in ET.fromstring(reports.inline_svg(svg, prefix="p")).iter()
    )


async def test_the_series_daily_views_add_up_like_the_chart_rule(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    collection, videos = await seed_series(session, tenant, episodes=5)
    everything = [
        row
        for video in videos
        for row in await performance.list_snapshots(session, tenant_id=tenant, video_id=video)
    ]
    by_day: dict[object, int] = {}
    for moment, total in charts.total_views_timeline(everything):
        by_day[moment.date()] = total
    daily = await reports.series_daily_views(session, tenant_id=tenant, collection_id=collection)
    assert [(day.date(), total) for day, total in daily] == list(by_day.items())
    assert all(day.tzinfo is not None for day, _ in daily)


async def test_a_video_without_numbers_gets_a_page_that_says_so(session: AsyncSession) -> None:
    tenant = await make_tenant(session)
    video = await seed_video(session, tenant, title="Just uploaded", days=0)
    page = reports.render_video_page(
        await reports.video_report(session, tenant_id=tenant, video_id=video)
    )
    assert len(page_svgs(page)) == 4
    texts = ["".join(svg.itertext()) for svg in page_svgs(page)]
    assert all("No" in text for text in texts), texts
    assert "No performance numbers yet." in texts[0]
    assert "none recorded yet" in page
    assert "No insights are cached yet" in page
