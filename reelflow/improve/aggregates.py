"""Aggregates of performance snapshots: per video, per tenant (baselines), per series.

"Your usual" on a platform is the tenant's **baseline**: the median, over the tenant's videos
with numbers on that platform, of each video's latest views (`reelflow.core.statistics`, the
module Discover's outlier scores use, for the same reason: one viral video must not move the
usual). A video's latest views ÷ that baseline is its "x× your usual".

Definitions a reader of the numbers needs:

* **Latest** values on a platform are those of the newest snapshot there; platform counts are
  cumulative, so totals add the latest values of each platform, never snapshots over time.
* **Engagement rate** = (likes + comments + shares + saves) ÷ views.
* **Growth per day** on a platform = (latest views − first views) ÷ days between the two
  snapshots; None with a single snapshot.
* **Best platform**: the highest "x× your usual"; by raw latest views when no platform has a
  baseline to compare with.
* **Traffic breakdown**: share of the snapshots that name a traffic source, per source.
* **Popularity** (read by chat retrieval): log(1 + views) ÷ log(1 + the tenant's highest),
  where views are a video's latest views summed over platforms. Log-scaled because views are
  heavy-tailed: linearly, all but the top few videos would be ~0 and the boost would do
  nothing.

Series (videos sharing `videos.collection_id`):

* An episode's **publishing time** is its linked post's `posted_at` (Discover), else its
  first snapshot's `recorded_at`, else the asset's `created_at`.
* **Cadence**: each episode's gap since the previous one, bucketed (< 1 day, 1–3, 3–7, ≥ 7
  days) with the median views per bucket, and the Spearman rank correlation of gap and views.
* **Hashtags** are read from the video titles and, for episodes linked to a Discover post,
  the post's caption (`#word`, case-folded). Each hashtag's lift is the median views of the
  episodes using it ÷ the series' median views.

Reads copy new scrape snapshots of linked posts first (`performance.sync_linked_posts`); the
tenant's baselines read the stored snapshots as they are.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.core import statistics
from reelflow.core.errors import DomainError
from reelflow.improve.performance import (
    cached_tenant_latest,
    remember_tenant_latest,
    require_video,
    sync_linked_posts,
)
from schemas.discover import Platform
from schemas.failures import FailureCode
from schemas.improve import (
    CadenceBucket,
    EpisodePerformance,
    HashtagEffect,
    PlatformLatest,
    SeriesPerformance,
    VideoPerformanceSummary,
)
from schemas.improve_tables import VideoPerformance
from schemas.tables import Video

COUNTS = ("views", "likes", "comments", "shares", "saves")
_PLATFORMS = [platform.value for platform in Platform]
_UUIDS = ARRAY(PG_UUID(as_uuid=True))
_HASHTAG = re.compile(r"#(\w+)", re.UNICODE)
EPISODES_AT_EACH_END = 3
"""How many best and worst episodes a series summary names."""
CADENCE_BUCKETS: tuple[tuple[str, float, float | None], ...] = (
    ("under 1 day", 0.0, 1.0),
    ("1-3 days", 1.0, 3.0),
    ("3-7 days", 3.0, 7.0),
    ("7 days or more", 7.0, None),
)


def engagement_rate(views: int, likes: int, comments: int, shares: int, saves: int) -> float | None:
    """(likes + comments + shares + saves) ÷ views; None without views."""
    if views <= 0:
        return None
    return (likes + comments + shares + saves) / views


def fingerprint_rows(rows: Iterable[VideoPerformance]) -> str:
    """A digest of every stored value of the rows, in id order: any add, change or removal
    changes it (insights are cached under it)."""
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r.id):
        digest.update(
            "|".join(
                str(value)
                for value in (
                    row.id,
                    row.platform,
                    row.recorded_at.isoformat(),
                    row.views,
                    row.likes,
                    row.comments,
                    row.shares,
                    row.saves,
                    row.watch_time_seconds,
                    row.completion_rate,
                    row.traffic_source,
                    row.post_id,
                )
            ).encode()
        )
        digest.update(b"\n")
    return digest.hexdigest()[:32]


# --- tenant ------------------------------------------------------------------------------------

_LATEST_VIEWS = text(
    """
    SELECT v.id AS video_id, p.platform, l.views
    FROM videos v
    CROSS JOIN unnest(CAST(:platforms AS text[])) AS p(platform)
    JOIN LATERAL (
        SELECT vp.views FROM video_performance vp
        WHERE vp.video_id = v.id AND vp.platform = p.platform
        ORDER BY vp.recorded_at DESC
        LIMIT 1
    ) l ON true
    WHERE v.tenant_id = :tenant_id
    """
)
"""Latest views per video and platform: one backward probe of the unique index per pair,
so the cost follows the number of videos, not of snapshots."""


@dataclass(frozen=True)
class _TenantLatest:
    baselines: dict[Platform, float]
    totals: dict[uuid.UUID, int]
    """Latest views summed over platforms, per video with any snapshot."""
    top: int


async def _tenant_latest(session: AsyncSession, tenant_id: uuid.UUID) -> _TenantLatest:
    cached = cached_tenant_latest(tenant_id)
    if isinstance(cached, _TenantLatest):
        return cached
    result = await session.execute(_LATEST_VIEWS, {"tenant_id": tenant_id, "platforms": _PLATFORMS})
    by_platform: dict[str, list[float]] = defaultdict(list)
    totals: dict[uuid.UUID, int] = defaultdict(int)
    for row in result:
        by_platform[row.platform].append(float(row.views))
        totals[row.video_id] += int(row.views)
    latest = _TenantLatest(
        baselines={
            Platform(name): statistics.median(values) for name, values in by_platform.items()
        },
        totals=dict(totals),
        top=max(totals.values(), default=0),
    )
    remember_tenant_latest(tenant_id, latest)
    return latest


async def tenant_baselines(session: AsyncSession, *, tenant_id: uuid.UUID) -> dict[Platform, float]:
    """The median of each video's latest views, per platform; platforms without any
    snapshot are absent. Reused for `TENANT_LATEST_TTL_S` (`reelflow.improve.performance`)."""
    return dict((await _tenant_latest(session, tenant_id)).baselines)


async def popularity(
    session: AsyncSession, *, tenant_id: uuid.UUID, video_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, float]:
    """Each requested video's popularity in 0..1 (1 = the tenant's most viewed; see the module
    docstring). Every requested id gets a value: 0.0 without metrics, and for ids that are
    not the tenant's (which must not tell whether they exist)."""
    if not video_ids:
        return {}
    latest = await _tenant_latest(session, tenant_id)
    if latest.top <= 0:
        return dict.fromkeys(video_ids, 0.0)
    scale = math.log1p(latest.top)
    return {video: math.log1p(latest.totals.get(video, 0)) / scale for video in video_ids}


