"""Performance charts rendered on the server as SVG and PNG with matplotlib.

Every chart is a pure function from model instances to a `matplotlib.figure.Figure`, and
`to_svg` / `to_png` turn a figure into bytes. Nothing here touches pyplot: pyplot keeps a
global "current figure" per process, so two requests drawing at once would draw into each
other's axes. A `Figure` built directly owns its own state and is safe per request.

Readability rules every chart follows, because the people reading them are creators, not
analysts: a title, axis labels with their unit, thousands separators, dates in UTC, and
when there is nothing to draw yet the image says so instead of the request failing.

Output is deterministic for the same input (no creation date, a fixed SVG id salt), so an
unchanged chart has the same bytes and the same ETag, and tests can compare renders.
User text (titles of videos and episodes) is drawn literally: mathtext is off for it, so a
title with two dollar signs is not parsed as a formula.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import io
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from schemas.improve import PerformanceSnapshot, TrafficSource

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ChartFormat = Literal["svg", "png"]

CONTENT_TYPES: dict[ChartFormat, str] = {"svg": "image/svg+xml", "png": "image/png"}

RENDER_VERSION = "1"
"""Part of every chart's fingerprint: bump it when the look of a chart changes, so clients
holding an old ETag get the new drawing instead of a 304."""

_MATPLOTLIB_VERSION = importlib.metadata.version("matplotlib")


@functools.cache
def _configure() -> None:
    """Load and configure matplotlib with the first chart, not with the API: it costs the
    API's cold start most of a second, and most processes never draw.

    rcParams are process-wide, so they are set once and never per request: a fixed salt
    makes the ids matplotlib writes into an SVG (clip paths, markers) the same on every
    render, and text stays text, selectable and searchable when the SVG is inlined.
    """
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "reelflow-charts"
    matplotlib.rcParams["svg.fonttype"] = "none"


FIGURE_SIZE_IN = (8.0, 4.0)
PNG_DPI = 120
"""960 × 480 pixels: sharp on a laptop screen, small enough for a chat message."""

_TEXT_COLOR = "#1f2933"
_GRID_COLOR = "#d9dee3"
_PALETTE = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#64748b"]
_PLATFORM_COLORS = {"tiktok": "#111827", "instagram": "#db2777"}
_INTERACTION_COLORS = {
    "likes": "#db2777",
    "comments": "#2563eb",
    "shares": "#059669",
    "saves": "#d97706",
}
_ABOVE_USUAL = "#059669"
_BELOW_USUAL = "#94a3b8"

PLATFORM_NAMES = {"tiktok": "TikTok", "instagram": "Instagram"}
TRAFFIC_SOURCE_NAMES = {
    TrafficSource.FYP.value: "For You feed",
    TrafficSource.PROFILE.value: "Profile",
    TrafficSource.HASHTAG.value: "Hashtags",
    TrafficSource.SHARE.value: "Shares",
    TrafficSource.OTHER.value: "Other",
}

MAX_LABELLED_EPISODES = 30
"""Beyond this many episodes, bars carry numbers instead of titles: 500 titles on one axis
would be ink, not information."""
_MAX_TITLE_CHARS = 28

MAX_SERIES_POINTS = 400

NO_DATA_MESSAGE = "No performance numbers yet.\nAdd a snapshot to see this chart."


# --- inputs that are not a single model ----------------------------------------------------


class ViewCount(Protocol):
    """What a views total needs of a snapshot; `PerformanceSnapshot` is one, and so is a
    `ViewsPoint` read without the rest of the row."""

    @property
    def video_id(self) -> uuid.UUID: ...
    @property
    def platform(self) -> str: ...
    @property
    def views(self) -> int: ...
    @property
    def recorded_at(self) -> datetime: ...


@dataclass(frozen=True)
class ViewsPoint:
    video_id: uuid.UUID
    platform: str
    views: int
    recorded_at: datetime


@dataclass(frozen=True)
class VersionLine:
    """One version of a video in the original-vs-improved chart.

    `published_at` is day 0; without it, the version's first snapshot is.
    """

    label: str
    snapshots: Sequence[PerformanceSnapshot]
    published_at: datetime | None = None


@dataclass(frozen=True)
class EpisodeBar:
    """One episode of a series in the series comparison."""

    title: str
    views: int
    times_usual: float | None = None
    """views ÷ the usual views the chart compares with ("x× usual"); None without one."""
    video_id: uuid.UUID | None = None


@dataclass(frozen=True)
class SeriesEpisodes:
    """What the series comparison draws: episodes in posting order and the tenant's usual."""

    episodes: Sequence[EpisodeBar] = field(default_factory=tuple)
    usual_views: float | None = None
    usual_label: str = "series median"
    """What `usual_views` is, as the dashed line's label says."""


