"""The discover pipeline end to end: a dataset file → posts → outliers → downloaded, ingested,
analyzed (offline) and adapted into draft scripts, on real workers, Postgres, ffmpeg and
Whisper. The videos are served by a local HTTP server the test allowlist lets imports reach.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.discover import AnalysisActivities, ApifyActivities
from reelflow.assets import videos
from reelflow.chat.structured import TokenUsage
from reelflow.core.db import SessionFactory, create_engine, session_factory
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from reelflow.core.tenants import create_tenant
from reelflow.dev.discover_sample import OUTLIERS, sample_export, serve_directory
from reelflow.dev.samples import make_speech_video
from reelflow.discover import scrapes
from reelflow.discover.analyzers import AnalysisFailed, AnalysisResult
from reelflow.discover.apify_source import ApifySource
from schemas.discover import (
    AnalyzeVideoInput,
    DiscoverOutcome,
    Platform,
    ScrapeSource,
    ScrapeStatus,
    StartApifyRunInput,
    VideoAnalysis,
)
from schemas.discover_tables import (
    Adaptation,
    Analysis,
    Brand,
    Post,
    PostSnapshot,
    Product,
    Project,
    ProjectAccount,
    ProjectProduct,
    Scrape,
    Script,
    WatchedAccount,
)
from schemas.failures import FailureCode
from schemas.ingest import VideoStatus
from schemas.queues import POOLS, TaskQueues
from schemas.tables import LedgerEntry, TranscriptSegment, Video
from tests.e2e.conftest import pipeline_settings
from tests.support.apify_server import FakeApifyServer, RunScript
from tests.support.apify_server import fake_apify as fake_apify
from workers.pools import WorkerDependencies, build_workers
from workflows.discover import DiscoverWorkflow


@dataclass
class Discover:
    settings: Settings
    sessions: SessionFactory
    env: WorkflowEnvironment
    tenant_id: uuid.UUID
    project_id: uuid.UUID
    video_base: str


@pytest.fixture(scope="module")
def video_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The outliers' videos over HTTP on 127.0.0.1; other paths are 404 (deleted posts)."""
    root = tmp_path_factory.mktemp("served")
    for outlier in OUTLIERS:
        make_speech_video(root / f"{outlier.clip}.mp4", outlier.sentences, width=320, height=180)
    with serve_directory(root) as base:
        yield base


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def discover(
    migrated_url: str,
    local_env: WorkflowEnvironment,
    tmp_path_factory: pytest.TempPathFactory,
    video_server: str,
) -> AsyncIterator[Discover]:
    settings = pipeline_settings(
        migrated_url,
        tmp_path_factory.mktemp("home"),
        import_test_allowed_hosts=["127.0.0.1"],
        discover_max_parallel_outliers=2,
    )
    engine = create_engine(migrated_url, pool_size=4)
    sessions = session_factory(engine)
    async with sessions.begin() as session:
        tenant = await create_tenant(session, name="discover-e2e")
        tenant_id = uuid.UUID(str(tenant.tenant_id))
        project_id = await _project(session, tenant_id)
    try:
        yield Discover(settings, sessions, local_env, tenant_id, project_id, video_server)
    finally:
        await engine.dispose()


