"""Performance aggregates for a tenant with 10k videos × 90 daily snapshots.

Run:  .venv/bin/python -m tests.benchmarks.improve_aggregates [--videos 10000] [--days 90]
      [--series-size 500] [--samples 200] [--json out.json]

What it does, in one run:

1. Generates the tenant: `--videos` videos, each on one platform (alternating TikTok and
   Instagram), in collections of `--series-size`, one snapshot a day for `--days` days.
   Views on day d (1-based) are `level × d` with a per-video level drawn log-uniformly in
   [10, 10 000], likes a tenth of views, comments a hundredth: every aggregate has a value
   that can be worked out by hand (latest views = level × days, growth = level per day).
   Hashtags: each title carries `#even`/`#odd` by index and `#top` on every tenth video.
2. Starts a throwaway PostgreSQL, migrates it, and COPYs the rows (binary).
3. Measures, on the same data:
   * `video_summary` for `--samples` random videos (p50/p95), against the baseline of the
     same summary whose tenant baselines come from one `DISTINCT ON` pass over all the
     tenant's snapshots (what a query without the per-video index probes does); the
     tenant's usual is cached for a minute (`TENANT_LATEST_TTL_S`), so most reads find it cached;
   * `series_performance` for every collection (p50/p95), against the baseline of loading
     all the series' snapshots through the ORM and aggregating them in Python;
   * the same summary right after the tenant's cached latest views were forgotten (the first
     read of a tenant in a process, or the first after a write), and `tenant_baselines` and
     `popularity` alone.
4. Checks the results against values computed by hand from the generator (numpy) on a few
   videos and a series: latest views, growth per day, "x× your usual", engagement, the
   series' median and best episode, and the lift of `#top`.

Nothing is asserted: figures and the check's verdict are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.core import statistics
from reelflow.core.db import create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.improve import aggregates
from reelflow.improve.performance import forget_tenant_latest
from schemas.discover import Platform
from schemas.improve_tables import VideoPerformance
from tests.benchmarks.common import (
    machine,
    percentile,
    report,
    throwaway_postgres,
    verdict,
    write_json,
)
from tests.support import libpq_url

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SUMMARY_TARGET_MS = 150.0
SERIES_TARGET_MS = 1000.0


@dataclass
class Tenant:
    tenant_id: uuid.UUID
    video_ids: list[uuid.UUID]
    collections: list[uuid.UUID]
    levels: np.ndarray
    platforms: list[str]
    days: int

    def latest_views(self, index: int) -> int:
        return int(self.levels[index]) * self.days


def generate(videos: int, days: int, series_size: int, seed: int) -> Tenant:
    rng = np.random.default_rng(seed)
    levels = np.rint(np.exp(rng.uniform(np.log(10), np.log(10_000), videos))).astype(np.int64)
    return Tenant(
        tenant_id=uuid.uuid4(),
        video_ids=[uuid.uuid4() for _ in range(videos)],
        collections=[uuid.uuid4() for _ in range((videos + series_size - 1) // series_size)],
        levels=levels,
        platforms=["tiktok" if i % 2 == 0 else "instagram" for i in range(videos)],
        days=days,
    )


def load(url: str, tenant: Tenant, series_size: int) -> float:
    started = time.perf_counter()
    first_day = NOW - timedelta(days=tenant.days)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO tenants (id, name, plan) VALUES (%s, 'bench', 'pro')", (tenant.tenant_id,)
        )
        with cur.copy(
            "COPY videos (id, tenant_id, collection_id, title, origin, source_key, status, stage,"
            " progress, cost_usd, created_at, updated_at) FROM STDIN"
        ) as copy:
            for i, video in enumerate(tenant.video_ids):
                tags = ("#even" if i % 2 == 0 else "#odd") + (" #top" if i % 10 == 0 else "")
                copy.write_row(
                    (
                        video,
                        tenant.tenant_id,
                        tenant.collections[i // series_size],
                        f"Episode {i} {tags}",
                        "generated",
                        f"videos/{video}",
                        "completed",
                        "done",
                        1.0,
                        0,
                        first_day - timedelta(days=1),
                        first_day,
                    )
                )
        columns = (
            "id, tenant_id, video_id, platform, views, likes, comments, shares, saves,"
            " recorded_at, source, created_at, updated_at"
        )
        with cur.copy(f"COPY video_performance ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(
                [
                    "uuid",
                    "uuid",
                    "uuid",
                    "text",
                    "int8",
                    "int8",
                    "int8",
                    "int8",
                    "int8",
                    "timestamptz",
                    "text",
                    "timestamptz",
                    "timestamptz",
                ]
            )
            for day in range(1, tenant.days + 1):  # as daily imports would leave them
                at = first_day + timedelta(days=day)
                for i, video in enumerate(tenant.video_ids):
                    views = int(tenant.levels[i]) * day
                    copy.write_row(
                        (
                            uuid.uuid4(),
                            tenant.tenant_id,
                            video,
                            tenant.platforms[i],
                            views,
                            views // 10,
                            views // 100,
                            0,
                            0,
                            at,
                            "import",
                            at,
                            at,
                        )
                    )
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE video_performance")
        conn.execute("VACUUM ANALYZE videos")
    return time.perf_counter() - started


# --- baselines (what the product would do without its index probes) ---------------------------


async def baseline_summary(session: AsyncSession, tenant_id: uuid.UUID, video_id: uuid.UUID) -> Any:
    """The same summary, with the tenant's usual from one pass over all its snapshots."""
    raw = await (await session.connection()).get_raw_connection()
    pg: Any = raw.driver_connection
    cursor = await pg.execute(
        "SELECT DISTINCT ON (video_id, platform) platform, views FROM video_performance"
        " WHERE tenant_id = %s ORDER BY video_id, platform, recorded_at DESC",
        (tenant_id,),
    )
    by_platform: dict[str, list[float]] = defaultdict(list)
    for platform, views in await cursor.fetchall():
        by_platform[platform].append(float(views))
    baselines = {p: statistics.median(v) for p, v in by_platform.items()}
    rows = list(
        await session.scalars(
            select(VideoPerformance)
            .where(VideoPerformance.video_id == video_id)
            .order_by(VideoPerformance.recorded_at)
        )
    )
    latest = rows[-1]
    return latest.views / baselines[latest.platform]