# --- rendering ------------------------------------------------------------------------------


def warm_up() -> None:
    """Import matplotlib and draw one empty chart, so the first real request does not pay
    for the import and the font lookup (seconds on a cold machine). Blocking: run it on a
    background thread after startup, as the API does with its embedding model."""
    to_svg(views_over_time([]))
    to_png(views_over_time([]))


def to_svg(figure: Figure, *, description: str | None = None) -> str:
    """The figure as SVG text, without a creation date so equal charts are equal bytes.

    `description` becomes the SVG's accessible name (`<title>`), read by screen readers
    when the SVG is inlined in a page.
    """
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    if description:
        svg = _with_accessible_title(svg, description)
    return svg


def to_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PNG_DPI, metadata={"Software": None})
    return buffer.getvalue()


def render(figure: Figure, fmt: ChartFormat, *, description: str | None = None) -> bytes:
    """The figure in `fmt`, as the bytes of an HTTP response body."""
    if fmt == "svg":
        return to_svg(figure, description=description).encode()
    return to_png(figure)


def fingerprint(name: str, *inputs: object) -> str:
    """A short stable hash of a chart's name and everything it is drawn from.

    Equal inputs give an equal fingerprint across processes and restarts (it is the ETag),
    and any change to a number, a time or a title changes it.
    """
    payload = json.dumps(
        [RENDER_VERSION, _MATPLOTLIB_VERSION, name, [_plain(i) for i in inputs]],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _plain(value: object) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, VersionLine | EpisodeBar | SeriesEpisodes | ViewsPoint):
        return {k: _plain(v) for k, v in vars(value).items()}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _with_accessible_title(svg: str, description: str) -> str:
    from xml.sax.saxutils import escape

    start = svg.find("<svg ")
    end = svg.find(">", start)
    if start < 0 or end < 0:
        return svg
    opening = svg[start:end]
    return f'{svg[:start]}{opening} role="img"><title>{escape(description)}</title>{svg[end + 1 :]}'


# --- charts ---------------------------------------------------------------------------------


def views_over_time(snapshots: Sequence[PerformanceSnapshot]) -> Figure:
    """Views at each snapshot, one line per platform."""
    figure, axes = _figure("Views over time")
    by_platform = _by_platform(snapshots)
    if not by_platform:
        return _no_data(figure, axes)
    for index, (platform, rows) in enumerate(by_platform.items()):
        axes.plot(
            _dates(row.recorded_at for row in rows),
            [row.views for row in rows],
            marker="o",
            markersize=4,
            linewidth=2,
            color=_platform_color(platform, index),
            label=_platform_name(platform),
        )
    _date_axis(axes)
    _count_axis(axes, "Views")
    _legend(axes)
    return figure


