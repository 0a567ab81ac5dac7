"""Discover pipeline benchmark: one scrape of 500 posts with 50 planted outliers, end to end.

Run:  .venv/bin/python -m tests.benchmarks.discover_pipeline [--posts 500] [--outliers 50]
      [--parallel 4] [--json out.json]      (about ten minutes on 2 cores)

Everything is real but the network: Apify is the local server speaking its API v2
(`tests/support/apify_server.py`, one actor run whose dataset holds the posts, read page
by page), each outlier's video is a short speech clip served from 127.0.0.1, and the
workers are the product's own (`workers.pools.build_workers`): download, ingest with local
Whisper and MiniLM, the offline analyzer (ffmpeg scenes, loudness) and the offline adapter,
for two products.

Baseline, in the same run: the same scrape again on a fresh project with one outlier at a
time (`--parallel 1` fan-out) over the first tenth of the outliers, scaled: it shows what
the bounded fan-out buys on this machine.

Prints: wall time, outliers per minute, history events of the scrape run and per outlier
child (p50/max), ledger rows against paid calls (the actor run is the only paid call: one
row at its reported price), and the quality check: outliers found against the planted ones
(score and tier), scripts = outliers × products, no failed outlier.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import func, select
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from reelflow.core.db import SessionFactory, create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.settings import Settings
from reelflow.core.tenants import create_tenant
from reelflow.dev.discover_sample import serve_directory
from reelflow.dev.samples import make_speech_video
from reelflow.discover import scrapes
from schemas.discover import DiscoverOutcome, ScrapeSource
from schemas.discover_tables import (
    Brand,
    Post,
    Product,
    Project,
    ProjectAccount,
    ProjectProduct,
    Script,
    WatchedAccount,
)
from schemas.queues import POOLS, TaskQueues
from schemas.tables import LedgerEntry
from tests.benchmarks.common import (
    machine,
    median,
    report,
    throwaway_postgres,
    throwaway_temporal,
    verdict,
    write_json,
)
from tests.support.apify_server import FakeApifyServer, RunScript
from workers.pools import WorkerDependencies, build_workers
from workflows.discover import DiscoverWorkflow

ACCOUNTS = 25
USAGE_USD = 0.75
"""What the fake actor run reports it cost: the one paid call of a scrape."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posts", type=int, default=500)
    parser.add_argument("--outliers", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--json", type=Path)
    return parser.parse_args()


def dataset(
    posts: int, outliers: int, video_base: str, now: datetime
) -> tuple[list[Any], dict[str, float]]:
    """Instagram items over `ACCOUNTS` accounts; every account's planted outliers are 6×
    its steady 1 000 views (the post before them sets a 1 000 median). The answer key maps
    each planted post's short code to its expected score."""
    items: list[Any] = []
    planted: dict[str, float] = {}
    per_account = posts // ACCOUNTS
    outlier_slots = {(index % ACCOUNTS, 10 + index // ACCOUNTS) for index in range(outliers)}
    for account in range(ACCOUNTS):
        for slot in range(per_account):
            code = f"B{account:02d}{slot:03d}"
            is_outlier = (account, slot) in outlier_slots
            views = 6000 if is_outlier else 1000 + (slot % 3) * 10 - 10
            if is_outlier:
                planted[code] = 6.0
            items.append(
                {
                    "shortCode": code,
                    "type": "Video",
                    "url": f"https://www.instagram.com/p/{code}/",
                    "caption": f"clip {code}",
                    "timestamp": (now - timedelta(days=29, hours=-slot * 6)).isoformat(),
                    "ownerUsername": f"bench.account{account:02d}",
                    "videoPlayCount": views,
                    "likesCount": views // 20,
                    "videoUrl": f"{video_base}/clip{len(planted) % 5}.mp4",
                }
            )
    return items, planted


async def project(sessions: SessionFactory, tenant_id: uuid.UUID) -> uuid.UUID:
    async with sessions.begin() as session:
        brand = Brand(id=uuid.uuid4(), tenant_id=tenant_id, name=f"Brand {uuid.uuid4().hex[:6]}")
        items = [
            Product(
                id=uuid.uuid4(),
                tenant_id=tenant_id,
                brand_id=brand.id,
                name=name,
                audience=audience,
                benefits=benefits,
            )
            for name, audience, benefits in (
                ("Serum", "people with tired skin", ["less redness"]),
                ("Cushion", "desk workers", ["straighter back"]),
            )
        ]
        new = Project(id=uuid.uuid4(), tenant_id=tenant_id, name=f"P {uuid.uuid4().hex[:6]}")
        session.add_all([brand, *items, new])
        await session.flush()
        for account in range(ACCOUNTS):
            handle = f"bench.account{account:02d}"
            existing = await session.scalar(
                select(WatchedAccount).where(
                    WatchedAccount.tenant_id == tenant_id, WatchedAccount.handle == handle
                )
            )
            watched = existing or WatchedAccount(
                id=uuid.uuid4(), tenant_id=tenant_id, platform="instagram", handle=handle
            )
            if existing is None:
                session.add(watched)
                await session.flush()
            session.add(ProjectAccount(project_id=new.id, account_id=watched.id))
        for product in items:
            session.add(ProjectProduct(project_id=new.id, product_id=product.id))
        return new.id


async def scrape(
    client: Client, sessions: SessionFactory, settings: Settings, tenant_id: uuid.UUID
) -> tuple[DiscoverOutcome, float, str]:
    project_id = await project(sessions, tenant_id)
    async with sessions.begin() as session:
        row = await scrapes.create_scrape(
            session, tenant_id=tenant_id, project_id=project_id, source=ScrapeSource.APIFY
        )
    started = time.perf_counter()
    workflow_id = await scrapes.start_scrape_run(
        client,
        scrape=row,
        task_queue=TaskQueues.for_prefix(settings.task_queue_prefix).workflows,
    )
    outcome = await client.get_workflow_handle_for(DiscoverWorkflow.run, workflow_id).result()
    return outcome, time.perf_counter() - started, workflow_id


async def events(client: Client, workflow_id: str) -> int:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return len(history.events)


async def run(args: argparse.Namespace, database_url: str, target: str) -> dict[str, Any]:
    upgrade_database(database_url)
    home = Path(tempfile.mkdtemp(prefix="reelflow-bench-discover-"))
    videos = home / "served"
    videos.mkdir()
    for index in range(5):
        make_speech_video(
            videos / f"clip{index}.mp4",
            [f"Clip number {index}: stop scrolling, this changes your morning."],
            width=320,
            height=180,
        )
    apify = FakeApifyServer()
    apify.start()
    client = await Client.connect(target, data_converter=pydantic_data_converter)
    engine = create_engine(database_url, pool_size=8)
    sessions = session_factory(engine)
    figures: dict[str, Any] = {}
    try:
        with serve_directory(videos) as video_base:
            items, planted = dataset(args.posts, args.outliers, video_base, datetime.now(UTC))
            apify.script(
                "apify/instagram-scraper", RunScript(items=items, usage_total_usd=USAGE_USD)
            )

            def settings(parallel: int) -> Settings:
                return Settings(
                    environment="test",
                    database_url=database_url,
                    reelflow_home=home,
                    storage_url=(home / "media").resolve().as_uri(),
                    temporal_address=target,
                    task_queue_prefix=f"bench{uuid.uuid4().hex[:8]}",
                    apify_token=SecretStr(apify.token),
                    apify_base_url=apify.url,
                    apify_poll_wait_s=1,
                    import_test_allowed_hosts=["127.0.0.1"],
                    discover_max_parallel_outliers=parallel,
                    transcribe_segment_s=30.0,
                )

            async def measured(
                parallel: int, limit: int | None
            ) -> tuple[DiscoverOutcome, float, str, uuid.UUID]:
                # A tenant of its own: posts another run stored are not new outliers here.
                async with sessions.begin() as session:
                    created = await create_tenant(session, name=f"bench {parallel}")
                tenant_id = uuid.UUID(str(created.tenant_id))
                chosen = settings(parallel)
                if limit is not None:
                    apify.script(
                        "apify/instagram-scraper",
                        RunScript(items=items[:limit], usage_total_usd=USAGE_USD),
                    )
                deps = WorkerDependencies.build(chosen)
                workers = build_workers(client, deps, POOLS)
                tasks = [asyncio.create_task(worker.run()) for worker in workers]
                try:
                    outcome, wall, workflow_id = await scrape(client, sessions, chosen, tenant_id)
                    return outcome, wall, workflow_id, tenant_id
                finally:
                    await asyncio.gather(*(worker.shutdown() for worker in workers))
                    await asyncio.gather(*tasks, return_exceptions=True)
                    await deps.close()

            outcome, wall, workflow_id, tenant_id = await measured(args.parallel, None)
            children = [
                f"discover-outlier-{outcome.scrape_id}-{post_id}"
                for post_id in (
                    await _scalars(
                        sessions,
                        select(Post.id).where(Post.processed_scrape_id == outcome.scrape_id),
                    )
                )
            ]
            child_events = [await events(client, child) for child in children]
            async with sessions() as session:
                found = dict(
                    (
                        await session.execute(
                            select(Post.platform_post_id, Post.outlier_score).where(
                                Post.tenant_id == tenant_id, Post.outlier_tier.is_not(None)
                            )
                        )
                    ).all()
                )
                scripts_made = await session.scalar(
                    select(func.count()).select_from(Script).where(Script.tenant_id == tenant_id)
                )
                paid = (
                    await session.execute(
                        select(LedgerEntry.provider, func.count(), func.sum(LedgerEntry.cost_usd))
                        .where(LedgerEntry.tenant_id == tenant_id, LedgerEntry.cost_usd > 0)
                        .group_by(LedgerEntry.provider)
                    )
                ).all()
            # Baseline: one outlier at a time over a tenth of the dataset (a tenth of the
            # outliers), on a fresh project; its time is scaled to the full count.
            tenth = max(1, args.posts // 10)
            base_outcome, base_wall, _, _ = await measured(1, tenth)
    finally:
        apify.stop()
        await engine.dispose()

    failed = outcome.failed_outliers
    right = sum(1 for code, score in planted.items() if abs((found.get(code) or 0) - score) < 0.01)
    false_positives = sorted(set(found) - set(planted))
    per_minute = outcome.processed / wall * 60
    base_per_minute = base_outcome.processed / base_wall * 60 if base_outcome.processed else 0.0
    report(
        f"scrape: {outcome.posts_seen} posts, {outcome.outliers} outliers, "
        f"{outcome.processed} processed ({outcome.failed_outliers} failed) in {wall:.1f} s "
        f"= {per_minute:.1f} outliers/min with fan-out {args.parallel}"
    )
    report(
        f"baseline (fan-out 1, {base_outcome.processed} outliers): {base_per_minute:.1f} "
        f"outliers/min → ratio {per_minute / base_per_minute:.2f}x"
        if base_per_minute
        else "baseline: no outliers processed"
    )
    report(
        f"history events: scrape run {await events(client, workflow_id)}, per outlier child "
        f"p50 {median(child_events):.0f}, max {max(child_events, default=0)}"
    )
    report(
        "ledger rows with a cost (paid calls): "
        + ", ".join(
            f"{provider}: {count} row(s), ${float(total):.4f}" for provider, count, total in paid
        )
        + f" | expected: apify 1 row (the one actor run) at ${USAGE_USD:.2f}"
    )
    report(
        f"quality: {right}/{len(planted)} planted outliers found with the right score, "
        f"{len(false_positives)} false positive(s); scripts {scripts_made} "
        f"(expected {outcome.processed * 2}); failed {outcome.failed_outliers} "
        f"→ {verdict(right == len(planted) and not false_positives and not failed)}"
    )
    figures.update(
        {
            "wall_s": wall,
            "outliers_per_minute": per_minute,
            "baseline_outliers_per_minute": base_per_minute,
            "child_events_p50": median(child_events),
            "planted_found": right,
            "false_positives": len(false_positives),
        }
    )
    return figures


async def _scalars(sessions: SessionFactory, query: Any) -> list[Any]:
    async with sessions() as session:
        return list((await session.scalars(query)).all())


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    host = machine()
    report(host.line())
    with (
        throwaway_postgres("reelflow_discover_bench") as postgres,
        throwaway_temporal() as temporal,
    ):
        summary = asyncio.run(run(args, postgres.url, temporal.target))
    summary.update({"benchmark": "discover_pipeline", "machine": host.as_dict()})
    write_json(args.json, summary)


if __name__ == "__main__":
    main()
