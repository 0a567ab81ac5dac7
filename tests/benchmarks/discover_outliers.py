"""Outlier scoring at a million posts: `score_accounts` against two same-run baselines.

Run:  .venv/bin/python -m tests.benchmarks.discover_outliers [--posts 1000000] [--json out.json]

What it does, all in one run:

1. Generates accounts of ~200 posts each (one post a day, give or take), seeded:
   * clean accounts: views = the account's level × e^u, u uniform in [−0.5, 0.5], so no
     post can reach 3× the median of its baseline (at most e ≈ 2.72×): any tier on
     them is a false positive;
   * planted accounts (10 %): clean, plus three posts set to ⌈r × the median of their
     baseline⌉ for r = 4, 7, 20: they must come out 3x, 5x and 10x;
   * noisy accounts (5 %): u in [−2, 2], views swinging ~50× either way; many posts
     reach 3× their median and the robust z test should reject nearly all of them;
   * everywhere: 2 % non-video posts with 30× the views (must stay out of baselines),
     1 % posts without a view count, and the newest posts younger than 48 h.
2. Starts a throwaway PostgreSQL, migrates it, COPYs the posts in posting-time order
   across accounts (as daily scrapes would leave them on disk, not grouped by account).
3. Measures, each in a fresh Python process so peak memory is its own:
   * `score_accounts` over all accounts: read, score, write back, commit;
   * `score_accounts` again after a simulated daily scrape raised the views of each
     account's 30 newest posts by 5 % (the steady state: only changed results are
     rewritten);
   * baseline "load all": the same Python scoring after fetching every row at once
     (no write-back, which favours it);
   * baseline "pure SQL": median and MAD per post with `percentile_cont` in correlated
     LATERAL subqueries over the (account_id, posted_at) index, tiers and reasons in
     SQL, into a table; then the same write-back as `score_accounts`, timed separately
     and rolled back (so the other approaches start from unscored posts).
4. Quality: planted posts found with the right tier, tiers on clean accounts (false
   positives), and how the pure-SQL results agree with the stored ones.

Nothing is asserted: figures are printed with the quality verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from sqlalchemy.ext.asyncio import create_async_engine

from reelflow.core.db import session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.discover.outliers import PostForScoring, score_account, score_accounts
from schemas.discover import OutlierSettings
from tests.benchmarks.common import machine, report, throwaway_postgres, verdict, write_json
from tests.support import libpq_url

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SETTINGS = OutlierSettings()
PLANTED = ((4.0, "3x"), (7.0, "5x"), (20.0, "10x"))
MICROS_PER_DAY = 86_400 * 1_000_000
COPY_COLUMNS = (
    ("id", "uuid"),
    ("tenant_id", "uuid"),
    ("account_id", "uuid"),
    ("platform", "text"),
    ("platform_post_id", "text"),
    ("posted_at", "timestamptz"),
    ("views", "int8"),
    ("is_video", "bool"),
)


# --- data ------------------------------------------------------------------------------------


@dataclass
class Dataset:
    account_ids: list[uuid.UUID]
    account_kind: list[str]  # clean | planted | noisy
    account_of_post: npt.NDArray[np.int64]
    age_us: npt.NDArray[np.int64]  # NOW − posted_at, microseconds
    views: npt.NDArray[np.int64]  # −1: no view count
    is_video: npt.NDArray[np.bool_]
    planted: dict[int, str]  # post index → expected tier

    @property
    def size(self) -> int:
        return len(self.views)


def generate(posts: int, per_account: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    n_accounts = max(1, posts // per_account)
    kinds = rng.choice(["clean", "planted", "noisy"], size=n_accounts, p=[0.85, 0.10, 0.05])
    account_of_post: list[npt.NDArray[np.int64]] = []
    ages: list[npt.NDArray[np.int64]] = []
    all_views: list[npt.NDArray[np.int64]] = []
    videos: list[npt.NDArray[np.bool_]] = []
    planted: dict[int, str] = {}
    offset = 0
    window_us = SETTINGS.window_days * MICROS_PER_DAY
    min_age_us = int(SETTINGS.min_age_hours * 3600 * 1_000_000)
    for account in range(n_accounts):
        n = per_account
        # Oldest first: gaps of 0.5–1.5 days back from a newest post 0–1.5 days old.
        gaps = rng.uniform(0.5, 1.5, n)
        newest = rng.uniform(0.0, 1.5)
        age_days = newest + np.concatenate(([0.0], np.cumsum(gaps[1:])))[::-1]
        age = (age_days * MICROS_PER_DAY).astype(np.int64)
        level = math.exp(rng.uniform(math.log(1e3), math.log(1e6)))
        spread = 2.0 if kinds[account] == "noisy" else 0.5
        views = np.rint(level * np.exp(rng.uniform(-spread, spread, n))).astype(np.int64)
        is_video = rng.random(n) >= 0.02
        views[~is_video] *= 30
        views[(rng.random(n) < 0.01) & is_video] = -1
        if kinds[account] == "planted":
            comparable = is_video & (views >= 0) & (age >= min_age_us)
            candidates = np.flatnonzero(comparable)
            candidates = candidates[candidates >= 40]
            chosen = np.sort(rng.choice(candidates, size=len(PLANTED), replace=False))
            for index, (ratio, tier) in zip(chosen, PLANTED, strict=True):
                # Oldest first, so age falls with the index; baseline = comparable posts
                # posted up to window_days before this one, this one excluded.
                in_window = comparable & (age >= age[index]) & (age <= age[index] + window_us)
                in_window[index] = False
                baseline_median = float(np.median(views[in_window]))
                views[index] = math.ceil(ratio * baseline_median)
                planted[offset + int(index)] = tier
        account_of_post.append(np.full(n, account, dtype=np.int64))
        ages.append(age)
        all_views.append(views)
        videos.append(is_video)
        offset += n
    return Dataset(
        account_ids=[uuid.uuid4() for _ in range(n_accounts)],
        account_kind=[str(kind) for kind in kinds],
        account_of_post=np.concatenate(account_of_post),
        age_us=np.concatenate(ages),
        views=np.concatenate(all_views),
        is_video=np.concatenate(videos),
        planted=planted,
    )


def load(url: str, data: Dataset) -> tuple[uuid.UUID, list[uuid.UUID], float]:
    """Tenant, accounts and posts (COPY, oldest post first across accounts); post ids."""
    tenant_id = uuid.uuid4()
    post_ids = [uuid.uuid4() for _ in range(data.size)]
    started = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO tenants (id, name, plan) VALUES (%s, 'bench', 'pro')", (tenant_id,)
        )
        with cur.copy("COPY watched_accounts (id, tenant_id, platform, handle) FROM STDIN") as cp:
            for i, account_id in enumerate(data.account_ids):
                cp.write_row((account_id, tenant_id, "tiktok", f"account{i}"))
        columns = ", ".join(name for name, _ in COPY_COLUMNS)
        with cur.copy(f"COPY posts ({columns}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types([kind for _, kind in COPY_COLUMNS])
            for i in np.argsort(-data.age_us, kind="stable").tolist():
                views = int(data.views[i])
                cp.write_row(
                    (
                        post_ids[i],
                        tenant_id,
                        data.account_ids[int(data.account_of_post[i])],
                        "tiktok",
                        f"p{i}",
                        NOW - timedelta(microseconds=int(data.age_us[i])),
                        None if views < 0 else views,
                        bool(data.is_video[i]),
                    )
                )
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE posts")
        conn.execute("VACUUM ANALYZE watched_accounts")
    return tenant_id, post_ids, time.perf_counter() - started


# --- measured approaches (each in its own process) --------------------------------------------

SQL_BASELINE = """
CREATE TABLE sql_scores AS
WITH scored AS (
    SELECT p.id, p.views, b.n, b.median_views,
           CASE WHEN m.mad > 0 THEN 0.6745 * (ln(1 + p.views) - b.median_log) / m.mad END AS z,
           p.is_video, p.posted_at
    FROM posts p
    LEFT JOIN LATERAL (
        SELECT count(*) AS n,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY q.views) AS median_views,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY ln(1 + q.views)) AS median_log
        FROM posts q
        WHERE q.account_id = p.account_id
          AND q.posted_at BETWEEN p.posted_at - make_interval(days => %(window)s) AND p.posted_at
          AND q.id <> p.id AND q.is_video AND q.views >= 0
    ) b ON p.is_video AND p.views >= 0 AND p.posted_at <= %(cutoff)s
    LEFT JOIN LATERAL (
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(ln(1 + q.views) - b.median_log))
               AS mad
        FROM posts q
        WHERE q.account_id = p.account_id
          AND q.posted_at BETWEEN p.posted_at - make_interval(days => %(window)s) AND p.posted_at
          AND q.id <> p.id AND q.is_video AND q.views >= 0
    ) m ON b.n >= %(min_posts)s
    WHERE p.tenant_id = %(tenant)s AND p.account_id = ANY(%(accounts)s)
)
SELECT id,
       CASE WHEN n >= %(min_posts)s AND median_views > 0 THEN views / median_views END AS score,
       CASE WHEN n >= %(min_posts)s AND median_views > 0 THEN z END AS z,
       CASE WHEN n >= %(min_posts)s AND median_views > 0
                 AND views / median_views >= %(min_ratio)s
                 AND (z IS NULL OR z >= %(min_z)s)
            THEN CASE WHEN views / median_views >= 10 THEN '10x'
                      WHEN views / median_views >= 5 THEN '5x'
                      WHEN views / median_views >= 3 THEN '3x' END
       END AS tier,
       CASE WHEN NOT is_video THEN 'not_a_video'
            WHEN views IS NULL OR views < 0 THEN 'no_views'
            WHEN posted_at IS NULL THEN 'no_posted_at'
            WHEN posted_at > %(cutoff)s THEN 'too_recent'
            WHEN n < %(min_posts)s THEN 'too_few_posts'
            WHEN median_views = 0 THEN 'zero_median'
       END AS reason
