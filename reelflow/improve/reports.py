"""Performance reports: the charts of a video or a series and one HTML page that shows them.

Reading and drawing are split. The async loaders (`video_chart`, `series_chart`,
`video_report`, `series_report`) read what a chart or a page is drawn from and compute its
fingerprint, without drawing anything, so a client that already holds the chart gets a 304
before any CPU is spent. Drawing (`ChartPlan.render`, `render_video_page`,
`render_series_page`) is pure and CPU-bound: callers run it off the event loop.

A page is self-contained: every chart is inline SVG and the styles are inline, so opening it
needs no further authenticated request, and it carries no script at all (the API serves it
with a Content-Security-Policy that forbids scripts). Titles, hashtags and insights are user
or model text and are escaped everywhere they appear.

Insights are only ever read from the cache: showing a report must not spend AI credits. A
page without cached insights says so and how to ask for them.
"""

from __future__ import annotations

import html
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.core.errors import DomainError
from reelflow.improve import charts
from reelflow.improve.aggregates import series_performance, video_summary
from reelflow.improve.insights import (
    DEFAULT_CACHE_TTL_S,
    cached_insights,
    cached_series_insights,
)
from reelflow.improve.performance import list_snapshots, require_video, sync_linked_posts
from schemas.failures import FailureCode
from schemas.improve import (
    EpisodePerformance,
    InsightsAnswer,
    PerformanceSnapshot,
    SeriesPerformance,
    VideoPerformanceSummary,
)
from schemas.tables import Video

if TYPE_CHECKING:
    from matplotlib.figure import Figure

VIDEO_CHARTS: dict[str, str] = {
    "views": "Views over time, per platform",
    "engagement": "Engagement rate over time and the latest interactions",
    "traffic": "Where views came from",
    "versions": "Original vs improved: views by days since published",
}
"""The charts of a video, by the name in `/performance/charts/{name}`, with what each shows."""

SERIES_CHARTS: dict[str, str] = {
    "episodes": "Each episode's views against the series median",
    "views": "The series' views over time",
}

RENDER_CACHE_ENTRIES = 128
"""Rendered charts kept in memory by fingerprint and format (tens of KB each): a chart asked
for again by another client, or as PNG after SVG, is not drawn twice."""


