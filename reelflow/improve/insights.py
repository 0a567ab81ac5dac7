"""Insights of a video or a series: cached by the metrics they were made from, rate limited,
priced.

* **Cache.** An answer is stored under (tenant, subject, metrics fingerprint, analyst) with
  the time it was made (`insight_cache`). The same metrics, younger than
  `INSIGHTS_CACHE_TTL_S` (24 h), are answered from the cache (`cached=True`); new, changed or
  deleted snapshots change the fingerprint, so the next request makes new insights. Nothing
  has to remember to invalidate anything.
* **Rate limit.** At most `INSIGHTS_FRESH_PER_HOUR` fresh generations per tenant in any
  sliding hour (`insight_generations`). A generation reserves its place before the analyst
  runs: one transaction takes a per-tenant advisory lock, counts the last hour's rows and
  inserts one, so API processes and workers share the count and two simultaneous requests
  for the last place cannot both get it. A failed generation gives its place back. Cached
  answers never count. Over the limit: `InsightsRateLimited`, with the seconds until the
  oldest counted generation leaves the hour.
* **Price.** A provider's tokens go to the ledger (`chat_input`/`chat_output` of its model),
  also when its answer was refused after being billed; the statistical analyst costs nothing.

A video without snapshots gets an answer saying so (`insights=None`, `message`), not an error.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.chat.structured import TokenUsage
from reelflow.core.db import SessionFactory
from reelflow.core.errors import DomainError
from reelflow.core.ledger import Usage, record_usage
from reelflow.core.settings import Settings
from reelflow.improve import aggregates
from reelflow.improve.analysts import (
    AnalystAnswer,
    InsightAnalyst,
    InsightsFailed,
    PlatformUsual,
    SeriesInsightContext,
    VideoInsightContext,
)
from reelflow.improve.performance import list_snapshots, require_video
from schemas.discover_tables import Post, Script
from schemas.failures import FailureCode
from schemas.generation_tables import Generation
from schemas.improve import Insights, InsightsAnswer, VideoPerformanceSummary
from schemas.improve_tables import VideoPerformance, VideoPostLink
from schemas.improvement_tables import InsightCacheEntry, InsightGeneration
from schemas.tables import Video

logger = logging.getLogger(__name__)

SUBJECT_VIDEO = "video"
SUBJECT_COLLECTION = "collection"
RATE_WINDOW = timedelta(hours=1)
DEFAULT_CACHE_TTL_S = 86400

NO_METRICS_MESSAGE = (
    "This video has no performance metrics yet: add a snapshot (views, likes, … on a "
    "platform) or import them, then ask again."
)
NO_SERIES_METRICS_MESSAGE = (
    "No episode of this series has performance metrics yet: add or import snapshots for its "
    "videos, then ask again."
)
STATISTICAL_MESSAGE = (
    "Derived from the numbers against your usual ones (statistical analysis, no language model)."
)

T = TypeVar("T")


class RunInThread(Protocol):
    """Runs blocking work off the event loop (`anyio.to_thread.run_sync`, an executor)."""

    def __call__(self, func: Callable[[], T], /) -> Awaitable[T]: ...


def _default_thread(func: Callable[[], T], /) -> Awaitable[T]:
    return anyio.to_thread.run_sync(func)


class InsightsRateLimited(DomainError):
    """More fresh generations than the tenant's hourly limit; `retry_after_s` says when one
    place frees up. The API answers 429 with `Retry-After`."""

    def __init__(self, retry_after_s: int, limit: int) -> None:
        super().__init__(
            FailureCode.INSIGHTS_RATE_LIMITED,
            f"at most {limit} fresh insights per hour; cached insights are still served. "
            f"Try again in {retry_after_s} s.",
            retry_after_s=retry_after_s,
        )
        self.retry_after_seconds = retry_after_s
        self.limit = limit


# --- cache ----------------------------------------------------------------------------------------


async def _cached_entry(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    kind: str,
    subject_id: uuid.UUID,
    fingerprint: str,
    analyst: str | None,
    fresh_after: datetime,
) -> InsightCacheEntry | None:
    query = select(InsightCacheEntry).where(
        InsightCacheEntry.tenant_id == tenant_id,
        InsightCacheEntry.subject_kind == kind,
        InsightCacheEntry.subject_id == subject_id,
        InsightCacheEntry.metrics_fingerprint == fingerprint,
        InsightCacheEntry.generated_at > fresh_after,
    )
    if analyst is not None:
        query = query.where(InsightCacheEntry.analyst == analyst)
    entry: InsightCacheEntry | None = await session.scalar(
        query.order_by(InsightCacheEntry.generated_at.desc()).limit(1)
    )
    return entry


def _answer_from(entry: InsightCacheEntry) -> InsightsAnswer:
    return InsightsAnswer(
        insights=Insights.model_validate(entry.insights),
        generated_at=entry.generated_at,
        cached=True,
        analyst=entry.analyst,
        statistical=entry.statistical,
        message=STATISTICAL_MESSAGE if entry.statistical else None,
    )


async def _store(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    kind: str,
    subject_id: uuid.UUID,
    fingerprint: str,
    analyst: InsightAnalyst,
    insights: Insights,
    generated_at: datetime,
) -> None:
    values = {
        "insights": insights.model_dump(mode="json"),
        "statistical": analyst.statistical,
        "generated_at": generated_at,
    }
    await session.execute(
        insert(InsightCacheEntry)
        .values(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            subject_kind=kind,
            subject_id=subject_id,
            metrics_fingerprint=fingerprint,
            analyst=analyst.name,
            **values,
        )
        .on_conflict_do_update(constraint="uq_insight_cache_key", set_=values)
    )


# --- rate limit -----------------------------------------------------------------------------------


async def fresh_generations_in_window(
    session: AsyncSession, *, tenant_id: uuid.UUID, now: datetime
) -> int:
    """How many fresh generations count against the tenant's limit right now."""
    count = await session.scalar(
        select(func.count())
        .select_from(InsightGeneration)
        .where(
            InsightGeneration.tenant_id == tenant_id,
            InsightGeneration.generated_at > now - RATE_WINDOW,
        )
    )
    return int(count or 0)