FROM scored
"""


SQL_WRITE_BACK = """
UPDATE posts SET outlier_score = s.score, outlier_z = s.z, outlier_tier = s.tier,
       no_score_reason = s.reason, scored_at = %(now)s
FROM sql_scores AS s
WHERE posts.id = s.id AND posts.tenant_id = %(tenant)s
  AND (posts.scored_at IS NULL
       OR (posts.outlier_score, posts.outlier_z, posts.outlier_tier, posts.no_score_reason)
          IS DISTINCT FROM (s.score, s.z, s.tier, s.reason))
"""


def _peak_rss_mib() -> float:
    """Peak resident set of this process image (VmHWM).

    Not ``ru_maxrss``: Linux carries it across exec, so a child would report the
    parent's peak (the generated data set) as its own.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _measure(approach: str, url: str, tenant_id: uuid.UUID) -> dict[str, Any]:
    engine = create_async_engine(url, pool_size=1)
    sessions = session_factory(engine)
    try:
        async with engine.connect() as conn:
            account_ids = list(
                (
                    await conn.exec_driver_sql(
                        "SELECT id FROM watched_accounts WHERE tenant_id = %(t)s", {"t": tenant_id}
                    )
                ).scalars()
            )
        rss_before = _peak_rss_mib()
        started = time.perf_counter()
        result: dict[str, Any] = {}
        async with sessions() as session:
            if approach in ("streaming", "rescore"):
                summary = await score_accounts(
                    session,
                    tenant_id=tenant_id,
                    account_ids=account_ids,
                    settings=SETTINGS,
                    now=NOW,
                )
                await session.commit()
                result = {
                    "scored": summary.scored,
                    "by_tier": summary.by_tier,
                    "rewritten": summary.changed,
                }
            elif approach == "load_all":
                raw = await (await session.connection()).get_raw_connection()
                pg: Any = raw.driver_connection
                cursor = await pg.execute(
                    "SELECT account_id, id, posted_at, views, is_video FROM posts"
                    " WHERE tenant_id = %s AND account_id = ANY(%s)",
                    (tenant_id, account_ids),
                )
                rows = await cursor.fetchall()
                by_account: dict[uuid.UUID, list[PostForScoring]] = {}
                for account_id, post_id, posted_at, views, is_video in rows:
                    by_account.setdefault(account_id, []).append(
                        PostForScoring(post_id, posted_at, views, is_video)
                    )
                tiers: Counter[str] = Counter()
                scores = [score_account(p, SETTINGS, NOW) for p in by_account.values()]
                for account_scores in scores:
                    tiers.update(s.tier.value for s in account_scores if s.tier is not None)
                result = {"by_tier": dict(tiers)}
            else:
                raw = await (await session.connection()).get_raw_connection()
                pg = raw.driver_connection
                await pg.execute("DROP TABLE IF EXISTS sql_scores")
                await pg.execute(
                    SQL_BASELINE,
                    {
                        "tenant": tenant_id,
                        "accounts": account_ids,
                        "window": SETTINGS.window_days,
                        "cutoff": NOW - timedelta(hours=SETTINGS.min_age_hours),
                        "min_posts": SETTINGS.min_posts,
                        "min_ratio": SETTINGS.min_ratio,
                        "min_z": SETTINGS.min_robust_z,
                    },
                )
                await session.commit()
                # The write-back it would need, timed and rolled back so the next
                # approaches start from unscored posts (the parent vacuums the dead rows).
                write_started = time.perf_counter()
                await pg.execute(SQL_WRITE_BACK, {"now": NOW, "tenant": tenant_id})
                result["write_back_s"] = time.perf_counter() - write_started
                await session.rollback()
                result["wall_s"] = write_started - started
                return _finish(result, rss_before)
        result["wall_s"] = time.perf_counter() - started
        return _finish(result, rss_before)
    finally:
        await engine.dispose()


