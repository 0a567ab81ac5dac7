"""Stand-in billing activities: the workflow's contract without a database.

They keep what the real ones keep in Postgres (applied event ids, the plan, the grace
period) in memory, so orchestration tests and the history recorder run in milliseconds.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from schemas.billing import (
    ApplyBillingEventInput,
    BillingEvent,
    BillingEventOutcome,
    BillingState,
    BillingWorkflowInput,
    ExpireGraceInput,
    StripeEventType,
    billing_workflow_id,
)
from schemas.billing_activities import APPLY_BILLING_EVENT, BILLING_WORKFLOW, EXPIRE_GRACE
from schemas.queues import TaskQueues
from workers.pools import activity_worker
from workflows.billing import BillingWorkflow

GRACE = timedelta(days=7)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def event(kind: StripeEventType, n: int, tenant_id: str, **fields: object) -> BillingEvent:
    return BillingEvent(
        event_id=f"evt_{n}",
        type=kind,
        created=T0 + timedelta(seconds=n),
        tenant_id=tenant_id,
        **fields,
    )


@dataclass
class FakeBilling:
    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    queues: TaskQueues = field(
        default_factory=lambda: TaskQueues.for_prefix(f"fake-billing-{uuid.uuid4().hex[:8]}")
    )
    applied: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    plan: str = "free"
    grace_until: datetime | None = None

    @activity.defn(name=APPLY_BILLING_EVENT.name)
    async def apply_billing_event(self, input: ApplyBillingEventInput) -> BillingState:
        e = input.event
        self.calls.append(f"apply:{e.event_id}")
        if e.event_id in self.applied:
            return BillingState(
                outcome=BillingEventOutcome.DUPLICATE, plan=self.plan, grace_until=self.grace_until
            )
        self.applied.append(e.event_id)
        if e.type is StripeEventType.INVOICE_PAYMENT_FAILED:
            self.grace_until = e.created + GRACE
        elif e.type is StripeEventType.INVOICE_PAID:
            self.grace_until = None
        elif e.plan is not None:
            self.plan = e.plan
        return BillingState(plan=self.plan, grace_until=self.grace_until)

    @activity.defn(name=EXPIRE_GRACE.name)
    async def expire_billing_grace(self, input: ExpireGraceInput) -> BillingState:
        self.calls.append("expire")
        if self.grace_until is not None:
            self.plan = "free"
        return BillingState(plan=self.plan, grace_until=self.grace_until)

    @asynccontextmanager
    async def workers(self, client: Client) -> AsyncIterator[None]:
        activities: list[Callable[..., Any]] = [
            self.apply_billing_event,
            self.expire_billing_grace,
        ]
        async with (
            Worker(client, task_queue=self.queues.workflows, workflows=[BillingWorkflow]),
            activity_worker(client, self.queues.providers, activities),
        ):
            yield

    async def send(self, client: Client, *events: BillingEvent) -> str:
        workflow_id = billing_workflow_id(self.tenant_id)
        for e in events:
            await client.start_workflow(
                BILLING_WORKFLOW.name,
                BillingWorkflowInput(tenant_id=self.tenant_id),
                id=workflow_id,
                task_queue=self.queues.workflows,
                start_signal="stripe_event",
                start_signal_args=[e],
            )
        return workflow_id
