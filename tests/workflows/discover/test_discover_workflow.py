"""DiscoverWorkflow and ProcessOutlierWorkflow orchestration, over stand-in activities.

On the dev server, not the shared time-skipping one: nothing here waits on a long timer, and
a scrape canceled mid-poll leaves an abandoned activity that would hold that server's clock
for every later test.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from reelflow.discover.scrapes import discover_search_attributes
from schemas.discover import (
    DiscoverInput,
    DiscoverOutcome,
    Platform,
    ScrapeSource,
    ScrapeStatus,
)
from tests.support import assert_eventually
from tests.workflows.discover.fakes import FakeDiscover, post_ids
from workflows.discover import DiscoverWorkflow

TENANT = uuid.UUID(int=7)
PROJECT = uuid.UUID(int=8)


async def start(
    client: Client, fake: FakeDiscover, *, scrape_id: uuid.UUID | None = None
) -> WorkflowHandle[DiscoverWorkflow, DiscoverOutcome]:
    scrape = scrape_id or fake.scrape_id
    return await client.start_workflow(
        DiscoverWorkflow.run,
        DiscoverInput(tenant_id=TENANT, project_id=PROJECT, scrape_id=scrape),
        id=f"discover-{scrape}",
        task_queue=fake.queues.workflows,
        search_attributes=discover_search_attributes(TENANT, PROJECT),
    )


async def run(client: Client, fake: FakeDiscover) -> DiscoverOutcome:
    async with fake.workers(client):
        handle = await start(client, fake)
        return await handle.result()


async def test_an_apify_scrape_runs_each_actor_once_and_turns_outliers_into_scripts(
    local_env: WorkflowEnvironment,
) -> None:
    fake = FakeDiscover(platforms=[Platform.INSTAGRAM, Platform.TIKTOK], polls_until_finished=3)

    outcome = await run(local_env.client, fake)

    assert outcome.status == ScrapeStatus.COMPLETED
    assert (outcome.posts_seen, outcome.posts_new, outcome.outliers) == (50, 40, 3)
    assert (outcome.processed, outcome.failed_outliers) == (3, 0)
    assert fake.calls.count("start_apify_run[instagram]") == 1
    assert fake.calls.count("start_apify_run[tiktok]") == 1
    # Posts are imported only after every actor run has finished, and scored once.
    assert fake.calls.index("import_posts") > fake.calls.index("start_apify_run[tiktok]")
    assert fake.calls.count("import_posts") == fake.calls.count("score_outliers") == 1
    # Each outlier: ingested (download included) then adapted to each of the 2 products.
    assert fake.calls.count("adapt_script") == 3 * 2
    assert fake.ingest.calls.count("download_source") == 3
    [finished] = fake.finished
    assert finished.status == ScrapeStatus.COMPLETED and finished.failures == []
    assert outcome.cost_usd == 1.5


async def test_a_refused_outlier_is_reported_with_its_reason_and_the_others_finish(
    local_env: WorkflowEnvironment,
) -> None:
    outliers = post_ids(4)
    fake = FakeDiscover(outliers=outliers, refused_posts={outliers[1]})

    outcome = await run(local_env.client, fake)

    assert outcome.status == ScrapeStatus.COMPLETED
    assert (outcome.processed, outcome.failed_outliers) == (4, 1)
    [finished] = fake.finished
    [failure] = finished.failures
    assert failure.post_id == outliers[1]
    assert failure.error_code == "url_not_allowed"
    assert failure.error_message is not None and "private network" in failure.error_message
    assert fake.calls.count("adapt_script") == 3 * 2


async def test_outliers_are_processed_at_most_max_parallel_at_a_time(
    local_env: WorkflowEnvironment,
) -> None:
    fake = FakeDiscover(outliers=post_ids(6), max_parallel=2, analyze_delay_s=0.2)

    outcome = await run(local_env.client, fake)

    assert outcome.processed == 6
    assert fake.most_analyzing == 2


@pytest.mark.parametrize("status", ["FAILED", "TIMED-OUT", "ABORTED"])
async def test_an_actor_run_that_does_not_succeed_fails_the_scrape_before_any_post_is_written(
    local_env: WorkflowEnvironment, status: str
) -> None:
    fake = FakeDiscover(final_status=status)

    async with fake.workers(local_env.client):
        handle = await start(local_env.client, fake)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "scrape_failed"
    assert status in cause.message and "the actor crashed" in cause.message
    assert "import_posts" not in fake.calls
    [finished] = fake.finished
    assert finished.status == ScrapeStatus.FAILED and finished.error_code == "scrape_failed"


async def test_a_canceled_scrape_aborts_its_actor_runs_and_says_canceled(
    local_env: WorkflowEnvironment,
) -> None:
    fake = FakeDiscover(polls_until_finished=10_000)

    async with fake.workers(local_env.client):
        handle = await start(local_env.client, fake)
        await assert_eventually(lambda: fake.polls >= 2)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()

    assert "abort_apify_runs" in fake.calls
    [finished] = fake.finished
    assert finished.status == ScrapeStatus.CANCELED
    assert "import_posts" not in fake.calls


async def test_a_large_project_continues_as_new_and_processes_every_outlier_once(
    local_env: WorkflowEnvironment,
) -> None:
    fake = FakeDiscover(source=ScrapeSource.DATASET_FILE, outliers=post_ids(7), per_run=3)

    outcome = await run(local_env.client, fake)

    assert outcome.status == ScrapeStatus.COMPLETED
    assert sorted(c for c in fake.calls if c.startswith("prepare[")) == sorted(
        f"prepare[{index}]" for index in range(1, 8)
    )
    assert fake.calls.count("import_posts") == fake.calls.count("score_outliers") == 1
    assert not any(call.startswith("start_apify_run") for call in fake.calls)
    # Counts carry across the runs: the scrape reports its total, not the last run's.
    assert (outcome.processed, outcome.outliers, outcome.posts_seen) == (7, 7, 50)
    [finished] = fake.finished
    assert finished.processed == 7


async def test_a_dataset_scrape_starts_no_actor(local_env: WorkflowEnvironment) -> None:
    fake = FakeDiscover(source=ScrapeSource.DATASET_FILE)

    outcome = await run(local_env.client, fake)

    assert outcome.status == ScrapeStatus.COMPLETED and outcome.processed == 3
    assert not any(call.startswith("start_apify_run") for call in fake.calls)
    assert fake.polls == 0


async def test_progress_is_queryable_while_the_actor_runs(
    local_env: WorkflowEnvironment,
) -> None:
    fake = FakeDiscover(polls_until_finished=10_000)
    async with fake.workers(local_env.client):
        handle = await start(local_env.client, fake)
        await assert_eventually(lambda: fake.polls >= 1)
        progress = await handle.query(DiscoverWorkflow.progress)
        assert progress.stage == "scraping" and progress.status == "running"
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    await asyncio.sleep(0)
