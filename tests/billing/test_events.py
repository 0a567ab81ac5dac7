"""Stripe events: signed deliveries verified by the SDK, applied once, in any order.

Each scenario runs a subscription's life on the local Stripe server (the SDK creates the
customer and the Checkout Session; the server's helpers move the subscription on as
Stripe would and return the events it would send). The events are signed with the SDK's
own helper and applied to one tenant in order, and to another tenant five times each,
shuffled, with stale and wrongly signed copies mixed in: the two tenants must end equal.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
from sqlalchemy import select

from reelflow.billing import accounts
from reelflow.billing.stripe_client import StripeBilling
from reelflow.billing.webhooks import WebhookRejected, billing_event, verify
from reelflow.core.db import SessionFactory
from schemas.billing import BillingEventOutcome
from schemas.billing_tables import BillingAccount, BillingInvoice, PlanChange
from schemas.tables import Tenant
from tests.support.stripe_server import StripeServer, running_stripe

SECRET = "whsec_local_test"
PRICES = {"premium": "price_premium", "pro": "price_pro", "agency": "price_agency"}
GRACE = timedelta(days=7)


@pytest.fixture
def stripe_server() -> Iterator[StripeServer]:
    with running_stripe() as server:
        yield server


def billing_for(server: StripeServer) -> StripeBilling:
    return StripeBilling(
        client=stripe.StripeClient(server.state.api_key, base_addresses={"api": server.url}),
        prices=PRICES,
        success_url="https://app.test/billing/done",
        return_url="https://app.test/",
    )


async def new_tenant(sessions: SessionFactory) -> uuid.UUID:
    tenant_id = uuid.uuid4()
    async with sessions.begin() as session:
        session.add(Tenant(id=tenant_id, name="subscriber", plan="free"))
    return tenant_id


def signed(event: dict[str, Any], *, secret: str = SECRET, age_s: int = 0) -> tuple[bytes, str]:
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(
        payload, secret, timestamp=int(time.time()) - age_s
    )
    return payload.encode(), header


async def subscription_life(
    server: StripeServer, tenant_id: uuid.UUID, *, recovers: bool
) -> list[dict[str, Any]]:
    """Checkout for Premium, an upgrade to Pro, a failed renewal, then paid (or not)."""
    billing = billing_for(server)
    customer = await billing.create_customer(tenant_id=tenant_id, name="subscriber")
    url = await billing.checkout_url(
        tenant_id=tenant_id, customer_id=customer, plan="premium", request_key="k1"
    )
    session_id = url.rsplit("/", 1)[1]
    events = server.complete_checkout(session_id)
    sub_id = events[0]["data"]["object"]["id"]
    events.append(server.change_plan(sub_id, PRICES["pro"]))
    failed = server.fail_payment(sub_id)
    events += failed
    if recovers:
        events += server.pay_invoice(failed[0]["data"]["object"]["id"])
    return events


async def apply_all(
    sessions: SessionFactory,
    deliveries: list[tuple[bytes, str]],
    tenant_id: uuid.UUID,
    *,
    now: datetime,
) -> tuple[list[BillingEventOutcome], int]:
    outcomes, rejected = [], 0
    plans_by_price = {v: k for k, v in PRICES.items()}

    def plan_for_price(price: str | None) -> str | None:
        return plans_by_price.get(price or "")

    for payload, header in deliveries:
        try:
            received = verify(payload, header, SECRET)
        except WebhookRejected:
            rejected += 1
            continue
        event = billing_event(received, str(tenant_id), plan_for_price)
        async with sessions.begin() as session:
            state = await accounts.apply_event(session, event, now=now, grace=GRACE)
        outcomes.append(state.outcome)
    return outcomes, rejected


async def final_state(sessions: SessionFactory, tenant_id: uuid.UUID) -> dict[str, Any]:
    async with sessions() as session:
        tenant = await session.get(Tenant, tenant_id)
        account = await session.get(BillingAccount, tenant_id)
        invoices = (
            await session.scalars(
                select(BillingInvoice)
                .where(BillingInvoice.tenant_id == tenant_id)
                .order_by(BillingInvoice.stripe_created_at, BillingInvoice.status)
            )
        ).all()
    assert tenant is not None and account is not None
    return {
        "plan": tenant.plan,
        "subscription": (account.subscription_plan, account.subscription_status),
        "anchor": account.billing_anchor_day,
        "grace_until": account.grace_until,
        "period_end": account.current_period_end,
        "state_as_of": account.state_as_of,
        "invoices": [(i.status, i.amount_cents, i.stripe_created_at) for i in invoices],
    }


@pytest.mark.parametrize("recovers", [True, False], ids=["payment-recovered", "payment-failed"])
async def test_shuffled_repeated_deliveries_end_in_the_in_order_state(
    sessions: SessionFactory, recovers: bool
) -> None:
    in_order, shuffled = await new_tenant(sessions), await new_tenant(sessions)
    lives = []
    for tenant_id in (in_order, shuffled):
        with running_stripe() as server:
            lives.append(await subscription_life(server, tenant_id, recovers=recovers))
    first_life, second_life = lives
    last = max(e["created"] for e in first_life)
    now = datetime.fromtimestamp(last, UTC) + timedelta(minutes=1)

    outcomes, rejected = await apply_all(
        sessions, [signed(e) for e in first_life], in_order, now=now
    )
    assert rejected == 0
    assert set(outcomes) == {BillingEventOutcome.APPLIED}

    rng = random.Random(11)
    deliveries = [signed(e) for e in second_life for _ in range(5)]
    deliveries += [signed(e, age_s=301) for e in second_life[:3]]  # replayed, too old
    deliveries += [signed(e, secret="whsec_someone_else") for e in second_life[-2:]]
    deliveries.append((json.dumps(second_life[0]).encode(), ""))  # no signature
    rng.shuffle(deliveries)
    outcomes, rejected = await apply_all(sessions, deliveries, shuffled, now=now)
    assert rejected == 6
    # Each event had one effect: every other copy was a duplicate (or an older state).
    applied = outcomes.count(BillingEventOutcome.APPLIED)
    assert outcomes.count(BillingEventOutcome.DUPLICATE) == 4 * len(second_life)
    assert applied + outcomes.count(BillingEventOutcome.STALE) == len(second_life)

    expected, got = await final_state(sessions, in_order), await final_state(sessions, shuffled)
    assert got == expected
    if recovers:
        assert expected["plan"] == "pro" and expected["grace_until"] is None
        assert [status for status, *_ in expected["invoices"]] == ["paid", "paid"]
    else:
        # Within the grace period the tenant keeps Pro, with the date it ends shown.
        assert expected["plan"] == "pro" and expected["subscription"] == ("pro", "past_due")
        assert expected["grace_until"] is not None and expected["grace_until"] > now


async def test_a_payment_still_failed_after_the_grace_period_moves_the_tenant_to_free(
    sessions: SessionFactory, stripe_server: StripeServer
) -> None:
    tenant_id = await new_tenant(sessions)
    events = await subscription_life(stripe_server, tenant_id, recovers=False)
    now = datetime.fromtimestamp(events[-1]["created"], UTC)
    await apply_all(sessions, [signed(e) for e in events], tenant_id, now=now)
    async with sessions.begin() as session:
        early = await accounts.expire_grace(session, tenant_id, now=now + timedelta(days=6))
    assert early.plan == "pro" and early.grace_until is not None
    async with sessions.begin() as session:
        late = await accounts.expire_grace(session, tenant_id, now=early.grace_until)
    assert late.plan == "free"
    async with sessions() as session:
        reasons = (
            await session.scalars(
                select(PlanChange.reason)
                .where(PlanChange.tenant_id == tenant_id)
                .order_by(PlanChange.changed_at)
            )
        ).all()
    assert list(reasons) == ["subscription", "subscription", "grace_expired"]

    # The customer pays late: the subscription is active again, and so is the plan.
    invoice_id = next(e for e in events if e["type"] == "invoice.payment_failed")
    paid = stripe_server.pay_invoice(invoice_id["data"]["object"]["id"])
    await apply_all(sessions, [signed(e) for e in paid], tenant_id, now=now + GRACE * 2)
    assert (await final_state(sessions, tenant_id))["plan"] == "pro"


async def test_a_cancellation_ends_the_paid_plan_and_a_late_update_cannot_revive_it(
    sessions: SessionFactory, stripe_server: StripeServer
) -> None:
    tenant_id = await new_tenant(sessions)
    events = await subscription_life(stripe_server, tenant_id, recovers=True)
    sub_id = events[0]["data"]["object"]["id"]
    canceled = stripe_server.cancel(sub_id)
    now = datetime.fromtimestamp(canceled["created"], UTC)
    late_update = events[3]  # customer.subscription.updated (the upgrade), delivered last
    await apply_all(
        sessions, [signed(e) for e in [*events[:3], canceled, late_update]], tenant_id, now=now
    )
    state = await final_state(sessions, tenant_id)
    assert state["plan"] == "free" and state["subscription"] == ("pro", "canceled")


def test_a_body_that_is_not_a_stripe_event_is_rejected_even_when_signed() -> None:
    for body in (b"[]", b"{}", b'{"id": "evt_1", "type": "x", "created": 1}', b"\xff\xfe"):
        header = stripe.WebhookSignature.generate_signature_header(body.decode("latin-1"), SECRET)
        with pytest.raises(WebhookRejected):
            verify(body, header, SECRET)