def engagement(snapshots: Sequence[PerformanceSnapshot]) -> Figure:
    """Engagement rate over time per platform, beside the latest interactions by kind.

    Engagement rate is (likes + comments + shares + saves) ÷ views, the definition the
    summary uses; snapshots without views have no rate and are left out of the line.
    """
    figure = _new_figure()
    rate_axes, mix_axes = figure.subplots(1, 2, width_ratios=[3, 2])
    figure.suptitle(
        "Engagement", fontsize=14, fontweight="bold", color=_TEXT_COLOR, x=0.01, ha="left"
    )
    rate_axes.set_title("Engagement rate", fontsize=11, color=_TEXT_COLOR)
    mix_axes.set_title("Latest interactions", fontsize=11, color=_TEXT_COLOR)
    _style(rate_axes)
    _style(mix_axes)
    by_platform = _by_platform(snapshots)
    if not by_platform:
        _no_data(figure, rate_axes)
        mix_axes.set_axis_off()
        return figure
    for index, (platform, rows) in enumerate(by_platform.items()):
        rated = [(row, _engagement_rate(row)) for row in rows]
        points = [(_utc(row.recorded_at), rate) for row, rate in rated if rate is not None]
        if points:
            rate_axes.plot(
                _dates(when for when, _ in points),
                [rate for _, rate in points],
                marker="o",
                markersize=4,
                linewidth=2,
                color=_platform_color(platform, index),
                label=_platform_name(platform),
            )
    _date_axis(rate_axes)
    from matplotlib.ticker import PercentFormatter

    rate_axes.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=1))
    rate_axes.set_ylabel("Interactions per view (%)", color=_TEXT_COLOR)
    # Headroom above the highest rate, so the legend sits above the lines, not on them.
    highest = max(
        (_engagement_rate(row) or 0.0 for rows in by_platform.values() for row in rows),
        default=0.0,
    )
    rate_axes.set_ylim(0, highest * 1.35 if highest > 0 else 0.1)
    _legend(rate_axes, loc="upper left")

    platforms = list(by_platform)
    latest = [by_platform[p][-1] for p in platforms]
    positions = list(range(len(platforms)))
    bottoms = [0.0] * len(platforms)
    for kind, color in _INTERACTION_COLORS.items():
        values = [float(getattr(row, kind)) for row in latest]
        mix_axes.bar(positions, values, bottom=bottoms, color=color, label=kind.capitalize())
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    mix_axes.set_xticks(positions, labels=[_platform_name(p) for p in platforms])
    _count_axis(mix_axes, "Interactions")
    _legend(mix_axes)
    return figure


def traffic_sources(breakdown: Mapping[str, float]) -> Figure:
    """Where views came from: the share (0–1) per traffic source, largest first."""
    figure, axes = _figure("Traffic sources")
    shares = [(source, share) for source, share in breakdown.items() if share > 0]
    if not shares:
        return _no_data(figure, axes, "No traffic sources recorded yet.")
    shares.sort(key=lambda item: (-item[1], item[0]))
    labels = [TRAFFIC_SOURCE_NAMES.get(source, source) for source, _ in shares]
    values = [share for _, share in shares]
    positions = list(range(len(shares)))
    bars = axes.barh(positions, values, color=_PALETTE[0], height=0.6)
    axes.set_yticks(positions, labels=labels)
    axes.invert_yaxis()
    from matplotlib.ticker import PercentFormatter

    axes.xaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
    axes.set_xlim(0, min(1.0, max(values) * 1.2))
    axes.set_xlabel("Share of snapshots (%)", color=_TEXT_COLOR)
    axes.grid(axis="y", visible=False)
    axes.bar_label(bars, labels=[f"{v:.0%}" for v in values], padding=4, color=_TEXT_COLOR)
    return figure


def original_vs_improved(versions: Sequence[VersionLine]) -> Figure:
    """Total views of each version by days since it was published, the original first.

    Days since publish, not calendar dates: an improvement is published weeks after the
    original, and the question is whether it grows faster, not when.
    """
    figure, axes = _figure("Original vs improved")
    drawn = 0
    missing: list[str] = []
    for index, version in enumerate(versions):
        timeline = total_views_timeline(version.snapshots)
        if not timeline:
            missing.append(version.label)
            continue
        start = _utc(version.published_at) if version.published_at else timeline[0][0]
        days = [(when - start).total_seconds() / 86_400 for when, _ in timeline]
        axes.plot(
            days,
            [views for _, views in timeline],
            marker="o",
            markersize=4,
            linewidth=2.5 if index else 2,
            linestyle="-" if index else "--",
            color=_PALETTE[index % len(_PALETTE)] if index else "#64748b",
            label=version.label,
        )
        drawn += 1
    if not drawn:
        if len(versions) < 2:
            return _no_data(figure, axes, "No improved version yet, and no numbers to compare.")
        return _no_data(figure, axes)
    from matplotlib.ticker import MaxNLocator

    axes.set_xlabel("Days since published", color=_TEXT_COLOR)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlim(left=0)
    _count_axis(axes, "Views (all platforms)")
    _legend(axes)
    note = None
    if len(versions) < 2:
        note = "No improved version yet."
    elif missing:
        note = "No numbers yet for: " + ", ".join(_shorten(m, 40) for m in missing)
    if note:
        axes.text(
            0.99,
            0.02,
            note,
            transform=axes.transAxes,
            ha="right",
            va="bottom",
            fontsize=9,
            color="#64748b",
            parse_math=False,
        )
    return figure


