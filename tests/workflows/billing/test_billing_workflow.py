"""BillingWorkflow over its real activities and PostgreSQL, on a time-skipping server.

Events reach the workflow as the webhook route sends them (`deliver`: signal-with-start),
five copies each in a shuffled order; the grace period after a failed payment is the
workflow's own timer, skipped here.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.billing import BillingActivities
from reelflow.billing.webhooks import billing_event, deliver, verify
from reelflow.core.db import SessionFactory
from reelflow.core.settings import Settings
from schemas.billing import BillingState, billing_workflow_id
from schemas.billing_tables import BillingEvent as BillingEventRow
from schemas.queues import TaskQueues
from schemas.tables import Tenant
from tests.billing.test_events import PRICES, SECRET, signed, subscription_life
from tests.support import assert_eventually
from tests.support.stripe_server import running_stripe
from workers.pools import activity_worker
from workflows.billing import QUIET_SPELL, BillingWorkflow


def plan_for_price(price: str | None) -> str | None:
    return {v: k for k, v in PRICES.items()}.get(price or "")


@asynccontextmanager
async def billing_workers(
    client: Client, sessions: SessionFactory, queues: TaskQueues
) -> AsyncIterator[None]:
    activities = BillingActivities(
        sessions=sessions, settings=Settings(environment="test", billing_grace_days=7)
    )
    async with (
        Worker(client, task_queue=queues.workflows, workflows=[BillingWorkflow]),
        activity_worker(
            client,
            queues.providers,
            [activities.apply_billing_event, activities.expire_billing_grace],
        ),
    ):
        yield


async def new_tenant(sessions: SessionFactory) -> uuid.UUID:
    tenant_id = uuid.uuid4()
    async with sessions.begin() as session:
        session.add(Tenant(id=tenant_id, name="subscriber", plan="free"))
    return tenant_id


async def life_now(tenant_id: uuid.UUID, *, recovers: bool) -> list[dict[str, Any]]:
    with running_stripe() as server:
        server.clock = int(time.time()) - 60
        return await subscription_life(server, tenant_id, recovers=recovers)


async def send(
    client: Client, queues: TaskQueues, tenant_id: uuid.UUID, raw: dict[str, Any]
) -> None:
    payload, header = signed(raw)
    event = billing_event(verify(payload, header, SECRET), str(tenant_id), plan_for_price)
    await deliver(client, event, task_queue=queues.workflows)


async def recorded_events(sessions: SessionFactory, tenant_id: uuid.UUID, expected: int) -> None:
    async with sessions() as session:
        recorded = await session.scalar(
            select(func.count())
            .select_from(BillingEventRow)
            .where(BillingEventRow.tenant_id == tenant_id)
        )
    assert recorded == expected


async def plan_of(sessions: SessionFactory, tenant_id: uuid.UUID) -> str:
    async with sessions() as session:
        return str(await session.scalar(select(Tenant.plan).where(Tenant.id == tenant_id)))


async def test_each_event_is_applied_once_whatever_the_order_and_the_copies(
    time_skipping_env: WorkflowEnvironment, sessions: SessionFactory
) -> None:
    client = time_skipping_env.client
    queues = TaskQueues.for_prefix(f"billing-{uuid.uuid4().hex[:8]}")
    tenant_id = await new_tenant(sessions)
    events = await life_now(tenant_id, recovers=True)
    copies = [e for e in events for _ in range(5)]
    random.Random(5).shuffle(copies)
    # Everything is delivered before a worker runs: one run sees every copy, in this order.
    for raw in copies:
        await send(client, queues, tenant_id, raw)
    async with billing_workers(client, sessions, queues):
        handle = client.get_workflow_handle_for(
            BillingWorkflow.run, billing_workflow_id(str(tenant_id))
        )
        await assert_eventually(lambda: recorded_events(sessions, tenant_id, len(events)))
        await time_skipping_env.sleep(QUIET_SPELL + timedelta(minutes=1))
        state: BillingState = await handle.result()
    assert state.plan == "pro" and state.grace_until is None
    assert await plan_of(sessions, tenant_id) == "pro"
    await recorded_events(sessions, tenant_id, len(events))


async def test_a_failed_payment_keeps_the_plan_for_the_grace_period_then_moves_to_free(
    time_skipping_env: WorkflowEnvironment, sessions: SessionFactory
) -> None:
    client = time_skipping_env.client
    queues = TaskQueues.for_prefix(f"billing-{uuid.uuid4().hex[:8]}")
    tenant_id = await new_tenant(sessions)
    events = await life_now(tenant_id, recovers=False)
    for raw in events:
        await send(client, queues, tenant_id, raw)
    async with billing_workers(client, sessions, queues):
        handle = client.get_workflow_handle_for(
            BillingWorkflow.run, billing_workflow_id(str(tenant_id))
        )
        await assert_eventually(lambda: recorded_events(sessions, tenant_id, len(events)))
        # Past due, inside the grace period: the paid plan stays.
        await time_skipping_env.sleep(timedelta(days=6))
        assert await plan_of(sessions, tenant_id) == "pro"
        await time_skipping_env.sleep(timedelta(days=1, minutes=1) + QUIET_SPELL)
        state = await handle.result()
    assert state.plan == "free"
    assert await plan_of(sessions, tenant_id) == "free"


def test_signed_payloads_round_trip() -> None:
    payload, header = signed({"id": "evt_x", "type": "ping", "created": 1, "data": {"object": {}}})
    assert verify(payload, header, SECRET).type == "ping"
    assert json.loads(payload)["id"] == "evt_x"