async def _project(session: AsyncSession, tenant_id: uuid.UUID) -> uuid.UUID:
    brand = Brand(id=uuid.uuid4(), tenant_id=tenant_id, name="Glow")
    serum = Product(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        brand_id=brand.id,
        name="Calm Serum",
        description="A serum that takes the redness out of tired skin.",
        audience="women 25-40 with sensitive skin and a morning routine",
        benefits=["less redness", "makeup sits better", "one drop a day"],
        tone="warm, honest",
    )
    chair = Product(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        brand_id=brand.id,
        name="Posture Cushion",
        description="A seat cushion for people who sit all day.",
        audience="desk workers with back pain",
        benefits=["straighter back", "no pain after meetings"],
        tone="practical",
    )
    project = Project(id=uuid.uuid4(), tenant_id=tenant_id, name="Winning formats")
    session.add_all([brand, serum, chair, project])
    await session.flush()
    for platform, handle in (("instagram", "glowlab.demo"), ("tiktok", "deskfit.demo")):
        account = WatchedAccount(
            id=uuid.uuid4(), tenant_id=tenant_id, platform=platform, handle=handle
        )
        session.add(account)
        await session.flush()
        session.add(ProjectAccount(project_id=project.id, account_id=account.id))
    session.add_all(
        [
            ProjectProduct(project_id=project.id, product_id=serum.id),
            ProjectProduct(project_id=project.id, product_id=chair.id),
        ]
    )
    return project.id


@asynccontextmanager
async def running_workers(
    discover: Discover, settings: Settings | None = None
) -> AsyncIterator[None]:
    deps = WorkerDependencies.build(settings or discover.settings)
    workers = build_workers(discover.env.client, deps, POOLS)
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        yield
    finally:
        await asyncio.gather(*(worker.shutdown() for worker in workers))
        await asyncio.gather(*tasks, return_exceptions=True)
        await deps.close()


async def run_scrape(
    discover: Discover, settings: Settings, source: ScrapeSource, **fields: str
) -> WorkflowHandle[DiscoverWorkflow, DiscoverOutcome]:
    async with discover.sessions.begin() as session:
        scrape = await scrapes.create_scrape(
            session,
            tenant_id=discover.tenant_id,
            project_id=discover.project_id,
            source=source,
            **fields,  # type: ignore[arg-type]
        )
    workflow_id = await scrapes.start_scrape_run(
        discover.env.client,
        scrape=scrape,
        task_queue=TaskQueues.for_prefix(settings.task_queue_prefix).workflows,
    )
    return discover.env.client.get_workflow_handle_for(DiscoverWorkflow.run, workflow_id)


async def scrape_file(discover: Discover, content: str) -> DiscoverOutcome:
    storage = LocalStorage(Path(discover.settings.resolved_storage_url.removeprefix("file://")))
    scrape_id = uuid.uuid4()
    key = f"tenants/{discover.tenant_id}/scrapes/{scrape_id}/dataset.jsonl"
    storage.put_bytes(key, content.encode())
    async with discover.sessions.begin() as session:
        scrape = await scrapes.create_scrape(
            session,
            tenant_id=discover.tenant_id,
            project_id=discover.project_id,
            source=ScrapeSource.DATASET_FILE,
            dataset_key=key,
            dataset_format="jsonl",
            scrape_id=scrape_id,
        )
    workflow_id = await scrapes.start_scrape_run(
        discover.env.client,
        scrape=scrape,
        task_queue=TaskQueues.for_prefix(discover.settings.task_queue_prefix).workflows,
    )
    handle = discover.env.client.get_workflow_handle_for(DiscoverWorkflow.run, workflow_id)
    return await handle.result()


