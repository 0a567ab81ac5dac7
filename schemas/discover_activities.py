"""The discover pipeline's activities as its workflows call them (see `schemas/contracts.py`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from schemas.contracts import (
    DATABASE_DEADLINE,
    DATABASE_RETRY,
    DATABASE_TIMEOUT,
    MEDIA_RETRY,
    PROVIDER_RETRY,
    ActivityContract,
    Pool,
    WorkflowContract,
    retry_policy,
)
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
    DiscoverInput,
    DiscoverOutcome,
    FinishScrapeInput,
    FinishScrapeOutput,
    ImportPostsInput,
    ImportPostsOutput,
    NextOutliersInput,
    NextOutliersOutput,
    OutlierInput,
    OutlierOutcome,
    OutlierVideo,
    PollApifyRunInput,
    ScoreOutliersInput,
    ScoreOutliersOutput,
    ScrapePlan,
    ScrapeStateInput,
    ScrapeStateOutput,
    StartApifyRunInput,
)

DISCOVER_WORKFLOW = WorkflowContract(
    name="DiscoverWorkflow",
    input=DiscoverInput,
    output=DiscoverOutcome,
    id_prefix="discover-",
    pipeline="discover",
)
PROCESS_OUTLIER_WORKFLOW = WorkflowContract(
    name="ProcessOutlierWorkflow",
    input=OutlierInput,
    output=OutlierOutcome,
    id_prefix="discover-outlier-",
    pipeline="discover",
)

BEGIN_SCRAPE = ActivityContract(
    name="begin_scrape",
    input=BeginScrapeInput,
    output=ScrapePlan,
    pool=Pool.PROVIDERS,
    start_to_close=DATABASE_TIMEOUT,
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)
"""Load (or, for a scheduled run, create) the scrape and say what is already done."""

SET_SCRAPE_STATE = ActivityContract(
    name="set_scrape_state",
    input=ScrapeStateInput,
    output=ScrapeStateOutput,
    pool=Pool.PROVIDERS,
    start_to_close=DATABASE_TIMEOUT,
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)

START_APIFY_RUN = ActivityContract(
    name="start_apify_run",
    input=StartApifyRunInput,
    output=ApifyRunRef,
    pool=Pool.PROVIDERS,
    start_to_close=timedelta(minutes=2),
    heartbeat=timedelta(seconds=30),
    retry=PROVIDER_RETRY,
)
"""Start the platform's actor once per scrape: a run recorded on the scrape, or found again
at Apify by the scrape's marker, is returned instead of starting another."""

POLL_APIFY_RUN = ActivityContract(
    name="poll_apify_run",
    input=PollApifyRunInput,
    output=ApifyRunStatus,
    pool=Pool.PROVIDERS,
    start_to_close=timedelta(minutes=2),
    heartbeat=timedelta(seconds=30),
    retry=retry_policy(initial=timedelta(seconds=5), maximum=timedelta(minutes=2), attempts=10),
)
"""One long poll (`waitForFinish`, up to 60 s) of an actor run."""

ABORT_APIFY_RUNS = ActivityContract(
    name="abort_apify_runs",
    input=AbortApifyRunsInput,
    output=AbortApifyRunsOutput,
    pool=Pool.PROVIDERS,
    start_to_close=timedelta(minutes=1),
    heartbeat=timedelta(seconds=30),
    retry=retry_policy(initial=timedelta(seconds=2), maximum=timedelta(seconds=10), attempts=3),
)
"""Best effort on cancel: a run left going costs money but changes nothing of ours."""

IMPORT_POSTS = ActivityContract(
    name="import_posts",
    input=ImportPostsInput,
    output=ImportPostsOutput,
    pool=Pool.PROVIDERS,
    start_to_close=timedelta(minutes=30),
    heartbeat=timedelta(minutes=1),
    retry=PROVIDER_RETRY,
)
"""Read the scrape's posts (dataset file, actor datasets page by page, or one post URL) and
upsert them with a snapshot, in one transaction: all of them or none."""

SCORE_OUTLIERS = ActivityContract(
    name="score_outliers",
    input=ScoreOutliersInput,
    output=ScoreOutliersOutput,
    pool=Pool.PROVIDERS,
    start_to_close=timedelta(minutes=15),
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)

NEXT_OUTLIERS = ActivityContract(
    name="next_outliers",
    input=NextOutliersInput,
    output=NextOutliersOutput,
    pool=Pool.PROVIDERS,
    start_to_close=DATABASE_TIMEOUT,
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)

FINISH_SCRAPE = ActivityContract(
    name="finish_scrape",
    input=FinishScrapeInput,
    output=FinishScrapeOutput,
    pool=Pool.PROVIDERS,
    start_to_close=DATABASE_TIMEOUT,
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)

PREPARE_OUTLIER_VIDEO = ActivityContract(
    name="prepare_outlier_video",
    input=OutlierInput,
    output=OutlierVideo,
    pool=Pool.PROVIDERS,
    start_to_close=DATABASE_TIMEOUT,
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)
"""The outlier's video asset (origin `scraped`), made once and linked to its post; a video
URL at a private address is refused here, before anything is downloaded."""

ANALYZE_VIDEO = ActivityContract(
    name="analyze_video",
    input=AnalyzeVideoInput,
    output=AnalyzeVideoOutput,
    pool=Pool.MEDIA,
    start_to_close=timedelta(minutes=20),
    heartbeat=timedelta(minutes=1),
    retry=MEDIA_RETRY,
)
"""On the media pool for the offline analyzer (ffmpeg), on the providers pool for Gemini."""

ADAPT_SCRIPT = ActivityContract(
    name="adapt_script",
    input=AdaptScriptInput,
    output=AdaptScriptOutput,
    pool=Pool.PROVIDERS,
    start_to_close=timedelta(minutes=5),
    heartbeat=timedelta(seconds=60),
    retry=PROVIDER_RETRY,
)
"""Adapt an analysis to one product and keep the draft script; once per analysis and product."""

DISCOVER_ACTIVITIES: tuple[ActivityContract[Any, Any], ...] = (
    BEGIN_SCRAPE,
    SET_SCRAPE_STATE,
    START_APIFY_RUN,
    POLL_APIFY_RUN,
    ABORT_APIFY_RUNS,
    IMPORT_POSTS,
    SCORE_OUTLIERS,
    NEXT_OUTLIERS,
    FINISH_SCRAPE,
    PREPARE_OUTLIER_VIDEO,
    ANALYZE_VIDEO,
    ADAPT_SCRIPT,
)