def reservation_lock_key(tenant_id: uuid.UUID) -> str:
    """The text whose hash names the tenant's advisory lock while a place is being taken."""
    return f"reelflow-insights:{tenant_id}"


async def _reserve(
    sessions: SessionFactory,
    *,
    tenant_id: uuid.UUID,
    kind: str,
    subject_id: uuid.UUID,
    analyst: str,
    limit: int,
    now: datetime,
) -> int:
    """Take one place in the tenant's hourly window, or raise `InsightsRateLimited`."""
    async with sessions() as session, session.begin():
        # Serialises reservations of one tenant (across processes) until this commits; other
        # tenants and everything else on the tenant's rows are not blocked.
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": reservation_lock_key(tenant_id)},
        )
        window = (
            await session.scalars(
                select(InsightGeneration.generated_at)
                .where(
                    InsightGeneration.tenant_id == tenant_id,
                    InsightGeneration.generated_at > now - RATE_WINDOW,
                )
                .order_by(InsightGeneration.generated_at)
            )
        ).all()
        if len(window) >= limit:
            if limit <= 0:
                raise InsightsRateLimited(int(RATE_WINDOW.total_seconds()), limit)
            # A place frees when enough of the oldest leave the hour to drop below the limit.
            frees_at = window[len(window) - limit] + RATE_WINDOW
            raise InsightsRateLimited(max(1, math.ceil((frees_at - now).total_seconds())), limit)
        reserved = await session.scalar(
            insert(InsightGeneration)
            .values(
                tenant_id=tenant_id,
                subject_kind=kind,
                subject_id=subject_id,
                analyst=analyst,
                generated_at=now,
            )
            .returning(InsightGeneration.id)
        )
    assert reserved is not None
    return int(reserved)


async def _release(sessions: SessionFactory, reservation: int) -> None:
    async with sessions() as session, session.begin():
        await session.execute(delete(InsightGeneration).where(InsightGeneration.id == reservation))


# --- ledger ---------------------------------------------------------------------------------------


async def _record_tokens(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    analyst: InsightAnalyst,
    model: str,
    usage: TokenUsage | None,
    reservation: int,
    video_id: uuid.UUID | None,
) -> None:
    if usage is None or analyst.provider == "local":
        return
    for step, operation, units in (
        ("input", "chat_input", usage.input_tokens),
        ("output", "chat_output", usage.output_tokens),
    ):
        if units <= 0:
            continue
        await record_usage(
            session,
            Usage(
                idempotency_key=f"insights-{reservation}-{step}",
                tenant_id=tenant_id,
                step=f"insights.{step}",
                provider=analyst.provider,
                operation=operation,
                model=model,
                units=Decimal(units),
                video_id=video_id,
            ),
        )


