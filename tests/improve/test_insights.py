"""The insights service on real Postgres: no metrics, cache hits, invalidation by new metrics,
the hourly limit (shared through the database, exact under concurrency), the ledger."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import pytest_asyncio
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.chat.structured import TokenUsage
from reelflow.core.db import SessionFactory, create_engine, session_factory
from reelflow.core.errors import DomainError
from reelflow.core.migrate import upgrade_database
from reelflow.core.settings import Settings
from reelflow.core.tenants import create_tenant
from reelflow.improve import performance
from reelflow.improve.analysts import (
    AnalystAnswer,
    InsightAnalyst,
    InsightsFailed,
    SeriesInsightContext,
    StatisticalAnalyst,
    VideoInsightContext,
)
from reelflow.improve.insights import (
    InsightsRateLimited,
    cached_insights,
    cached_series_insights,
    fresh_generations_in_window,
    reservation_lock_key,
    series_insights,
    video_insights,
)
from schemas.discover import Platform
from schemas.failures import FailureCode
from schemas.improve import Insights, InsightsAnswer, PerformanceIn, TrafficSource
from schemas.tables import LedgerEntry, Video

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


# --- helpers shared with the API tests --------------------------------------------------------


async def new_tenant(sessions: SessionFactory, name: str) -> uuid.UUID:
    async with sessions.begin() as session:
        created = await create_tenant(session, name=f"{name}-{uuid.uuid4().hex[:6]}")
    return created.tenant_id


async def new_video(
    sessions: SessionFactory,
    tenant_id: uuid.UUID,
    title: str = "Ten-second smoothie #smoothie",
    *,
    collection_id: uuid.UUID | None = None,
) -> uuid.UUID:
    video_id = uuid.uuid4()
    async with sessions.begin() as session:
        session.add(
            Video(
                id=video_id,
                tenant_id=tenant_id,
                collection_id=collection_id,
                title=title,
                origin="upload",
                source_key=f"tenants/{tenant_id}/videos/{video_id}/source.mp4",
                status="completed",
                stage="completed",
                progress=1.0,
                cost_usd=Decimal(0),
                duration_s=14.0,
            )
        )
    return video_id


async def add_metrics(
    sessions: SessionFactory,
    tenant_id: uuid.UUID,
    video_id: uuid.UUID,
    *,
    views: int,
    day: int = 0,
    shares: int = 0,
    completion: float | None = None,
) -> None:
    async with sessions.begin() as session:
        await performance.add_snapshot(
            session,
            tenant_id=tenant_id,
            video_id=video_id,
            snapshot=PerformanceIn(
                platform=Platform.TIKTOK,
                views=views,
                likes=views // 10,
                shares=shares,
                completion_rate=completion,
                traffic_source=TrafficSource.FYP,
                recorded_at=NOW - timedelta(days=10 - day),
            ),
            now=NOW,
        )


class CountingAnalyst(StatisticalAnalyst):
    """The statistical analyst, counting its calls and optionally failing or waiting."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail_with: Exception | None = None
        self.gate: threading.Event | None = None

    def analyze_video(self, context: VideoInsightContext) -> AnalystAnswer:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        return super().analyze_video(context)

    def analyze_series(self, context: SeriesInsightContext) -> AnalystAnswer:
        self.calls += 1
        return super().analyze_series(context)


class PricedAnalyst:
    """A provider analyst as the service sees it: named, billed in tokens."""

    provider = "anthropic"
    model = "claude-haiku-4-5"
    name = "anthropic/claude-haiku-4-5"
    statistical = False

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse

    def analyze_video(self, context: VideoInsightContext) -> AnalystAnswer:
        if self.refuse:
            raise InsightsFailed(FailureCode.CONTENT_BLOCKED, "declined", usage=TokenUsage(500, 10))
        return AnalystAnswer(
            Insights(strengths=["a hook"]), "claude-haiku-4-5", TokenUsage(1000, 200)
        )

    def analyze_series(self, context: SeriesInsightContext) -> AnalystAnswer:
        return AnalystAnswer(Insights(), "claude-haiku-4-5", TokenUsage(10, 10))


# --- fixtures ------------------------------------------------------------------------------------


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


@pytest.fixture
def settings() -> Settings:
    return Settings(insights_fresh_per_hour=10, insights_cache_ttl_s=86400)


@pytest_asyncio.fixture(loop_scope="session")
async def tenant(sessions: SessionFactory) -> uuid.UUID:
    return await new_tenant(sessions, "insights")


async def ask(
    sessions: SessionFactory,
    tenant_id: uuid.UUID,
    video_id: uuid.UUID,
    analyst: InsightAnalyst,
    settings: Settings,
    *,
    refresh: bool = False,
    now: datetime = NOW,
) -> InsightsAnswer:
    return await video_insights(
        sessions,
        tenant_id=tenant_id,
        video_id=video_id,
        refresh=refresh,
        analyst=analyst,
        settings=settings,
        now=now,
    )