def series_comparison(series: SeriesEpisodes) -> Figure:
    """Each episode's views in posting order, coloured by whether it beat the usual."""
    figure, axes = _figure("Episodes compared")
    episodes = list(series.episodes)
    if not episodes:
        return _no_data(figure, axes, "No episodes with performance numbers yet.")
    positions = list(range(len(episodes)))
    colors = [
        _ABOVE_USUAL if (e.times_usual is not None and e.times_usual >= 1) else _BELOW_USUAL
        for e in episodes
    ]
    labelled = len(episodes) <= MAX_LABELLED_EPISODES
    views = [e.views for e in episodes]
    if labelled:
        bars = axes.bar(positions, views, color=colors, width=0.7)
    else:
        # One collection of lines instead of hundreds of bar artists: the same picture at
        # a tenth of the drawing time for a long series.
        axes.vlines(positions, 0, views, colors=colors, linewidth=max(0.4, 280 / len(episodes)))
        axes.set_xlim(-0.5, len(episodes) - 0.5)
    if series.usual_views:
        axes.axhline(series.usual_views, color="#d97706", linestyle="--", linewidth=1.5)
        axes.text(
            1.0,
            series.usual_views,
            f" {series.usual_label}\n {series.usual_views:,.0f}",
            transform=axes.get_yaxis_transform(),
            va="center",
            ha="left",
            fontsize=8,
            color="#d97706",
        )
    if labelled:
        axes.set_xticks(
            positions,
            labels=[_shorten(e.title, _MAX_TITLE_CHARS) for e in episodes],
            rotation=35,
            ha="right",
            fontsize=8,
            parse_math=False,
        )
        axes.bar_label(
            bars,
            labels=[f"{e.times_usual:.1f}×" if e.times_usual is not None else "" for e in episodes],
            padding=2,
            fontsize=8,
            color=_TEXT_COLOR,
        )
        axes.set_xlabel("Episode", color=_TEXT_COLOR)
    else:
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        axes.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{int(x) + 1}"))
        axes.set_xlabel("Episode number (posting order)", color=_TEXT_COLOR)
    axes.grid(axis="x", visible=False)
    _count_axis(axes, "Views (latest)")
    return figure


def series_views(timeline: Sequence[tuple[datetime, int]]) -> Figure:
    """The whole series' views over time, from `(moment, total views)` in time order: each
    episode's latest views summed (`total_views_timeline`, or the database's daily totals).

    One point per UTC day once the line has more than `MAX_SERIES_POINTS`: it stays as
    readable and the SVG stays small for a series of hundreds of episodes.
    """
    figure, axes = _figure("Series views over time")
    if not timeline:
        return _no_data(figure, axes)
    if len(timeline) > MAX_SERIES_POINTS:
        timeline = _last_per_day(timeline)
    axes.step(
        _dates(when for when, _ in timeline),
        [views for _, views in timeline],
        where="post",
        linewidth=2,
        color=_PALETTE[0],
    )
    axes.fill_between(
        _dates(when for when, _ in timeline),
        [views for _, views in timeline],
        step="post",
        alpha=0.12,
        color=_PALETTE[0],
    )
    _date_axis(axes)
    _count_axis(axes, "Views (all episodes, all platforms)")
    return figure


# --- numbers ---------------------------------------------------------------------------------


