"""A local HTTP server speaking Stripe's v1 API for the calls billing makes, with state.

The official `stripe` SDK is pointed at it (`StripeClient(base_addresses={"api": url})`).
It answers as Stripe does (https://docs.stripe.com/api): form-encoded POST bodies with
bracketed nesting (``line_items[0][price]``), JSON objects with ``id`` and ``object``,
errors as ``{"error": {"type", "message", "param"}}`` with 400/401/404, the secret key as a
bearer token, and ``Idempotency-Key``: a repeated key returns the first response.

Resources: customers (create, retrieve), Checkout Sessions (create, retrieve), billing
portal sessions (create), subscriptions (retrieve, cancel). Tests drive the lifecycle with
helpers that change the state as Stripe would and return the events Stripe would send
(`complete_checkout`, `change_plan`, `fail_payment`, `pay_invoice`, `cancel`), built in
Stripe's event shape for API version 2026-10-28 (periods on subscription items).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

_KEY_PART = re.compile(r"\[([^\]]*)\]")


def decode_form(body: str) -> dict[str, Any]:
    """Stripe's form encoding: ``a[b][0][c]=v`` → ``{"a": {"b": [{"c": "v"}]}}``."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        head = key.split("[", 1)[0]
        parts = [head, *_KEY_PART.findall(key[len(head) :])]
        node: Any = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            nxt_is_index = not last and parts[index + 1].isdigit()
            if isinstance(node, list):
                position = int(part)
                while len(node) <= position:
                    node.append({} if not nxt_is_index else [])
                if last:
                    node[position] = value
                else:
                    node = node[position]
                continue
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, [] if nxt_is_index else {})
    return root


