"""Dataset import benchmark: a 100k-row Apify export parsed and upserted, streamed.

Run:  .venv/bin/python -m tests.benchmarks.discover_dataset_import [--rows 100000] [--json out.json]

What it does, in one run so the ratios compare figures taken on the same machine and load:

1. Writes a seeded `clockworks/tiktok-scraper` export of `--rows` items three ways: JSONL,
   a JSON array, and CSV with `/`-flattened keys (Apify's export shapes). Every 50 rows hold
   one Apify error row, one row without an id and one repeat of an earlier post with fewer
   views (all three must be rejected), plus rows with string counts ("1,234", "1.2M"),
   negative counts and times in seconds, milliseconds or ISO (all must be kept).
2. Starts a throwaway PostgreSQL, migrates it, and imports the JSONL file into one scrape
   and the CSV file into a second scrape of the same project (`import_posts`, one
   transaction each): rows/s, and the growth of the process's peak RSS (ru_maxrss).
3. Parses each file without the database (`iter_dataset`), timed, then again under
   tracemalloc for the peak of Python allocations, against the whole-file way of reading
   the same file (`json.load`, a list of `json.loads` per line, `list(csv.DictReader)`).
4. Quality against the known answer: posts stored = distinct valid ids written, rejected
   rows = rows made bad on purpose, one snapshot per post per scrape, and the second
   import finding every post known (no new posts, every one updated).

Nothing is asserted: figures are printed with their targets and whether they were met.
Targets: parsing memory flat in the file size (peak under 1/5 of the whole-file baseline's)
and the import at 10k rows/s or more.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import resource
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from reelflow.core.db import create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.tenants import create_tenant
from reelflow.discover.datasets import DatasetFormat, iter_dataset
from reelflow.discover.posts import ImportReport, import_posts
from schemas.discover import ScrapedPost
from schemas.discover_tables import Post, PostSnapshot, Project, Scrape, WatchedAccount
from tests.benchmarks.common import machine, report, throwaway_postgres, verdict, write_json

CSV_COLUMNS = (
    "id",
    "text",
    "createTime",
    "createTimeISO",
    "webVideoUrl",
    "authorMeta/name",
    "authorMeta/nickName",
    "authorMeta/fans",
    "authorMeta/verified",
    "videoMeta/duration",
    "videoMeta/height",
    "videoMeta/width",
    "musicMeta/musicName",
    "musicMeta/musicAuthor",
    "hashtags/0/name",
    "hashtags/1/name",
    "playCount",
    "diggCount",
    "shareCount",
    "commentCount",
    "collectCount",
    "isSlideshow",
    "error",
    "errorDescription",
    "url",
)
ACCOUNTS = 500
STARTS = datetime(2025, 6, 1, tzinfo=UTC)


@dataclass(frozen=True)
class KnownAnswer:
    rows: int
    valid_ids: int
    rejected: int


def _counts(rng: random.Random, row: int) -> dict[str, Any]:
    plays = int(rng.lognormvariate(10, 1.5))
    counts: dict[str, Any] = {
        "playCount": plays,
        "diggCount": plays // 12,
        "shareCount": plays // 200,
        "commentCount": plays // 400,
        "collectCount": plays // 300,
    }
    if row % 50 == 41:
        counts["playCount"] = f"{plays:,}" if plays < 1_000_000 else f"{plays / 1e6:.1f}M"
        counts["diggCount"] = f"{plays // 12 / 1000:.1f}K"
    if row % 50 == 43:
        counts["diggCount"] = -1
        counts["shareCount"] = -5
    return counts


def generate_items(rows: int, seed: int) -> Iterator[dict[str, Any]]:
    """The export's items, one at a time; rows made bad on purpose at fixed positions."""
    rng = random.Random(seed)
    written_ids: dict[int, tuple[str, str, int]] = {}
    for row in range(rows):
        position = row % 50
        if position == 7:
            yield {
                "url": f"https://www.tiktok.com/@gone{row}",
                "error": "not_found",
                "errorDescription": "The profile does not exist or is private",
            }
            continue
        account = f"Creator_{rng.randrange(ACCOUNTS)}"
        if position == 29 and row - 20 in written_ids:
            post_id, account, plays = written_ids.pop(row - 20)
            yield {
                "id": post_id,
                "text": "the same post, seen earlier with more plays",
                "authorMeta": {"name": account},
                "webVideoUrl": f"https://www.tiktok.com/@{account.lower()}/video/{post_id}",
                "playCount": max(plays - 1, 0),
            }
            continue
        post_id = str(7_300_000_000_000_000_000 + row)
        posted = STARTS + timedelta(seconds=rng.randrange(180 * 86400))
        unix = int(posted.timestamp())
        create_time: Any = unix if row % 3 else unix * 1000
        counts = _counts(rng, row)
        item: dict[str, Any] = {
            "id": post_id,
            "text": f"Post {row} about {rng.choice(['food', 'travel', 'tech', 'fitness'])} "
            + "lorem ipsum dolor sit amet " * rng.randrange(1, 6),
            "createTime": create_time,
            "createTimeISO": posted.isoformat().replace("+00:00", "Z") if row % 5 == 0 else None,
            "webVideoUrl": f"https://www.tiktok.com/@{account.lower()}/video/{post_id}",
            "authorMeta": {
                "name": f"@{account}" if row % 7 == 0 else account,
                "nickName": account.replace("_", " "),
                # One account's followers are the same on all its posts of one scrape.
                "fans": 1000 + (int(account.rsplit("_", 1)[1]) * 7919) % 5_000_000,
                "verified": rng.random() < 0.1,
            },
            "videoMeta": {"duration": rng.randrange(5, 90), "height": 1024, "width": 576},
            "musicMeta": {"musicName": "original sound", "musicAuthor": account},
            "hashtags": [{"name": "fyp"}, {"name": f"tag{rng.randrange(100)}"}],
            "isSlideshow": False,
            **counts,
        }
        if position == 13:
            del item["id"]
            del item["webVideoUrl"]
        elif position == 9:
            written_ids[row] = (post_id, account, counts["playCount"])
        yield item