# --- one video ---------------------------------------------------------------------------------


async def video_summary(
    session: AsyncSession, *, tenant_id: uuid.UUID, video_id: uuid.UUID
) -> VideoPerformanceSummary:
    """Totals, latest values per platform against the tenant's usual, growth, best platform,
    traffic breakdown and the metrics fingerprint of one video.

    Raises:
        DomainError: `VIDEO_NOT_FOUND` (also for another tenant's video).
    """
    await require_video(session, tenant_id, video_id)
    await sync_linked_posts(session, tenant_id=tenant_id, video_ids=[video_id])
    rows = list(
        await session.scalars(
            select(VideoPerformance)
            .where(VideoPerformance.video_id == video_id, VideoPerformance.tenant_id == tenant_id)
            .order_by(VideoPerformance.recorded_at)
        )
    )
    summary = VideoPerformanceSummary(
        video_id=video_id, snapshots=len(rows), metrics_fingerprint=fingerprint_rows(rows)
    )
    if not rows:
        return summary
    baselines = await tenant_baselines(session, tenant_id=tenant_id)
    first: dict[str, VideoPerformance] = {}
    latest: dict[str, VideoPerformance] = {}
    for row in rows:  # oldest first
        first.setdefault(row.platform, row)
        latest[row.platform] = row
    platforms: list[PlatformLatest] = []
    for name in sorted(latest):
        last, start = latest[name], first[name]
        platform = Platform(name)
        days = (last.recorded_at - start.recorded_at).total_seconds() / 86_400
        baseline = baselines.get(platform)
        platforms.append(
            PlatformLatest(
                platform=platform,
                recorded_at=last.recorded_at,
                views=last.views,
                likes=last.likes,
                comments=last.comments,
                shares=last.shares,
                saves=last.saves,
                completion_rate=last.completion_rate,
                engagement_rate=engagement_rate(
                    last.views, last.likes, last.comments, last.shares, last.saves
                ),
                views_per_day=(last.views - start.views) / days if days > 0 else None,
                baseline_views=baseline,
                times_usual=last.views / baseline if baseline else None,
            )
        )
    totals = {count: sum(int(getattr(latest[p], count)) for p in latest) for count in COUNTS}
    sources = Counter(row.traffic_source for row in rows if row.traffic_source)
    named = sum(sources.values())
    compared = [p for p in platforms if p.times_usual is not None]
    best = (
        max(compared, key=lambda p: p.times_usual or 0.0)
        if compared
        else max(platforms, key=lambda p: p.views)
    )
    return summary.model_copy(
        update={
            "first_recorded_at": rows[0].recorded_at,
            "last_recorded_at": rows[-1].recorded_at,
            "totals": totals,
            "engagement_rate": engagement_rate(*(totals[c] for c in COUNTS)),
            "platforms": platforms,
            "best_platform": best.platform,
            "traffic_breakdown": {
                source: count / named for source, count in sorted(sources.items())
            },
        }
    )