@dataclass
class StripeState:
    api_key: str
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    idempotent: dict[tuple[str, str], tuple[int, dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _account: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def new_id(self, prefix: str) -> str:
        """Ids unique across servers, as Stripe's are across accounts."""
        return f"{prefix}_{self._account}{next(self._ids):06d}"


def _error(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> tuple[int, dict[str, Any]]:
    error: dict[str, Any] = {"type": "invalid_request_error", "message": message}
    if param:
        error["param"] = param
    if code:
        error["code"] = code
    return status, {"error": error}


_MISSING = "resource_missing"


def _no_customer(customer: str) -> tuple[int, dict[str, Any]]:
    return _error(400, f"No such customer: '{customer}'", param="customer", code=_MISSING)


class StripeServer:
    """The server, its state and the lifecycle helpers tests use."""

    def __init__(self, api_key: str = "sk_test_local") -> None:
        self.state = StripeState(api_key=api_key)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.clock = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> StripeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- the API ---------------------------------------------------------------------------

    def _route(self, method: str, path: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        s = self.state
        if method == "POST" and path == "/v1/customers":
            customer = {
                "id": s.new_id("cus"),
                "object": "customer",
                "name": params.get("name"),
                "email": params.get("email"),
                "metadata": params.get("metadata", {}),
                "created": self.clock,
                "livemode": False,
            }
            s.customers[customer["id"]] = customer
            return 200, customer
        if method == "GET" and path.startswith("/v1/customers/"):
            found = s.customers.get(path.rsplit("/", 1)[1])
            if found is None:
                return _error(404, "No such customer", param="id", code="resource_missing")
            return 200, found
        if method == "POST" and path == "/v1/checkout/sessions":
            return self._create_checkout(params)
        if method == "GET" and path.startswith("/v1/checkout/sessions/"):
            found = s.sessions.get(path.rsplit("/", 1)[1])
            if found is None:
                return _error(
                    404, "No such checkout.session", param="session", code="resource_missing"
                )
            return 200, found
        if method == "POST" and path == "/v1/billing_portal/sessions":
            portal_customer = str(params.get("customer"))
            if portal_customer not in s.customers:
                return _no_customer(portal_customer)
            portal_id = s.new_id("bps")
            return 200, {
                "id": portal_id,
                "object": "billing_portal.session",
                "customer": portal_customer,
                "return_url": params.get("return_url"),
                "url": f"{self.url}/p/session/{portal_id}",
                "created": self.clock,
                "livemode": False,
            }
        if path.startswith("/v1/subscriptions/"):
            found = s.subscriptions.get(path.rsplit("/", 1)[1])
            if found is None:
                return _error(404, "No such subscription", param="id", code="resource_missing")
            if method == "DELETE":
                found["status"] = "canceled"
            return 200, found
        return _error(404, f"Unrecognized request URL ({method}: {path})")

    def _create_checkout(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        s = self.state
        if params.get("mode") != "subscription":
            return _error(400, "Missing required param: mode.", param="mode")
        items = params.get("line_items")
        if not isinstance(items, list) or not items or not items[0].get("price"):
            return _error(400, "Missing required param: line_items.", param="line_items")
        if not params.get("success_url"):
            return _error(400, "Missing required param: success_url.", param="success_url")
        customer = params.get("customer")
        if customer is not None and customer not in s.customers:
            return _error(
                400, f"No such customer: '{customer}'", param="customer", code="resource_missing"
            )
        session_id = s.new_id("cs")
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "subscription",
            "status": "open",
            "payment_status": "unpaid",
            "customer": customer,
            "client_reference_id": params.get("client_reference_id"),
            "metadata": params.get("metadata", {}),
            "subscription": None,
            "success_url": params["success_url"],
            "cancel_url": params.get("cancel_url"),
            "url": f"{self.url}/c/pay/{session_id}",
            "created": self.clock,
            "livemode": False,
            "_price": items[0]["price"],
            "_subscription_metadata": (params.get("subscription_data") or {}).get("metadata", {}),
        }
        s.sessions[session_id] = session
        return 200, {k: v for k, v in session.items() if not k.startswith("_")}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", f"req_{id(body):x}")
                self.end_headers()
                self.wfile.write(data)

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                auth = self.headers.get("Authorization", "")
                state = server.state
                if auth != f"Bearer {state.api_key}":
                    self._answer(*_error(401, "Invalid API Key provided"))
                    return
                path, _, query = self.path.partition("?")
                params = decode_form(raw if method == "POST" else query)
                key = self.headers.get("Idempotency-Key")
                with state.lock:
                    state.requests.append((method, path, params))
                    if key and (path, key) in state.idempotent:
                        self._answer(*state.idempotent[(path, key)])
                        return
                    status, body = server._route(method, path, params)
                    if key and method == "POST":
                        state.idempotent[(path, key)] = (status, body)
                self._answer(status, body)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

        return Handler

    # --- the lifecycle, as Stripe would run it, and its events ------------------------------

    def tick(self, seconds: int = 1) -> int:
        self.clock += seconds
        return self.clock

    def event(self, kind: str, obj: dict[str, Any], *, at: int | None = None) -> dict[str, Any]:
        """An event in Stripe's shape (https://docs.stripe.com/api/events/object)."""
        return {
            "id": self.state.new_id("evt"),
            "object": "event",
            "api_version": "2026-10-28.endive",
            "created": at if at is not None else self.clock,
            "data": {"object": json.loads(json.dumps(obj))},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
        }

    def _subscription(self, sub_id: str) -> dict[str, Any]:
        return self.state.subscriptions[sub_id]

    def complete_checkout(self, session_id: str) -> list[dict[str, Any]]:
        """The customer paid: a subscription and a paid invoice exist. Returns
        `checkout.session.completed`, `customer.subscription.created` and `invoice.paid`."""
        s = self.state
        session = s.sessions[session_id]
        sub_id = s.new_id("sub")
        start = self.tick()
        subscription = {
            "id": sub_id,
            "object": "subscription",
            "customer": session["customer"],
            "status": "active",
            "billing_cycle_anchor": start,
            "start_date": start,
            "cancel_at_period_end": False,
            "metadata": session["_subscription_metadata"],
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": s.new_id("si"),
                        "object": "subscription_item",
                        "price": {"id": session["_price"], "object": "price"},
                        "quantity": 1,
                        "current_period_start": start,
                        "current_period_end": start + 30 * 86_400,
                    }
                ],
            },
            "livemode": False,
        }
        s.subscriptions[sub_id] = subscription
        session.update(status="complete", payment_status="paid", subscription=sub_id)
        public = {k: v for k, v in session.items() if not k.startswith("_")}
        invoice = self._invoice(session["customer"], sub_id, paid=True)
        return [
            self.event("customer.subscription.created", subscription),
            self.event("invoice.paid", invoice),
            self.event("checkout.session.completed", public),
        ]

    def _invoice(self, customer: str, sub_id: str, *, paid: bool) -> dict[str, Any]:
        s = self.state
        invoice_id = s.new_id("in")
        invoice = {
            "id": invoice_id,
            "object": "invoice",
            "customer": customer,
            "status": "paid" if paid else "open",
            "amount_due": 2900,
            "amount_paid": 2900 if paid else 0,
            "currency": "usd",
            "created": self.clock,
            "hosted_invoice_url": f"{self.url}/i/{invoice_id}",
            "parent": {"subscription_details": {"subscription": sub_id}},
            "livemode": False,
        }
        s.invoices[invoice_id] = invoice
        return invoice

    def change_plan(self, sub_id: str, price: str) -> dict[str, Any]:
        """The customer switched plans in the portal: `customer.subscription.updated`."""
        subscription = self._subscription(sub_id)
        subscription["items"]["data"][0]["price"] = {"id": price, "object": "price"}
        self.tick()
        return self.event("customer.subscription.updated", subscription)

    def fail_payment(self, sub_id: str) -> list[dict[str, Any]]:
        """A renewal failed: `invoice.payment_failed`, then the subscription is `past_due`."""
        subscription = self._subscription(sub_id)
        self.tick()
        invoice = self._invoice(subscription["customer"], sub_id, paid=False)
        subscription["status"] = "past_due"
        return [
            self.event("invoice.payment_failed", invoice),
            self.event("customer.subscription.updated", subscription),
        ]

    def pay_invoice(self, invoice_id: str) -> list[dict[str, Any]]:
        """A retried payment succeeded: `invoice.paid`, then the subscription is `active`."""
        invoice = self.state.invoices[invoice_id]
        invoice.update(status="paid", amount_paid=invoice["amount_due"])
        sub_id = invoice["parent"]["subscription_details"]["subscription"]
        subscription = self._subscription(sub_id)
        subscription["status"] = "active"
        self.tick()
        return [
            self.event("invoice.paid", invoice),
            self.event("customer.subscription.updated", subscription),
        ]

    def cancel(self, sub_id: str) -> dict[str, Any]:
        """The subscription ended: `customer.subscription.deleted`."""
        subscription = self._subscription(sub_id)
        subscription["status"] = "canceled"
        self.tick()
        return self.event("customer.subscription.deleted", subscription)


@contextmanager
def running_stripe(api_key: str = "sk_test_local") -> Iterator[StripeServer]:
    server = StripeServer(api_key).start()
    try:
        yield server
    finally:
        server.stop()
