"""The discover pipeline: scrape → upsert → outliers → for each new outlier, a child run that
downloads, ingests, analyzes and adapts it.

Deterministic orchestration only. Posts, analyses and scripts live in their tables; payloads
carry ids and counts, so a scrape of 100k posts keeps a small history. A project with more
new outliers than one run should hold continues as new, in post-id order, so its history
stays bounded too. One outlier failing (a deleted post, a private address, a refused
analysis) is recorded on the scrape with its reason; the others go on.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError, ChildWorkflowError
from temporalio.workflow import ParentClosePolicy

from workflows._admission import RunSlot
from workflows._steps import StepFailed, call, step

with workflow.unsafe.imports_passed_through():
    from schemas import search_attributes as sa
    from schemas.admission_activities import RUN_SLOT_QUERY, RunSlotState
    from schemas.contracts import Pool
    from schemas.discover import (
        MAX_CARRIED_FAILURES,
        AbortApifyRunsInput,
        AdaptScriptInput,
        AnalyzeVideoInput,
        ApifyRunRef,
        BeginScrapeInput,
        DiscoverInput,
        DiscoverOutcome,
        DiscoverProgress,
        FinishScrapeInput,
        ImportPostsInput,
        NextOutliersInput,
        OutlierInput,
        OutlierOutcome,
        PollApifyRunInput,
        ScoreOutliersInput,
        ScrapePlan,
        ScrapeSource,
        ScrapeStage,
        ScrapeStateInput,
        ScrapeStatus,
        StartApifyRunInput,
    )
    from schemas.discover_activities import (
        ABORT_APIFY_RUNS,
        ADAPT_SCRIPT,
        ANALYZE_VIDEO,
        BEGIN_SCRAPE,
        DISCOVER_WORKFLOW,
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
    from schemas.failures import FailureCode, known_code
    from schemas.ingest import IngestInput, IngestResult, ingest_workflow_id
    from schemas.ingest_activities import INGEST_WORKFLOW
    from schemas.queues import TaskQueues

_APIFY_RUN_LIMIT = timedelta(hours=6)
"""An actor run still going after this long is aborted and the scrape fails."""


def _child_failure(err: ChildWorkflowError, what: str) -> StepFailed:
    """The vocabulary code and reason a child run failed with."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        code = known_code(cause.type)
        if code is not None:
            return StepFailed(code, cause.message)
        return StepFailed(FailureCode.STEP_FAILED, f"{what} failed: {cause.message}")
    return StepFailed(FailureCode.STEP_FAILED, f"{what} failed")