def total_views_timeline(snapshots: Iterable[ViewCount]) -> list[tuple[datetime, int]]:
    """Views summed over every (video, platform) at each moment a snapshot arrives.

    Snapshots are cumulative counts, so the total at a moment is the sum of each
    (video, platform)'s latest count so far, not a sum of all rows.
    """
    latest: dict[tuple[uuid.UUID, str], int] = {}
    total = 0
    timeline: list[tuple[datetime, int]] = []
    for row in sorted(snapshots, key=lambda r: _utc(r.recorded_at)):
        key = (row.video_id, str(row.platform))
        total += row.views - latest.get(key, 0)
        latest[key] = row.views
        when = _utc(row.recorded_at)
        if timeline and timeline[-1][0] == when:
            timeline[-1] = (when, total)
        else:
            timeline.append((when, total))
    return timeline


def _last_per_day(timeline: Sequence[tuple[datetime, int]]) -> list[tuple[datetime, int]]:
    days: dict[object, tuple[datetime, int]] = {}
    for when, views in timeline:
        days[when.date()] = (when, views)
    return list(days.values())


def _engagement_rate(row: PerformanceSnapshot) -> float | None:
    if row.views <= 0:
        return None
    return (row.likes + row.comments + row.shares + row.saves) / row.views


def _by_platform(
    snapshots: Iterable[PerformanceSnapshot],
) -> dict[str, list[PerformanceSnapshot]]:
    groups: dict[str, list[PerformanceSnapshot]] = {}
    for row in sorted(snapshots, key=lambda r: (str(r.platform), _utc(r.recorded_at))):
        groups.setdefault(str(row.platform), []).append(row)
    return groups


def _dates(moments: Iterable[datetime]) -> npt.NDArray[np.datetime64]:
    """UTC moments as naive datetime64, which matplotlib plots as dates in UTC."""
    return np.array([_utc(m).replace(tzinfo=None) for m in moments], dtype="datetime64[ms]")


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


# --- drawing helpers -------------------------------------------------------------------------


def _new_figure() -> Figure:
    _configure()
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_SIZE_IN, dpi=100, layout="constrained")
    figure.set_facecolor("white")
    return figure


def _figure(title: str) -> tuple[Figure, Axes]:
    figure = _new_figure()
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=14, fontweight="bold", color=_TEXT_COLOR, loc="left")
    _style(axes)
    return figure, axes


def _style(axes: Axes) -> None:
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        axes.spines[side].set_color(_GRID_COLOR)
    axes.tick_params(colors=_TEXT_COLOR, labelsize=9)
    axes.grid(True, color=_GRID_COLOR, linewidth=0.8)
    axes.set_axisbelow(True)


def _no_data(figure: Figure, axes: Axes, message: str = NO_DATA_MESSAGE) -> Figure:
    axes.set_xticks([])
    axes.set_yticks([])
    axes.grid(False)
    for spine in axes.spines.values():
        spine.set_visible(False)
    axes.text(
        0.5,
        0.5,
        message,
        transform=axes.transAxes,
        ha="center",
        va="center",
        fontsize=12,
        color="#64748b",
        parse_math=False,
    )
    return figure


def _date_axis(axes: Axes) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator(tz=UTC, minticks=3, maxticks=8)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    formatter = ConciseDateFormatter(locator, tz=UTC)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_formatter(formatter)
    axes.set_xlabel("Date (UTC)", color=_TEXT_COLOR)


def _count_axis(axes: Axes, label: str) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:,.0f}"))
    axes.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    axes.set_ylim(bottom=0)
    axes.set_ylabel(label, color=_TEXT_COLOR)


def _legend(axes: Axes, loc: Literal["best", "upper left"] = "best") -> None:
    if axes.get_legend_handles_labels()[0]:
        legend = axes.legend(frameon=False, fontsize=9, loc=loc)
        for text in legend.get_texts():
            text.set_parse_math(False)


def _platform_name(platform: str) -> str:
    return PLATFORM_NAMES.get(platform, platform)


def _platform_color(platform: str, index: int) -> str:
    return _PLATFORM_COLORS.get(platform, _PALETTE[index % len(_PALETTE)])


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
