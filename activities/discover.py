"""Activities of the discover pipeline: scrapes and their posts, Apify runs, analysis, adaptation.

Each class is built once per worker with its clients injected (the Apify client, the
analyzer, the adapter). Workflows call them through `schemas/discover_activities.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity

from activities._support import materialize, run_blocking
from reelflow.assets import videos
from reelflow.chat.structured import TokenUsage
from reelflow.core.db import SessionFactory
from reelflow.core.errors import DomainError
from reelflow.core.ledger import Usage, record_usage
from reelflow.core.netguard import UrlNotAllowed, check_url
from reelflow.core.settings import Settings
from reelflow.core.storage import Storage
from reelflow.discover import datasets, outliers, posts, scripts
from reelflow.discover.adapters import DEFAULT_ADAPTER_MODELS, AdaptationFailed, ScriptAdapter
from reelflow.discover.analyzers import (
    AnalysisFailed,
    TranscriptForAnalysis,
    VideoAnalyzer,
)
from reelflow.discover.apify_source import ApifySource
from reelflow.discover.post_url import read_post
from schemas.discover import (
    AbortApifyRunsInput,
    AbortApifyRunsOutput,
    AdaptScriptInput,
    AdaptScriptOutput,
    AnalyzeVideoInput,
    AnalyzeVideoOutput,
    ApifyRunRef,
    ApifyRunStatus,
    BeginScrapeInput,
    FinishScrapeInput,
    FinishScrapeOutput,
    ImportPostsInput,
    ImportPostsOutput,
    NextOutliersInput,
    NextOutliersOutput,
    OutlierInput,
    OutlierSettings,
    OutlierVideo,
    Platform,
    PollApifyRunInput,
    ProductBrief,
    RejectedRow,
    ScoreOutliersInput,
    ScoreOutliersOutput,
    ScrapedPost,
    ScrapePlan,
    ScrapeSource,
    ScrapeStage,
    ScrapeStateInput,
    ScrapeStateOutput,
    ScrapeStatus,
    StartApifyRunInput,
    VideoAnalysis,
)
from schemas.discover_activities import (
    ABORT_APIFY_RUNS,
    ADAPT_SCRIPT,
    ANALYZE_VIDEO,
    BEGIN_SCRAPE,
    FINISH_SCRAPE,
    IMPORT_POSTS,
    NEXT_OUTLIERS,
    POLL_APIFY_RUN,
    PREPARE_OUTLIER_VIDEO,
    PROCESS_OUTLIER_WORKFLOW,
    SCORE_OUTLIERS,
    SET_SCRAPE_STATE,
    START_APIFY_RUN,
)
from schemas.discover_tables import (
    Adaptation,
    Analysis,
    Brand,
    Post,
    Product,
    Project,
    ProjectAccount,
    ProjectProduct,
    Scrape,
    WatchedAccount,
)
from schemas.failures import FailureCode
from schemas.ingest import VideoStatus
from schemas.tables import LedgerEntry, TranscriptSegment, Video

T = TypeVar("T")

IMPORT_BATCH = 1000
"""Posts upserted per statement; also how often a long import heartbeats."""
ANALYSIS_OPERATIONS = ("analysis_input", "analysis_output")
CHAT_OPERATIONS = ("chat_input", "chat_output")
MAX_RECORDED_ERRORS = 100
"""Rejected rows and failed outliers kept on the scrape, with their reasons; the count is
always complete."""
_STAGE_ORDER = [stage.value for stage in ScrapeStage]


def _stage_reached(scrape: Scrape, stage: ScrapeStage) -> bool:
    return _STAGE_ORDER.index(scrape.stage) > _STAGE_ORDER.index(stage.value)


async def _scrape(session: AsyncSession, tenant_id: uuid.UUID, scrape_id: uuid.UUID) -> Scrape:
    scrape = await session.scalar(
        select(Scrape).where(Scrape.id == scrape_id, Scrape.tenant_id == tenant_id)
    )
    if scrape is None:
        raise DomainError(FailureCode.OBJECT_NOT_FOUND, f"scrape {scrape_id} does not exist")
    return scrape


async def _project_handles(
    session: AsyncSession, project_id: uuid.UUID
) -> dict[Platform, list[str]]:
    rows = await session.execute(
        select(WatchedAccount.platform, WatchedAccount.handle)
        .join(ProjectAccount, ProjectAccount.account_id == WatchedAccount.id)
        .where(ProjectAccount.project_id == project_id)
        .order_by(WatchedAccount.platform, WatchedAccount.handle)
    )
    handles: dict[Platform, list[str]] = {}
    for platform, handle in rows:
        handles.setdefault(Platform(platform), []).append(handle)
    return handles


async def _record_tokens(
    session: AsyncSession,
    *,
    key: str,
    tenant_id: uuid.UUID,
    step: str,
    provider: str,
    model: str,
    usage: TokenUsage,
    operations: tuple[str, str],
    run_id: str,
    video_id: uuid.UUID | None,
) -> Decimal:
    """One ledger row per direction (input, output) of a model call; the dollars recorded."""
    cost = Decimal(0)
    for operation, units in zip(operations, (usage.input_tokens, usage.output_tokens), strict=True):
        cost += await record_usage(
            session,
            Usage(
                idempotency_key=f"{key}-{operation}",
                tenant_id=tenant_id,
                step=step,
                provider=provider,
                operation=operation,
                model=model,
                units=Decimal(units),
                run_id=run_id,
                video_id=video_id,
            ),
        )
    return cost


def _provider_of(name: str) -> str:
    """`gemini/gemini-2.5-flash` → `gemini`: the provider column prices are keyed by."""
    return name.split("/", 1)[0]


def scrape_id_for_run(run_key: str) -> uuid.UUID:
    """The scrape a scheduled run creates: named after the run, so retries find it again."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"reelflow:scrape:{run_key}")