# --- what the analyst reads -----------------------------------------------------------------------


async def tenant_usual(session: AsyncSession, *, tenant_id: uuid.UUID) -> dict[str, PlatformUsual]:
    """The tenant's usual numbers per platform: medians over each video's latest snapshot.

    Views are the same baselines `aggregates.tenant_baselines` computes; the rates (engagement,
    shares, completion) are medians of each video's own rate, so one huge video does not set
    them.
    """
    rows = await session.execute(
        text(
            """
            WITH latest AS (
                SELECT DISTINCT ON (video_id, platform)
                       platform, views, likes, comments, shares, saves, completion_rate
                FROM video_performance
                WHERE tenant_id = :tenant_id
                ORDER BY video_id, platform, recorded_at DESC
            )
            SELECT platform,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY views) AS views,
                   percentile_cont(0.5) WITHIN GROUP (
                       ORDER BY (likes + comments + shares + saves)::float8 / views
                   ) FILTER (WHERE views > 0) AS engagement_rate,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY shares::float8 / views)
                       FILTER (WHERE views > 0) AS share_rate,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY completion_rate)
                       AS completion_rate
            FROM latest
            GROUP BY platform
            """
        ),
        {"tenant_id": tenant_id},
    )
    return {
        row.platform: PlatformUsual(
            views=row.views,
            engagement_rate=row.engagement_rate,
            share_rate=row.share_rate,
            completion_rate=row.completion_rate,
        )
        for row in rows
    }


async def _video_context(
    session: AsyncSession, *, tenant_id: uuid.UUID, video: Video, summary: VideoPerformanceSummary
) -> VideoInsightContext:
    history = await list_snapshots(session, tenant_id=tenant_id, video_id=video.id)
    prompt = await session.scalar(
        select(Generation.prompt)
        .where(Generation.tenant_id == tenant_id, Generation.video_id == video.id)
        .order_by(Generation.created_at.desc())
        .limit(1)
    )
    script = await session.scalar(
        select(Script.content)
        .where(Script.tenant_id == tenant_id, Script.produced_video_id == video.id)
        .order_by(Script.version.desc())
        .limit(1)
    )
    captions = (
        await session.scalars(
            select(Post.caption)
            .join(VideoPostLink, VideoPostLink.post_id == Post.id)
            .where(VideoPostLink.video_id == video.id, Post.tenant_id == tenant_id)
        )
    ).all()
    hashtags = [f"#{tag}" for tag in aggregates.hashtags_in(video.title, *captions)]
    return VideoInsightContext(
        title=video.title,
        summary=summary,
        history=history,
        usual=await tenant_usual(session, tenant_id=tenant_id),
        prompt=prompt,
        script=_script_text(script),
        duration_s=video.duration_s,
        hashtags=hashtags,
    )


def _script_text(content: object) -> str | None:
    """A script's words for the prompt: its hook, scenes' voiceovers and call to action."""
    if not isinstance(content, dict):
        return None
    parts: list[str] = []
    for key in ("hook", "body", "text"):
        if isinstance(content.get(key), str):
            parts.append(content[key])
    for scene in content.get("scenes") or []:
        if isinstance(scene, dict):
            line = scene.get("voiceover") or scene.get("direction")
            if isinstance(line, str):
                parts.append(line)
    if isinstance(content.get("call_to_action"), str):
        parts.append(content["call_to_action"])
    return " / ".join(parts) or None


async def _series_traffic(
    session: AsyncSession, *, tenant_id: uuid.UUID, collection_id: uuid.UUID
) -> dict[str, float]:
    rows = (
        await session.execute(
            select(VideoPerformance.traffic_source, func.count())
            .join(Video, Video.id == VideoPerformance.video_id)
            .where(
                Video.tenant_id == tenant_id,
                Video.collection_id == collection_id,
                VideoPerformance.traffic_source.is_not(None),
            )
            .group_by(VideoPerformance.traffic_source)
        )
    ).all()
    total = sum(int(count) for _source, count in rows)
    return {str(source): int(count) / total for source, count in rows} if total else {}


# --- the service ----------------------------------------------------------------------------------