async def test_a_dataset_becomes_draft_scripts_for_each_outlier_and_product(
    discover: Discover,
) -> None:
    export = sample_export(discover.video_base, datetime.now(UTC))
    async with running_workers(discover):
        outcome = await scrape_file(discover, export)
        again = await scrape_file(discover, export)

    assert outcome.status == ScrapeStatus.COMPLETED
    # 16 distinct posts; the repeated row and the private account's error row are reported.
    assert (outcome.posts_seen, outcome.posts_new) == (16, 16)
    assert (outcome.outliers, outcome.processed, outcome.failed_outliers) == (2, 2, 0)
    async with discover.sessions() as session:
        scrape = await session.get(Scrape, outcome.scrape_id)
        assert scrape is not None and scrape.status == "completed"
        reasons = " ".join(error["reason"] for error in scrape.errors)
        assert "repeated" in reasons and "private" in reasons

        tiers = dict(
            (
                await session.execute(
                    select(Post.platform_post_id, Post.outlier_tier).where(
                        Post.outlier_tier.is_not(None)
                    )
                )
            ).all()
        )
        assert tiers == {outlier.post_id: outlier.tier for outlier in OUTLIERS}
        recent = await session.scalar(
            select(Post.no_score_reason).where(Post.platform_post_id == "7400000000000000099")
        )
        assert recent == "too_recent"

        for outlier in OUTLIERS:
            post = await session.scalar(
                select(Post).where(Post.platform_post_id == outlier.post_id)
            )
            assert post is not None and post.video_id is not None
            assert post.outlier_score == pytest.approx(outlier.ratio, rel=0.01)
            video = await session.get(Video, post.video_id)
            assert video is not None and video.origin == "scraped"
            assert video.status == "completed" and (video.chunk_count or 0) >= 1
            analysis_row = await session.scalar(
                select(Analysis).where(Analysis.video_id == video.id)
            )
            assert analysis_row is not None and analysis_row.analyzer == "offline"
            analysis = VideoAnalysis.model_validate(analysis_row.analysis)
            # The hook is what the transcript has first; the unmeasurable is listed, not
            # invented.
            spoken = " ".join(
                (
                    await session.scalars(
                        select(TranscriptSegment.text)
                        .where(TranscriptSegment.video_id == video.id)
                        .order_by(TranscriptSegment.window_index, TranscriptSegment.seq)
                    )
                ).all()
            )
            assert analysis.hook.text is not None
            assert " ".join(spoken.split()).startswith(" ".join(analysis.hook.text.split()))
            assert analysis.scenes and analysis.unfilled
            adaptations = (
                await session.scalars(
                    select(Adaptation).where(Adaptation.analysis_id == analysis_row.id)
                )
            ).all()
            assert len(adaptations) == 2

        drafts = (await session.scalars(select(Script))).all()
        assert len(drafts) == 4 and {draft.status for draft in drafts} == {"draft"}
        assert all(draft.adaptation_id is not None for draft in drafts)

        # The second scrape of the same file: nothing new, a second snapshot of each post,
        # and no outlier processed twice.
        assert (again.posts_seen, again.posts_new, again.processed) == (16, 0, 0)
        snapshots = await session.scalar(select(func.count()).select_from(PostSnapshot))
        assert snapshots == 32
        assert await session.scalar(select(func.count()).select_from(Script)) == 4


async def test_a_private_address_or_a_deleted_post_fails_that_outlier_only(
    discover: Discover,
) -> None:
    now = datetime.now(UTC)
    rows = []
    plays = [5000, 5200, 4800, 5100, 60000, 61000, 62000]
    urls = {
        4: "http://10.1.2.3/private.mp4",
        5: f"{discover.video_base}/deleted.mp4",
        6: f"{discover.video_base}/{OUTLIERS[1].clip}.mp4",
    }
    for index, views in enumerate(plays):
        rows.append(
            {
                "id": f"9900{index}",
                "text": f"post {index}",
                "createTime": int((now - timedelta(days=20 - index)).timestamp()),
                "authorMeta": {"name": "deskfit.demo"},
                "playCount": views,
                "videoUrl": urls.get(index, f"{discover.video_base}/missing.mp4"),
            }
        )
    async with running_workers(discover):
        outcome = await scrape_file(discover, "".join(json.dumps(row) + "\n" for row in rows))

    assert outcome.status == ScrapeStatus.COMPLETED
    assert (outcome.outliers, outcome.processed, outcome.failed_outliers) == (3, 3, 2)
    async with discover.sessions() as session:
        scrape = await session.get(Scrape, outcome.scrape_id)
        assert scrape is not None
        failures = {error["code"]: error["reason"] for error in scrape.errors if "code" in error}
        assert set(failures) == {"url_not_allowed", "import_failed"}
        assert "private" in failures["url_not_allowed"]
        assert "404" in failures["import_failed"]
        good = await session.scalar(select(Post).where(Post.platform_post_id == "99006"))
        assert good is not None and good.video_id is not None