def known_answer(rows: int) -> KnownAnswer:
    bad = 0
    for row in range(rows):
        position = row % 50
        if position in (7, 13) or (position == 29 and row >= 20):
            bad += 1
    return KnownAnswer(rows=rows, valid_ids=rows - bad, rejected=bad)


def _flatten(item: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in item.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}/"))
        elif isinstance(value, list):
            flat.update(_flatten({str(i): v for i, v in enumerate(value)}, f"{name}/"))
        else:
            flat[name] = value
    return flat


def write_files(directory: Path, rows: int, seed: int) -> dict[DatasetFormat, Path]:
    paths: dict[DatasetFormat, Path] = {
        "jsonl": directory / "dataset_tiktok-scraper_bench.jsonl",
        "json": directory / "dataset_tiktok-scraper_bench.json",
        "csv": directory / "dataset_tiktok-scraper_bench.csv",
    }
    with (
        paths["jsonl"].open("w", encoding="utf-8") as jsonl,
        paths["json"].open("w", encoding="utf-8") as array,
        paths["csv"].open("w", encoding="utf-8-sig", newline="") as table,
    ):
        writer = csv.DictWriter(table, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        array.write("[\n")
        for number, item in enumerate(generate_items(rows, seed)):
            line = json.dumps({k: v for k, v in item.items() if v is not None})
            jsonl.write(line + "\n")
            array.write(("," if number else "") + line + "\n")
            flat = _flatten(item)
            writer.writerow({k: "" if v is None else str(v).lower() if isinstance(v, bool) else v
                             for k, v in flat.items()})  # fmt: skip
        array.write("]\n")
    return paths


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def consume(path: Path, fmt: DatasetFormat) -> tuple[int, int]:
    posts = rejected = 0
    with path.open("rb") as stream:
        for row in iter_dataset(stream, fmt):
            if isinstance(row, ScrapedPost):
                posts += 1
            else:
                rejected += 1
    return posts, rejected


def whole_file(path: Path, fmt: DatasetFormat) -> int:
    """The baseline: the whole file read into Python objects at once."""
    if fmt == "json":
        with path.open("rb") as stream:
            return len(json.load(stream))
    if fmt == "jsonl":
        with path.open("rb") as stream:
            return len([json.loads(line) for line in stream if line.strip()])
    with path.open(encoding="utf-8-sig", newline="") as text:
        return len(list(csv.DictReader(text)))


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def traced_peak_mib(run: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] / 1024 / 1024
    finally:
        tracemalloc.stop()


async def import_phase(
    url: str, paths: dict[DatasetFormat, Path], answer: KnownAnswer, batch_size: int
) -> dict[str, Any]:
    engine = create_engine(url, pool_size=2)
    sessions = session_factory(engine)
    results: dict[str, Any] = {}
    try:
        async with sessions.begin() as session:
            tenant_id = (await create_tenant(session, name="bench")).tenant_id
            project_id = uuid.uuid4()
            session.add(Project(id=project_id, tenant_id=tenant_id, name="bench"))
        imported: tuple[DatasetFormat, ...] = ("jsonl", "csv")
        for fmt in imported:
            scrape_id = uuid.uuid4()
            async with sessions.begin() as session:
                session.add(
                    Scrape(
                        id=scrape_id,
                        tenant_id=tenant_id,
                        project_id=project_id,
                        source="dataset_file",
                        status="running",
                        stage="upserting",
                        posts_seen=0,
                        posts_new=0,
                        outliers=0,
                        processed=0,
                        errors=[],
                        apify_runs=[],
                        cost_usd=Decimal(0),
                    )
                )
            rss_before = peak_rss_mib()
            started = time.perf_counter()
            with paths[fmt].open("rb") as stream:
                outcome: ImportReport = await import_posts(
                    sessions,
                    tenant_id=tenant_id,
                    scrape_id=scrape_id,
                    rows=iter_dataset(stream, fmt),
                    recorded_at=datetime.now(UTC),
                    batch_size=batch_size,
                )
            seconds = time.perf_counter() - started
            rss_growth = peak_rss_mib() - rss_before
            async with sessions() as session:
                stored = await session.scalar(
                    select(func.count()).select_from(Post).where(Post.tenant_id == tenant_id)
                )
                snapshots = await session.scalar(
                    select(func.count())
                    .select_from(PostSnapshot)
                    .where(PostSnapshot.scrape_id == scrape_id)
                )
                accounts = await session.scalar(
                    select(func.count())
                    .select_from(WatchedAccount)
                    .where(WatchedAccount.tenant_id == tenant_id)
                )
            first = fmt == "jsonl"
            quality = (
                stored == answer.valid_ids
                and snapshots == answer.valid_ids
                and outcome.seen == answer.valid_ids
                and outcome.rejected_count == answer.rejected
                and outcome.new == (answer.valid_ids if first else 0)
                and outcome.updated == (0 if first else answer.valid_ids)
            )
            report(
                f"import {fmt:5}: {answer.rows:,} rows in {seconds:.2f} s = "
                f"{answer.rows / seconds:,.0f} rows/s (target >= 10,000: "
                f"{verdict(answer.rows / seconds >= 10_000)}); peak RSS grew {rss_growth:.1f} MiB"
            )
            report(
                f"  quality: seen {outcome.seen:,} new {outcome.new:,} updated "
                f"{outcome.updated:,} rejected {outcome.rejected_count:,} | posts stored "
                f"{stored:,}, snapshots {snapshots:,}, accounts {accounts:,} | expected "
                f"{answer.valid_ids:,} posts, {answer.rejected:,} rejected: "
                f"{'CORRECT' if quality else 'WRONG'}"
            )
            results[fmt] = {
                "seconds": seconds,
                "rows_per_s": answer.rows / seconds,
                "rss_growth_mib": rss_growth,
                "seen": outcome.seen,
                "new": outcome.new,
                "updated": outcome.updated,
                "rejected": outcome.rejected_count,
                "posts_stored": stored,
                "snapshots": snapshots,
                "accounts": accounts,
                "correct": quality,
            }
    finally:
        await engine.dispose()
    return results


def parse_phase(paths: dict[DatasetFormat, Path], answer: KnownAnswer) -> dict[str, Any]:
    results: dict[str, Any] = {}
    formats: tuple[DatasetFormat, ...] = ("jsonl", "json", "csv")
    for fmt in formats:
        path = paths[fmt]
        size_mib = path.stat().st_size / 1024 / 1024
        ours_s, (posts, rejected) = timed(partial(consume, path, fmt))
        base_s, base_rows = timed(partial(whole_file, path, fmt))
        ours_peak = traced_peak_mib(partial(consume, path, fmt))
        base_peak = traced_peak_mib(partial(whole_file, path, fmt))
        correct = posts == answer.valid_ids and rejected == answer.rejected
        report(
            f"parse {fmt:5} ({size_mib:.0f} MiB): {answer.rows / ours_s:,.0f} rows/s streamed "
            f"and normalised vs {base_rows / base_s:,.0f} rows/s whole-file decode only "
            f"(time ratio {ours_s / base_s:.2f}x); peak Python memory {ours_peak:.1f} MiB vs "
            f"{base_peak:.1f} MiB (ratio {ours_peak / base_peak:.3f}, target <= 0.2: "
            f"{verdict(ours_peak / base_peak <= 0.2)}); "
            f"{posts:,} posts + {rejected:,} rejected: {'CORRECT' if correct else 'WRONG'}"
        )
        results[fmt] = {
            "file_mib": size_mib,
            "rows_per_s": answer.rows / ours_s,
            "baseline_rows_per_s": base_rows / base_s,
            "peak_mib": ours_peak,
            "baseline_peak_mib": base_peak,
            "correct": correct,
        }
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None, help="write a JSON summary here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    host = machine()
    report(host.line())
    answer = known_answer(args.rows)
    summary: dict[str, Any] = {"machine": host.as_dict(), "rows": args.rows}
    with tempfile.TemporaryDirectory(prefix="reelflow-bench-dataset-") as workdir:
        seconds, paths = timed(lambda: write_files(Path(workdir), args.rows, args.seed))
        report(
            f"wrote {args.rows:,} rows x 3 formats in {seconds:.1f} s; expected "
            f"{answer.valid_ids:,} distinct valid posts and {answer.rejected:,} bad rows"
        )
        with throwaway_postgres("reelflow_dataset_bench") as server:
            upgrade_database(server.url)
            summary["import"] = asyncio.run(
                import_phase(server.url, paths, answer, args.batch_size)
            )
        summary["parse"] = parse_phase(paths, answer)
    write_json(args.json, summary)


if __name__ == "__main__":
    main()