@workflow.defn(name=DISCOVER_WORKFLOW.name)
class DiscoverWorkflow:
    """One scrape of a project, from its source to script drafts for its new outliers."""

    def __init__(self) -> None:
        self._queues = TaskQueues.of_workflow_queue(workflow.info().task_queue)
        self._progress = DiscoverProgress(
            scrape_id=None, status=ScrapeStatus.QUEUED, stage=ScrapeStage.QUEUED
        )
        self._failures: list[OutlierOutcome] = []
        self._input: DiscoverInput | None = None
        self._slot: RunSlot | None = None

    @workflow.query
    def progress(self) -> DiscoverProgress:
        """Status, stage and counts of this scrape, as the API and the CLI show them."""
        return self._progress

    @workflow.query(name=RUN_SLOT_QUERY)
    def run_slot(self) -> RunSlotState | None:
        """The scrape's place among its tenant's concurrent runs (None: it takes no slot)."""
        return self._slot.state if self._slot is not None else None

    @workflow.run
    async def run(self, input: DiscoverInput) -> DiscoverOutcome:
        self._input = input
        if input.carried is not None:
            self._progress = input.carried.model_copy()
        self._failures = list(input.carried_failures)
        info = workflow.info()
        plan = await call(
            BEGIN_SCRAPE,
            BeginScrapeInput(
                tenant_id=input.tenant_id,
                project_id=input.project_id,
                scrape_id=input.scrape_id,
                run_key=info.workflow_id,
                workflow_id=info.workflow_id,
            ),
            self._queues,
        )
        self._progress.scrape_id = plan.scrape_id
        self._progress.status = ScrapeStatus.RUNNING

        async def queued(_state: RunSlotState) -> None:
            self._progress.status = ScrapeStatus.QUEUED
            await self._enter(plan, ScrapeStage.QUEUED)

        # One slot for the whole scrape, its outlier children and their ingests included:
        # they work for this run, which waits for them (see `workflows/_admission.py`).
        self._slot = RunSlot(
            tenant_id=str(input.tenant_id),
            pipeline=DISCOVER_WORKFLOW.pipeline,
            queues=self._queues,
            on_queued=queued,
        )
        try:
            async with self._slot:
                self._progress.status = ScrapeStatus.RUNNING
                return await self._run(input, plan)
        except StepFailed as failed:
            await self._finish(plan, ScrapeStatus.FAILED, failed.code, failed.message)
            raise ApplicationError(failed.message, type=failed.code, non_retryable=True) from None
        except asyncio.CancelledError:
            # The cancel was delivered once; the cleanup's own steps still run.
            await self._cancel_cleanup(plan)
            raise

    async def _run(self, input: DiscoverInput, plan: ScrapePlan) -> DiscoverOutcome:
        first_run = input.process_after is None
        if first_run and not plan.posts_imported:
            if plan.source == ScrapeSource.APIFY:
                await self._enter(plan, ScrapeStage.SCRAPING)
                await self._run_actors(plan)
            await self._enter(plan, ScrapeStage.UPSERTING)
            imported = await step(
                call(
                    IMPORT_POSTS,
                    ImportPostsInput(
                        tenant_id=input.tenant_id,
                        scrape_id=plan.scrape_id,
                        run_id=workflow.info().workflow_id,
                    ),
                    self._queues,
                    summary=f"import posts · {plan.source.value}",
                )
            )
            self._progress.posts_seen = imported.posts_seen
            self._progress.posts_new = imported.posts_new
            self._add_cost(imported.cost_usd)
        if first_run and not plan.scored:
            await self._enter(plan, ScrapeStage.SCORING)
            scored = await step(
                call(
                    SCORE_OUTLIERS,
                    ScoreOutliersInput(
                        tenant_id=input.tenant_id,
                        project_id=input.project_id,
                        scrape_id=plan.scrape_id,
                    ),
                    self._queues,
                )
            )
            self._progress.outliers = scored.outliers
        await self._enter(plan, ScrapeStage.PROCESSING)
        after = await self._process_outliers(input, plan)
        if after is not None:
            # More outliers than one run should hold: the next run picks up after `after`.
            await self._save_state(plan)
            workflow.continue_as_new(
                DiscoverInput(
                    tenant_id=input.tenant_id,
                    project_id=input.project_id,
                    scrape_id=plan.scrape_id,
                    process_after=after,
                    carried=self._progress,
                    carried_failures=self._failures[:MAX_CARRIED_FAILURES],
                )
            )
        return await self._finish(plan, ScrapeStatus.COMPLETED, None, None)

    async def _run_actors(self, plan: ScrapePlan) -> None:
        assert self._input is not None
        started = {run.platform: run for run in plan.apify_runs}
        runs: list[ApifyRunRef] = []
        for platform in plan.platforms:
            run = started.get(platform)
            if run is None:
                run = await step(
                    call(
                        START_APIFY_RUN,
                        StartApifyRunInput(
                            tenant_id=self._input.tenant_id,
                            scrape_id=plan.scrape_id,
                            platform=platform,
                        ),
                        self._queues,
                        summary=f"start actor · {platform.value}",
                    )
                )
            runs.append(run)
        await asyncio.gather(*(self._await_actor(plan, run) for run in runs))

    async def _await_actor(self, plan: ScrapePlan, run: ApifyRunRef) -> None:
        assert self._input is not None
        deadline = workflow.now() + _APIFY_RUN_LIMIT
        polls = 0
        while True:
            polls += 1
            status = await step(
                call(
                    POLL_APIFY_RUN,
                    PollApifyRunInput(
                        tenant_id=self._input.tenant_id, scrape_id=plan.scrape_id, run=run
                    ),
                    self._queues,
                    summary=f"poll {run.platform.value} run · {polls}",
                )
            )
            if status.finished:
                if not status.succeeded:
                    raise StepFailed(
                        FailureCode.SCRAPE_FAILED,
                        f"the {run.actor} run ended {status.status}"
                        + (f": {status.message}" if status.message else ""),
                    )
                return
            if workflow.now() >= deadline:
                raise StepFailed(
                    FailureCode.SCRAPE_FAILED,
                    f"the {run.actor} run did not finish within {_APIFY_RUN_LIMIT}",
                )

    async def _process_outliers(self, input: DiscoverInput, plan: ScrapePlan) -> uuid.UUID | None:
        """Process up to `plan.per_run` outliers; the last one's id when more may remain."""
        after = input.process_after
        handled = 0
        limiter = asyncio.Semaphore(plan.max_parallel)
        while handled < plan.per_run:
            batch = await call(
                NEXT_OUTLIERS,
                NextOutliersInput(
                    tenant_id=input.tenant_id,
                    project_id=input.project_id,
                    after=after,
                    limit=min(plan.max_parallel * 4, plan.per_run - handled),
                ),
                self._queues,
            )
            if not batch.post_ids:
                return None

            async def one(post_id: uuid.UUID) -> None:
                async with limiter:
                    outcome = await self._process_one(input, plan, post_id)
                self._progress.processed += 1
                self._add_cost(outcome.cost_usd)
                if outcome.error_code is not None:
                    if len(self._failures) < MAX_CARRIED_FAILURES:
                        self._failures.append(outcome)
                    self._progress.failed_outliers += 1

            await asyncio.gather(*(one(post_id) for post_id in batch.post_ids))
            handled += len(batch.post_ids)
            after = batch.post_ids[-1]
            await self._save_state(plan)
        return after

    async def _process_one(
        self, input: DiscoverInput, plan: ScrapePlan, post_id: uuid.UUID
    ) -> OutlierOutcome:
        try:
            outcome: OutlierOutcome = await workflow.execute_child_workflow(
                PROCESS_OUTLIER_WORKFLOW.name,
                OutlierInput(
                    tenant_id=input.tenant_id,
                    project_id=input.project_id,
                    scrape_id=plan.scrape_id,
                    post_id=post_id,
                ),
                id=PROCESS_OUTLIER_WORKFLOW.workflow_id(f"{plan.scrape_id}-{post_id}"),
                result_type=OutlierOutcome,
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                # A failed outlier is reported on the scrape, never retried as a whole run.
                retry_policy=RetryPolicy(maximum_attempts=1),
                search_attributes=self._attributes(input, "processing"),
                static_summary=f"outlier post {post_id}",
            )
            return outcome
        except ChildWorkflowError as err:
            failed = _child_failure(err, "processing the outlier")
            return OutlierOutcome(
                post_id=post_id, error_code=failed.code, error_message=failed.message
            )

    def _attributes(self, input: DiscoverInput, stage: str) -> TypedSearchAttributes:
        return TypedSearchAttributes(
            [
                SearchAttributePair(sa.TENANT_ID, str(input.tenant_id)),
                SearchAttributePair(sa.PIPELINE, DISCOVER_WORKFLOW.pipeline),
                SearchAttributePair(sa.PROJECT_ID, str(input.project_id)),
                SearchAttributePair(sa.STAGE, stage),
                SearchAttributePair(sa.COST_USD, 0.0),
            ]
        )

    # --- state --------------------------------------------------------------------------

    def _add_cost(self, cost_usd: float) -> None:
        self._progress.cost_usd = round(self._progress.cost_usd + cost_usd, 8)

    async def _enter(self, plan: ScrapePlan, stage: ScrapeStage) -> None:
        self._progress.stage = stage
        workflow.upsert_search_attributes(
            [sa.STAGE.value_set(stage.value), sa.COST_USD.value_set(self._progress.cost_usd)]
        )
        await self._save_state(plan)

    async def _save_state(self, plan: ScrapePlan) -> None:
        assert self._input is not None
        await call(
            SET_SCRAPE_STATE,
            ScrapeStateInput(
                tenant_id=self._input.tenant_id,
                scrape_id=plan.scrape_id,
                stage=self._progress.stage,
                posts_seen=self._progress.posts_seen,
                posts_new=self._progress.posts_new,
                outliers=self._progress.outliers,
                processed=self._progress.processed,
            ),
            self._queues,
        )

    async def _finish(
        self,
        plan: ScrapePlan,
        status: ScrapeStatus,
        error_code: FailureCode | None,
        error_message: str | None,
    ) -> DiscoverOutcome:
        assert self._input is not None
        self._progress.status = status
        self._progress.stage = ScrapeStage.DONE
        self._progress.error = error_message
        finished = await call(
            FINISH_SCRAPE,
            FinishScrapeInput(
                tenant_id=self._input.tenant_id,
                scrape_id=plan.scrape_id,
                status=status,
                run_id=workflow.info().workflow_id,
                posts_seen=self._progress.posts_seen,
                posts_new=self._progress.posts_new,
                outliers=self._progress.outliers,
                processed=self._progress.processed,
                failures=self._failures,
                error_code=error_code,
                error_message=error_message,
            ),
            self._queues,
        )
        self._progress.cost_usd = finished.cost_usd
        workflow.upsert_search_attributes(
            [sa.STAGE.value_set(status.value), sa.COST_USD.value_set(finished.cost_usd)]
        )
        return DiscoverOutcome(
            scrape_id=plan.scrape_id,
            status=status,
            posts_seen=self._progress.posts_seen,
            posts_new=self._progress.posts_new,
            outliers=self._progress.outliers,
            processed=self._progress.processed,
            failed_outliers=self._progress.failed_outliers,
            cost_usd=finished.cost_usd,
        )

    async def _cancel_cleanup(self, plan: ScrapePlan) -> None:
        assert self._input is not None
        if plan.source == ScrapeSource.APIFY:
            try:
                await call(
                    ABORT_APIFY_RUNS,
                    AbortApifyRunsInput(tenant_id=self._input.tenant_id, scrape_id=plan.scrape_id),
                    self._queues,
                )
            except Exception:
                # Best effort: the scrape is canceled whether or not Apify stops in time.
                workflow.logger.warning("could not abort the actor runs of a canceled scrape")
        await self._finish(
            plan, ScrapeStatus.CANCELED, FailureCode.CANCELED, "the scrape was canceled"
        )