class UnknownChart(LookupError):
    """A chart name that is not one of `VIDEO_CHARTS` / `SERIES_CHARTS`."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(f"no chart named {name!r}; known: {', '.join(known)}")
        self.name = name
        self.known = tuple(known)


@dataclass(frozen=True)
class ChartPlan:
    """A chart ready to draw: its fingerprint is known before anything is drawn."""

    name: str
    description: str
    fingerprint: str
    draw: Callable[[], Figure]

    def render(self, fmt: charts.ChartFormat) -> bytes:
        """The chart in `fmt`; the same fingerprint and format are drawn once per process."""
        key = (self.fingerprint, fmt)
        cached = _render_cache_get(key)
        if cached is not None:
            return cached
        body = charts.render(self.draw(), fmt, description=self.description)
        _render_cache_put(key, body)
        return body


# --- video -----------------------------------------------------------------------------------


async def video_chart(
    session: AsyncSession, *, tenant_id: uuid.UUID, video_id: uuid.UUID, name: str
) -> ChartPlan:
    """What chart `name` of the video is drawn from.

    Raises:
        UnknownChart: `name` is not a video chart (checked before any read).
        DomainError: `VIDEO_NOT_FOUND`, also for another tenant's video.
    """
    if name not in VIDEO_CHARTS:
        raise UnknownChart(name, list(VIDEO_CHARTS))
    if name == "traffic":
        summary = await video_summary(session, tenant_id=tenant_id, video_id=video_id)
        return _traffic_plan(summary)
    if name == "versions":
        video = await require_video(session, tenant_id, video_id)
        versions = await _versions(session, tenant_id=tenant_id, video=video)
        return _versions_plan(versions)
    snapshots = await list_snapshots(session, tenant_id=tenant_id, video_id=video_id)
    return _snapshots_plan(name, snapshots)


def _snapshots_plan(name: str, snapshots: Sequence[PerformanceSnapshot]) -> ChartPlan:
    draw = charts.views_over_time if name == "views" else charts.engagement
    rows = list(snapshots)
    return ChartPlan(
        name=name,
        description=VIDEO_CHARTS[name],
        fingerprint=charts.fingerprint(f"video/{name}", rows),
        draw=lambda: draw(rows),
    )


def _traffic_plan(summary: VideoPerformanceSummary) -> ChartPlan:
    breakdown = dict(summary.traffic_breakdown)
    return ChartPlan(
        name="traffic",
        description=VIDEO_CHARTS["traffic"],
        fingerprint=charts.fingerprint("video/traffic", breakdown),
        draw=lambda: charts.traffic_sources(breakdown),
    )


def _versions_plan(versions: Sequence[charts.VersionLine]) -> ChartPlan:
    lines = list(versions)
    return ChartPlan(
        name="versions",
        description=VIDEO_CHARTS["versions"],
        fingerprint=charts.fingerprint("video/versions", lines),
        draw=lambda: charts.original_vs_improved(lines),
    )


async def _versions(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    video: Video,
    own_snapshots: Sequence[PerformanceSnapshot] | None = None,
) -> list[charts.VersionLine]:
    """The video and the one it improves, or the latest version that improves it.

    An improved video is compared with its original; an original with its newest
    improvement, when there is one.
    """
    pair: list[Video] = [video]
    if video.improved_from_video_id is not None:
        original = await session.scalar(
            select(Video).where(
                Video.id == video.improved_from_video_id, Video.tenant_id == tenant_id
            )
        )
        if original is not None:
            pair = [original, video]
    else:
        improved = await session.scalar(
            select(Video)
            .where(Video.tenant_id == tenant_id, Video.improved_from_video_id == video.id)
            .order_by(Video.improvement_iteration.desc(), Video.created_at.desc(), Video.id)
            .limit(1)
        )
        if improved is not None:
            pair.append(improved)
    lines: list[charts.VersionLine] = []
    for index, version in enumerate(pair):
        label = _version_label(version, first=index == 0)
        if version.id == video.id and len(pair) > 1:
            label += " (this video)"
        if version.id == video.id and own_snapshots is not None:
            snapshots = list(own_snapshots)
        else:
            snapshots = await list_snapshots(session, tenant_id=tenant_id, video_id=version.id)
        lines.append(charts.VersionLine(label=label, snapshots=snapshots))
    return lines


def _version_label(video: Video, *, first: bool) -> str:
    iteration = video.improvement_iteration or 0
    if first and iteration == 0:
        return "Original"
    return f"Improvement {iteration}" if iteration else "Original"


@dataclass(frozen=True)
class VideoReport:
    """Everything a video's page shows, read but not drawn."""

    video_id: uuid.UUID
    title: str
    summary: VideoPerformanceSummary
    insights: InsightsAnswer | None
    charts: Sequence[ChartPlan]

    @property
    def fingerprint(self) -> str:
        """Changes with any chart's data, the numbers, the title or the insights."""
        return charts.fingerprint(
            "video/report",
            self.title,
            self.summary,
            self.insights,
            [plan.fingerprint for plan in self.charts],
        )


async def video_report(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    video_id: uuid.UUID,
    insights_ttl_s: int = DEFAULT_CACHE_TTL_S,
) -> VideoReport:
    """Read what the video's report page shows.

    Raises:
        DomainError: `VIDEO_NOT_FOUND`, also for another tenant's video.
    """
    video = await require_video(session, tenant_id, video_id)
    snapshots = await list_snapshots(session, tenant_id=tenant_id, video_id=video_id)
    summary = await video_summary(session, tenant_id=tenant_id, video_id=video_id)
    versions = await _versions(session, tenant_id=tenant_id, video=video, own_snapshots=snapshots)
    insights = await cached_insights(
        session, tenant_id=tenant_id, video_id=video_id, ttl_s=insights_ttl_s
    )
    plans = [
        _snapshots_plan("views", snapshots),
        _snapshots_plan("engagement", snapshots),
        _traffic_plan(summary),
        _versions_plan(versions),
    ]
    return VideoReport(
        video_id=video_id,
        title=video.title,
        summary=summary,
        insights=insights,
        charts=plans,
    )


# --- series ----------------------------------------------------------------------------------


async def require_collection(
    session: AsyncSession, *, tenant_id: uuid.UUID, collection_id: uuid.UUID
) -> None:
    """A collection exists for a tenant while one of its videos is in it.

    Raises:
        DomainError: `COLLECTION_NOT_FOUND`, also for another tenant's collection.
    """
    found = await session.scalar(
        select(Video.id)
        .where(Video.tenant_id == tenant_id, Video.collection_id == collection_id)
        .limit(1)
    )
    if found is None:
        raise DomainError(
            FailureCode.COLLECTION_NOT_FOUND, f"no collection with id {collection_id}"
        )