# --- tests ---------------------------------------------------------------------------------------


async def test_a_video_without_metrics_gets_a_clear_answer(
    sessions: SessionFactory, tenant: uuid.UUID, settings: Settings
) -> None:
    video = await new_video(sessions, tenant)
    analyst = CountingAnalyst()

    answer = await video_insights(
        sessions,
        tenant_id=tenant,
        video_id=video,
        refresh=False,
        analyst=analyst,
        settings=settings,
        now=NOW,
    )

    assert answer.insights is None and answer.generated_at is None
    assert answer.message is not None and "no performance metrics" in answer.message
    assert analyst.calls == 0
    async with sessions() as session:
        assert await fresh_generations_in_window(session, tenant_id=tenant, now=NOW) == 0


async def test_cache_hit_then_new_metrics_invalidate_then_refresh_forces(
    sessions: SessionFactory, tenant: uuid.UUID, settings: Settings
) -> None:
    other = await new_video(sessions, tenant, "Another video")
    await add_metrics(sessions, tenant, other, views=10_000, completion=40)
    video = await new_video(sessions, tenant)
    await add_metrics(sessions, tenant, video, views=10_000, day=0, completion=70)
    await add_metrics(sessions, tenant, video, views=42_000, day=2, completion=72)
    analyst = CountingAnalyst()

    async def get(refresh: bool = False, now: datetime = NOW) -> tuple[bool, datetime | None]:
        answer = await video_insights(
            sessions,
            tenant_id=tenant,
            video_id=video,
            refresh=refresh,
            analyst=analyst,
            settings=settings,
            now=now,
        )
        assert answer.insights is not None
        assert (answer.analyst, answer.statistical) == ("statistical", True)
        return answer.cached, answer.generated_at

    first = await get()
    assert first == (False, NOW)
    assert await get(now=NOW + timedelta(hours=23)) == (True, NOW)
    assert analyst.calls == 1
    # Past the 24 h the same metrics are analysed again.
    assert await get(now=NOW + timedelta(hours=25)) == (False, NOW + timedelta(hours=25))
    # A new snapshot changes the fingerprint: fresh insights at once.
    await add_metrics(sessions, tenant, video, views=50_000, day=3, completion=72)
    assert await get(now=NOW + timedelta(hours=26)) == (False, NOW + timedelta(hours=26))
    assert await get(now=NOW + timedelta(hours=26, minutes=1)) == (
        True,
        NOW + timedelta(hours=26),
    )
    # refresh=True makes new ones even when cached ones are valid.
    assert await get(refresh=True, now=NOW + timedelta(hours=27)) == (
        False,
        NOW + timedelta(hours=27),
    )
    assert analyst.calls == 4

    async with sessions() as session:
        cached = await cached_insights(
            session, tenant_id=tenant, video_id=video, now=NOW + timedelta(hours=27)
        )
        assert cached is not None and cached.cached and cached.insights is not None
        assert cached.generated_at == NOW + timedelta(hours=27)
        assert any("your usual on TikTok" in s for s in cached.insights.strengths)
        # Never generating: a video whose insights were never made has none.
        assert await cached_insights(session, tenant_id=tenant, video_id=other) is None


async def test_the_eleventh_fresh_request_in_an_hour_is_refused_cached_ones_never_count(
    sessions: SessionFactory, settings: Settings
) -> None:
    tenant = await new_tenant(sessions, "limit")
    videos = []
    for index in range(11):
        video = await new_video(sessions, tenant, f"Video {index}")
        await add_metrics(sessions, tenant, video, views=1_000 * (index + 1))
        videos.append(video)
    analyst = CountingAnalyst()

    for index in range(10):
        answer = await ask(
            sessions, tenant, videos[index], analyst, settings, now=NOW + timedelta(minutes=index)
        )
        assert not answer.cached
    # Cached answers are still served, as often as asked, and do not count.
    for _ in range(3):
        again = await ask(
            sessions, tenant, videos[0], analyst, settings, now=NOW + timedelta(minutes=30)
        )
        assert again.cached

    with pytest.raises(InsightsRateLimited) as limited:
        await ask(sessions, tenant, videos[10], analyst, settings, now=NOW + timedelta(minutes=30))
    # The first generation (at NOW) leaves the hour at NOW + 60 min: 30 minutes from now.
    assert limited.value.retry_after_seconds == 30 * 60
    assert limited.value.code == FailureCode.INSIGHTS_RATE_LIMITED
    with pytest.raises(InsightsRateLimited):
        await ask(
            sessions,
            tenant,
            videos[0],
            analyst,
            settings,
            refresh=True,
            now=NOW + timedelta(minutes=59),
        )
    assert analyst.calls == 10

    # An hour after the first, one place is free again.
    later = await ask(
        sessions, tenant, videos[10], analyst, settings, now=NOW + timedelta(minutes=60, seconds=1)
    )
    assert not later.cached
    # Another tenant has its own hour.
    stranger = await new_tenant(sessions, "stranger")
    theirs = await new_video(sessions, stranger)
    await add_metrics(sessions, stranger, theirs, views=500)
    assert not (
        await ask(sessions, stranger, theirs, analyst, settings, now=NOW + timedelta(minutes=30))
    ).cached


