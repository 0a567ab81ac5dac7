"""Scrapes through Apify actor runs, with the official `apify-client` SDK.

One scrape is one actor run: started once, polled with short server-side waits, read page by
page from its default dataset, aborted when the scrape is canceled. Every method is a single
short, blocking API exchange (or a page-by-page iterator), meant to run on an executor thread
inside a Temporal activity; durability and retrying belong to Temporal, so the SDK's own
retries are cut down to one quick retry of a dropped connection or a 5xx/429.

Starting a run is not idempotent in Apify's API. A crash between "the run started" and "its id
is saved" would start a second, paid run on the activity's retry. So every run's input carries
our scrape key under :data:`MARKER_FIELD`; Apify stores a run's input as the ``INPUT`` record of
the run's default key-value store, and :meth:`ApifySource.find_run` lists the actor's runs
started since the scrape began and reads their ``INPUT`` records to find it again.
:meth:`ApifySource.ensure_run` does both. Residual risk: an actor whose input schema forbids
unknown properties would reject the marker; the two actors we use accept extra fields.

The token goes only into the SDK's ``Authorization`` header; no message here contains it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from apify_client import ApifyClient
from apify_client.errors import ApifyApiError, ApifyClientError
from apify_client.http_clients import ImpitHttpClient
from pydantic import ValidationError

from reelflow.core.errors import DomainError
from reelflow.core.provider_errors import (
    TRANSIENT_STATUS,
    ProviderPermanentError,
    ProviderTransientError,
    retry_after_seconds,
)
from schemas.discover import Platform
from schemas.failures import FailureCode

if TYPE_CHECKING:
    import impit
    from apify_client._models import Run

logger = logging.getLogger(__name__)

PROVIDER = "apify"
DEFAULT_API_URL = "https://api.apify.com"

ACTORS: dict[Platform, str] = {
    Platform.INSTAGRAM: "apify/instagram-scraper",
    Platform.TIKTOK: "clockworks/tiktok-scraper",
}
"""The actor each platform is scraped with."""

MARKER_FIELD = "reelflowScrapeKey"
"""Input key holding our scrape key; the actors ignore keys they do not know."""

TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "TIMED-OUT", "ABORTED"})
FAILED_STATUSES = frozenset({"FAILED", "TIMED-OUT", "ABORTED"})

MAX_SERVER_WAIT_S = 60
"""Apify long-polls a run for at most 60 s (`waitForFinish`)."""

CLIENT_MAX_RETRIES = 1
"""The SDK's own retries (429, 5xx, dropped connection). One quick retry absorbs a blip;
anything longer is Temporal's job, with its backoff and the server's Retry-After."""

DEFAULT_PAGE_SIZE = 1000


@dataclass(frozen=True)
class ApifyRun:
    """A started actor run, as the scrape persists it."""

    platform: Platform
    actor: str
    run_id: str
    dataset_id: str
    status: str


@dataclass(frozen=True)
class ApifyRunState:
    """What one poll of a run says.

    Attributes:
        usage_total_usd: Platform usage Apify reports for the run (None if it does not; for
            pay-per-result actors the results are charged on top, see `estimated_cost_usd`).
        price_per_result_usd: The actor's price per dataset item, for pay-per-result actors.
        item_count: Items in the run's dataset; read only once the run has finished.
    """

    actor: str
    run_id: str
    status: str
    status_message: str | None
    dataset_id: str
    usage_total_usd: Decimal | None
    compute_units: float | None
    item_count: int | None
    price_per_result_usd: Decimal | None
    finished: bool

    @property
    def estimated_cost_usd(self) -> Decimal | None:
        """Usage plus results × price per result, where each is known; None if neither is.

        Apify computes dollar figures of past runs with current prices ("for informational
        purposes"), so this is an estimate for the ledger, not an invoice line.
        """
        results = (
            self.price_per_result_usd * self.item_count
            if self.price_per_result_usd is not None and self.item_count is not None
            else None
        )
        if self.usage_total_usd is None and results is None:
            return None
        return (self.usage_total_usd or Decimal(0)) + (results or Decimal(0))


def normalize_handle(handle: str) -> str:
    """`@Some.Account ` → `some.account`; the form accounts are stored and compared in."""
    return handle.strip().lstrip("@").strip().lower()


def _handles(handles: Sequence[str]) -> list[str]:
    cleaned = list(dict.fromkeys(normalize_handle(handle) for handle in handles))
    cleaned = [handle for handle in cleaned if handle]
    if not cleaned:
        raise ValueError("at least one account handle is required")
    return cleaned


def actor_input(
    platform: Platform,
    handles: Sequence[str],
    *,
    max_items_per_account: int,
    since: datetime | None,
) -> dict[str, Any]:
    """The documented input of the platform's actor for the latest posts of `handles`.

    Instagram (`apify/instagram-scraper`): profile URLs in `directUrls`, `resultsType: posts`,
    `resultsLimit` per profile, `onlyPostsNewerThan` as a date. TikTok
    (`clockworks/tiktok-scraper`): `profiles`, `resultsPerPage` per profile, the videos section
    sorted latest first, `oldestPostDateUnified` as a date, and no media downloads (we fetch
    the videos we need ourselves, with yt-dlp, so the run costs less).

    Args:
        platform: Which actor.
        handles: Account handles, with or without `@`; repeated ones are sent once.
        max_items_per_account: Most posts per account.
        since: Only posts newer than this (a day's precision: older posts of that day may
            come too and are upserted like the others).

    Raises:
        ValueError: No handle, or a non-positive limit.
    """
    if max_items_per_account < 1:
        raise ValueError("max_items_per_account must be at least 1")
    accounts = _handles(handles)
    since_date = since.astimezone(UTC).date().isoformat() if since is not None else None
    if platform is Platform.INSTAGRAM:
        instagram: dict[str, Any] = {
            "directUrls": [f"https://www.instagram.com/{handle}/" for handle in accounts],
            "resultsType": "posts",
            "resultsLimit": max_items_per_account,
            "addParentData": False,
        }
        if since_date is not None:
            instagram["onlyPostsNewerThan"] = since_date
        return instagram
    if platform is Platform.TIKTOK:
        tiktok: dict[str, Any] = {
            "profiles": accounts,
            "resultsPerPage": max_items_per_account,
            "profileScrapeSections": ["videos"],
            "profileSorting": "latest",
            "shouldDownloadVideos": False,
            "shouldDownloadCovers": False,
            "shouldDownloadSubtitles": False,
            "shouldDownloadSlideshowImages": False,
        }
        if since_date is not None:
            tiktok["oldestPostDateUnified"] = since_date
        return tiktok
    raise ValueError(f"no Apify actor for platform {platform!r}")


def raise_for_terminal(state: ApifyRunState) -> None:
    """Turn a run that ended without its results into the scrape's failure.

    Raises:
        DomainError: `SCRAPE_FAILED` for FAILED, TIMED-OUT and ABORTED runs, with Apify's
            status message as the reason.
    """
    if state.status in FAILED_STATUSES:
        reason = (state.status_message or "").strip() or "no status message"
        raise DomainError(
            FailureCode.SCRAPE_FAILED,
            f"{state.actor} run {state.run_id} ended {state.status}: {reason}",
        )


class _RetryAfterRecorder(ImpitHttpClient):
    """The SDK's default transport, remembering the last error response's Retry-After.

    `ApifyApiError` keeps the status and message but not the headers, and Temporal needs
    the server's wait to schedule the next attempt. Each thread sees its own last answer,
    since one SDK call runs start to finish on one executor thread.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._last = threading.local()

    def send_request(
        self,
        *,
        method: str,
        url: str,
        headers: dict[str, str],
        content: bytes | Iterator[bytes] | None,
        timeout: float | None,
        stream: bool,
    ) -> impit.Response:
        response = super().send_request(
            method=method,
            url=url,
            headers=headers,
            content=content,
            timeout=timeout,
            stream=stream,
        )
        self._last.retry_after = (
            retry_after_seconds(response.headers) if response.status_code >= 400 else None
        )
        return response

    def reset(self) -> None:
        self._last.retry_after = None

    @property
    def last_retry_after(self) -> float | None:
        value = getattr(self._last, "retry_after", None)
        return value if isinstance(value, float) else None


class ApifySource:
    """Apify actor runs for scrapes; one instance (one HTTP client) per worker.

    Args:
        token: Apify API token.
        base_url: API root; None is Apify's own (tests pass a local server).
        max_retries: The SDK's own retries per request (see :data:`CLIENT_MAX_RETRIES`).
    """

    def __init__(
        self,
        token: str,
        *,
        base_url: str | None = None,
        max_retries: int = CLIENT_MAX_RETRIES,
    ) -> None:
        if not token:
            raise ValueError("an Apify token is required")
        self._http = _RetryAfterRecorder(
            token=token,
            max_retries=max_retries,
            min_delay_between_retries=timedelta(milliseconds=500),
        )
        self._client = ApifyClient.with_custom_http_client(
            token, api_url=base_url or DEFAULT_API_URL, http_client=self._http
        )

    def close(self) -> None:
        self._http.close()

    # --- runs ------------------------------------------------------------------------------

    def start_run(
        self,
        platform: Platform,
        handles: Sequence[str],
        *,
        max_items_per_account: int,
        since: datetime | None = None,
        marker: str,
    ) -> ApifyRun:
        """Start the platform's actor for `handles`, tagged with our scrape key `marker`.

        The run's `maxItems` caps results (and so the spend of pay-per-result actors) at
        `max_items_per_account` per account. Not idempotent: call :meth:`ensure_run` when an
        earlier attempt may have started the run already.
        """
        actor = ACTORS[platform]
        run_input = actor_input(
            platform, handles, max_items_per_account=max_items_per_account, since=since
        )
        run_input[MARKER_FIELD] = marker
        accounts = len(_handles(handles))
        with self._classified(f"starting {actor}"):
            run = self._client.actor(actor).start(
                run_input=run_input, max_items=max_items_per_account * accounts
            )
        logger.info("started %s run %s for %d account(s)", actor, run.id, accounts)
        return _run_of(platform, actor, run.id, run.default_dataset_id, run.status)

    def find_run(
        self, platform: Platform, marker: str, *, started_after: datetime
    ) -> ApifyRun | None:
        """The run of this actor whose input carries `marker`, started after `started_after`.

        Lists the actor's runs newest first from `started_after` on (pass the time the
        scrape was created, a little earlier for clock skew) and reads each run's ``INPUT``
        record until one matches. Costs one request per run looked at.
        """
        actor = ACTORS[platform]
        with self._classified(f"looking for an earlier {actor} run"):
            runs = self._client.actor(actor).runs().iterate(started_after=started_after, desc=True)
            for run in runs:
                record = self._client.key_value_store(run.default_key_value_store_id).get_record(
                    "INPUT"
                )
                value = record.get("value") if record else None
                if isinstance(value, dict) and value.get(MARKER_FIELD) == marker:
                    logger.info("found %s run %s started earlier for this scrape", actor, run.id)
                    return _run_of(platform, actor, run.id, run.default_dataset_id, run.status)
        return None

    def ensure_run(
        self,
        platform: Platform,
        handles: Sequence[str],
        *,
        max_items_per_account: int,
        since: datetime | None = None,
        marker: str,
        started_after: datetime,
    ) -> ApifyRun:
        """The run of this scrape: the one an earlier attempt started, or a new one."""
        found = self.find_run(platform, marker, started_after=started_after)
        if found is not None:
            return found
        return self.start_run(
            platform,
            handles,
            max_items_per_account=max_items_per_account,
            since=since,
            marker=marker,
        )

    def wait_for_run(self, run_id: str, *, wait_s: int, actor: str | None = None) -> ApifyRunState:
        """Poll the run once, letting Apify hold the request up to `wait_s` (≤ 60) seconds
        for it to finish. A finished run's dataset item count is read too.

        Args:
            run_id: The run to poll.
            wait_s: Server-side wait; 0 answers at once.
            actor: The actor's name for messages (e.g. `apify/instagram-scraper`); without
                it the run's actor id is used.
        """
        wait = max(0, min(int(wait_s), MAX_SERVER_WAIT_S))
        with self._classified(f"polling run {run_id}"):
            run = self._client.run(run_id).wait_for_finish(wait_duration=timedelta(seconds=wait))
            if run is None:
                raise ProviderPermanentError(
                    f"Apify run {run_id} does not exist", provider=PROVIDER, status_code=404
                )
            finished = run.status in TERMINAL_STATUSES
            item_count = None
            if finished:
                dataset = self._client.dataset(run.default_dataset_id).get()
                item_count = dataset.item_count if dataset is not None else None
        return _state_of(run, actor=actor, finished=finished, item_count=item_count)

    def abort_run(self, run_id: str) -> None:
        """Abort the run; a run that already ended (or no longer exists) is left as it is."""
        with self._classified(f"aborting run {run_id}"):
            try:
                run = self._client.run(run_id).abort()
            except ApifyApiError as exc:
                if exc.status_code == 404:
                    logger.info("run %s to abort does not exist", run_id)
                    return
                raise
        logger.info("aborted run %s (now %s)", run_id, run.status)

    raise_for_terminal = staticmethod(raise_for_terminal)

    # --- results ---------------------------------------------------------------------------

    def iter_items(
        self, dataset_id: str, *, page_size: int = DEFAULT_PAGE_SIZE, offset: int = 0
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """The dataset's items from `offset` on, one page in memory at a time.

        Yields `(index, item)`: the index is the item's position in the dataset, so a caller
        that stored the last index it handled resumes from `index + 1`. A row that is not a
        JSON object comes as `{}` so the parser rejects it like any row without an id.
        """
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        dataset = self._client.dataset(dataset_id)
        position = max(0, offset)
        while True:
            with self._classified(f"reading dataset {dataset_id}"):
                page = dataset.list_items(offset=position, limit=page_size)
            for number, item in enumerate(page.items):
                yield position + number, item if isinstance(item, dict) else {}
            # `count` is the rows the API scanned for this page; it ends the dataset at 0.
            scanned = max(page.count, len(page.items))
            if scanned == 0:
                return
            position += scanned

    # --- errors ----------------------------------------------------------------------------

    @contextmanager
    def _classified(self, action: str) -> Iterator[None]:
        """Re-raise SDK failures as provider errors Temporal can act on."""
        self._http.reset()
        try:
            yield
        except ApifyApiError as exc:
            raise self._api_error(action, exc) from exc
        except (ApifyClientError, ValidationError) as exc:
            # An answer that does not parse: the same request would get the same answer.
            raise ProviderPermanentError(
                f"Apify sent an unreadable answer while {action}", provider=PROVIDER
            ) from exc
        except Exception as exc:
            if self._http.is_timeout_error(exc) or self._http.is_retryable_transport_error(exc):
                raise ProviderTransientError(
                    f"could not reach Apify while {action} ({type(exc).__name__})",
                    provider=PROVIDER,
                ) from exc
            raise

    def _api_error(self, action: str, exc: ApifyApiError) -> Exception:
        status = int(exc.status_code)
        message = f"Apify answered HTTP {status} while {action}: {exc.message or exc.type}"
        if status in TRANSIENT_STATUS or status >= 500:
            return ProviderTransientError(
                message,
                provider=PROVIDER,
                status_code=status,
                retry_after_s=self._http.last_retry_after,
            )
        return ProviderPermanentError(message, provider=PROVIDER, status_code=status)


def _run_of(platform: Platform, actor: str, run_id: str, dataset_id: str, status: str) -> ApifyRun:
    return ApifyRun(
        platform=platform, actor=actor, run_id=run_id, dataset_id=dataset_id, status=status
    )


def _state_of(
    run: Run, *, actor: str | None, finished: bool, item_count: int | None
) -> ApifyRunState:
    pricing = run.pricing_info
    price = getattr(pricing, "price_per_unit_usd", None)
    per_result = (
        Decimal(str(price))
        if getattr(pricing, "pricing_model", None) == "PRICE_PER_DATASET_ITEM" and price is not None
        else None
    )
    usage = run.usage_total_usd
    return ApifyRunState(
        actor=actor or run.act_id,
        run_id=run.id,
        status=run.status,
        status_message=run.status_message,
        dataset_id=run.default_dataset_id,
        usage_total_usd=Decimal(str(usage)) if usage is not None else None,
        compute_units=run.stats.compute_units,
        item_count=item_count,
        price_per_result_usd=per_result,
        finished=finished,
    )