async def series_chart(
    session: AsyncSession, *, tenant_id: uuid.UUID, collection_id: uuid.UUID, name: str
) -> ChartPlan:
    """What chart `name` of the series is drawn from.

    Raises:
        UnknownChart: `name` is not a series chart (checked before any read).
        DomainError: `COLLECTION_NOT_FOUND`, also for another tenant's collection.
    """
    if name not in SERIES_CHARTS:
        raise UnknownChart(name, list(SERIES_CHARTS))
    await require_collection(session, tenant_id=tenant_id, collection_id=collection_id)
    if name == "episodes":
        performance = await series_performance(
            session, tenant_id=tenant_id, collection_id=collection_id
        )
        return _episodes_plan(performance)
    daily = await series_daily_views(session, tenant_id=tenant_id, collection_id=collection_id)
    return _series_views_plan(daily)


def _episodes_plan(performance: SeriesPerformance) -> ChartPlan:
    series = episodes_of(performance.episode_list, performance.median_views)
    return ChartPlan(
        name="episodes",
        description=SERIES_CHARTS["episodes"],
        fingerprint=charts.fingerprint("series/episodes", series),
        draw=lambda: charts.series_comparison(series),
    )


def episodes_of(
    episodes: Sequence[EpisodePerformance], median_views: float | None
) -> charts.SeriesEpisodes:
    """The series comparison's input: episodes in publishing order against the median."""
    return charts.SeriesEpisodes(
        episodes=tuple(
            charts.EpisodeBar(
                title=episode.title,
                views=episode.views,
                times_usual=episode.times_series_median,
                video_id=episode.video_id,
            )
            for episode in episodes
        ),
        usual_views=median_views,
        usual_label="series median",
    )


def _series_views_plan(daily: Sequence[tuple[datetime, int]]) -> ChartPlan:
    timeline = list(daily)
    return ChartPlan(
        name="views",
        description=SERIES_CHARTS["views"],
        fingerprint=charts.fingerprint(
            "series/views", [(moment.isoformat(), views) for moment, views in timeline]
        ),
        draw=lambda: charts.series_views(timeline),
    )


_SERIES_DAILY_VIEWS = text(
    """
    WITH daily AS (  -- each (episode, platform)'s last count of each UTC day
        SELECT DISTINCT ON (p.video_id, p.platform, day)
               p.video_id, p.platform, date_trunc('day', p.recorded_at, 'UTC') AS day, p.views
        FROM video_performance p
        JOIN videos v ON v.id = p.video_id
        WHERE v.tenant_id = :tenant_id AND v.collection_id = :collection_id
          AND p.tenant_id = :tenant_id
        ORDER BY p.video_id, p.platform, day, p.recorded_at DESC
    ), growth AS (  -- counts are cumulative: a day adds what it grew since the day before
        SELECT day,
               views - coalesce(lag(views) OVER (PARTITION BY video_id, platform ORDER BY day),
                                0) AS added
        FROM daily
    )
    SELECT day, sum(sum(added)) OVER (ORDER BY day) AS total
    FROM growth GROUP BY day ORDER BY day
    """
)


async def series_daily_views(
    session: AsyncSession, *, tenant_id: uuid.UUID, collection_id: uuid.UUID
) -> list[tuple[datetime, int]]:
    """The series' total views at the end of each UTC day that has a snapshot.

    Summed in Postgres: a series of 500 episodes × 90 snapshots is 45k rows, and the answer
    is one row per day. The same rule as `charts.total_views_timeline` (each episode and
    platform counts with its latest views so far), at day resolution.
    """
    video_ids = list(
        await session.scalars(
            select(Video.id).where(
                Video.tenant_id == tenant_id, Video.collection_id == collection_id
            )
        )
    )
    await sync_linked_posts(session, tenant_id=tenant_id, video_ids=video_ids)
    rows = await session.execute(
        _SERIES_DAILY_VIEWS, {"tenant_id": tenant_id, "collection_id": collection_id}
    )
    return [(day.astimezone(UTC), int(total)) for day, total in rows]