def _apify_settings(discover: Discover, server: FakeApifyServer) -> Settings:
    return discover.settings.model_copy(
        update={
            "apify_token": SecretStr(server.token),
            "apify_base_url": server.url,
            "apify_poll_wait_s": 0,
            # Its own queues, so the module's other workers (no Apify) never take its tasks.
            "task_queue_prefix": f"t{uuid.uuid4().hex[:12]}",
        }
    )


def _rows_of(export: str, key: str) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in export.splitlines()]
    return [row for row in rows if key in json.dumps(row)]


async def test_an_apify_scrape_polls_the_runs_reads_their_datasets_and_pays_once(
    discover: Discover, fake_apify: FakeApifyServer
) -> None:
    export = sample_export(discover.video_base, datetime.now(UTC))
    fake_apify.script(
        "apify/instagram-scraper",
        RunScript(items=_rows_of(export, "ownerUsername"), polls_before_finish=2),
    )
    fake_apify.script(
        "clockworks/tiktok-scraper",
        RunScript(items=_rows_of(export, "authorMeta"), usage_total_usd=0.02),
    )
    settings = _apify_settings(discover, fake_apify)
    async with running_workers(discover, settings):
        handle = await run_scrape(discover, settings, ScrapeSource.APIFY)
        outcome = await handle.result()

    assert outcome.status == ScrapeStatus.COMPLETED
    # The first test of the module already stored these posts: nothing is new now.
    assert (outcome.posts_seen, outcome.posts_new) == (16, 0)
    assert sorted(run.actor for run in fake_apify.started) == [
        "apify/instagram-scraper",
        "clockworks/tiktok-scraper",
    ]
    async with discover.sessions() as session:
        paid = (
            await session.execute(
                select(LedgerEntry.model, LedgerEntry.cost_usd).where(
                    LedgerEntry.provider == "apify", LedgerEntry.run_id == handle.id
                )
            )
        ).all()
        scrape = await session.get(Scrape, outcome.scrape_id)
    assert sorted((model, float(cost)) for model, cost in paid) == [
        ("apify/instagram-scraper", 0.0123),
        ("clockworks/tiktok-scraper", 0.02),
    ]
    assert scrape is not None and float(scrape.cost_usd) == pytest.approx(0.0323)
    assert {run["platform"] for run in scrape.apify_runs} == {"instagram", "tiktok"}


async def test_a_failed_actor_run_fails_the_scrape_with_its_reason_and_writes_no_post(
    discover: Discover, fake_apify: FakeApifyServer
) -> None:
    fake_apify.script(
        "apify/instagram-scraper",
        RunScript(
            final_status="FAILED",
            status_message="The actor ran out of memory",
            items=[{"shortCode": "NEVER1", "ownerUsername": "glowlab.demo"}],
        ),
    )
    fake_apify.script("clockworks/tiktok-scraper", RunScript(polls_before_finish=1))
    settings = _apify_settings(discover, fake_apify)
    async with running_workers(discover, settings):
        handle = await run_scrape(discover, settings, ScrapeSource.APIFY)
        with pytest.raises(WorkflowFailureError):
            await handle.result()

    async with discover.sessions() as session:
        scrape = await session.scalar(select(Scrape).where(Scrape.workflow_id == handle.id))
        never = await session.scalar(select(Post).where(Post.platform_post_id == "NEVER1"))
    assert scrape is not None and scrape.status == "failed"
    assert scrape.error_code == "scrape_failed"
    assert scrape.error_message is not None and "out of memory" in scrape.error_message
    assert never is None


