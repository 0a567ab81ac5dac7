"""A tenant's billing: Stripe events applied one at a time, and the grace period's end.

One workflow per tenant (`billing-<tenant id>`), started or signalled with each verified
event (signal-with-start), so a tenant's events never race each other. Applying is an
activity that records the event id in the same transaction as its effect: a repeated
delivery (a second signal, a redelivered webhook, an activity retried after a crash) has
no second effect. Order is settled by the events' own timestamps in that activity, so the
order signals arrive in does not matter either.

After a failed payment the workflow sleeps until the grace period ends, then asks the
database whether the payment is still failed; if so the tenant moves to Free. A run with
nothing queued and no grace period ahead ends after a quiet spell, and the next event
starts a new one. Long-lived runs continue as new, carrying the recent event ids.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from workflows._steps import call

with workflow.unsafe.imports_passed_through():
    from schemas.billing import (
        STRIPE_EVENT_SIGNAL,
        ApplyBillingEventInput,
        BillingEvent,
        BillingState,
        BillingWorkflowInput,
        ExpireGraceInput,
    )
    from schemas.billing_activities import APPLY_BILLING_EVENT, EXPIRE_GRACE
    from schemas.queues import TaskQueues

QUIET_SPELL = timedelta(minutes=10)
"""How long an idle run waits for more events before it ends."""
EVENTS_PER_RUN = 500
"""Events one run applies before it continues as new (bounded history)."""
SEEN_CARRIED = 1000


@workflow.defn(name="BillingWorkflow")
class BillingWorkflow:
    def __init__(self) -> None:
        self._pending: list[BillingEvent] = []
        self._seen: list[str] = []
        self._state: BillingState | None = None

    @workflow.signal(name=STRIPE_EVENT_SIGNAL)
    def stripe_event(self, event: BillingEvent) -> None:
        """Queue a verified event; one already applied or queued is dropped here."""
        if event.event_id in self._seen or any(e.event_id == event.event_id for e in self._pending):
            return
        self._pending.append(event)

    @workflow.query(name="billing_state")
    def billing_state(self) -> BillingState | None:
        return self._state

    def _grace_ahead(self) -> timedelta | None:
        grace_until = self._state.grace_until if self._state is not None else None
        if grace_until is None:
            return None
        left = grace_until - workflow.now()
        return left if left > timedelta(0) else None

    @workflow.run
    async def run(self, input: BillingWorkflowInput) -> BillingState:
        queues = TaskQueues.of_workflow_queue(workflow.info().task_queue)
        self._seen = list(input.seen)
        applied = 0
        while True:
            grace_left = self._grace_ahead()
            try:
                await workflow.wait_condition(
                    lambda: bool(self._pending), timeout=grace_left or QUIET_SPELL
                )
            except TimeoutError:
                if grace_left is not None:
                    self._state = await call(
                        EXPIRE_GRACE, ExpireGraceInput(tenant_id=input.tenant_id), queues
                    )
                    continue
                break
            # Oldest first: fewer stale events; correctness does not depend on it.
            self._pending.sort(key=lambda e: (e.created, e.event_id))
            event = self._pending.pop(0)
            self._state = await call(
                APPLY_BILLING_EVENT,
                ApplyBillingEventInput(event=event),
                queues,
                summary=f"{event.type.value} {event.event_id}",
            )
            self._seen = [*self._seen, event.event_id][-SEEN_CARRIED:]
            applied += 1
            if applied >= EVENTS_PER_RUN and not self._pending:
                workflow.continue_as_new(
                    BillingWorkflowInput(tenant_id=input.tenant_id, seen=self._seen)
                )
        if self._state is None:
            return BillingState(plan="free")
        return self._state