@dataclass(frozen=True)
class SeriesReport:
    """Everything a series' page shows, read but not drawn."""

    collection_id: uuid.UUID
    performance: SeriesPerformance
    insights: InsightsAnswer | None
    charts: Sequence[ChartPlan]

    @property
    def fingerprint(self) -> str:
        return charts.fingerprint(
            "series/report",
            self.performance,
            self.insights,
            [plan.fingerprint for plan in self.charts],
        )


async def series_report(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    collection_id: uuid.UUID,
    insights_ttl_s: int = DEFAULT_CACHE_TTL_S,
) -> SeriesReport:
    """Read what the series' report page shows.

    Raises:
        DomainError: `COLLECTION_NOT_FOUND`, also for another tenant's collection.
    """
    await require_collection(session, tenant_id=tenant_id, collection_id=collection_id)
    performance = await series_performance(
        session, tenant_id=tenant_id, collection_id=collection_id
    )
    daily = await series_daily_views(session, tenant_id=tenant_id, collection_id=collection_id)
    insights = await cached_series_insights(
        session, tenant_id=tenant_id, collection_id=collection_id, ttl_s=insights_ttl_s
    )
    return SeriesReport(
        collection_id=collection_id,
        performance=performance,
        insights=insights,
        charts=[_episodes_plan(performance), _series_views_plan(daily)],
    )


# --- pages -----------------------------------------------------------------------------------


def render_video_page(report: VideoReport) -> str:
    """The video's report as one self-contained HTML page."""
    summary = report.summary
    cards = [
        ("Views", _count(summary.totals.get("views")), "latest, all platforms"),
        ("Engagement", _percent(summary.engagement_rate), "interactions per view"),
        (
            "Best platform",
            charts.PLATFORM_NAMES.get(str(summary.best_platform), str(summary.best_platform))
            if summary.best_platform
            else "—",
            "by latest views",
        ),
        ("Snapshots", _count(summary.snapshots), _period(summary)),
    ]
    body = [
        _header("Performance report", report.title, f"Video {report.video_id}"),
        _cards(cards),
        _platform_table(summary),
        _chart_section(report.charts),
        _insights_section(report.insights, ask=f"/v1/videos/{report.video_id}/insights"),
    ]
    return _page(f"{report.title} · performance report", body)


def render_series_page(report: SeriesReport) -> str:
    """The series' report as one self-contained HTML page."""
    performance = report.performance
    cards = [
        (
            "Episodes",
            _count(performance.episodes),
            f"{performance.episodes_with_metrics} with numbers",
        ),
        ("Views", _count(performance.total_views), "latest, all episodes"),
        ("Median views", _count(performance.median_views), "per episode"),
        ("Engagement", _percent(performance.engagement_rate), "interactions per view"),
    ]
    body = [
        _header("Series performance report", "Series", f"Collection {report.collection_id}"),
        _cards(cards),
        _chart_section(report.charts),
        _episode_tables(performance),
        _cadence_section(performance),
        _hashtag_section(performance),
        _insights_section(report.insights, ask=f"/v1/collections/{report.collection_id}/insights"),
    ]
    return _page(f"Series {report.collection_id} · performance report", body)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _count(value: float | int | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:.1%}"


def _times(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}×"


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _period(summary: VideoPerformanceSummary) -> str:
    if summary.first_recorded_at is None or summary.last_recorded_at is None:
        return "none recorded yet"
    first = summary.first_recorded_at.astimezone(UTC).strftime("%Y-%m-%d")
    last = summary.last_recorded_at.astimezone(UTC).strftime("%Y-%m-%d")
    return first if first == last else f"{first} to {last}"


def _header(kind: str, title: str, subtitle: str) -> str:
    return (
        f'<header><p class="kind">{_e(kind)}</p><h1>{_e(title)}</h1>'
        f'<p class="muted">{_e(subtitle)}</p></header>'
    )


def _cards(cards: Sequence[tuple[str, str, str]]) -> str:
    items = "".join(
        f'<div class="card"><div class="label">{_e(label)}</div>'
        f'<div class="value">{_e(value)}</div><div class="muted">{_e(note)}</div></div>'
        for label, value, note in cards
    )
    return f'<section class="cards">{items}</section>'


