"""Charts: valid SVG and PNG, readable labels, an image that says when there is no data,
user text drawn literally, and the same bytes for the same numbers."""

from __future__ import annotations

import struct
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from matplotlib.figure import Figure

from reelflow.improve import charts
from schemas.discover import Platform
from schemas.improve import PerformanceSnapshot, TrafficSource

START = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
SVG_NS = "{http://www.w3.org/2000/svg}"


def history(
    *,
    video_id: uuid.UUID | None = None,
    days: int = 30,
    platforms: Sequence[tuple[Platform, float]] = ((Platform.TIKTOK, 1.0),),
    start: datetime = START,
    scale: int = 1000,
) -> list[PerformanceSnapshot]:
    """Daily snapshots of a video growing like a real one: fast first, then slower."""
    video = video_id or uuid.uuid4()
    rows: list[PerformanceSnapshot] = []
    for platform, share in platforms:
        for day in range(days):
            views = int(scale * share * (day + 1) ** 1.5)
            rows.append(
                PerformanceSnapshot(
                    id=uuid.uuid5(video, f"{platform}/{day}"),
                    video_id=video,
                    created_at=start,
                    platform=platform,
                    views=views,
                    likes=views // 12,
                    comments=views // 150,
                    shares=views // 90,
                    saves=views // 70,
                    completion_rate=41.5,
                    traffic_source=TrafficSource.FYP if day % 3 else TrafficSource.PROFILE,
                    recorded_at=start + timedelta(days=day),
                )
            )
    return rows


def svg_texts(svg: str) -> list[str]:
    root = ET.fromstring(svg.encode())
    return ["".join(node.itertext()) for node in root.iter(f"{SVG_NS}text")]


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def draw(name: str, rows: Sequence[PerformanceSnapshot]) -> Figure:
    """Chart `name` of a realistic history (improvement and episodes made up alongside)."""
    if name == "views":
        return charts.views_over_time(rows)
    if name == "engagement":
        return charts.engagement(rows)
    if name == "traffic":
        return charts.traffic_sources({"fyp": 0.66, "profile": 0.34})
    if name == "versions":
        improved = history(start=START + timedelta(days=40), days=12, scale=2500)
        return charts.original_vs_improved(
            [charts.VersionLine("Original", rows), charts.VersionLine("Improvement 1", improved)]
        )
    if name == "episodes":
        return charts.series_comparison(
            charts.SeriesEpisodes(
                episodes=[charts.EpisodeBar(f"Episode {n}", 1000 * n, n / 4) for n in range(1, 9)],
                usual_views=4000,
            )
        )
    assert name == "series-views"
    return charts.series_views(charts.total_views_timeline(rows))


CHART_NAMES = ["views", "engagement", "traffic", "versions", "episodes", "series-views"]


@pytest.mark.parametrize("name", CHART_NAMES)
def test_every_chart_is_a_valid_svg_and_png(name: str) -> None:
    figure = draw(name, history(platforms=((Platform.TIKTOK, 1), (Platform.INSTAGRAM, 0.4))))
    svg = charts.to_svg(figure, description="A chart")
    root = ET.fromstring(svg.encode())
    assert root.tag == f"{SVG_NS}svg"
    assert root.get("viewBox") == "0 0 576 288"
    assert root.find(f"{SVG_NS}title") is not None
    assert png_size(charts.to_png(figure)) == (960, 480)


def test_views_over_time_has_a_title_units_dates_and_thousands_separators() -> None:
    texts = svg_texts(
        charts.to_svg(
            charts.views_over_time(
                history(platforms=((Platform.TIKTOK, 1), (Platform.INSTAGRAM, 0.4)))
            )
        )
    )
    assert "Views over time" in texts
    assert "Views" in texts
    assert "Date (UTC)" in texts
    assert {"TikTok", "Instagram"} <= set(texts)
    # 30 days of growth to ~164k views: the y ticks read like 150,000, not 150000 or 1.5e5.
    assert any(t.endswith(",000") and len(t) >= 6 for t in texts), texts
    assert "Oct" in texts


def test_engagement_rate_is_in_percent_and_interactions_are_named() -> None:
    texts = svg_texts(charts.to_svg(charts.engagement(history())))
    assert "Engagement rate" in texts
    assert "Interactions per view (%)" in texts
    assert {"Likes", "Comments", "Shares", "Saves"} <= set(texts)
    assert any(t.endswith("%") for t in texts)


def test_traffic_sources_show_people_names_and_shares_largest_first() -> None:
    texts = svg_texts(
        charts.to_svg(charts.traffic_sources({"profile": 0.25, "fyp": 0.6, "share": 0.15}))
    )
    names = [t for t in texts if t in {"For You feed", "Profile", "Shares"}]
    assert names == ["For You feed", "Profile", "Shares"]
    assert {"60%", "25%", "15%"} <= set(texts)


def test_versions_are_compared_by_days_since_published() -> None:
    original = history(days=10)
    improved = history(start=START + timedelta(days=60), days=5, scale=3000)
    figure = charts.original_vs_improved(
        [charts.VersionLine("Original", original), charts.VersionLine("Improvement 1", improved)]
    )
    texts = svg_texts(charts.to_svg(figure))
    assert "Days since published" in texts
    assert {"Original", "Improvement 1"} <= set(texts)
    # Both start at day 0 although the improvement was published two months later.
    lines = [line for line in figure.axes[0].get_lines() if line.get_label() in texts]
    assert [float(np.asarray(line.get_xdata())[0]) for line in lines] == [0.0, 0.0]


