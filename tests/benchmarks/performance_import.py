"""CSV import of performance snapshots: rows/s and peak memory at 200k rows.

Run:  .venv/bin/python -m tests.benchmarks.performance_import [--rows 200000] [--json out.json]

What it does, in one run:

1. Starts a throwaway PostgreSQL and migrates it.
2. For each approach, creates its own tenant with 2 000 videos and writes a CSV of `--rows`
   daily snapshots of them (1 % of lines name a video that does not exist, so every run also
   produces rejections).
3. Imports each file in a fresh Python process, so peak memory (VmHWM above the process's
   footprint before the import) is the import's own:
   * `streamed`: `reelflow.improve.performance_import.import_snapshots` (batches of 5 000,
     COPY into a staging table, checks and one INSERT … ON CONFLICT DO NOTHING);
   * `streamed again`: the same file a second time (nothing may change);
   * baseline `load + executemany`: the whole file read with `csv.DictReader` into a list,
     each row validated with pydantic, unknown videos looked up, rows inserted with
     batched `executemany` of INSERT … ON CONFLICT DO NOTHING (1 000 per batch).
4. Prints rows/s, peak memory and what each approach stored.

Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from reelflow.core.db import create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.improve.performance import snapshot_problem
from reelflow.improve.performance_import import import_snapshots
from schemas.improve import PerformanceIn
from schemas.improve_tables import VideoPerformance
from schemas.tables import Video
from tests.benchmarks.common import machine, report, throwaway_postgres, write_json
from tests.support import libpq_url

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
HEADER = [
    "video_id",
    "platform",
    "views",
    "likes",
    "comments",
    "shares",
    "saves",
    "watch_time_seconds",
    "completion_rate",
    "traffic_source",
    "recorded_at",
    "post_id",
]
VIDEOS = 2_000


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def prepare(url: str, path: Path, rows: int) -> uuid.UUID:
    """A tenant with its videos, and a CSV of `rows` snapshots of them."""
    tenant = uuid.uuid4()
    videos = [uuid.uuid4() for _ in range(VIDEOS)]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO tenants (id, name, plan) VALUES (%s, 'bench', 'pro')", (tenant,))
        with cur.copy(
            "COPY videos (id, tenant_id, title, origin, source_key, status, stage, progress,"
            " cost_usd) FROM STDIN"
        ) as copy:
            for video in videos:
                copy.write_row(
                    (video, tenant, "v", "generated", f"v/{video}", "completed", "done", 1.0, 0)
                )
        conn.commit()
    start = NOW - timedelta(days=rows // VIDEOS + 2)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(rows):
            video = uuid.uuid4() if i % 100 == 42 else videos[i % VIDEOS]
            at = start + timedelta(days=i // VIDEOS)
            views = 100 + i
            writer.writerow(
                [
                    video,
                    "tiktok",
                    views,
                    views // 10,
                    views // 100,
                    1,
                    2,
                    12.5,
                    48.0,
                    "fyp",
                    at.isoformat(),
                    "",
                ]
            )
    return tenant


async def _streamed(url: str, tenant: uuid.UUID, path: Path) -> dict[str, Any]:
    engine = create_engine(url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            with path.open("rb") as stream:
                result = await import_snapshots(
                    session, tenant_id=tenant, stream=stream, filename=path.name, now=NOW
                )
            await session.commit()
        return {
            "inserted": result.inserted,
            "unchanged": result.unchanged,
            "rejected": result.rejected,
        }
    finally:
        await engine.dispose()


async def _load_and_executemany(url: str, tenant: uuid.UUID, path: Path) -> dict[str, Any]:
    engine = create_engine(url, pool_size=1)
    try:
        with path.open(newline="") as handle:
            records = list(csv.DictReader(handle))
        checked: list[dict[str, Any]] = []
        rejected = 0
        for record in records:
            fields = {k: v for k, v in record.items() if v not in ("", None) and k != "video_id"}
            try:
                snapshot = PerformanceIn.model_validate(fields)
            except ValueError:
                rejected += 1
                continue
            if snapshot_problem(snapshot, now=NOW) is not None:
                rejected += 1
                continue
            values = snapshot.model_dump()
            values.update(
                id=uuid.uuid4(),
                tenant_id=tenant,
                video_id=uuid.UUID(record["video_id"]),
                platform=snapshot.platform.value,
                source="import",
                traffic_source=snapshot.traffic_source.value if snapshot.traffic_source else None,
            )
            checked.append(values)
        async with session_factory(engine)() as session:
            known = set(await session.scalars(select(Video.id).where(Video.tenant_id == tenant)))
            accepted = [row for row in checked if row["video_id"] in known]
            rejected += len(checked) - len(accepted)
            for start in range(0, len(accepted), 1_000):
                await session.execute(
                    insert(VideoPerformance).on_conflict_do_nothing(
                        index_elements=["video_id", "platform", "recorded_at"]
                    ),
                    accepted[start : start + 1_000],
                )
            # executemany reports no row count: count what the tenant has now.
            inserted = int(
                await session.scalar(
                    select(func.count()).where(VideoPerformance.tenant_id == tenant)
                )
                or 0
            )
            await session.commit()
        return {"inserted": inserted, "rejected": rejected}
    finally:
        await engine.dispose()


def child(approach: str, url: str, tenant: str, path: str) -> None:
    rss_before = _peak_rss_mib()
    started = time.perf_counter()
    work = _streamed if approach == "streamed" else _load_and_executemany
    result = asyncio.run(work(url, uuid.UUID(tenant), Path(path)))
    result["seconds"] = time.perf_counter() - started
    result["peak_mib"] = _peak_rss_mib() - rss_before
    sys.stdout.write(json.dumps(result) + "\n")


def run_child(approach: str, url: str, tenant: uuid.UUID, path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.benchmarks.performance_import",
            "--child",
            approach,
            "--url",
            url,
            "--tenant",
            str(tenant),
            "--file",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", default=None)
    parser.add_argument("--url", default=None)
    parser.add_argument("--tenant", default=None)
    parser.add_argument("--file", default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.tenant, args.file)
        return
    box = machine()
    report(box.line())
    results: dict[str, dict[str, Any]] = {}
    with throwaway_postgres("import_bench") as server:
        upgrade_database(server.url)
        work_dir = server.data_dir.parent
        streamed_file = work_dir / "streamed.csv"
        baseline_file = work_dir / "baseline.csv"
        streamed_tenant = prepare(libpq_url(server.url), streamed_file, args.rows)
        baseline_tenant = prepare(libpq_url(server.url), baseline_file, args.rows)
        size_mib = streamed_file.stat().st_size / 2**20
        report(f"file: {args.rows:,} rows, {size_mib:.1f} MiB, 1 % unknown videos")
        results["streamed"] = run_child("streamed", server.url, streamed_tenant, streamed_file)
        results["streamed again"] = run_child(
            "streamed", server.url, streamed_tenant, streamed_file
        )
        results["baseline: load + executemany"] = run_child(
            "baseline", server.url, baseline_tenant, baseline_file
        )
        for path in (streamed_file, baseline_file):
            path.unlink(missing_ok=True)
    for name, result in results.items():
        rate = args.rows / result["seconds"]
        report(
            f"{name:<30} {result['seconds']:6.1f} s  {rate:9,.0f} rows/s  peak +"
            f"{result['peak_mib']:6.1f} MiB  inserted {result['inserted']:,} "
            f"rejected {result['rejected']:,}"
            + (f" unchanged {result['unchanged']:,}" if "unchanged" in result else "")
        )
    ours, base = results["streamed"], results["baseline: load + executemany"]
    report(
        f"streamed vs baseline: {base['seconds'] / ours['seconds']:.2f}× the speed, "
        f"{ours['peak_mib'] / base['peak_mib']:.2f}× the peak memory"
    )
    write_json(args.json, {"machine": box.as_dict(), "rows": args.rows, "results": results})


if __name__ == "__main__":
    main()