def _platform_table(summary: VideoPerformanceSummary) -> str:
    if not summary.platforms:
        return ""
    head = (
        "<tr><th>Platform</th><th>Views</th><th>Likes</th><th>Comments</th><th>Shares</th>"
        "<th>Saves</th><th>Engagement</th><th>Views/day</th><th>vs your usual</th></tr>"
    )
    rows = "".join(
        "<tr>"
        f"<td>{_e(charts.PLATFORM_NAMES.get(str(p.platform), str(p.platform)))}</td>"
        f"<td>{_count(p.views)}</td><td>{_count(p.likes)}</td><td>{_count(p.comments)}</td>"
        f"<td>{_count(p.shares)}</td><td>{_count(p.saves)}</td>"
        f"<td>{_percent(p.engagement_rate)}</td><td>{_count(p.views_per_day)}</td>"
        f"<td>{_times(p.times_usual)}</td>"
        "</tr>"
        for p in summary.platforms
    )
    return f"<section><h2>Latest numbers</h2><table>{head}{rows}</table></section>"


def _chart_section(plans: Sequence[ChartPlan]) -> str:
    figures = []
    for plan in plans:
        svg = plan.render("svg").decode()
        figures.append(
            f'<figure class="chart" data-chart="{_e(plan.name)}">'
            f"{inline_svg(svg, prefix=plan.name)}"
            f"<figcaption>{_e(plan.description)}</figcaption></figure>"
        )
    return f'<section class="charts">{"".join(figures)}</section>'


def _episode_row(episode: EpisodePerformance) -> str:
    return (
        f"<tr><td>{_e(episode.title)}</td><td>{_count(episode.views)}</td>"
        f"<td>{_percent(episode.engagement_rate)}</td>"
        f"<td>{_times(episode.times_series_median)}</td><td>{_when(episode.published_at)}</td></tr>"
    )


def _episode_tables(performance: SeriesPerformance) -> str:
    head = (
        "<tr><th>Episode</th><th>Views</th><th>Engagement</th><th>vs series median</th>"
        "<th>Published</th></tr>"
    )
    parts = []
    for heading, episodes in (
        ("Best episodes", performance.best_episodes),
        ("Worst episodes", performance.worst_episodes),
    ):
        if episodes:
            rows = "".join(_episode_row(e) for e in episodes)
            parts.append(f"<h2>{_e(heading)}</h2><table>{head}{rows}</table>")
    return f"<section>{''.join(parts)}</section>" if parts else ""


def _cadence_section(performance: SeriesPerformance) -> str:
    if not performance.cadence:
        return ""
    rows = "".join(
        f"<tr><td>{_e(bucket.label)}</td><td>{_count(bucket.episodes)}</td>"
        f"<td>{_count(bucket.median_views)}</td></tr>"
        for bucket in performance.cadence
    )
    correlation = ""
    if performance.cadence_correlation is not None:
        correlation = (
            f'<p class="muted">Rank correlation of days between episodes and views: '
            f"{performance.cadence_correlation:+.2f} (−1 to 1; positive means longer gaps "
            f"went with more views).</p>"
        )
    return (
        "<section><h2>Posting cadence</h2><table><tr><th>Gap since previous episode</th>"
        f"<th>Episodes</th><th>Median views</th></tr>{rows}</table>{correlation}</section>"
    )


def _hashtag_section(performance: SeriesPerformance) -> str:
    if not performance.hashtags:
        return ""
    rows = "".join(
        f"<tr><td>{_e(tag.hashtag)}</td><td>{_count(tag.episodes)}</td>"
        f"<td>{_count(tag.median_views)}</td><td>{_times(tag.lift)}</td></tr>"
        for tag in performance.hashtags
    )
    source = (
        f'<p class="muted">{_e(performance.hashtag_sources)}</p>'
        if performance.hashtag_sources
        else ""
    )
    return (
        "<section><h2>Hashtags</h2><table><tr><th>Hashtag</th><th>Episodes</th>"
        f"<th>Median views</th><th>vs series median</th></tr>{rows}</table>{source}</section>"
    )