async def baseline_series(
    session: AsyncSession, tenant_id: uuid.UUID, video_ids: list[uuid.UUID]
) -> float:
    """Every snapshot of the series through the ORM, aggregated in Python."""
    rows = await session.scalars(
        select(VideoPerformance).where(
            VideoPerformance.tenant_id == tenant_id, VideoPerformance.video_id.in_(video_ids)
        )
    )
    latest: dict[uuid.UUID, VideoPerformance] = {}
    for row in rows:
        kept = latest.get(row.video_id)
        if kept is None or row.recorded_at > kept.recorded_at:
            latest[row.video_id] = row
    return statistics.median([float(r.views) for r in latest.values()])


async def timed(work: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await work
    return (time.perf_counter() - started) * 1000, result


async def measure(url: str, tenant: Tenant, args: argparse.Namespace) -> dict[str, Any]:
    engine = create_engine(url, pool_size=2)
    sessions = session_factory(engine)
    rng = random.Random(args.seed)
    sample = rng.sample(range(len(tenant.video_ids)), min(args.samples, len(tenant.video_ids)))
    tid = tenant.tenant_id
    out: dict[str, Any] = {}
    try:
        async with sessions() as session:  # warm-up: plans, connection, caches
            await aggregates.video_summary(session, tenant_id=tid, video_id=tenant.video_ids[0])
            await aggregates.series_performance(
                session, tenant_id=tid, collection_id=tenant.collections[0]
            )
        summary_ms, baseline_summary_ms = [], []
        for n, index in enumerate(sample):
            async with sessions() as session:
                ms, _ = await timed(
                    aggregates.video_summary(
                        session, tenant_id=tid, video_id=tenant.video_ids[index]
                    )
                )
                summary_ms.append(ms)
                if n < max(10, args.samples // 10):
                    ms, _ = await timed(baseline_summary(session, tid, tenant.video_ids[index]))
                    baseline_summary_ms.append(ms)
        series_ms, baseline_series_ms = [], []
        collections_ids: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
        for i, video in enumerate(tenant.video_ids):
            collections_ids[tenant.collections[i // args.series_size]].append(video)
        for _round in range(args.series_rounds):
            for collection in tenant.collections:
                async with sessions() as session:
                    ms, _ = await timed(
                        aggregates.series_performance(
                            session, tenant_id=tid, collection_id=collection
                        )
                    )
                    series_ms.append(ms)
        for collection in tenant.collections[: max(3, len(tenant.collections) // 4)]:
            async with sessions() as session:
                ms, _ = await timed(baseline_series(session, tid, collections_ids[collection]))
                baseline_series_ms.append(ms)
        cold_ms = []
        for index in sample[:10]:
            forget_tenant_latest(tid)
            async with sessions() as session:
                ms, _ = await timed(
                    aggregates.video_summary(
                        session, tenant_id=tid, video_id=tenant.video_ids[index]
                    )
                )
                cold_ms.append(ms)
        forget_tenant_latest(tid)
        async with sessions() as session:
            baselines_ms, baselines = await timed(
                aggregates.tenant_baselines(session, tenant_id=tid)
            )
            popularity_ms, scores = await timed(
                aggregates.popularity(session, tenant_id=tid, video_ids=tenant.video_ids[:50])
            )
        out["timings_ms"] = {
            "summary": summary_ms,
            "summary_baseline": baseline_summary_ms,
            "summary_cold": cold_ms,
            "series": series_ms,
            "series_baseline": baseline_series_ms,
            "tenant_baselines": baselines_ms,
            "popularity_50": popularity_ms,
        }
        out["check"] = await check(sessions, tenant, args, baselines, scores)
    finally:
        await engine.dispose()
    return out


async def check(
    sessions: Any,
    tenant: Tenant,
    args: argparse.Namespace,
    baselines: dict[Platform, float],
    scores: dict[uuid.UUID, float],
) -> dict[str, Any]:
    """The product's numbers against the generator's, worked out independently."""
    problems: list[str] = []
    latest = tenant.levels * tenant.days
    is_tiktok = np.array([p == "tiktok" for p in tenant.platforms])
    expected_usual = {
        Platform.TIKTOK: float(np.median(latest[is_tiktok])),
        Platform.INSTAGRAM: float(np.median(latest[~is_tiktok])),
    }
    if baselines != expected_usual:
        problems.append(f"baselines {baselines} != {expected_usual}")
    for index in (0, 1, 7, len(tenant.video_ids) - 1):
        async with sessions() as session:
            summary = await aggregates.video_summary(
                session, tenant_id=tenant.tenant_id, video_id=tenant.video_ids[index]
            )
        level = int(tenant.levels[index])
        platform = summary.platforms[0]
        expected = {
            "views": level * tenant.days,
            "views_per_day": float(level),
            "times_usual": level * tenant.days / expected_usual[Platform(tenant.platforms[index])],
            "engagement": ((level * tenant.days) // 10 + (level * tenant.days) // 100)
            / (level * tenant.days),
        }
        got = {
            "views": summary.totals["views"],
            "views_per_day": platform.views_per_day,
            "times_usual": platform.times_usual,
            "engagement": summary.engagement_rate,
        }
        for key, value in expected.items():
            actual = got[key]
            if actual is None or abs(float(actual) - value) > 1e-9 * max(1.0, abs(value)):
                problems.append(f"video {index} {key}: {actual} != {value}")
    first_series = [i for i in range(len(tenant.video_ids)) if i // args.series_size == 0]
    async with sessions() as session:
        series = await aggregates.series_performance(
            session, tenant_id=tenant.tenant_id, collection_id=tenant.collections[0]
        )
    views = latest[first_series]
    if series.median_views != float(np.median(views)):
        problems.append(f"series median {series.median_views} != {np.median(views)}")
    best = first_series[int(np.argmax(views))]
    if series.best_episodes[0].video_id != tenant.video_ids[best]:
        problems.append("series best episode differs")
    top = [i for i in first_series if i % 10 == 0]
    expected_lift = float(np.median(latest[top])) / float(np.median(views))
    lift = next(h.lift for h in series.hashtags if h.hashtag == "top")
    if lift is None or abs(lift - expected_lift) > 1e-9:
        problems.append(f"#top lift {lift} != {expected_lift}")
    most = int(np.argmax(latest))
    async with sessions() as session:
        top_score = await aggregates.popularity(
            session, tenant_id=tenant.tenant_id, video_ids=[tenant.video_ids[most]]
        )
    if top_score[tenant.video_ids[most]] != 1.0:
        problems.append("the most viewed video's popularity is not 1.0")
    if any(not 0.0 <= s <= 1.0 for s in scores.values()):
        problems.append("popularity outside 0..1")
    return {"ok": not problems, "problems": problems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--series-size", type=int, default=500)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--series-rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    box = machine()
    report(box.line())
    tenant = generate(args.videos, args.days, args.series_size, args.seed)
    rows = args.videos * args.days
    with throwaway_postgres("improve_bench") as server:
        upgrade_database(server.url)
        load_s = load(libpq_url(server.url), tenant, args.series_size)
        report(
            f"loaded {args.videos:,} videos × {args.days} snapshots = {rows:,} rows "
            f"(COPY + VACUUM ANALYZE) in {load_s:.1f} s"
        )
        result = asyncio.run(measure(server.url, tenant, args))
    t = result["timings_ms"]

    def line(name: str, values: list[float]) -> tuple[float, float]:
        p50, p95 = percentile(values, 50), percentile(values, 95)
        report(f"{name:<44} n={len(values):<4} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms")
        return p50, p95

    _, summary_p95 = line("video_summary", t["summary"])
    line("video_summary, tenant's usual not cached", t["summary_cold"])
    _, summary_base_p95 = line("baseline: usual from one pass over all rows", t["summary_baseline"])
    _, series_p95 = line(f"series_performance ({args.series_size} videos)", t["series"])
    _, series_base_p95 = line("baseline: ORM load of the series + Python", t["series_baseline"])
    report(
        f"tenant_baselines alone, not cached: {t['tenant_baselines']:.1f} ms; "
        f"popularity of 50 videos: {t['popularity_50']:.1f} ms"
    )
    report(
        f"per-video p95 {summary_p95:.1f} ms vs target {SUMMARY_TARGET_MS:.0f} ms: "
        f"{verdict(summary_p95 <= SUMMARY_TARGET_MS)} "
        f"({summary_base_p95 / summary_p95:.1f}× faster than the baseline)"
    )
    report(
        f"series p95 {series_p95:.1f} ms vs target {SERIES_TARGET_MS:.0f} ms: "
        f"{verdict(series_p95 <= SERIES_TARGET_MS)} "
        f"({series_base_p95 / series_p95:.1f}× faster than the baseline)"
    )
    check_result = result["check"]
    report(
        "correctness against hand-computed values: "
        + ("OK" if check_result["ok"] else "FAILED: " + "; ".join(check_result["problems"]))
    )
    write_json(
        args.json,
        {
            "machine": box.as_dict(),
            "rows": rows,
            "load_s": load_s,
            "summary_p95_ms": summary_p95,
            "summary_baseline_p95_ms": summary_base_p95,
            "series_p95_ms": series_p95,
            "series_baseline_p95_ms": series_base_p95,
            "tenant_baselines_ms": t["tenant_baselines"],
            "check": check_result,
        },
    )


if __name__ == "__main__":
    main()