async def _pull(executor: Executor, rows: Iterator[T], size: int) -> list[T]:
    """The next `size` items of a blocking iterator (file reads, HTTP pages), off the loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, lambda: list(islice(rows, size)))


class DiscoverCatalogActivities:
    """Scrapes, posts and outliers in the database; reading sources on the I/O executor."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        settings: Settings,
        storage: Storage,
        executor: Executor,
        apify: ApifySource | None,
        scratch_dir: Path,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._storage = storage
        self._executor = executor
        self._apify = apify
        self._scratch = scratch_dir

    @activity.defn(name=BEGIN_SCRAPE.name)
    async def begin_scrape(self, input: BeginScrapeInput) -> ScrapePlan:
        """The scrape as its run needs it; a scheduled run's scrape is created here, once."""
        async with self._sessions.begin() as session:
            project = await session.scalar(
                select(Project).where(
                    Project.id == input.project_id, Project.tenant_id == input.tenant_id
                )
            )
            if project is None:
                raise DomainError(
                    FailureCode.PROJECT_NOT_FOUND, f"project {input.project_id} does not exist"
                )
            scrape_id = input.scrape_id or scrape_id_for_run(input.run_key)
            scrape = await session.get(Scrape, scrape_id)
            if scrape is None:
                if input.scrape_id is not None:
                    raise DomainError(
                        FailureCode.OBJECT_NOT_FOUND, f"scrape {input.scrape_id} does not exist"
                    )
                scrape = Scrape(
                    id=scrape_id,
                    tenant_id=input.tenant_id,
                    project_id=project.id,
                    source=ScrapeSource.APIFY.value,
                    status=ScrapeStatus.QUEUED.value,
                    stage=ScrapeStage.QUEUED.value,
                    apify_runs=[],
                    errors=[],
                )
                session.add(scrape)
            elif scrape.tenant_id != input.tenant_id:
                raise DomainError(
                    FailureCode.OBJECT_NOT_FOUND, f"scrape {scrape_id} does not exist"
                )
            handles = await _project_handles(session, project.id)
            if scrape.source == ScrapeSource.APIFY.value and self._apify is None:
                raise DomainError(
                    FailureCode.PROVIDER_UNAVAILABLE_HERE,
                    "scraping accounts needs APIFY_TOKEN on this deployment; "
                    "upload an Apify dataset export instead",
                )
            if scrape.source == ScrapeSource.APIFY.value and not handles:
                raise DomainError(
                    FailureCode.UNSUPPORTED_REQUEST, "the project watches no accounts to scrape"
                )
            scrape.status = ScrapeStatus.RUNNING.value
            scrape.workflow_id = input.workflow_id
            plan = ScrapePlan(
                scrape_id=scrape.id,
                source=ScrapeSource(scrape.source),
                platforms=sorted(handles),
                apify_runs=[ApifyRunRef.model_validate(run) for run in scrape.apify_runs or []],
                posts_imported=_stage_reached(scrape, ScrapeStage.UPSERTING),
                scored=_stage_reached(scrape, ScrapeStage.SCORING),
                max_parallel=self._settings.discover_max_parallel_outliers,
                per_run=self._settings.discover_outliers_per_run,
            )
        return plan

    @activity.defn(name=SET_SCRAPE_STATE.name)
    async def set_scrape_state(self, input: ScrapeStateInput) -> ScrapeStateOutput:
        """Record the stage and counts where the API reads them."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(Scrape)
                .where(Scrape.id == input.scrape_id, Scrape.tenant_id == input.tenant_id)
                .values(
                    stage=input.stage.value,
                    posts_seen=input.posts_seen,
                    posts_new=input.posts_new,
                    outliers=input.outliers,
                    processed=input.processed,
                )
            )
        return ScrapeStateOutput(updated=bool(result.rowcount))  # type: ignore[attr-defined]

    @activity.defn(name=IMPORT_POSTS.name)
    async def import_posts(self, input: ImportPostsInput) -> ImportPostsOutput:
        """Upsert the scrape's posts, with a snapshot each, in one transaction.

        All or nothing: a source that fails halfway (a dataset page that never comes, a file
        cut short) leaves no post of this scrape behind, and the retry starts over.
        """
        async with self._sessions() as session:
            scrape = await _scrape(session, input.tenant_id, input.scrape_id)
            source = ScrapeSource(scrape.source)
            dataset_key, dataset_format = scrape.dataset_key, scrape.dataset_format
            post_url = scrape.post_url
            runs = [ApifyRunRef.model_validate(run) for run in scrape.apify_runs or []]
        rows = self._rows(source, dataset_key, dataset_format, post_url, runs)
        recorded_at = datetime.now(UTC)
        seen: set[tuple[str, str]] = set()
        rejected: list[dict[str, Any]] = []
        rejected_count = new = 0
        async with self._sessions.begin() as session:
            while batch := await _pull(self._executor, rows, IMPORT_BATCH):
                fresh: list[ScrapedPost] = []
                for row in batch:
                    if isinstance(row, RejectedRow):
                        rejected_count += 1
                        if len(rejected) < MAX_RECORDED_ERRORS:
                            rejected.append({"line": row.line, "reason": row.reason})
                        continue
                    # A repeat comes again only when it beats the row kept before: the
                    # upsert then replaces that row's counts.
                    seen.add((row.platform.value, row.post_id))
                    fresh.append(row)
                if fresh:
                    result = await posts.upsert_posts(
                        session,
                        tenant_id=input.tenant_id,
                        scrape_id=input.scrape_id,
                        posts=fresh,
                        recorded_at=recorded_at,
                    )
                    new += result.new
                activity.heartbeat({"posts": len(seen), "rejected": rejected_count})
            await session.execute(
                update(Scrape)
                .where(Scrape.id == input.scrape_id)
                .values(
                    errors=rejected,
                    posts_seen=len(seen),
                    posts_new=new,
                    stage=ScrapeStage.SCORING.value,
                )
            )
        return ImportPostsOutput(posts_seen=len(seen), posts_new=new, rejected=rejected_count)

    def _rows(
        self,
        source: ScrapeSource,
        dataset_key: str | None,
        dataset_format: str | None,
        post_url: str | None,
        runs: list[ApifyRunRef],
    ) -> Iterator[ScrapedPost | RejectedRow]:
        """The scrape's rows, read lazily (on the executor, batch by batch)."""
        if source == ScrapeSource.DATASET_FILE:
            if dataset_key is None:
                raise DomainError(FailureCode.INVALID_DATASET, "the scrape has no dataset file")
            return self._dataset_rows(dataset_key, dataset_format)
        if source == ScrapeSource.POST_URL:
            if post_url is None:
                raise DomainError(FailureCode.UNSUPPORTED_REQUEST, "the scrape has no post URL")
            return self._post_url_rows(post_url)
        return self._apify_rows(runs)

    def _dataset_rows(
        self, key: str, dataset_format: str | None
    ) -> Iterator[ScrapedPost | RejectedRow]:
        local = materialize(self._storage, key, self._scratch / "datasets")
        with local.open("rb") as stream:
            fmt = datasets.detect_format(f"dataset.{dataset_format}", stream.read(4096))
            stream.seek(0)
            yield from datasets.iter_dataset(stream, fmt)

    def _post_url_rows(self, url: str) -> Iterator[ScrapedPost | RejectedRow]:
        yield read_post(url, allowed_hosts=self._settings.import_test_allowed_hosts)

    def _apify_rows(self, runs: list[ApifyRunRef]) -> Iterator[ScrapedPost | RejectedRow]:
        if self._apify is None:
            raise DomainError(
                FailureCode.PROVIDER_UNAVAILABLE_HERE, "APIFY_TOKEN is not set on this deployment"
            )
        apify = self._apify
        read = 0

        def items(dataset_id: str) -> Iterator[dict[str, Any]]:
            nonlocal read
            for _, item in apify.iter_items(dataset_id):
                read += 1
                yield item

        for run in runs:
            # Items are numbered across the scrape's runs; one repeat filter per run sees
            # every page, so a post repeated across pages is caught too.
            yield from datasets.iter_items(
                items(run.dataset_id), platform=run.platform, start=read + 1
            )

    @activity.defn(name=SCORE_OUTLIERS.name)
    async def score_outliers(self, input: ScoreOutliersInput) -> ScoreOutliersOutput:
        """Score every post of the project's accounts; count the outliers still to process."""
        async with self._sessions.begin() as session:
            project = await session.get(Project, input.project_id)
            if project is None or project.tenant_id != input.tenant_id:
                raise DomainError(
                    FailureCode.PROJECT_NOT_FOUND, f"project {input.project_id} does not exist"
                )
            settings = OutlierSettings.model_validate(project.outlier_settings or {})
            account_ids = list(
                (
                    await session.scalars(
                        select(ProjectAccount.account_id).where(
                            ProjectAccount.project_id == project.id
                        )
                    )
                ).all()
            )
            summary = await outliers.score_accounts(
                session,
                tenant_id=input.tenant_id,
                account_ids=account_ids,
                settings=settings,
                now=datetime.now(UTC),
            )
            pending = await session.scalar(
                select(func.count())
                .select_from(Post)
                .where(*self._pending_outliers(input.tenant_id, project.id))
            )
            await session.execute(
                update(Scrape)
                .where(Scrape.id == input.scrape_id)
                .values(outliers=int(pending or 0), stage=ScrapeStage.PROCESSING.value)
            )
        return ScoreOutliersOutput(scored=summary.scored, outliers=int(pending or 0))

    @staticmethod
    def _pending_outliers(tenant_id: uuid.UUID, project_id: uuid.UUID) -> list[Any]:
        watched = select(ProjectAccount.account_id).where(ProjectAccount.project_id == project_id)
        return [
            Post.tenant_id == tenant_id,
            Post.account_id.in_(watched),
            Post.outlier_tier.is_not(None),
            Post.video_id.is_(None),
        ]

    @activity.defn(name=NEXT_OUTLIERS.name)
    async def next_outliers(self, input: NextOutliersInput) -> NextOutliersOutput:
        """The next outliers without a video, in post-id order after `input.after`."""
        conditions = self._pending_outliers(input.tenant_id, input.project_id)
        if input.after is not None:
            conditions.append(Post.id > input.after)
        async with self._sessions() as session:
            ids = (
                await session.scalars(
                    select(Post.id).where(*conditions).order_by(Post.id).limit(input.limit)
                )
            ).all()
        return NextOutliersOutput(post_ids=list(ids))

    @activity.defn(name=FINISH_SCRAPE.name)
    async def finish_scrape(self, input: FinishScrapeInput) -> FinishScrapeOutput:
        """Close the scrape: status, counts, every failed outlier's reason, and its cost."""
        outlier_runs = f"{PROCESS_OUTLIER_WORKFLOW.workflow_id(str(input.scrape_id))}-%"
        async with self._sessions.begin() as session:
            scrape = await _scrape(session, input.tenant_id, input.scrape_id)
            made_here = select(Post.video_id).where(
                Post.processed_scrape_id == input.scrape_id, Post.video_id.is_not(None)
            )
            cost = await session.scalar(
                select(func.coalesce(func.sum(LedgerEntry.cost_usd), 0)).where(
                    LedgerEntry.tenant_id == input.tenant_id,
                    or_(
                        LedgerEntry.run_id == input.run_id,
                        LedgerEntry.run_id.like(outlier_runs),
                        LedgerEntry.video_id.in_(made_here),
                    ),
                )
            )
            errors = list(scrape.errors or [])
            for failure in input.failures:
                if len(errors) >= MAX_RECORDED_ERRORS:
                    break
                errors.append(
                    {
                        "post_id": str(failure.post_id),
                        "code": failure.error_code,
                        "reason": failure.error_message,
                    }
                )
            scrape.status = input.status.value
            scrape.stage = ScrapeStage.DONE.value
            scrape.posts_seen = input.posts_seen or scrape.posts_seen
            scrape.posts_new = input.posts_new or scrape.posts_new
            scrape.outliers = input.outliers or scrape.outliers
            scrape.processed = input.processed
            scrape.errors = errors
            scrape.error_code = input.error_code
            scrape.error_message = input.error_message
            scrape.cost_usd = Decimal(cost or 0)
            scrape.completed_at = func.now()
        return FinishScrapeOutput(cost_usd=float(cost or 0))

    @activity.defn(name=PREPARE_OUTLIER_VIDEO.name)
    async def prepare_outlier_video(self, input: OutlierInput) -> OutlierVideo:
        """The outlier's video asset, made once; a private or odd video URL is refused here."""
        async with self._sessions.begin() as session:
            post = await session.scalar(
                select(Post)
                .where(Post.id == input.post_id, Post.tenant_id == input.tenant_id)
                .with_for_update()
            )
            if post is None:
                raise DomainError(FailureCode.OBJECT_NOT_FOUND, f"post {input.post_id} is gone")
            product_ids = list(
                (
                    await session.scalars(
                        select(ProjectProduct.product_id)
                        .where(ProjectProduct.project_id == input.project_id)
                        .order_by(ProjectProduct.product_id)
                    )
                ).all()
            )
            on_media = self._settings.discover_analyzer == "offline"
            if post.video_id is not None:
                video = await session.get(Video, post.video_id)
                analysis_id = await session.scalar(
                    select(Analysis.id).where(
                        Analysis.video_id == post.video_id,
                        Analysis.analyzer == self._settings.discover_analyzer,
                    )
                )
                return OutlierVideo(
                    video_id=post.video_id,
                    product_ids=product_ids,
                    ingested=video is not None and video.status == VideoStatus.COMPLETED.value,
                    analysis_id=analysis_id,
                    analyze_on_media_pool=on_media,
                )
            url = post.video_url or post.url
            if not url:
                raise DomainError(
                    FailureCode.POST_UNAVAILABLE, "the source gave no URL for the post's video"
                )
            try:
                # Resolving is blocking I/O; the import step checks again before it connects.
                await asyncio.get_running_loop().run_in_executor(
                    self._executor,
                    lambda: check_url(url, allowed_hosts=self._settings.import_test_allowed_hosts),
                )
            except UrlNotAllowed as refused:
                raise DomainError(
                    FailureCode.URL_NOT_ALLOWED, f"the post's video URL is refused: {refused}"
                ) from None
            account = await session.get(WatchedAccount, post.account_id)
            handle = account.handle if account else "unknown"
            caption = (post.caption or "").strip().replace("\n", " ")
            video_id = uuid.uuid4()
            await videos.create_video(
                session,
                tenant_id=input.tenant_id,
                video_id=video_id,
                title=f"@{handle} · {caption[:120]}" if caption else f"@{handle} post",
                origin="scraped",
                source_key=videos.source_key(input.tenant_id, video_id, ".mp4"),
                status=VideoStatus.PENDING,
                source_url=url,
            )
            post.video_id = video_id
            post.processed_scrape_id = input.scrape_id
        return OutlierVideo(
            video_id=video_id,
            product_ids=product_ids,
            ingested=False,
            analyze_on_media_pool=on_media,
        )