def test_an_original_without_improvement_says_so() -> None:
    figure = charts.original_vs_improved([charts.VersionLine("Original", history(days=3))])
    assert "No improved version yet." in svg_texts(charts.to_svg(figure))


@pytest.mark.parametrize(
    ("figure", "message"),
    [
        (lambda: charts.views_over_time([]), "No performance numbers yet."),
        (lambda: charts.engagement([]), "No performance numbers yet."),
        (lambda: charts.traffic_sources({}), "No traffic sources recorded yet."),
        (lambda: charts.original_vs_improved([]), "no numbers to compare"),
        (lambda: charts.series_comparison(charts.SeriesEpisodes()), "No episodes"),
        (lambda: charts.series_views([]), "No performance numbers yet."),
    ],
)
def test_a_chart_without_data_says_so_in_the_image(figure: object, message: str) -> None:
    assert callable(figure)
    drawn = figure()
    svg = charts.to_svg(drawn)
    assert any(message in text for text in svg_texts(svg)), svg_texts(svg)
    assert png_size(charts.to_png(drawn)) == (960, 480)


@pytest.mark.parametrize("name", CHART_NAMES)
def test_the_same_numbers_give_the_same_bytes(name: str) -> None:
    rows = history(platforms=((Platform.TIKTOK, 1), (Platform.INSTAGRAM, 0.4)))
    first, second = draw(name, rows), draw(name, list(rows))
    svg = charts.to_svg(first)
    assert svg == charts.to_svg(second)
    assert charts.to_png(first) == charts.to_png(second)
    # No creation date in the file: it would change the bytes on every render.
    assert "<dc:date>" not in svg


def test_the_fingerprint_follows_every_number_and_title() -> None:
    rows = history(days=5)
    same = charts.fingerprint("video/views", [r.model_copy() for r in rows])
    assert charts.fingerprint("video/views", rows) == same
    changed = [*rows[:-1], rows[-1].model_copy(update={"views": rows[-1].views + 1})]
    assert charts.fingerprint("video/views", changed) != same
    assert charts.fingerprint("video/engagement", rows) != same
    episodes = charts.SeriesEpisodes([charts.EpisodeBar("One", 10, 1.0)])
    renamed = charts.SeriesEpisodes([charts.EpisodeBar("One!", 10, 1.0)])
    assert charts.fingerprint("series/episodes", episodes) != charts.fingerprint(
        "series/episodes", renamed
    )


def test_titles_are_drawn_literally_never_as_markup_or_formulas() -> None:
    hostile = 'I made $500 in 5 days $x^2$ <script>alert("x")</script> & more'
    figure = charts.series_comparison(
        charts.SeriesEpisodes([charts.EpisodeBar(hostile, 1200, 1.4)], usual_views=900)
    )
    svg = charts.to_svg(figure, description=hostile)
    assert "<script" not in svg
    root = ET.fromstring(svg.encode())
    assert root.find(f"{SVG_NS}title") is not None
    assert "".join(root.find(f"{SVG_NS}title").itertext()) == hostile  # type: ignore[union-attr]
    # Shortened for the axis, but with its dollar signs and brackets as written.
    assert any(t.startswith("I made $500 in 5 days $x^2$") for t in svg_texts(svg))
    png_size(charts.to_png(figure))


def test_a_long_series_numbers_its_episodes_instead_of_printing_every_title() -> None:
    episodes = [charts.EpisodeBar(f"Title {n}", 100 * n, None) for n in range(1, 501)]
    texts = svg_texts(charts.to_svg(charts.series_comparison(charts.SeriesEpisodes(episodes))))
    assert "Episode number (posting order)" in texts
    assert not any(t.startswith("Title ") for t in texts)


def test_series_views_add_each_episodes_latest_count_not_every_snapshot() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    rows = [
        charts.ViewsPoint(first, "tiktok", 100, START),
        charts.ViewsPoint(second, "tiktok", 50, START + timedelta(hours=1)),
        charts.ViewsPoint(first, "tiktok", 300, START + timedelta(hours=2)),
        charts.ViewsPoint(first, "instagram", 20, START + timedelta(hours=2)),
    ]
    assert charts.total_views_timeline(rows) == [
        (START, 100),
        (START + timedelta(hours=1), 150),
        (START + timedelta(hours=2), 370),
    ]


def test_a_big_series_is_drawn_one_point_per_day() -> None:
    midnight = START.replace(hour=0)
    rows = [
        charts.ViewsPoint(uuid.UUID(int=v), "tiktok", 10 * h, midnight + timedelta(hours=h))
        for v in range(3)
        for h in range(24 * 30)
    ]
    figure = charts.series_views(charts.total_views_timeline(rows))
    (line,) = figure.axes[0].get_lines()
    assert len(np.asarray(line.get_xdata())) == 30


def test_warming_up_draws_without_data() -> None:
    charts.warm_up()