def _finish(result: dict[str, Any], rss_before: float) -> dict[str, Any]:
    result["rss_before_mib"] = rss_before
    result["peak_rss_mib"] = _peak_rss_mib()
    return result


def measure_in_child(approach: str, url: str, tenant_id: uuid.UUID) -> dict[str, Any]:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.benchmarks.discover_outliers",
            "--measure",
            approach,
            "--url",
            url,
            "--tenant",
            str(tenant_id),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def vacuum(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE posts")


def refresh_newest(url: str) -> int:
    """What a daily scrape does before rescoring: newer views for each account's newest
    posts (+5 %: a clean post stays below 3×, a planted one keeps its tier)."""
    with psycopg.connect(url) as conn:
        updated = conn.execute(
            "UPDATE posts SET views = views + views / 20 FROM ("
            "  SELECT id FROM (SELECT id, row_number() OVER"
            "    (PARTITION BY account_id ORDER BY posted_at DESC) AS newest FROM posts) AS r"
            "  WHERE newest <= 30) AS n"
            " WHERE posts.id = n.id AND posts.views IS NOT NULL"
        ).rowcount
        conn.commit()
    vacuum(url)
    return updated


# --- quality ------------------------------------------------------------------------------


def quality(url: str, data: Dataset, post_ids: Sequence[uuid.UUID]) -> dict[str, Any]:
    index_of = {post_id: i for i, post_id in enumerate(post_ids)}
    with psycopg.connect(url) as conn:
        stored = conn.execute(
            "SELECT id, outlier_score, outlier_tier, no_score_reason FROM posts"
        ).fetchall()
        has_sql = conn.execute("SELECT to_regclass('sql_scores') IS NOT NULL").fetchone()
        agreement: tuple[Any, ...] | None = None
        if has_sql and has_sql[0]:
            agreement = conn.execute(
                "SELECT count(*) FILTER (WHERE p.outlier_tier IS DISTINCT FROM s.tier),"
                " count(*) FILTER (WHERE p.no_score_reason IS DISTINCT FROM s.reason),"
                " max(abs(p.outlier_score - s.score)), count(*)"
                " FROM posts p JOIN sql_scores s ON s.id = p.id"
            ).fetchone()
    found_right = 0
    wrong_tier: list[tuple[str, str | None, float | None]] = []
    false_positives = 0
    noisy_ratio_passed = 0
    noisy_flagged = 0
    reasons: Counter[str] = Counter()
    for post_id, score, tier, reason in stored:
        i = index_of[post_id]
        if reason is not None:
            reasons[reason] += 1
        kind = data.account_kind[int(data.account_of_post[i])]
        expected = data.planted.get(i)
        if expected is not None:
            if tier == expected:
                found_right += 1
            else:
                wrong_tier.append((expected, tier, score))
        elif kind == "noisy":
            noisy_ratio_passed += int(score is not None and score >= SETTINGS.min_ratio)
            noisy_flagged += int(tier is not None)
        elif tier is not None:
            false_positives += 1
    return {
        "planted": len(data.planted),
        "planted_found_right_tier": found_right,
        "planted_wrong": wrong_tier[:10],
        "false_positives_clean_and_planted_accounts": false_positives,
        "noisy_posts_ratio_at_least_3": noisy_ratio_passed,
        "noisy_posts_flagged": noisy_flagged,
        "no_score_reasons": dict(reasons),
        "sql_agreement": None
        if agreement is None
        else {
            "tier_mismatches": agreement[0],
            "reason_mismatches": agreement[1],
            "max_score_diff": agreement[2],
            "rows": agreement[3],
        },
    }


# --- main ---------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--per-account", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--skip-sql", action="store_true", help="skip the pure-SQL baseline")
    parser.add_argument("--json", type=Path, default=None, help="also write a JSON summary")
    parser.add_argument(
        "--measure",
        choices=["streaming", "rescore", "load_all", "sql"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--tenant", type=uuid.UUID, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.measure:
        report(json.dumps(asyncio.run(_measure(args.measure, args.url, args.tenant))))
        return
    box = machine()
    report(box.line())
    started = time.perf_counter()
    data = generate(args.posts, args.per_account, args.seed)
    kinds = Counter(data.account_kind)
    report(
        f"data: {data.size:,} posts over {len(data.account_ids):,} accounts"
        f" ({kinds['clean']} clean, {kinds['planted']} planted, {kinds['noisy']} noisy),"
        f" {len(data.planted)} planted outliers; generated in {time.perf_counter() - started:.1f} s"
    )
    summary: dict[str, Any] = {"machine": box.as_dict(), "posts": data.size}
    with throwaway_postgres("reelflow_outliers_bench") as server:
        upgrade_database(server.url)
        url = libpq_url(server.url)
        tenant_id, post_ids, load_s = load(url, data)
        report(f"load: COPY + VACUUM ANALYZE {load_s:.1f} s ({data.size / load_s:,.0f} posts/s)")
        runs: dict[str, dict[str, Any]] = {}
        for approach in ("sql", "load_all", "streaming", "rescore"):
            if approach == "sql" and args.skip_sql:
                continue
            if approach == "rescore":
                checked = quality(url, data, post_ids)
                refreshed = refresh_newest(url)
                report(f"a scrape raised the views of {refreshed:,} posts (newest 30 each, +5 %)")
            runs[approach] = measure_in_child(approach, server.url, tenant_id)
            run = runs[approach]
            if approach == "sql":
                vacuum(url)
            report(
                f"{approach:>10}: {run['wall_s']:7.1f} s"
                f"  {data.size / run['wall_s']:10,.0f} posts/s"
                f"  peak RSS {run['peak_rss_mib']:6.0f} MiB"
                f" (process at start {run['rss_before_mib']:.0f} MiB)"
                f"  tiers {run.get('by_tier')}"
                + (f", {run['rewritten']:,} posts rewritten" if "rewritten" in run else "")
            )
        rescored = quality(url, data, post_ids)
    streaming = runs["streaming"]["wall_s"]
    if "sql" in runs:
        sql_total = runs["sql"]["wall_s"] + runs["sql"]["write_back_s"]
        report(
            f"pure SQL with the same write-back: {sql_total:.1f} s"
            f" (compute {runs['sql']['wall_s']:.1f} s + write {runs['sql']['write_back_s']:.1f} s),"
            f" {sql_total / streaming:.2f}× score_accounts' time"
        )
    for name, label in (
        ("sql", "pure SQL (compute only, no write-back)"),
        ("load_all", "load all (compute only, no write-back)"),
        ("rescore", "rescore after a scrape"),
    ):
        if name in runs:
            report(f"{label} took {runs[name]['wall_s'] / streaming:.2f}× score_accounts' time")
    for when, result in (("first scoring", checked), ("after the rescore", rescored)):
        report(
            f"quality, {when}: planted found with the right tier"
            f" {result['planted_found_right_tier']}/{result['planted']} (must be all)"
            f" {verdict(result['planted_found_right_tier'] == result['planted'])};"
            f" false positives on clean/planted accounts"
            f" {result['false_positives_clean_and_planted_accounts']} (must be 0)"
            f" {verdict(result['false_positives_clean_and_planted_accounts'] == 0)}"
        )
        if result["planted_wrong"]:
            report(f"  wrong tiers (expected, got, score): {result['planted_wrong']}")
    report(
        f"noisy accounts: {checked['noisy_posts_ratio_at_least_3']} posts at ≥3× their median,"
        f" {checked['noisy_posts_flagged']} of them kept by the robust z test"
    )
    report(f"no-score reasons: {checked['no_score_reasons']}")
    if checked["sql_agreement"] is not None:
        report(f"pure SQL vs stored (first scoring): {checked['sql_agreement']}")
    summary.update(runs=runs, quality=checked, quality_after_rescore=rescored, load_s=load_s)
    write_json(args.json, summary)


if __name__ == "__main__":
    main()