def _insights_section(answer: InsightsAnswer | None, *, ask: str) -> str:
    if answer is None or answer.insights is None:
        message = answer.message if answer is not None and answer.message else None
        text = message or (
            "No insights are cached yet. Ask for them (GET "
            f"{ask}); this page only shows cached insights, so opening it costs nothing."
        )
        return (
            f'<section class="insights"><h2>Insights</h2><p class="muted">{_e(text)}</p></section>'
        )
    insights = answer.insights
    by = "statistical analysis of your numbers" if answer.statistical else answer.analyst
    parts = [f'<p class="muted">By {_e(by)}, generated {_e(_when(answer.generated_at))}.</p>']
    for heading, items in (
        ("What worked", insights.strengths),
        ("What did not", insights.weaknesses),
        ("Recommendations", insights.recommendations),
        ("Ideas for the next video", insights.next_video_suggestions),
    ):
        if items:
            listed = "".join(f"<li>{_e(item)}</li>" for item in items)
            parts.append(f"<h3>{_e(heading)}</h3><ul>{listed}</ul>")
    for heading, paragraph in (
        ("Traffic", insights.traffic_insights),
        ("Patterns", insights.patterns),
    ):
        if paragraph:
            parts.append(f"<h3>{_e(heading)}</h3><p>{_e(paragraph)}</p>")
    return f'<section class="insights"><h2>Insights</h2>{"".join(parts)}</section>'


_STYLE = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  margin: 0; background: #f6f7f9; color: #1f2933; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 20px 48px; }
header h1 { margin: 0 0 4px; font-size: 28px; overflow-wrap: anywhere; }
.kind { margin: 0; text-transform: uppercase; letter-spacing: .08em; font-size: 12px;
  color: #64748b; }
.muted { color: #64748b; font-size: 14px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr));
  gap: 12px; margin: 20px 0; }
.card { background: #fff; border-radius: 10px; padding: 14px 16px;
  box-shadow: 0 1px 2px rgba(0,0,0,.06); }
.card .label { font-size: 13px; color: #64748b; }
.card .value { font-size: 26px; font-weight: 700; margin: 4px 0; }
.charts { display: grid; grid-template-columns: 1fr; gap: 16px; }
figure.chart { margin: 0; background: #fff; border-radius: 10px; padding: 12px;
  box-shadow: 0 1px 2px rgba(0,0,0,.06); }
figure.chart svg { display: block; width: 100%; height: auto; }
figcaption { color: #64748b; font-size: 13px; margin-top: 6px; }
section { margin: 24px 0; }
table { border-collapse: collapse; width: 100%; background: #fff; border-radius: 10px;
  overflow: hidden; font-size: 14px; }
th, td { text-align: left; padding: 8px 10px; border-bottom: 1px solid #e5e7eb;
  overflow-wrap: anywhere; }
th { background: #f1f5f9; font-weight: 600; }
.insights { background: #fff; border-radius: 10px; padding: 4px 20px 12px;
  box-shadow: 0 1px 2px rgba(0,0,0,.06); }
"""


def _page(title: str, body: Sequence[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


_TAG = re.compile(r"<[^>]*>")
_ID = re.compile(r'\bid="([^"]*)"')
_URL_REF = re.compile(r"url\(#([^)]*)\)")
_HREF_REF = re.compile(r'href="#([^"]*)"')


def inline_svg(svg: str, *, prefix: str) -> str:
    """A standalone SVG document made fit to sit inside an HTML page beside others.

    The XML prolog, doctype and metadata go; every id (and every reference to one) gets
    `prefix`, because several charts in one page would otherwise share ids such as
    `figure_1` or a clip path's. Only tags are rewritten: chart text is left as drawn.
    """
    start = svg.find("<svg")
    svg = svg[start:] if start >= 0 else svg
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.DOTALL)
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", prefix)

    def rewrite(tag: re.Match[str]) -> str:
        text = _ID.sub(lambda m: f'id="{safe}-{m.group(1)}"', tag.group(0))
        text = _URL_REF.sub(lambda m: f"url(#{safe}-{m.group(1)})", text)
        return _HREF_REF.sub(lambda m: f'href="#{safe}-{m.group(1)}"', text)

    return _TAG.sub(rewrite, svg)


# --- render cache ----------------------------------------------------------------------------

_render_cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
_render_cache_lock = threading.Lock()


def _render_cache_get(key: tuple[str, str]) -> bytes | None:
    with _render_cache_lock:
        body = _render_cache.get(key)
        if body is not None:
            _render_cache.move_to_end(key)
        return body


def _render_cache_put(key: tuple[str, str], body: bytes) -> None:
    with _render_cache_lock:
        _render_cache[key] = body
        _render_cache.move_to_end(key)
        while len(_render_cache) > RENDER_CACHE_ENTRIES:
            _render_cache.popitem(last=False)


def clear_render_cache() -> None:
    """Forget every rendered chart (tests that count draws call it first)."""
    with _render_cache_lock:
        _render_cache.clear()
