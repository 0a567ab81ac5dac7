"""Apify scrapes through the official SDK against a local server speaking Apify API v2."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from reelflow.core.errors import DomainError
from reelflow.core.provider_errors import ProviderPermanentError, ProviderTransientError
from reelflow.discover.apify_source import (
    MARKER_FIELD,
    ApifySource,
    actor_input,
)
from schemas.discover import Platform
from schemas.failures import FailureCode
from tests.support.apify_server import FakeApifyServer, RunScript

INSTAGRAM = "apify/instagram-scraper"
TIKTOK = "clockworks/tiktok-scraper"


@pytest.fixture
def apify() -> Iterator[FakeApifyServer]:
    server = FakeApifyServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def source(apify: FakeApifyServer) -> Iterator[ApifySource]:
    client = ApifySource(apify.token, base_url=apify.url)
    try:
        yield client
    finally:
        client.close()


def reel(number: int) -> dict[str, Any]:
    return {
        "id": str(3696846979822262592 + number),
        "shortCode": f"DNN{number:06d}",
        "type": "Video",
        "ownerUsername": "pixxie_official",
        "videoPlayCount": 1000 + number,
        "timestamp": "2025-08-11T13:22:59.000Z",
    }


def test_a_run_is_started_polled_and_its_dataset_read_page_by_page(
    apify: FakeApifyServer, source: ApifySource
) -> None:
    items = [reel(n) for n in range(2_345)]
    apify.script(INSTAGRAM, RunScript(items=items, polls_before_finish=1, usage_total_usd=0.42))

    run = source.start_run(
        Platform.INSTAGRAM,
        ["@Pixxie_Official", "pixxie_official", "other.account"],
        max_items_per_account=1_500,
        since=datetime(2025, 8, 1, 10, tzinfo=UTC),
        marker="scrape-1",
    )
    assert (run.actor, run.status) == (INSTAGRAM, "RUNNING")
    sent = apify.started[0].input
    assert sent["directUrls"] == [
        "https://www.instagram.com/pixxie_official/",
        "https://www.instagram.com/other.account/",
    ]
    assert (sent["resultsType"], sent["resultsLimit"]) == ("posts", 1_500)
    assert sent["onlyPostsNewerThan"] == "2025-08-01"
    assert sent[MARKER_FIELD] == "scrape-1"
    # The run is capped at the per-account limit times the (distinct) accounts.
    assert apify.requests_to("POST", "/runs")[0].query["maxItems"] == "3000"

    first = source.wait_for_run(run.run_id, wait_s=0, actor=run.actor)
    assert (first.finished, first.status, first.item_count) == (False, "RUNNING", None)
    done = source.wait_for_run(run.run_id, wait_s=5, actor=run.actor)
    assert (done.finished, done.status, done.item_count) == (True, "SUCCEEDED", 2_345)
    assert done.usage_total_usd == Decimal("0.42")
    assert done.compute_units == pytest.approx(0.0061)
    source.raise_for_terminal(done)  # a successful run is no failure

    seen = list(source.iter_items(run.dataset_id, page_size=1_000))
    assert [index for index, _item in seen] == list(range(2_345))
    assert [item["shortCode"] for _index, item in seen] == [i["shortCode"] for i in items]
    pages = apify.requests_to("GET", "/items")
    assert [(p.query["offset"], p.query["limit"]) for p in pages] == [
        ("0", "1000"),
        ("1000", "1000"),
        ("2000", "1000"),
        ("2345", "1000"),
    ]

    resumed = list(source.iter_items(run.dataset_id, page_size=1_000, offset=2_300))
    assert [index for index, _item in resumed] == list(range(2_300, 2_345))


def test_pay_per_result_cost_is_estimated_from_items_and_price(
    apify: FakeApifyServer, source: ApifySource
) -> None:
    apify.script(
        TIKTOK,
        RunScript(
            items=[{"id": str(n)} for n in range(10)],
            usage_total_usd=None,
            price_per_result_usd=0.0027,
        ),
    )
    run = source.start_run(
        Platform.TIKTOK, ["someone"], max_items_per_account=50, marker="scrape-ppr"
    )
    state = source.wait_for_run(run.run_id, wait_s=1)
    assert state.usage_total_usd is None
    assert state.price_per_result_usd == Decimal("0.0027")
    assert state.estimated_cost_usd == Decimal("0.0270")


@pytest.mark.parametrize(
    ("final", "message"),
    [
        ("FAILED", "The Actor process exited with code 1"),
        ("TIMED-OUT", "Run exceeded its 3600 s timeout"),
        ("ABORTED", "Aborted by user"),
    ],
)
def test_a_run_that_ends_badly_fails_the_scrape_with_its_reason(
    apify: FakeApifyServer, source: ApifySource, final: str, message: str
) -> None:
    apify.script(TIKTOK, RunScript(final_status=final, status_message=message, items=[{"id": "1"}]))
    run = source.start_run(Platform.TIKTOK, ["someone"], max_items_per_account=5, marker="m")
    state = source.wait_for_run(run.run_id, wait_s=1, actor=run.actor)
    assert state.finished

    with pytest.raises(DomainError) as failure:
        source.raise_for_terminal(state)
    assert failure.value.code is FailureCode.SCRAPE_FAILED
    assert str(failure.value) == f"{TIKTOK} run {run.run_id} ended {final}: {message}"
    assert not failure.value.retryable


def test_abort_stops_a_running_run_and_is_harmless_afterwards(
    apify: FakeApifyServer, source: ApifySource
) -> None:
    apify.script(INSTAGRAM, RunScript(polls_before_finish=100))
    run = source.start_run(Platform.INSTAGRAM, ["a.b"], max_items_per_account=5, marker="m")

    source.abort_run(run.run_id)
    source.abort_run(run.run_id)  # a retried cancel finds it already aborted
    source.abort_run("no-such-run")

    assert apify.aborted == [run.run_id]
    state = source.wait_for_run(run.run_id, wait_s=0, actor=run.actor)
    assert (state.status, state.finished) == ("ABORTED", True)


def test_a_retried_start_finds_the_run_instead_of_starting_another(
    apify: FakeApifyServer, source: ApifySource
) -> None:
    began = datetime.now(UTC) - timedelta(seconds=5)
    source.start_run(Platform.TIKTOK, ["someone"], max_items_per_account=5, marker="other-scrape")
    # The first attempt started the run, then died before saving the run id. (Enough
    # accounts that the SDK sends the input gzip-compressed, as it does from 1 KiB.)
    many = [f"account.number.{n}" for n in range(80)]
    lost = source.start_run(Platform.TIKTOK, many, max_items_per_account=5, marker="scrape-7")
    assert apify.requests_to("POST", "/runs")[-1].headers.get("content-encoding") == "gzip"

    again = source.ensure_run(
        Platform.TIKTOK,
        many,
        max_items_per_account=5,
        marker="scrape-7",
        started_after=began,
    )

    assert again == lost
    assert len(apify.started) == 2  # no third start
    assert source.find_run(Platform.TIKTOK, "scrape-8", started_after=began) is None
    # Runs of another actor, or from before the scrape began, are not looked at.
    assert source.find_run(Platform.INSTAGRAM, "scrape-7", started_after=began) is None
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert source.find_run(Platform.TIKTOK, "scrape-7", started_after=later) is None

    fresh = source.ensure_run(
        Platform.TIKTOK,
        ["someone"],
        max_items_per_account=5,
        marker="scrape-8",
        started_after=began,
    )
    assert fresh.run_id != lost.run_id
    assert len(apify.started) == 3


def test_rate_limit_is_transient_with_the_servers_retry_after(
    apify: FakeApifyServer, source: ApifySource
) -> None:
    run = source.start_run(Platform.TIKTOK, ["someone"], max_items_per_account=5, marker="m")
    polls_before = len(apify.requests_to("GET", "/actor-runs/"))
    apify.inject_error(429, times=10, retry_after="17", path_contains="/actor-runs/")

    with pytest.raises(ProviderTransientError) as failure:
        source.wait_for_run(run.run_id, wait_s=0)

    assert failure.value.status_code == 429
    assert failure.value.retry_after_s == 17.0
    assert failure.value.provider == "apify"
    # One quick retry of the SDK's own; longer waits are Temporal's.
    assert len(apify.requests_to("GET", "/actor-runs/")) - polls_before == 2


def test_server_errors_are_transient_and_a_blip_is_absorbed(
    apify: FakeApifyServer, source: ApifySource
) -> None:
    apify.inject_error(503, times=1, path_contains="/runs")
    run = source.start_run(Platform.TIKTOK, ["someone"], max_items_per_account=5, marker="m")
    assert run.run_id  # the single 503 was retried by the SDK

    apify.inject_error(500, times=5, path_contains="/items")
    with pytest.raises(ProviderTransientError) as failure:
        list(source.iter_items(run.dataset_id))
    assert failure.value.status_code == 500


def test_a_bad_token_is_permanent_and_never_shown(apify: FakeApifyServer) -> None:
    wrong = "apify_api_WRONG_secret_value"
    source = ApifySource(wrong, base_url=apify.url)
    with pytest.raises(ProviderPermanentError) as failure:
        source.start_run(Platform.INSTAGRAM, ["a.b"], max_items_per_account=5, marker="m")
    assert failure.value.status_code == 401
    assert wrong not in str(failure.value)
    assert apify.started == []


def test_a_forbidden_dataset_is_permanent(apify: FakeApifyServer, source: ApifySource) -> None:
    run = source.start_run(Platform.TIKTOK, ["someone"], max_items_per_account=5, marker="m")
    apify.inject_error(
        403, times=5, path_contains="/datasets/", error_type="insufficient-permissions"
    )
    with pytest.raises(ProviderPermanentError) as failure:
        list(source.iter_items(run.dataset_id))
    assert failure.value.status_code == 403
    assert len(apify.requests_to("GET", "/items")) == 1  # not retried


def test_an_unreachable_api_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = ApifySource("token", base_url=f"http://127.0.0.1:{port}", max_retries=0)
    with pytest.raises(ProviderTransientError) as failure:
        source.wait_for_run("run0001", wait_s=0)
    assert failure.value.provider == "apify"
    assert failure.value.status_code is None


def test_tiktok_input_asks_for_latest_videos_without_downloads() -> None:
    sent = actor_input(
        Platform.TIKTOK,
        [" @Some.One ", "some.one", "two"],
        max_items_per_account=30,
        since=datetime(2025, 9, 1, 23, 30, tzinfo=UTC),
    )
    assert sent["profiles"] == ["some.one", "two"]
    assert sent["resultsPerPage"] == 30
    assert sent["oldestPostDateUnified"] == "2025-09-01"
    assert sent["shouldDownloadVideos"] is False
    assert "oldestPostDateUnified" not in actor_input(
        Platform.TIKTOK, ["two"], max_items_per_account=1, since=None
    )
    with pytest.raises(ValueError):
        actor_input(Platform.TIKTOK, ["@", " "], max_items_per_account=1, since=None)