class ApifyActivities:
    """Actor runs: started once per scrape and platform, long-polled, aborted on cancel."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        settings: Settings,
        apify: ApifySource | None,
        executor: Executor,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._apify = apify
        self._executor = executor

    def _source(self) -> ApifySource:
        if self._apify is None:
            raise DomainError(
                FailureCode.PROVIDER_UNAVAILABLE_HERE, "APIFY_TOKEN is not set on this deployment"
            )
        return self._apify

    @activity.defn(name=START_APIFY_RUN.name)
    async def start_apify_run(self, input: StartApifyRunInput) -> ApifyRunRef:
        """The scrape's run for `input.platform`: recorded, found again at Apify, or started.

        The run id is written to the scrape before anything polls it. Should this attempt
        die between Apify's answer and that write, the retry finds the run by the scrape's
        marker instead of starting (and paying for) a second one.
        """
        source = self._source()
        marker = f"reelflow-scrape-{input.scrape_id}-{input.platform.value}"
        async with self._sessions() as session:
            scrape = await _scrape(session, input.tenant_id, input.scrape_id)
            for recorded in scrape.apify_runs or []:
                run = ApifyRunRef.model_validate(recorded)
                if run.platform == input.platform:
                    return run
            handles = (await _project_handles(session, scrape.project_id)).get(input.platform, [])
            started_after = scrape.created_at - timedelta(minutes=1)
        settings = self._settings

        def start() -> ApifyRunRef:
            run = source.ensure_run(
                input.platform,
                handles,
                max_items_per_account=settings.apify_max_items_per_account,
                marker=marker,
                started_after=started_after,
            )
            return ApifyRunRef(
                platform=input.platform,
                actor=run.actor,
                run_id=run.run_id,
                dataset_id=run.dataset_id,
            )

        run = await run_blocking(self._executor, start, heartbeat_details="start actor")
        async with self._sessions.begin() as session:
            scrape = await _scrape(session, input.tenant_id, input.scrape_id)
            recorded_runs = [
                entry
                for entry in scrape.apify_runs or []
                if entry.get("platform") != input.platform.value
            ]
            scrape.apify_runs = [*recorded_runs, run.model_dump(mode="json")]
        return run

    @activity.defn(name=POLL_APIFY_RUN.name)
    async def poll_apify_run(self, input: PollApifyRunInput) -> ApifyRunStatus:
        """One long poll; a finished run's cost goes to the ledger, once per run."""
        source = self._source()
        wait_s = self._settings.apify_poll_wait_s
        state = await run_blocking(
            self._executor,
            lambda: source.wait_for_run(input.run.run_id, wait_s=wait_s, actor=input.run.actor),
            heartbeat_details="poll actor run",
        )
        succeeded = state.status == "SUCCEEDED"
        cost = state.estimated_cost_usd
        if state.finished and cost is not None:
            async with self._sessions.begin() as session:
                await record_usage(
                    session,
                    Usage(
                        idempotency_key=f"apify-run-{input.run.run_id}",
                        tenant_id=input.tenant_id,
                        step="scrape",
                        provider="apify",
                        operation="actor_run",
                        model=input.run.actor,
                        units=cost,
                        run_id=activity.info().workflow_id,
                    ),
                )
        return ApifyRunStatus(
            status=state.status,
            finished=state.finished,
            succeeded=succeeded,
            message=state.status_message,
            item_count=state.item_count,
        )

    @activity.defn(name=ABORT_APIFY_RUNS.name)
    async def abort_apify_runs(self, input: AbortApifyRunsInput) -> AbortApifyRunsOutput:
        """Abort every actor run of a canceled scrape (a finished run is left as it is)."""
        if self._apify is None:
            return AbortApifyRunsOutput(aborted=0)
        source = self._apify
        async with self._sessions() as session:
            scrape = await _scrape(session, input.tenant_id, input.scrape_id)
            runs = [ApifyRunRef.model_validate(run) for run in scrape.apify_runs or []]

        def abort() -> int:
            for run in runs:
                source.abort_run(run.run_id)
            return len(runs)

        aborted = await run_blocking(self._executor, abort, heartbeat_details="abort actor runs")
        return AbortApifyRunsOutput(aborted=aborted)


