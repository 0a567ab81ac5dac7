"""Billing runs the replay tests guard, over the stand-in activities."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from schemas.billing import BillingEvent, BillingState, StripeEventType
from tests.workflows.billing.fakes import FakeBilling, event
from workflows.billing import QUIET_SPELL


def subscribed(t: str) -> list[BillingEvent]:
    return [
        event(StripeEventType.SUBSCRIPTION_CREATED, 1, t, plan="premium", anchor_day=1),
        event(StripeEventType.INVOICE_PAID, 1, t, invoice_id="in_1"),
        event(StripeEventType.CHECKOUT_COMPLETED, 1, t, plan="premium"),
        event(StripeEventType.SUBSCRIPTION_UPDATED, 2, t, plan="pro"),
    ]


def payment_failed(t: str) -> list[BillingEvent]:
    return [
        *subscribed(t),
        event(StripeEventType.INVOICE_PAYMENT_FAILED, 3, t, invoice_id="in_2"),
    ]


def _unique(events: list[BillingEvent]) -> list[BillingEvent]:
    # Events built with the same number share an id; give each its own, as Stripe does.
    return [e.model_copy(update={"event_id": f"{e.event_id}_{i}"}) for i, e in enumerate(events)]


SCENARIOS: dict[str, Callable[[str], list[BillingEvent]]] = {
    "billing_subscribed": lambda t: _unique(subscribed(t)),
    "billing_grace_expired": lambda t: _unique(payment_failed(t)),
}


async def run_scenario(
    env: WorkflowEnvironment, fake: FakeBilling, events: list[BillingEvent], *, copies: int = 1
) -> tuple[str, BillingState]:
    """Deliver every event `copies` times before a worker runs, then let the run finish."""
    client = env.client
    # Events happen "now" on the test server's clock, which earlier tests may have moved on.
    shift = await env.get_current_time() - min(e.created for e in events)
    events = [e.model_copy(update={"created": e.created + shift}) for e in events]
    workflow_id = ""
    for e in events:
        for _ in range(copies):
            workflow_id = await fake.send(client, e)
    async with fake.workers(client):
        handle = client.get_workflow_handle(workflow_id, result_type=BillingState)
        while len(fake.applied) < len(events):
            await env.sleep(timedelta(seconds=1))
        await env.sleep(timedelta(days=8) + QUIET_SPELL)
        state = await handle.result()
    return workflow_id, state