async def _generate(
    sessions: SessionFactory,
    *,
    tenant_id: uuid.UUID,
    kind: str,
    subject_id: uuid.UUID,
    fingerprint: str,
    analyst: InsightAnalyst,
    settings: Settings,
    now: datetime,
    run: Callable[[], AnalystAnswer],
    run_in_thread: RunInThread,
) -> InsightsAnswer:
    reservation = await _reserve(
        sessions,
        tenant_id=tenant_id,
        kind=kind,
        subject_id=subject_id,
        analyst=analyst.name,
        limit=settings.insights_fresh_per_hour,
        now=now,
    )
    video_id = subject_id if kind == SUBJECT_VIDEO else None
    try:
        answer = await run_in_thread(run)
    except BaseException as exc:
        # Shielded: a request canceled mid-generation must still give its place back (anyio
        # cancellation would otherwise cancel these awaits too).
        with anyio.CancelScope(shield=True):
            await _release(sessions, reservation)
            billed = exc.usage if isinstance(exc, InsightsFailed) else None
            if billed is not None:
                async with sessions() as session, session.begin():
                    await _record_tokens(
                        session,
                        tenant_id=tenant_id,
                        analyst=analyst,
                        model=getattr(analyst, "model", analyst.name),
                        usage=billed,
                        reservation=reservation,
                        video_id=video_id,
                    )
        raise
    async with sessions() as session, session.begin():
        await _store(
            session,
            tenant_id=tenant_id,
            kind=kind,
            subject_id=subject_id,
            fingerprint=fingerprint,
            analyst=analyst,
            insights=answer.insights,
            generated_at=now,
        )
        await _record_tokens(
            session,
            tenant_id=tenant_id,
            analyst=analyst,
            model=answer.model,
            usage=answer.usage,
            reservation=reservation,
            video_id=video_id,
        )
    return InsightsAnswer(
        insights=answer.insights,
        generated_at=now,
        cached=False,
        analyst=analyst.name,
        statistical=analyst.statistical,
        message=STATISTICAL_MESSAGE if analyst.statistical else None,
    )


async def video_insights(
    sessions: SessionFactory,
    *,
    tenant_id: uuid.UUID,
    video_id: uuid.UUID,
    refresh: bool,
    analyst: InsightAnalyst,
    settings: Settings,
    now: datetime | None = None,
    run_in_thread: RunInThread = _default_thread,
) -> InsightsAnswer:
    """Insights for a video: from the cache when its metrics have not changed, else fresh.

    Args:
        sessions: Sessions on the database (the rate limit needs transactions of its own).
        tenant_id: The caller's tenant; another tenant's video is `VIDEO_NOT_FOUND`.
        video_id: The video asset.
        refresh: Make fresh insights even when cached ones are valid (counts toward the limit).
        analyst: Who makes fresh insights (blocking; run with `run_in_thread`).
        settings: `insights_cache_ttl_s` and `insights_fresh_per_hour`.
        now: The clock (tests); default: now in UTC.
        run_in_thread: How the blocking analyst is run.

    Raises:
        DomainError: `VIDEO_NOT_FOUND`.
        InsightsRateLimited: a fresh generation is needed and the hour's places are taken.
        InsightsFailed, ProviderTransientError, ProviderPermanentError: from the analyst.
    """
    moment = now or datetime.now(UTC)
    async with sessions() as session:
        video = await require_video(session, tenant_id, video_id)
        summary = await aggregates.video_summary(session, tenant_id=tenant_id, video_id=video_id)
        if summary.snapshots == 0:
            await session.commit()
            return InsightsAnswer(
                insights=None,
                generated_at=None,
                cached=False,
                analyst=analyst.name,
                statistical=analyst.statistical,
                message=NO_METRICS_MESSAGE,
            )
        fingerprint = summary.metrics_fingerprint
        if not refresh:
            entry = await _cached_entry(
                session,
                tenant_id=tenant_id,
                kind=SUBJECT_VIDEO,
                subject_id=video_id,
                fingerprint=fingerprint,
                analyst=analyst.name,
                fresh_after=moment - timedelta(seconds=settings.insights_cache_ttl_s),
            )
            if entry is not None:
                await session.commit()
                return _answer_from(entry)
        context = await _video_context(session, tenant_id=tenant_id, video=video, summary=summary)
        # Reading a video may copy new snapshots of its linked posts: keep them.
        await session.commit()
    return await _generate(
        sessions,
        tenant_id=tenant_id,
        kind=SUBJECT_VIDEO,
        subject_id=video_id,
        fingerprint=fingerprint,
        analyst=analyst,
        settings=settings,
        now=moment,
        run=lambda: analyst.analyze_video(context),
        run_in_thread=run_in_thread,
    )