async def test_two_simultaneous_requests_for_the_last_place_exactly_one_passes(
    sessions: SessionFactory, database_url: str
) -> None:
    settings = Settings(insights_fresh_per_hour=1)
    tenant = await new_tenant(sessions, "race")
    first = await new_video(sessions, tenant, "First")
    second = await new_video(sessions, tenant, "Second")
    for video in (first, second):
        await add_metrics(sessions, tenant, video, views=2_000)
    analyst = CountingAnalyst()

    # Two engines: two API processes, each with its own connection pool. A third connection
    # holds the tenant's reservation lock until both requests wait on it, so they reach the
    # count at the same moment rather than one after the other by chance.
    other_process = create_engine(database_url, pool_size=2)
    key = {"key": reservation_lock_key(tenant)}
    try:
        async with sessions() as holder:
            await holder.execute(text("SELECT pg_advisory_lock(hashtextextended(:key, 0))"), key)
            requests = asyncio.gather(
                ask(sessions, tenant, first, analyst, settings),
                ask(session_factory(other_process), tenant, second, analyst, settings),
                return_exceptions=True,
            )
            waiting = 0
            for _ in range(200):
                await asyncio.sleep(0.05)
                waiting = int(
                    await holder.scalar(
                        text(
                            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                            "AND NOT granted AND database = "
                            "(SELECT oid FROM pg_database WHERE datname = current_database())"
                        )
                    )
                    or 0
                )
                if waiting == 2 or requests.done():
                    break
            await holder.execute(text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))"), key)
            await holder.commit()
            results = await requests
    finally:
        await other_process.dispose()
    assert waiting == 2, "both requests should have waited for the same place"

    refused = [r for r in results if isinstance(r, InsightsRateLimited)]
    passed = [r for r in results if not isinstance(r, BaseException)]
    assert (len(passed), len(refused)) == (1, 1)
    assert analyst.calls == 1


async def test_a_failed_generation_gives_its_place_back(sessions: SessionFactory) -> None:
    settings = Settings(insights_fresh_per_hour=1)
    tenant = await new_tenant(sessions, "failing")
    video = await new_video(sessions, tenant)
    await add_metrics(sessions, tenant, video, views=2_000)
    analyst = CountingAnalyst()
    analyst.fail_with = DomainError(FailureCode.ANALYSIS_INVALID, "bad answer")

    with pytest.raises(DomainError):
        await ask(sessions, tenant, video, analyst, settings)
    async with sessions() as session:
        assert await fresh_generations_in_window(session, tenant_id=tenant, now=NOW) == 0

    analyst.fail_with = None
    assert not (await ask(sessions, tenant, video, analyst, settings)).cached


async def test_a_canceled_request_gives_its_place_back(sessions: SessionFactory) -> None:
    settings = Settings(insights_fresh_per_hour=1)
    tenant = await new_tenant(sessions, "canceled")
    video = await new_video(sessions, tenant)
    await add_metrics(sessions, tenant, video, views=2_000)
    analyst = CountingAnalyst()
    analyst.gate = threading.Event()

    request = asyncio.ensure_future(ask(sessions, tenant, video, analyst, settings))
    for _ in range(200):
        if analyst.calls:
            break
        await asyncio.sleep(0.02)
    request.cancel()  # the client went away while the analyst was working
    analyst.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await request

    async with sessions() as session:
        assert await fresh_generations_in_window(session, tenant_id=tenant, now=NOW) == 0
    analyst.gate = None
    assert not (await ask(sessions, tenant, video, analyst, settings)).cached