# --- a series ----------------------------------------------------------------------------------

_SERIES_LATEST = text(
    """
    SELECT v.id AS video_id, p.platform, l.views, l.likes, l.comments, l.shares, l.saves,
           l.post_id
    FROM unnest(:video_ids) AS v(id)
    CROSS JOIN unnest(CAST(:platforms AS text[])) AS p(platform)
    JOIN LATERAL (
        SELECT vp.views, vp.likes, vp.comments, vp.shares, vp.saves, vp.post_id
        FROM video_performance vp
        WHERE vp.video_id = v.id AND vp.platform = p.platform
        ORDER BY vp.recorded_at DESC
        LIMIT 1
    ) l ON true
    """
).bindparams(bindparam("video_ids", type_=_UUIDS))

_SERIES_FIRST_AND_FINGERPRINT = text(
    """
    SELECT video_id, min(recorded_at) AS first_at,
           md5(string_agg(concat_ws('|', id, platform, recorded_at, views, likes, comments,
                                    shares, saves, watch_time_seconds, completion_rate,
                                    traffic_source, post_id), ',' ORDER BY id)) AS digest
    FROM video_performance
    WHERE video_id = ANY(:video_ids)
    GROUP BY video_id
    """
).bindparams(bindparam("video_ids", type_=_UUIDS))

_SERIES_POSTS = text(
    """
    SELECT l.video_id, p.posted_at, p.caption
    FROM video_post_links l JOIN posts p ON p.id = l.post_id
    WHERE l.tenant_id = :tenant_id AND l.video_id = ANY(:video_ids)
    UNION
    SELECT vp.video_id, p.posted_at, p.caption
    FROM unnest(:post_ids, :post_videos) AS vp(post_id, video_id)
    JOIN posts p ON p.id = vp.post_id AND p.tenant_id = :tenant_id
    """
).bindparams(
    bindparam("video_ids", type_=_UUIDS),
    bindparam("post_ids", type_=_UUIDS),
    bindparam("post_videos", type_=_UUIDS),
)
"""Posts an episode was published as: linked ones, and those its latest snapshots name."""


@dataclass
class _Episode:
    video_id: uuid.UUID
    title: str
    created_at: datetime
    counts: dict[str, int]
    first_at: datetime | None = None
    posted_at: datetime | None = None
    captions: list[str] | None = None


