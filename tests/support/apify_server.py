"""A local server speaking Apify API v2 as the official `apify-client` SDK calls it.

Wire details follow the SDK (3.4) and the checked notes: resources under `/v2`, an actor id's
`/` written as `~`, actors under both `/v2/actors/…` (SDK 3.x) and `/v2/acts/…` (docs, older
clients), replies in a `{"data": …}` envelope except dataset items (a bare JSON array with
`X-Apify-Pagination-*` headers) and key-value records (the raw value), errors as
`{"error": {"type", "message"}}`, request bodies of 1 KiB and more gzip-compressed, Bearer
token auth. A run is scripted per actor: how many polls it stays RUNNING, how it ends, its
status message, its dataset items, its usage. Errors can be injected on the Nth request.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "TIMED-OUT", "ABORTED"})


@dataclass
class RunScript:
    """How the next runs of one actor behave."""

    final_status: str = "SUCCEEDED"
    status_message: str | None = None
    items: list[Any] = field(default_factory=list)
    polls_before_finish: int = 0
    """Polls that still see RUNNING before the run ends (0: it ends before the first poll)."""
    usage_total_usd: float | None = 0.0123
    compute_units: float | None = 0.0061
    price_per_result_usd: float | None = None
    """Set to make the run a pay-per-result one (`PRICE_PER_DATASET_ITEM`)."""


@dataclass
class InjectedError:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    path_contains: str
    remaining: int
    skip: int


@dataclass
class FakeRun:
    id: str
    actor: str
    act_id: str
    input: Any
    script: RunScript
    started_at: datetime
    dataset_id: str
    store_id: str
    status: str = "RUNNING"
    status_message: str | None = "Starting the crawler"
    polls: int = 0
    finished_at: datetime | None = None


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


class FakeApifyServer:
    """Threaded Apify API v2 on 127.0.0.1 (free port)."""

    def __init__(self, token: str = "apify_api_test_token") -> None:
        self.token = token
        self.requests: list[Recorded] = []
        self.runs: dict[str, FakeRun] = {}
        self.started: list[FakeRun] = []
        """Runs started, in order; a test asserts how many starts reached the API."""
        self.aborted: list[str] = []
        self.scripts: dict[str, RunScript] = {}
        self._errors: list[InjectedError] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

            def handle(self) -> None:
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                    super().handle()

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def _dispatch(self, method: str) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length) if length else b""
                if self.headers.get("content-encoding", "").lower() == "gzip":
                    body = gzip.decompress(body)
                split = urlsplit(self.path)
                query = {key: values[-1] for key, values in parse_qs(split.query).items()}
                headers = {key.lower(): value for key, value in self.headers.items()}
                with server._lock:
                    server.requests.append(Recorded(method, split.path, query, headers))
                reply = server._answer(method, split.path, query, headers, body)
                status, payload, extra = reply
                data = (
                    payload
                    if isinstance(payload, bytes)
                    else json.dumps(payload, separators=(",", ":")).encode()
                )
                self.send_response(status)
                if "content-type" not in {key.lower() for key in extra}:
                    self.send_header("content-type", "application/json; charset=utf-8")
                self.send_header("content-length", str(len(data)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._stopped = False

    # --- control ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()

    def script(self, actor: str, script: RunScript) -> None:
        """Runs of `actor` (e.g. `apify/instagram-scraper`) started from now on behave so."""
        with self._lock:
            self.scripts[actor] = script

    def inject_error(
        self,
        status: int,
        *,
        after: int = 0,
        times: int = 1,
        retry_after: str | None = None,
        path_contains: str = "",
        error_type: str | None = None,
        message: str = "injected failure",
    ) -> None:
        """Answer `times` matching requests with `status`, after letting `after` of them pass."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        kind = error_type or {429: "rate-limit-exceeded", 401: "token-not-valid"}.get(
            status, "server-error" if status >= 500 else "invalid-request"
        )
        with self._lock:
            self._errors.append(
                InjectedError(
                    status=status,
                    body={"error": {"type": kind, "message": message}},
                    headers=headers,
                    path_contains=path_contains,
                    remaining=times,
                    skip=after,
                )
            )

    def requests_to(self, method: str, path_contains: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == method and path_contains in r.path]

    # --- API -------------------------------------------------------------------------------

    def _answer(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            injected = self._take_error(path)
        if injected is not None:
            return injected.status, injected.body, injected.headers
        if headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "token-not-valid", "Authentication token is not valid.")
        parts = [unquote(part) for part in path.strip("/").split("/")]
        if len(parts) < 2 or parts[0] != "v2":
            return _error(404, "page-not-found", "We have bad news: there is no API endpoint")
        parts = parts[1:]
        with self._lock:
            return self._route(method, parts, query, body)

    def _take_error(self, path: str) -> InjectedError | None:
        for injected in self._errors:
            if injected.remaining <= 0 or injected.path_contains not in path:
                continue
            if injected.skip > 0:
                injected.skip -= 1
                continue
            injected.remaining -= 1
            return injected
        return None

    def _route(
        self, method: str, parts: list[str], query: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        head = parts[0]
        if head in ("acts", "actors") and len(parts) == 3 and parts[2] == "runs":
            actor = parts[1].replace("~", "/")
            if method == "POST":
                return self._start(actor, query, body)
            return self._list_runs(actor, query)
        if head == "actor-runs" and len(parts) == 2 and method == "GET":
            run = self.runs.get(parts[1])
            if run is None:
                return _error(404, "record-not-found", "Actor run was not found")
            return 200, {"data": self._poll(run, query)}, {}
        if head == "actor-runs" and len(parts) == 3 and parts[2] == "abort" and method == "POST":
            run = self.runs.get(parts[1])
            if run is None:
                return _error(404, "record-not-found", "Actor run was not found")
            if run.status not in TERMINAL:
                run.status = "ABORTED"
                run.status_message = "Aborted by user"
                run.finished_at = datetime.now(UTC)
                self.aborted.append(run.id)
            return 200, {"data": _run_json(run)}, {}
        if head == "datasets" and len(parts) == 3 and parts[2] == "items" and method == "GET":
            run = self._run_by_dataset(parts[1])
            if run is None:
                return _error(404, "record-not-found", "Dataset was not found")
            return self._items(run, query)
        if head == "datasets" and len(parts) == 2 and method == "GET":
            run = self._run_by_dataset(parts[1])
            if run is None:
                return _error(404, "record-not-found", "Dataset was not found")
            return 200, {"data": _dataset_json(run)}, {}
        if (
            head == "key-value-stores"
            and len(parts) == 4
            and parts[2] == "records"
            and method == "GET"
        ):
            run = next((r for r in self.runs.values() if r.store_id == parts[1]), None)
            if run is None or parts[3] != "INPUT":
                return _error(404, "record-not-found", "Record was not found")
            return 200, json.dumps(run.input).encode(), {"content-type": "application/json"}
        return _error(404, "page-not-found", "We have bad news: there is no API endpoint")

    def _start(
        self, actor: str, query: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        number = next(self._ids)
        script = self.scripts.get(actor, RunScript())
        run = FakeRun(
            id=f"run{number:04d}",
            actor=actor,
            act_id=f"act-{actor.replace('/', '-')}",
            input=json.loads(body) if body else None,
            script=script,
            started_at=datetime.now(UTC),
            dataset_id=f"ds{number:04d}",
            store_id=f"kvs{number:04d}",
        )
        if "maxItems" in query:
            # Apify stops charging (and our fake stops returning) at maxItems results.
            script = RunScript(
                **{**script.__dict__, "items": script.items[: int(query["maxItems"])]}
            )
            run.script = script
        self.runs[run.id] = run
        self.started.append(run)
        return 201, {"data": _run_json(run)}, {}

    def _poll(self, run: FakeRun, query: dict[str, str]) -> dict[str, Any]:
        if run.status not in TERMINAL:
            if run.polls >= run.script.polls_before_finish:
                run.status = run.script.final_status
                run.status_message = run.script.status_message
                run.finished_at = datetime.now(UTC)
            run.polls += 1
        return _run_json(run)

    def _list_runs(self, actor: str, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        runs = [run for run in self.runs.values() if run.actor == actor]
        if "startedAfter" in query:
            after = datetime.fromisoformat(query["startedAfter"].replace("Z", "+00:00"))
            runs = [run for run in runs if run.started_at >= after]
        desc = query.get("desc") in ("true", "1")
        runs.sort(key=lambda run: run.started_at, reverse=desc)
        offset = int(query.get("offset", "0"))
        limit = int(query.get("limit", "1000")) or 1000
        page = runs[offset : offset + limit]
        data = {
            "total": len(runs),
            "offset": offset,
            "limit": limit,
            "desc": desc,
            "count": len(page),
            "items": [_run_list_item(run) for run in page],
        }
        return 200, {"data": data}, {}

    def _items(self, run: FakeRun, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        items = run.script.items if run.status == "SUCCEEDED" else []
        offset = int(query.get("offset", "0"))
        limit = int(query.get("limit", "0")) or 999_999_999_999
        page = items[offset : offset + limit]
        headers = {
            "X-Apify-Pagination-Offset": str(offset),
            "X-Apify-Pagination-Limit": str(limit),
            "X-Apify-Pagination-Count": str(len(page)),
            "X-Apify-Pagination-Total": str(len(items)),
            "X-Apify-Pagination-Desc": "false",
        }
        return 200, page, headers

    def _run_by_dataset(self, dataset_id: str) -> FakeRun | None:
        return next((run for run in self.runs.values() if run.dataset_id == dataset_id), None)


def _error(status: int, kind: str, message: str) -> tuple[int, Any, dict[str, str]]:
    return status, {"error": {"type": kind, "message": message}}, {}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z") if moment else None


def _run_json(run: FakeRun) -> dict[str, Any]:
    script = run.script
    finished = run.status in TERMINAL
    data: dict[str, Any] = {
        "id": run.id,
        "actId": run.act_id,
        "userId": "user0001",
        "startedAt": _iso(run.started_at),
        "finishedAt": _iso(run.finished_at),
        "status": run.status,
        "statusMessage": run.status_message,
        "isStatusMessageTerminal": finished,
        "meta": {"origin": "API", "userAgent": "ApifyClient"},
        "stats": {
            "computeUnits": script.compute_units if finished else None,
            "runTimeSecs": 21.579,
        },
        "options": {
            "build": "latest",
            "timeoutSecs": 604800,
            "memoryMbytes": 1024,
            "diskMbytes": 2048,
        },
        "buildId": "build0001",
        "buildNumber": "0.0.1",
        "defaultKeyValueStoreId": run.store_id,
        "defaultDatasetId": run.dataset_id,
        "defaultRequestQueueId": f"rq-{run.id}",
        "platformUsageBillingModel": "USER",
    }
    if finished and script.usage_total_usd is not None:
        data["usageTotalUsd"] = script.usage_total_usd
    if script.price_per_result_usd is not None:
        data["pricingInfo"] = {
            "pricingModel": "PRICE_PER_DATASET_ITEM",
            "unitName": "result",
            "pricePerUnitUsd": script.price_per_result_usd,
            "apifyMarginPercentage": 0.2,
            "createdAt": "2024-01-01T00:00:00.000Z",
            "startedAt": "2024-01-01T00:00:00.000Z",
        }
    return data


def _run_list_item(run: FakeRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "actId": run.act_id,
        "status": run.status,
        "startedAt": _iso(run.started_at),
        "finishedAt": _iso(run.finished_at),
        "buildId": "build0001",
        "buildNumber": "0.0.1",
        "meta": {"origin": "API"},
        "usageTotalUsd": run.script.usage_total_usd or 0.0,
        "defaultKeyValueStoreId": run.store_id,
        "defaultDatasetId": run.dataset_id,
        "defaultRequestQueueId": f"rq-{run.id}",
    }


def _dataset_json(run: FakeRun) -> dict[str, Any]:
    now = _iso(datetime.now(UTC))
    count = len(run.script.items) if run.status == "SUCCEEDED" else 0
    return {
        "id": run.dataset_id,
        "userId": "user0001",
        "createdAt": _iso(run.started_at),
        "modifiedAt": now,
        "accessedAt": now,
        "itemCount": count,
        "cleanItemCount": count,
        "actRunId": run.id,
        "consoleUrl": f"https://console.apify.com/storage/datasets/{run.dataset_id}",
    }


@pytest.fixture
def fake_apify() -> Iterator[FakeApifyServer]:
    server = FakeApifyServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