async def test_provider_tokens_go_to_the_ledger_even_when_refused(
    sessions: SessionFactory, settings: Settings
) -> None:
    tenant = await new_tenant(sessions, "ledger")
    video = await new_video(sessions, tenant)
    await add_metrics(sessions, tenant, video, views=2_000)

    answer = await ask(sessions, tenant, video, PricedAnalyst(), settings)
    assert answer.analyst == "anthropic/claude-haiku-4-5" and not answer.statistical
    with pytest.raises(InsightsFailed):
        await ask(sessions, tenant, video, PricedAnalyst(refuse=True), settings, refresh=True)
    # Served from the cache: nothing billed.
    assert (await ask(sessions, tenant, video, PricedAnalyst(), settings)).cached

    async with sessions() as session:
        rows = (
            await session.scalars(
                select(LedgerEntry).where(LedgerEntry.tenant_id == tenant).order_by(LedgerEntry.id)
            )
        ).all()
    assert [(r.operation, int(r.units), r.model, r.video_id) for r in rows] == [
        ("chat_input", 1000, "claude-haiku-4-5", video),
        ("chat_output", 200, "claude-haiku-4-5", video),
        ("chat_input", 500, "claude-haiku-4-5", video),
        ("chat_output", 10, "claude-haiku-4-5", video),
    ]
    assert rows[0].cost_usd == Decimal("0.001")  # $1 per million input tokens


async def test_another_tenants_video_is_not_found(
    sessions: SessionFactory, tenant: uuid.UUID, settings: Settings
) -> None:
    stranger = await new_tenant(sessions, "stranger")
    theirs = await new_video(sessions, stranger)
    await add_metrics(sessions, stranger, theirs, views=100)

    with pytest.raises(DomainError) as raised:
        await ask(sessions, tenant, theirs, CountingAnalyst(), settings)
    assert raised.value.code == FailureCode.VIDEO_NOT_FOUND


async def test_series_insights_are_cached_like_a_videos(
    sessions: SessionFactory, settings: Settings
) -> None:
    tenant = await new_tenant(sessions, "series")
    collection = uuid.uuid4()
    episodes = []
    for index, views in enumerate((1_000, 9_000, 2_000, 3_000)):
        video = await new_video(
            sessions, tenant, f"Episode {index + 1} #series", collection_id=collection
        )
        await add_metrics(sessions, tenant, video, views=views, day=index)
        episodes.append(video)
    analyst = CountingAnalyst()

    async def get(now: datetime) -> tuple[bool, datetime | None]:
        answer = await series_insights(
            sessions,
            tenant_id=tenant,
            collection_id=collection,
            refresh=False,
            analyst=analyst,
            settings=settings,
            now=now,
        )
        assert answer.insights is not None and answer.statistical
        assert any("Episode 2" in s for s in answer.insights.strengths)
        return answer.cached, answer.generated_at

    assert await get(NOW) == (False, NOW)
    assert await get(NOW + timedelta(minutes=5)) == (True, NOW)
    await add_metrics(sessions, tenant, episodes[0], views=1_500, day=5)
    assert await get(NOW + timedelta(minutes=6)) == (False, NOW + timedelta(minutes=6))
    assert analyst.calls == 2
    async with sessions() as session:
        cached = await cached_series_insights(
            session, tenant_id=tenant, collection_id=collection, now=NOW + timedelta(minutes=7)
        )
    assert cached is not None and cached.generated_at == NOW + timedelta(minutes=6)

    with pytest.raises(DomainError) as raised:
        await series_insights(
            sessions,
            tenant_id=tenant,
            collection_id=uuid.uuid4(),
            refresh=False,
            analyst=analyst,
            settings=settings,
            now=NOW,
        )
    assert raised.value.code == FailureCode.COLLECTION_NOT_FOUND


# --- the CLI -------------------------------------------------------------------------------------


async def test_the_cli_prints_insights_and_refuses_readably(
    sessions: SessionFactory, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from reelflow.improve.insights_commands import app

    tenant = await new_tenant(sessions, "cli")
    video = await new_video(sessions, tenant)
    await add_metrics(sessions, tenant, video, views=5_000, completion=85)
    bare = await new_video(sessions, tenant, "No numbers yet")
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REELFLOW_TENANT_ID", str(tenant))
    monkeypatch.setenv("INSIGHTS_PROVIDER", "local")
    monkeypatch.setenv("COLUMNS", "160")
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        # The CLI runs its own event loop: off this test's loop, on a thread.
        result = runner.invoke(app, list(args), terminal_width=120)
        return result.exit_code, result.stdout, result.stderr

    code, out, _ = await asyncio.to_thread(run, str(video))
    assert code == 0
    assert "Strengths" in out and "Weaknesses" in out and "Next video" in out
    assert "For You feed" in out
    assert "statistical · fresh" in out
    code, out, _ = await asyncio.to_thread(run, str(video), "--json")
    assert code == 0 and '"cached": true' in out
    code, out, _ = await asyncio.to_thread(run, str(bare))
    assert code == 0 and "no performance metrics" in out
    code, _, err = await asyncio.to_thread(run, str(uuid.uuid4()))
    assert code == 1 and "error:" in err and "Traceback" not in err
    code, _, err = await asyncio.to_thread(run, str(video), "--series", str(uuid.uuid4()))
    assert code == 1 and "either a VIDEO_ID or --series" in err
