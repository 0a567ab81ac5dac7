"""Billing over HTTP: plan and usage, Checkout and portal through the Stripe SDK against a
local Stripe server, signed webhooks, and the admin report behind the admin key."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import pytest_asyncio
import stripe
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.service import RPCError

from api.app import create_app
from api.routers import admin as admin_routes
from api.routers import billing as billing_routes
from reelflow.core.db import session_factory
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from schemas.billing import billing_workflow_id
from schemas.tables import LedgerEntry, Video
from tests.api.api_support import BagOfWordsEmbedder, TenantKey
from tests.api.conftest import TenantFactory
from tests.support.stripe_server import StripeServer, running_stripe

WEBHOOK_SECRET = "whsec_api_test"
ADMIN_KEY = "admin-" + "k" * 40
PRICES = {"premium": "price_premium", "pro": "price_pro"}


@pytest.fixture(scope="module")
def stripe_server() -> Iterator[StripeServer]:
    with running_stripe() as server:
        yield server


@pytest.fixture
def billing_settings(settings: Settings, stripe_server: StripeServer) -> Settings:
    return settings.model_copy(
        update={
            "stripe_api_key": SecretStr(stripe_server.state.api_key),
            "stripe_webhook_secret": SecretStr(WEBHOOK_SECRET),
            "stripe_api_base": stripe_server.url,
            "stripe_prices": PRICES,
            "admin_api_key": SecretStr(ADMIN_KEY),
        }
    )


def _with_billing_routes(application: FastAPI) -> FastAPI:
    paths = {getattr(route, "path", "") for route in application.routes}
    if "/v1/billing" not in paths:
        application.include_router(billing_routes.router)
    if "/v1/admin/billing" not in paths:
        application.include_router(admin_routes.router)
    return application


@pytest_asyncio.fixture(loop_scope="session")
async def billing_api(
    billing_settings: Settings,
    api_engine: AsyncEngine,
    temporal: Client,
    storage: LocalStorage,
    embedder: BagOfWordsEmbedder,
) -> AsyncIterator[httpx.AsyncClient]:
    application = _with_billing_routes(
        create_app(
            billing_settings,
            engine=api_engine,
            temporal=temporal,
            storage=storage,
            embedder=embedder,
        )
    )
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test:8080") as c:
            yield c


@pytest_asyncio.fixture(loop_scope="session")
async def api_billing_off(
    settings: Settings,
    api_engine: AsyncEngine,
    temporal: Client,
    storage: LocalStorage,
    embedder: BagOfWordsEmbedder,
) -> AsyncIterator[httpx.AsyncClient]:
    application = _with_billing_routes(
        create_app(
            settings, engine=api_engine, temporal=temporal, storage=storage, embedder=embedder
        )
    )
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test:8080") as c:
            yield c


def _signed(
    event: dict[str, Any], *, secret: str = WEBHOOK_SECRET, age_s: int = 0
) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(
        json.dumps(event), secret, timestamp=int(time.time()) - age_s
    )
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


async def _terminate(temporal: Client, tenant: TenantKey) -> None:
    handle = temporal.get_workflow_handle(billing_workflow_id(str(tenant.tenant_id)))
    with contextlib.suppress(RPCError):
        await handle.terminate("api test finished")


async def test_billing_shows_plan_period_and_every_limit(
    billing_api: httpx.AsyncClient, alice: TenantKey
) -> None:
    response = await billing_api.get("/v1/billing", headers=alice.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["plan"] == "free" and body["billing_enabled"] is True
    assert body["upgrade_to"] == "premium" and body["invoices"] == []
    assert {limit["name"] for limit in body["limits"]} == {
        "videos",
        "generated_seconds",
        "storage_gb",
        "ingest_minutes",
        "ai_credits_usd",
        "projects",
    }
    videos = next(limit for limit in body["limits"] if limit["name"] == "videos")
    assert (videos["limit"], videos["used"], videos["warning"]) == (10, 0, None)


async def test_checkout_and_portal_go_through_stripe(
    billing_api: httpx.AsyncClient,
    alice: TenantKey,
    stripe_server: StripeServer,
    temporal: Client,
) -> None:
    response = await billing_api.post(
        "/v1/billing/checkout", json={"plan": "premium"}, headers=alice.headers
    )
    assert response.status_code == 200, response.text
    url = response.json()["url"]
    session_id = url.rsplit("/", 1)[1]
    session = stripe_server.state.sessions[session_id]
    assert session["client_reference_id"] == str(alice.tenant_id)
    assert session["_price"] == "price_premium" and session["mode"] == "subscription"
    # A second checkout reuses the customer.
    again = await billing_api.post(
        "/v1/billing/checkout", json={"plan": "pro"}, headers=alice.headers
    )
    assert again.status_code == 200
    assert len(stripe_server.state.customers) == 1

    portal = await billing_api.post("/v1/billing/portal", headers=alice.headers)
    assert portal.status_code == 200 and "/p/session/" in portal.json()["url"]

    # Stripe reports the payment: the events reach the tenant's billing workflow.
    for event in stripe_server.complete_checkout(session_id):
        body = json.dumps(event)
        delivered = await billing_api.post(
            "/v1/billing/webhooks", content=body, headers=_signed(event)
        )
        assert delivered.status_code == 200, delivered.text
        assert delivered.json() == {"received": True}
    handle = temporal.get_workflow_handle(billing_workflow_id(str(alice.tenant_id)))
    signals = [
        e
        async for e in handle.fetch_history_events()
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert len(signals) == 3  # one per event; the first also started the run
    await _terminate(temporal, alice)


@pytest.mark.parametrize(
    ("plan", "code"),
    [("platinum", "plan_unknown"), ("free", "plan_not_sold"), ("agency", "plan_not_sold")],
)
async def test_checkout_refuses_plans_that_cannot_be_bought(
    billing_api: httpx.AsyncClient, bob: TenantKey, plan: str, code: str
) -> None:
    response = await billing_api.post(
        "/v1/billing/checkout", json={"plan": plan}, headers=bob.headers
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == code


async def test_portal_without_a_customer_is_a_conflict(
    billing_api: httpx.AsyncClient, make_tenant: TenantFactory
) -> None:
    carol = await make_tenant("carol")
    response = await billing_api.post("/v1/billing/portal", headers=carol.headers)
    assert response.status_code == 409
    assert "checkout" in response.json()["error"]["message"]


async def test_webhooks_refuse_bad_deliveries(
    billing_api: httpx.AsyncClient, stripe_server: StripeServer
) -> None:
    event = stripe_server.event(
        "customer.subscription.updated", {"id": "sub_x", "customer": "cus_x"}
    )
    body = json.dumps(event)
    cases = {
        "no signature": {"Content-Type": "application/json"},
        "wrong secret": _signed(event, secret="whsec_wrong"),
        "replayed": _signed(event, age_s=301),
        "garbage header": {"Stripe-Signature": "t=abc,v1=zz"},
    }
    for name, headers in cases.items():
        response = await billing_api.post("/v1/billing/webhooks", content=body, headers=headers)
        assert response.status_code == 400, name
        assert response.json()["error"]["code"] == "invalid_signature"
    unknown = stripe_server.event("charge.refunded", {"id": "ch_1"})
    response = await billing_api.post(
        "/v1/billing/webhooks", content=json.dumps(unknown), headers=_signed(unknown)
    )
    assert response.status_code == 200 and "ignored" in response.json()
    # A customer no tenant has: acknowledged, so Stripe stops retrying, and ignored.
    response = await billing_api.post("/v1/billing/webhooks", content=body, headers=_signed(event))
    assert response.status_code == 200 and "ignored" in response.json()
    huge = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    response = await billing_api.post(
        "/v1/billing/webhooks", content=huge, headers={"Stripe-Signature": "t=1,v1=00"}
    )
    assert response.status_code == 413


async def test_billing_off_hides_stripe_routes_but_not_the_plan(
    api_billing_off: httpx.AsyncClient, alice: TenantKey
) -> None:
    assert (await api_billing_off.post("/v1/billing/webhooks", content=b"{}")).status_code == 404
    checkout = await api_billing_off.post(
        "/v1/billing/checkout", json={"plan": "premium"}, headers=alice.headers
    )
    assert checkout.status_code == 404
    shown = await api_billing_off.get("/v1/billing", headers=alice.headers)
    assert shown.status_code == 200 and shown.json()["billing_enabled"] is False


async def test_admin_billing_needs_the_admin_key(
    billing_api: httpx.AsyncClient, alice: TenantKey
) -> None:
    assert (await billing_api.get("/v1/admin/billing")).status_code == 401
    tenant_key = await billing_api.get("/v1/admin/billing", headers=alice.headers)
    assert tenant_key.status_code == 403
    wrong = await billing_api.get(
        "/v1/admin/billing", headers={"Authorization": "Bearer " + "x" * 46}
    )
    assert wrong.status_code == 403
    report = await billing_api.get(
        "/v1/admin/billing", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert report.status_code == 200, report.text
    body = report.json()
    assert {row["plan"] for row in body["plan_distribution"]} >= {"free", "premium", "agency"}
    assert body["mrr_usd"] >= 0 and 0 <= body["churn_rate"] <= 1
    backwards = await billing_api.get(
        "/v1/admin/billing?since=2026-11-02T00:00:00Z&until=2026-11-01T00:00:00Z",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert backwards.status_code == 422


async def _fill(api_engine: AsyncEngine, tenant: TenantKey, *, gb: float, ai_usd: str) -> None:
    async with session_factory(api_engine).begin() as session:
        session.add(
            Video(
                id=uuid.uuid4(),
                tenant_id=tenant.tenant_id,
                title="stored",
                origin="upload",
                source_key=f"k-{uuid.uuid4()}",
                status="completed",
                stage="done",
                size_bytes=int(gb * 1024**3),
                duration_s=60.0,
            )
        )
        session.add(
            LedgerEntry(
                idempotency_key=f"chat-{uuid.uuid4()}",
                tenant_id=tenant.tenant_id,
                step="chat",
                provider="openai",
                operation="chat_output",
                model="gpt-4o-mini",
                units=Decimal(1),
                unit="token",
                unit_price_usd=Decimal(ai_usd),
                price_version="test",
                cost_usd=Decimal(ai_usd),
            )
        )


async def test_metered_work_warns_from_80_percent_and_is_refused_at_the_limit(
    billing_api: httpx.AsyncClient, make_tenant: TenantFactory, api_engine: AsyncEngine
) -> None:
    dora = await make_tenant("dora")
    await _fill(api_engine, dora, gb=0.85, ai_usd="1.00")  # Free: 1 GB, $1 of AI credits
    upload = {"title": "a", "filename": "a.mp4", "size_bytes": 1024, "content_type": "video/mp4"}
    ticket = await billing_api.post("/v1/videos/uploads", json=upload, headers=dora.headers)
    assert ticket.status_code == 201, ticket.text
    assert "storage_gb limit" in ticket.headers["Quota-Warning"]
    usage = await billing_api.get("/v1/billing", headers=dora.headers)
    assert "Quota-Warning" in usage.headers
    assert any("storage_gb" in w for w in usage.json()["warnings"])
    ledger = await billing_api.get("/v1/usage", headers=dora.headers)
    assert "storage_gb limit" in ledger.headers["Quota-Warning"]
    assert any("storage_gb" in w for w in ledger.json()["quota_warnings"])

    chat = await billing_api.post("/v1/chat", json={"message": "hi"}, headers=dora.headers)
    assert chat.status_code == 402
    error = chat.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert "ai_credits_usd" in error["message"] and "upgrade to premium" in error["message"]

    await _fill(api_engine, dora, gb=0.2, ai_usd="0")
    refused = await billing_api.post("/v1/videos/uploads", json=upload, headers=dora.headers)
    assert refused.status_code == 402
    assert "storage_gb" in refused.json()["error"]["message"]