@workflow.defn(name=PROCESS_OUTLIER_WORKFLOW.name)
class ProcessOutlierWorkflow:
    """One outlier: its video asset, ingested as a child run, analyzed, adapted per product."""

    def __init__(self) -> None:
        self._queues = TaskQueues.of_workflow_queue(workflow.info().task_queue)

    @workflow.run
    async def run(self, input: OutlierInput) -> OutlierOutcome:
        outcome = OutlierOutcome(post_id=input.post_id)
        step_name = "download"
        try:
            video = await step(call(PREPARE_OUTLIER_VIDEO, input, self._queues))
            outcome.video_id = video.video_id
            if not video.ingested:
                ingested = await self._ingest(input, video.video_id)
                outcome.cost_usd += ingested.cost_usd
            step_name = "analyze"
            run_id = workflow.info().workflow_id
            analysis_id = video.analysis_id
            if analysis_id is None:
                analyzed = await step(
                    call(
                        ANALYZE_VIDEO,
                        AnalyzeVideoInput(
                            tenant_id=input.tenant_id,
                            video_id=video.video_id,
                            post_id=input.post_id,
                            run_id=run_id,
                        ),
                        self._queues,
                        pool=Pool.MEDIA if video.analyze_on_media_pool else Pool.PROVIDERS,
                    )
                )
                analysis_id = analyzed.analysis_id
                outcome.cost_usd += analyzed.cost_usd
            outcome.analysis_id = analysis_id
            step_name = "adapt"
            adapted = await step(
                asyncio.gather(
                    *(
                        call(
                            ADAPT_SCRIPT,
                            AdaptScriptInput(
                                tenant_id=input.tenant_id,
                                project_id=input.project_id,
                                analysis_id=analysis_id,
                                product_id=product_id,
                                run_id=run_id,
                            ),
                            self._queues,
                            summary=f"adapt · product {product_id}",
                        )
                        for product_id in video.product_ids
                    )
                )
            )
            outcome.script_ids = [result.script_id for result in adapted]
            outcome.cost_usd += sum(result.cost_usd for result in adapted)
            return outcome
        except StepFailed as failed:
            # Fail the run (so the UI shows it failed) with the reason the parent records.
            raise ApplicationError(
                f"{step_name}: {failed.message}", type=failed.code, non_retryable=True
            ) from None

    async def _ingest(self, input: OutlierInput, video_id: uuid.UUID) -> IngestResult:
        video = str(video_id)
        try:
            result: IngestResult = await workflow.execute_child_workflow(
                INGEST_WORKFLOW.name,
                IngestInput(tenant_id=str(input.tenant_id), video_id=video),
                id=ingest_workflow_id(video),
                result_type=IngestResult,
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa.TENANT_ID, str(input.tenant_id)),
                        SearchAttributePair(sa.VIDEO_ID, video),
                        SearchAttributePair(sa.PIPELINE, "ingest"),
                        SearchAttributePair(sa.STAGE, "queued"),
                        SearchAttributePair(sa.COST_USD, 0.0),
                    ]
                ),
            )
            return result
        except ChildWorkflowError as err:
            raise _child_failure(err, "ingesting the video") from err