def hashtags_in(*texts: str | None) -> list[str]:
    """Distinct `#hashtags` of the texts, case-folded, in order of first appearance."""
    seen: dict[str, None] = {}
    for body in texts:
        for tag in _HASHTAG.findall(body or ""):
            seen.setdefault(tag.casefold(), None)
    return list(seen)


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None for fewer than 3 pairs or a constant side."""
    if len(xs) < 3 or len(xs) != len(ys):
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


async def series_performance(
    session: AsyncSession, *, tenant_id: uuid.UUID, collection_id: uuid.UUID
) -> SeriesPerformance:
    """Best and worst episodes, cadence against views and hashtag lift of a collection.

    Raises:
        DomainError: `COLLECTION_NOT_FOUND` when no video of the tenant is in it.
    """
    videos = (
        await session.execute(
            select(Video.id, Video.title, Video.created_at).where(
                Video.tenant_id == tenant_id, Video.collection_id == collection_id
            )
        )
    ).all()
    if not videos:
        raise DomainError(
            FailureCode.COLLECTION_NOT_FOUND, f"no video is in collection {collection_id}"
        )
    video_ids = [row.id for row in videos]
    await sync_linked_posts(session, tenant_id=tenant_id, video_ids=video_ids)
    episodes = {
        row.id: _Episode(row.id, row.title, row.created_at, dict.fromkeys(COUNTS, 0))
        for row in videos
    }
    params = {"video_ids": video_ids, "platforms": _PLATFORMS}
    post_of: dict[uuid.UUID, uuid.UUID] = {}
    with_metrics: set[uuid.UUID] = set()
    for row in await session.execute(_SERIES_LATEST, params):
        episode = episodes[row.video_id]
        with_metrics.add(row.video_id)
        for count in COUNTS:
            episode.counts[count] += int(getattr(row, count))
        if row.post_id is not None:
            post_of[row.post_id] = row.video_id
    digests: list[str] = []
    for row in await session.execute(_SERIES_FIRST_AND_FINGERPRINT, {"video_ids": video_ids}):
        episodes[row.video_id].first_at = row.first_at
        digests.append(f"{row.video_id}:{row.digest}")
    posts = await session.execute(
        _SERIES_POSTS,
        {
            "tenant_id": tenant_id,
            "video_ids": video_ids,
            "post_ids": list(post_of),
            "post_videos": list(post_of.values()),
        },
    )
    for row in posts:
        _attach_post(episodes[row.video_id], row.posted_at, row.caption)
    return _series_from(
        collection_id,
        [episodes[v] for v in video_ids if v in with_metrics],
        total_episodes=len(videos),
        digests=digests,
    )


def _attach_post(episode: _Episode, posted_at: datetime | None, caption: str | None) -> None:
    if posted_at is not None and (episode.posted_at is None or posted_at < episode.posted_at):
        episode.posted_at = posted_at
    if caption:
        episode.captions = [*(episode.captions or []), caption]


def _series_from(
    collection_id: uuid.UUID,
    measured: list[_Episode],
    *,
    total_episodes: int,
    digests: list[str],
) -> SeriesPerformance:
    fingerprint = hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()[:32]
    if not measured:
        return SeriesPerformance(
            collection_id=collection_id,
            episodes=total_episodes,
            episodes_with_metrics=0,
            total_views=0,
            median_views=None,
            engagement_rate=None,
            hashtag_sources=_HASHTAG_SOURCES,
            metrics_fingerprint=fingerprint,
        )

    def published(episode: _Episode) -> datetime:
        return episode.posted_at or episode.first_at or episode.created_at

    ordered = sorted(measured, key=lambda e: (published(e), str(e.video_id)))
    all_views = [float(e.counts["views"]) for e in ordered]
    series_median = statistics.median(all_views)
    items: list[EpisodePerformance] = []
    previous: datetime | None = None
    for episode in ordered:
        when = published(episode)
        items.append(
            EpisodePerformance(
                video_id=episode.video_id,
                title=episode.title,
                published_at=when,
                views=episode.counts["views"],
                engagement_rate=engagement_rate(*(episode.counts[c] for c in COUNTS)),
                times_series_median=statistics.ratio_to_median(
                    float(episode.counts["views"]), all_views
                ),
                gap_days=(when - previous).total_seconds() / 86_400 if previous else None,
                hashtags=hashtags_in(episode.title, *(episode.captions or [])),
            )
        )
        previous = when
    by_views = sorted(items, key=lambda e: (-e.views, str(e.video_id)))
    best = by_views[:EPISODES_AT_EACH_END]
    best_ids = {e.video_id for e in best}
    worst = [e for e in reversed(by_views) if e.video_id not in best_ids][:EPISODES_AT_EACH_END]
    totals = {c: sum(e.counts[c] for e in measured) for c in COUNTS}
    return SeriesPerformance(
        collection_id=collection_id,
        episodes=total_episodes,
        episodes_with_metrics=len(measured),
        total_views=totals["views"],
        median_views=series_median,
        engagement_rate=engagement_rate(*(totals[c] for c in COUNTS)),
        best_episodes=best,
        worst_episodes=worst,
        episode_list=items,
        cadence=_cadence(items),
        cadence_correlation=spearman(
            [e.gap_days for e in items if e.gap_days is not None],
            [float(e.views) for e in items if e.gap_days is not None],
        ),
        hashtags=_hashtag_effects(items, series_median),
        hashtag_sources=_HASHTAG_SOURCES,
        metrics_fingerprint=fingerprint,
    )


_HASHTAG_SOURCES = "video titles and the captions of linked Discover posts"


def _cadence(items: Sequence[EpisodePerformance]) -> list[CadenceBucket]:
    buckets: list[CadenceBucket] = []
    for label, low, high in CADENCE_BUCKETS:
        views = [
            float(e.views)
            for e in items
            if e.gap_days is not None and e.gap_days >= low and (high is None or e.gap_days < high)
        ]
        buckets.append(
            CadenceBucket(
                label=label,
                min_gap_days=low,
                max_gap_days=high,
                episodes=len(views),
                median_views=statistics.median(views) if views else None,
            )
        )
    return buckets


def _hashtag_effects(
    items: Sequence[EpisodePerformance], series_median: float
) -> list[HashtagEffect]:
    views_by_tag: dict[str, list[float]] = defaultdict(list)
    for episode in items:
        for tag in episode.hashtags:
            views_by_tag[tag].append(float(episode.views))
    effects = [
        HashtagEffect(
            hashtag=tag,
            episodes=len(views),
            median_views=statistics.median(views),
            lift=statistics.median(views) / series_median if series_median else None,
        )
        for tag, views in views_by_tag.items()
    ]
    return sorted(effects, key=lambda h: (-(h.lift or 0.0), -h.episodes, h.hashtag))