async def test_a_start_retried_after_a_crash_finds_the_run_instead_of_starting_another(
    discover: Discover, fake_apify: FakeApifyServer
) -> None:
    fake_apify.script("apify/instagram-scraper", RunScript())
    settings = _apify_settings(discover, fake_apify)
    async with discover.sessions.begin() as session:
        scrape = await scrapes.create_scrape(
            session,
            tenant_id=discover.tenant_id,
            project_id=discover.project_id,
            source=ScrapeSource.APIFY,
        )
    source = ApifySource(fake_apify.token, base_url=fake_apify.url)
    with ThreadPoolExecutor(2) as executor:
        activities = ApifyActivities(
            sessions=discover.sessions, settings=settings, apify=source, executor=executor
        )
        start = StartApifyRunInput(
            tenant_id=discover.tenant_id, scrape_id=scrape.id, platform=Platform.INSTAGRAM
        )
        first = await ActivityEnvironment().run(activities.start_apify_run, start)
        # The worker died after Apify answered and before the run id was saved.
        async with discover.sessions.begin() as session:
            row = await session.get(Scrape, scrape.id)
            assert row is not None
            row.apify_runs = []
        again = await ActivityEnvironment().run(activities.start_apify_run, start)
        # And once saved, a retry reads it back without asking Apify at all.
        starts_before = len(fake_apify.started)
        third = await ActivityEnvironment().run(activities.start_apify_run, start)

    assert first.run_id == again.run_id == third.run_id
    assert len(fake_apify.started) == starts_before == 1


class _BlockedAnalyzer:
    """Gemini's answer for a video its safety filter refuses, after billing the prompt."""

    def analyze(self, video: Path, **_: object) -> AnalysisResult:
        raise AnalysisFailed(
            FailureCode.CONTENT_BLOCKED,
            "the provider's safety filter refused the video",
            usage=TokenUsage(input_tokens=12_000, output_tokens=0),
        )


async def test_a_refused_analysis_still_records_the_tokens_it_was_billed(
    discover: Discover, tmp_path: Path
) -> None:
    settings = discover.settings.model_copy(
        update={"discover_analyzer": "gemini", "gemini_api_key": SecretStr("test-key")}
    )
    storage = LocalStorage(Path(settings.resolved_storage_url.removeprefix("file://")))
    video_id = uuid.uuid4()
    key = f"tenants/{discover.tenant_id}/videos/{video_id}/source.mp4"
    make_speech_video(tmp_path / "v.mp4", ["A short clip."], width=160, height=90)
    storage.put_file(key, tmp_path / "v.mp4")
    async with discover.sessions.begin() as session:
        await videos.create_video(
            session,
            tenant_id=discover.tenant_id,
            video_id=video_id,
            title="refused",
            origin="scraped",
            source_key=key,
            status=VideoStatus.COMPLETED,
        )
    with ThreadPoolExecutor(1) as executor:
        analysis = AnalysisActivities(
            sessions=discover.sessions,
            storage=storage,
            analyzer=_BlockedAnalyzer,
            settings=settings,
            scratch_dir=tmp_path / "scratch",
            executor=executor,
        )
        with pytest.raises(AnalysisFailed):
            await ActivityEnvironment().run(
                analysis.analyze_video,
                AnalyzeVideoInput(tenant_id=discover.tenant_id, video_id=video_id, run_id="r"),
            )
    async with discover.sessions() as session:
        rows = (
            await session.execute(
                select(LedgerEntry.operation, LedgerEntry.units, LedgerEntry.cost_usd).where(
                    LedgerEntry.video_id == video_id
                )
            )
        ).all()
        stored = await session.scalar(select(Analysis).where(Analysis.video_id == video_id))
    assert sorted((op, int(units)) for op, units, _ in rows) == [
        ("analysis_input", 12_000),
        ("analysis_output", 0),
    ]
    assert sum(float(cost) for _, _, cost in rows) > 0
    assert stored is None  # nothing half-stored