async def series_insights(
    sessions: SessionFactory,
    *,
    tenant_id: uuid.UUID,
    collection_id: uuid.UUID,
    refresh: bool,
    analyst: InsightAnalyst,
    settings: Settings,
    now: datetime | None = None,
    run_in_thread: RunInThread = _default_thread,
) -> InsightsAnswer:
    """Insights for a series (the tenant's videos in a collection), cached and rate limited
    like :func:`video_insights`.

    Raises:
        DomainError: `COLLECTION_NOT_FOUND` (no video of the tenant is in it).
        InsightsRateLimited, and the analyst's failures, as :func:`video_insights`.
    """
    moment = now or datetime.now(UTC)
    async with sessions() as session:
        series = await aggregates.series_performance(
            session, tenant_id=tenant_id, collection_id=collection_id
        )
        if series.episodes_with_metrics == 0:
            await session.commit()
            return InsightsAnswer(
                insights=None,
                generated_at=None,
                cached=False,
                analyst=analyst.name,
                statistical=analyst.statistical,
                message=NO_SERIES_METRICS_MESSAGE,
            )
        fingerprint = series.metrics_fingerprint
        if not refresh:
            entry = await _cached_entry(
                session,
                tenant_id=tenant_id,
                kind=SUBJECT_COLLECTION,
                subject_id=collection_id,
                fingerprint=fingerprint,
                analyst=analyst.name,
                fresh_after=moment - timedelta(seconds=settings.insights_cache_ttl_s),
            )
            if entry is not None:
                await session.commit()
                return _answer_from(entry)
        context = SeriesInsightContext(
            name=f"collection {collection_id}",
            performance=series,
            usual=await tenant_usual(session, tenant_id=tenant_id),
            traffic_breakdown=await _series_traffic(
                session, tenant_id=tenant_id, collection_id=collection_id
            ),
        )
        await session.commit()
    return await _generate(
        sessions,
        tenant_id=tenant_id,
        kind=SUBJECT_COLLECTION,
        subject_id=collection_id,
        fingerprint=fingerprint,
        analyst=analyst,
        settings=settings,
        now=moment,
        run=lambda: analyst.analyze_series(context),
        run_in_thread=run_in_thread,
    )


async def cached_insights(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    video_id: uuid.UUID,
    now: datetime | None = None,
    ttl_s: int = DEFAULT_CACHE_TTL_S,
) -> InsightsAnswer | None:
    """The newest valid cached insights of a video's current metrics, by any analyst; never
    generates (for pages that must not spend tokens). None when there are none.

    Raises:
        DomainError: `VIDEO_NOT_FOUND`.
    """
    summary = await aggregates.video_summary(session, tenant_id=tenant_id, video_id=video_id)
    if summary.snapshots == 0:
        return None
    entry = await _cached_entry(
        session,
        tenant_id=tenant_id,
        kind=SUBJECT_VIDEO,
        subject_id=video_id,
        fingerprint=summary.metrics_fingerprint,
        analyst=None,
        fresh_after=(now or datetime.now(UTC)) - timedelta(seconds=ttl_s),
    )
    return _answer_from(entry) if entry is not None else None


async def cached_series_insights(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    collection_id: uuid.UUID,
    now: datetime | None = None,
    ttl_s: int = DEFAULT_CACHE_TTL_S,
) -> InsightsAnswer | None:
    """As :func:`cached_insights`, for a series.

    Raises:
        DomainError: `COLLECTION_NOT_FOUND`.
    """
    series = await aggregates.series_performance(
        session, tenant_id=tenant_id, collection_id=collection_id
    )
    if series.episodes_with_metrics == 0:
        return None
    entry = await _cached_entry(
        session,
        tenant_id=tenant_id,
        kind=SUBJECT_COLLECTION,
        subject_id=collection_id,
        fingerprint=series.metrics_fingerprint,
        analyst=None,
        fresh_after=(now or datetime.now(UTC)) - timedelta(seconds=ttl_s),
    )
    return _answer_from(entry) if entry is not None else None
