"""Stand-in activities for the discover workflows, registered under the real names.

They record what the workflows asked for, so the tests assert on orchestration alone: the
real activities have their own tests against Postgres, Apify's wire format and ffmpeg. The
ingest child runs the real `IngestWorkflow` over the ingest stand-ins.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from reelflow.core.errors import DomainError
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
    OutlierVideo,
    Platform,
    PollApifyRunInput,
    ScoreOutliersInput,
    ScoreOutliersOutput,
    ScrapePlan,
    ScrapeSource,
    ScrapeStateInput,
    ScrapeStateOutput,
    StartApifyRunInput,
)
from schemas.failures import FailureCode
from schemas.queues import TaskQueues
from tests.workflows.ingest.fakes import FakePipeline
from tests.workflows.ingest.test_ingest_workflow import new_plan
from workers.pools import activity_worker
from workflows.discover import DiscoverWorkflow, ProcessOutlierWorkflow
from workflows.ingest import IngestWorkflow


def post_ids(count: int) -> list[uuid.UUID]:
    """Ids in ascending order, as the outlier query returns them."""
    return sorted(uuid.UUID(int=index + 1) for index in range(count))


@dataclass
class FakeDiscover:
    """Configurable behaviour plus a record of every call."""

    source: ScrapeSource = ScrapeSource.APIFY
    platforms: list[Platform] = field(default_factory=lambda: [Platform.INSTAGRAM])
    polls_until_finished: int = 2
    final_status: str = "SUCCEEDED"
    outliers: list[uuid.UUID] = field(default_factory=lambda: post_ids(3))
    refused_posts: set[uuid.UUID] = field(default_factory=set)
    """Posts whose video URL the prepare step refuses (a private address)."""
    products: int = 2
    max_parallel: int = 2
    per_run: int = 200
    analyze_delay_s: float = 0.0
    scrape_id: uuid.UUID = field(default_factory=uuid.uuid4)
    queues: TaskQueues = field(default_factory=lambda: TaskQueues.for_prefix(uuid.uuid4().hex))
    calls: list[str] = field(default_factory=list)
    started_runs: list[ApifyRunRef] = field(default_factory=list)
    finished: list[FinishScrapeInput] = field(default_factory=list)
    states: list[ScrapeStateInput] = field(default_factory=list)
    analyzing_now: int = 0
    most_analyzing: int = 0
    polls: int = 0
    ingest: FakePipeline = field(
        default_factory=lambda: FakePipeline(
            # A scraped video: the ingest run downloads it from the post's video URL.
            plan=new_plan(source_ready=False, source_url="https://cdn.example/post.mp4"),
            duration_s=20.0,
            chunk_count=2,
        )
    )

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="begin_scrape")
        async def begin_scrape(input: BeginScrapeInput) -> ScrapePlan:
            self.calls.append("begin_scrape")
            return ScrapePlan(
                scrape_id=input.scrape_id or self.scrape_id,
                source=self.source,
                platforms=self.platforms,
                apify_runs=list(self.started_runs),
                max_parallel=self.max_parallel,
                per_run=self.per_run,
            )

        @activity.defn(name="set_scrape_state")
        async def set_scrape_state(input: ScrapeStateInput) -> ScrapeStateOutput:
            self.states.append(input)
            return ScrapeStateOutput(updated=True)

        @activity.defn(name="start_apify_run")
        async def start_apify_run(input: StartApifyRunInput) -> ApifyRunRef:
            self.calls.append(f"start_apify_run[{input.platform.value}]")
            run = ApifyRunRef(
                platform=input.platform,
                actor=f"actor-{input.platform.value}",
                run_id=f"run-{input.platform.value}",
                dataset_id=f"dataset-{input.platform.value}",
            )
            self.started_runs.append(run)
            return run

        @activity.defn(name="poll_apify_run")
        async def poll_apify_run(input: PollApifyRunInput) -> ApifyRunStatus:
            self.polls += 1
            finished = self.polls >= self.polls_until_finished * len(self.platforms)
            if not finished:
                # A long poll: the real one waits up to 60 s at Apify.
                await asyncio.sleep(0.05)
            return ApifyRunStatus(
                status=self.final_status if finished else "RUNNING",
                finished=finished,
                succeeded=finished and self.final_status == "SUCCEEDED",
                message=None if self.final_status == "SUCCEEDED" else "the actor crashed",
            )

        @activity.defn(name="abort_apify_runs")
        async def abort_apify_runs(input: AbortApifyRunsInput) -> AbortApifyRunsOutput:
            self.calls.append("abort_apify_runs")
            return AbortApifyRunsOutput(aborted=len(self.started_runs))

        @activity.defn(name="import_posts")
        async def import_posts(input: ImportPostsInput) -> ImportPostsOutput:
            self.calls.append("import_posts")
            return ImportPostsOutput(posts_seen=50, posts_new=40, rejected=2, cost_usd=0.25)

        @activity.defn(name="score_outliers")
        async def score_outliers(input: ScoreOutliersInput) -> ScoreOutliersOutput:
            self.calls.append("score_outliers")
            return ScoreOutliersOutput(scored=50, outliers=len(self.outliers))

        @activity.defn(name="next_outliers")
        async def next_outliers(input: NextOutliersInput) -> NextOutliersOutput:
            after = input.after or uuid.UUID(int=0)
            pending = [post for post in self.outliers if post > after]
            return NextOutliersOutput(post_ids=pending[: input.limit])

        @activity.defn(name="finish_scrape")
        async def finish_scrape(input: FinishScrapeInput) -> FinishScrapeOutput:
            self.finished.append(input)
            return FinishScrapeOutput(cost_usd=1.5)

        @activity.defn(name="prepare_outlier_video")
        async def prepare_outlier_video(input: OutlierInput) -> OutlierVideo:
            self.calls.append(f"prepare[{input.post_id.int}]")
            if input.post_id in self.refused_posts:
                raise DomainError(
                    FailureCode.URL_NOT_ALLOWED,
                    "the post's video URL is refused: a private network address",
                )
            return OutlierVideo(
                video_id=uuid.uuid5(uuid.NAMESPACE_OID, str(input.post_id)),
                product_ids=[uuid.UUID(int=1000 + index) for index in range(self.products)],
                ingested=False,
            )

        @activity.defn(name="analyze_video")
        async def analyze_video(input: AnalyzeVideoInput) -> AnalyzeVideoOutput:
            self.analyzing_now += 1
            self.most_analyzing = max(self.most_analyzing, self.analyzing_now)
            try:
                await asyncio.sleep(self.analyze_delay_s)
            finally:
                self.analyzing_now -= 1
            return AnalyzeVideoOutput(analysis_id=uuid.uuid4(), analyzer="offline")

        @activity.defn(name="adapt_script")
        async def adapt_script(input: AdaptScriptInput) -> AdaptScriptOutput:
            self.calls.append("adapt_script")
            return AdaptScriptOutput(
                adaptation_id=uuid.uuid4(),
                script_id=uuid.uuid4(),
                fit_score=7.0,
                adapter="offline-template",
            )

        return [
            begin_scrape,
            set_scrape_state,
            start_apify_run,
            poll_apify_run,
            abort_apify_runs,
            import_posts,
            score_outliers,
            next_outliers,
            finish_scrape,
            prepare_outlier_video,
            analyze_video,
            adapt_script,
        ]

    @asynccontextmanager
    async def workers(self, client: Client) -> AsyncIterator[None]:
        """Workers on this test's own queue family, with the ingest stand-ins for the child."""
        activities = [*self.activities(), *self.ingest.activities()]
        async with (
            Worker(
                client,
                task_queue=self.queues.workflows,
                workflows=[DiscoverWorkflow, ProcessOutlierWorkflow, IngestWorkflow],
            ),
            activity_worker(client, self.queues.media, activities),
            activity_worker(client, self.queues.providers, activities),
        ):
            yield