class AnalysisActivities:
    """Why a video worked: the analyzer built once per worker (offline, or Gemini)."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        storage: Storage,
        analyzer: Callable[[], VideoAnalyzer],
        settings: Settings,
        scratch_dir: Path,
        executor: Executor,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._storage = storage
        self._analyzer = analyzer
        self._scratch = scratch_dir
        self._executor = executor

    @activity.defn(name=ANALYZE_VIDEO.name)
    async def analyze_video(self, input: AnalyzeVideoInput) -> AnalyzeVideoOutput:
        """Analyze the stored video with its transcript; keep one analysis per analyzer."""
        async with self._sessions() as session:
            video = await videos.get_video(session, input.tenant_id, input.video_id)
            if video is None:
                raise DomainError(
                    FailureCode.VIDEO_NOT_FOUND, f"video {input.video_id} does not exist"
                )
            segments = (
                await session.execute(
                    select(
                        TranscriptSegment.start_s, TranscriptSegment.end_s, TranscriptSegment.text
                    )
                    .where(TranscriptSegment.video_id == input.video_id)
                    .order_by(TranscriptSegment.window_index, TranscriptSegment.seq)
                )
            ).all()
            source_key, duration_s = video.source_key, video.duration_s or 0.0
        transcript = (
            TranscriptForAnalysis(
                text=" ".join(text.strip() for _, _, text in segments),
                segments=[(start, end, text) for start, end, text in segments],
            )
            if segments
            else None
        )
        keyframe_prefix = f"tenants/{input.tenant_id}/videos/{input.video_id}/keyframes"
        scratch = self._scratch / "analysis" / str(input.video_id)

        def keyframe_sink(index: int, path: Path) -> str:
            key = f"{keyframe_prefix}/{index:03d}.jpg"
            self._storage.put_file(key, path, content_type="image/jpeg")
            return key

        def analyze() -> Any:
            local = materialize(self._storage, source_key, scratch)
            try:
                return self._analyzer().analyze(
                    local,
                    duration_s=duration_s,
                    transcript=transcript,
                    keyframe_sink=keyframe_sink,
                )
            finally:
                with contextlib.suppress(OSError):
                    local.unlink()

        try:
            result = await run_blocking(self._executor, analyze, heartbeat_details="analyze")
        except AnalysisFailed as failed:
            # Refused or unusable, but billed: the tokens are recorded all the same.
            if failed.usage is not None:
                async with self._sessions.begin() as session:
                    await _record_tokens(
                        session,
                        key=f"analysis-{input.video_id}-failed-{activity.info().attempt}",
                        tenant_id=input.tenant_id,
                        step="analyze",
                        provider=self._settings.discover_analyzer,
                        model=self._settings.discover_analysis_model,
                        usage=failed.usage,
                        operations=ANALYSIS_OPERATIONS,
                        run_id=input.run_id,
                        video_id=input.video_id,
                    )
            raise
        analysis: VideoAnalysis = result.analysis
        async with self._sessions.begin() as session:
            cost = Decimal(0)
            if result.usage is not None:
                cost = await _record_tokens(
                    session,
                    key=f"analysis-{input.video_id}-{result.analyzer}",
                    tenant_id=input.tenant_id,
                    step="analyze",
                    provider=result.analyzer,
                    model=result.model,
                    usage=result.usage,
                    operations=ANALYSIS_OPERATIONS,
                    run_id=input.run_id,
                    video_id=input.video_id,
                )
            existing = await session.scalar(
                select(Analysis).where(
                    Analysis.video_id == input.video_id, Analysis.analyzer == result.analyzer
                )
            )
            row = existing or Analysis(
                id=uuid.uuid4(),
                tenant_id=input.tenant_id,
                video_id=input.video_id,
                analyzer=result.analyzer,
            )
            row.post_id = input.post_id
            row.model = result.model
            row.prompt_version = result.prompt_version
            row.analysis = analysis.model_dump(mode="json")
            row.viral_score = analysis.viral_score.score if analysis.viral_score else None
            row.cost_usd = cost
            if existing is None:
                session.add(row)
        return AnalyzeVideoOutput(
            analysis_id=row.id,
            analyzer=result.analyzer,
            viral_score=row.viral_score,
            unfilled=len(analysis.unfilled),
            cost_usd=float(cost),
        )


class AdaptationActivities:
    """Adapting a winning video to a product: the adapter built once per worker."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        adapter: Callable[[], ScriptAdapter],
        settings: Settings,
        executor: Executor,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._adapter = adapter
        self._executor = executor

    @activity.defn(name=ADAPT_SCRIPT.name)
    async def adapt_script(self, input: AdaptScriptInput) -> AdaptScriptOutput:
        """One adaptation per analysis and product, and its draft script (made once)."""
        async with self._sessions() as session:
            analysis_row = await session.scalar(
                select(Analysis).where(
                    Analysis.id == input.analysis_id, Analysis.tenant_id == input.tenant_id
                )
            )
            if analysis_row is None:
                raise DomainError(
                    FailureCode.OBJECT_NOT_FOUND, f"analysis {input.analysis_id} does not exist"
                )
            existing = await session.scalar(
                select(Adaptation).where(
                    Adaptation.analysis_id == input.analysis_id,
                    Adaptation.product_id == input.product_id,
                )
            )
            product_row = (
                await session.execute(
                    select(Product, Brand.name)
                    .join(Brand, Brand.id == Product.brand_id)
                    .where(Product.id == input.product_id, Product.tenant_id == input.tenant_id)
                )
            ).one_or_none()
            if product_row is None:
                raise DomainError(
                    FailureCode.OBJECT_NOT_FOUND, f"product {input.product_id} does not exist"
                )
            video_title = await session.scalar(
                select(Video.title).where(Video.id == analysis_row.video_id)
            )
            analysis = VideoAnalysis.model_validate(analysis_row.analysis)
        product, brand_name = product_row
        brief = ProductBrief(
            product_id=product.id,
            name=product.name,
            brand=brand_name,
            description=product.description,
            audience=product.audience,
            benefits=list(product.benefits or []),
            tone=product.tone,
        )
        cost = Decimal(0)
        if existing is None:
            try:
                result = await run_blocking(
                    self._executor,
                    lambda: self._adapter().adapt(analysis, brief, source_title=video_title),
                    heartbeat_details="adapt",
                )
            except AdaptationFailed as failed:
                if failed.usage is not None:
                    settings = self._settings
                    async with self._sessions.begin() as session:
                        await _record_tokens(
                            session,
                            key=(
                                f"adapt-{input.analysis_id}-{input.product_id}"
                                f"-failed-{activity.info().attempt}"
                            ),
                            tenant_id=input.tenant_id,
                            step="adapt",
                            provider=settings.discover_adapter,
                            model=settings.discover_adapter_model
                            or DEFAULT_ADAPTER_MODELS.get(settings.discover_adapter, ""),
                            usage=failed.usage,
                            operations=CHAT_OPERATIONS,
                            run_id=input.run_id,
                            video_id=analysis_row.video_id,
                        )
                raise
            async with self._sessions.begin() as session:
                if result.usage is not None:
                    cost = await _record_tokens(
                        session,
                        key=f"adapt-{input.analysis_id}-{input.product_id}",
                        tenant_id=input.tenant_id,
                        step="adapt",
                        provider=_provider_of(result.adaptation.adapter),
                        model=result.model,
                        usage=result.usage,
                        operations=CHAT_OPERATIONS,
                        run_id=input.run_id,
                        video_id=analysis_row.video_id,
                    )
                existing = Adaptation(
                    id=uuid.uuid4(),
                    tenant_id=input.tenant_id,
                    analysis_id=input.analysis_id,
                    product_id=input.product_id,
                    adapter=result.adaptation.adapter,
                    adaptation=result.adaptation.model_dump(mode="json"),
                    fit_score=result.adaptation.audience_fit.score,
                    cost_usd=cost,
                )
                session.add(existing)
        async with self._sessions.begin() as session:
            script = await scripts.create_from_adaptation(
                session,
                tenant_id=input.tenant_id,
                adaptation_id=existing.id,
                project_id=input.project_id,
                by="discover",
            )
            script_id = script.id
        return AdaptScriptOutput(
            adaptation_id=existing.id,
            script_id=script_id,
            fit_score=existing.fit_score,
            adapter=existing.adapter,
            cost_usd=float(cost),
        )
