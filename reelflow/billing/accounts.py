"""A tenant's billing state: which plan it is on, and how Stripe events change that.

**Exactly once.** An event is applied in the same transaction that records its id in
``billing_events``; a second delivery finds the id and changes nothing.

**Order does not matter.** Stripe delivers events late, twice and out of order. Each kind of
state keeps the timestamp of the event that set it, and an event older than that has no
effect (it is recorded as ``stale``):

* the subscription (plan, status, anchor) is ordered by ``(event.created, status rank)``
  — the rank breaks ties within one second, so ``canceled`` beats ``active``;
* each invoice's status is ordered by ``(event.created, paid over failed)``;
* ``checkout.session.completed`` only links the customer and subscription to the tenant
  (and gives a first plan when no subscription event has arrived yet), so its position
  relative to the subscription's own events cannot change the outcome.

The grace period after a failed payment is then a function of the invoices (the earliest
invoice still failed, plus the grace days), and the tenant's plan a function of the
subscription and the grace period — so any delivery order ends in the same state.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.billing.plans import DEFAULT_PLAN, PLANS, canonical_plan_name
from schemas.billing import (
    BillingEvent,
    BillingEventOutcome,
    BillingState,
    StripeEventType,
)
from schemas.billing_tables import BillingAccount, BillingInvoice, PlanChange
from schemas.billing_tables import BillingEvent as BillingEventRow
from schemas.tables import Tenant

IN_FORCE_STATUSES = frozenset({"active", "trialing", "past_due"})
"""Subscription statuses that keep the paid plan (past_due: the grace period decides)."""

_STATUS_RANK = {
    "incomplete": 0,
    "trialing": 1,
    "active": 2,
    "past_due": 3,
    "paused": 3,
    "unpaid": 4,
    "canceled": 5,
    "incomplete_expired": 5,
}
PAID = "paid"
PAYMENT_FAILED = "payment_failed"
_INVOICE_RANK = {PAYMENT_FAILED: 0, PAID: 1}

SUBSCRIPTION_EVENTS = frozenset(
    {
        StripeEventType.SUBSCRIPTION_CREATED,
        StripeEventType.SUBSCRIPTION_UPDATED,
        StripeEventType.SUBSCRIPTION_DELETED,
    }
)


class TenantNotFound(LookupError):
    """The tenant named does not exist."""


async def locked_account(session: AsyncSession, tenant_id: uuid.UUID) -> BillingAccount:
    """The tenant's billing account, created if missing, locked until the transaction ends."""
    await session.execute(
        insert(BillingAccount).values(tenant_id=tenant_id).on_conflict_do_nothing()
    )
    account = await session.scalar(
        select(BillingAccount)
        .where(BillingAccount.tenant_id == tenant_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if account is None:  # pragma: no cover - the insert above guarantees the row
        raise TenantNotFound(str(tenant_id))
    return account


async def set_plan(
    session: AsyncSession, tenant_id: uuid.UUID, plan: str, *, reason: str, at: datetime
) -> bool:
    """Put the tenant on `plan` (recorded in the plan history). False if it already was.

    Limits follow at once: every check reads the tenant's plan. Nothing is deleted when a
    plan shrinks; usage over the new limits only stops new work.

    Raises:
        UnknownPlan: `plan` is not in the plan table.
        TenantNotFound: No such tenant.
    """
    plan = canonical_plan_name(plan)
    tenant = await session.scalar(select(Tenant).where(Tenant.id == tenant_id).with_for_update())
    if tenant is None:
        raise TenantNotFound(str(tenant_id))
    current = tenant.plan
    if current == plan:
        return False
    tenant.plan = plan
    session.add(
        PlanChange(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            changed_at=at,
            from_plan=current,
            to_plan=plan,
            reason=reason,
        )
    )
    await session.flush()
    return True


def entitled_plan(account: BillingAccount, now: datetime) -> str | None:
    """The plan the subscription entitles the tenant to now; None leaves the plan alone.

    No subscription event yet (billing off, or a checkout not finished) is None: a plan
    set with the CLI stays.
    """
    if account.subscription_status is None:
        return None
    if account.subscription_status not in IN_FORCE_STATUSES:
        return DEFAULT_PLAN
    if account.grace_until is not None and account.grace_until <= now:
        return DEFAULT_PLAN
    plan = account.subscription_plan
    return plan if plan in PLANS else DEFAULT_PLAN


def _reason(account: BillingAccount, now: datetime) -> str:
    if account.subscription_status not in IN_FORCE_STATUSES:
        return "canceled"
    if account.grace_until is not None and account.grace_until <= now:
        return "grace_expired"
    return "subscription"


async def _follow_subscription(
    session: AsyncSession, account: BillingAccount, *, at: datetime, now: datetime
) -> str:
    plan = entitled_plan(account, now)
    if plan is not None:
        await set_plan(session, account.tenant_id, plan, reason=_reason(account, now), at=at)
    current = await session.scalar(select(Tenant.plan).where(Tenant.id == account.tenant_id))
    return current or DEFAULT_PLAN


async def _refresh_grace(session: AsyncSession, account: BillingAccount, grace: timedelta) -> None:
    earliest_failure = await session.scalar(
        select(func.min(BillingInvoice.status_as_of)).where(
            BillingInvoice.tenant_id == account.tenant_id,
            BillingInvoice.status == PAYMENT_FAILED,
        )
    )
    account.grace_until = None if earliest_failure is None else earliest_failure + grace


def _later(created: datetime, rank: int, held_at: datetime | None, held_rank: int) -> bool:
    return held_at is None or (created, rank) > (held_at, held_rank)


def _apply_subscription(account: BillingAccount, event: BillingEvent) -> bool:
    status = event.subscription_status or (
        "canceled" if event.type is StripeEventType.SUBSCRIPTION_DELETED else "active"
    )
    held_rank = _STATUS_RANK.get(account.subscription_status or "", -1)
    if not _later(event.created, _STATUS_RANK.get(status, 0), account.state_as_of, held_rank):
        return False
    if (
        status in ("canceled", "incomplete_expired")
        and account.stripe_subscription_id is not None
        and event.subscription_id != account.stripe_subscription_id
        and account.subscription_status in IN_FORCE_STATUSES
    ):
        # The end of a subscription the tenant has already replaced.
        return False
    account.stripe_subscription_id = event.subscription_id or account.stripe_subscription_id
    account.stripe_customer_id = event.customer_id or account.stripe_customer_id
    account.subscription_status = status
    if event.plan is not None:
        account.subscription_plan = event.plan
    if event.anchor_day is not None:
        account.billing_anchor_day = event.anchor_day
    account.current_period_end = event.current_period_end or account.current_period_end
    account.state_as_of = event.created
    return True


def _apply_checkout(account: BillingAccount, event: BillingEvent) -> bool:
    account.stripe_customer_id = account.stripe_customer_id or event.customer_id
    account.stripe_subscription_id = account.stripe_subscription_id or event.subscription_id
    if account.state_as_of is None and event.plan is not None:
        # The subscription's own events have not arrived; they replace this when they do.
        account.subscription_plan = event.plan
        account.subscription_status = account.subscription_status or "active"
    return True


async def _apply_invoice(session: AsyncSession, event: BillingEvent) -> bool:
    if event.invoice_id is None:
        return False
    status = PAID if event.type is StripeEventType.INVOICE_PAID else PAYMENT_FAILED
    invoice = await session.get(BillingInvoice, event.invoice_id, with_for_update=True)
    if invoice is None:
        session.add(
            BillingInvoice(
                id=event.invoice_id,
                tenant_id=uuid.UUID(event.tenant_id),
                status=status,
                amount_cents=event.invoice_amount_cents or 0,
                currency=(event.invoice_currency or "usd")[:3],
                hosted_invoice_url=event.invoice_url,
                stripe_created_at=event.created,
                status_as_of=event.created,
            )
        )
        await session.flush()
        return True
    if not _later(
        event.created, _INVOICE_RANK[status], invoice.status_as_of, _INVOICE_RANK[invoice.status]
    ):
        return False
    invoice.status = status
    invoice.status_as_of = event.created
    invoice.stripe_created_at = min(invoice.stripe_created_at, event.created)
    if event.invoice_amount_cents is not None:
        invoice.amount_cents = event.invoice_amount_cents
    invoice.hosted_invoice_url = event.invoice_url or invoice.hosted_invoice_url
    return True


async def apply_event(
    session: AsyncSession, event: BillingEvent, *, now: datetime, grace: timedelta
) -> BillingState:
    """Apply one Stripe event to its tenant, once; the caller's transaction commits it.

    Raises:
        TenantNotFound: The event names a tenant that does not exist.
    """
    tenant_id = uuid.UUID(event.tenant_id)
    if await session.scalar(select(Tenant.id).where(Tenant.id == tenant_id)) is None:
        raise TenantNotFound(event.tenant_id)
    account = await locked_account(session, tenant_id)
    inserted = await session.scalar(
        insert(BillingEventRow)
        .values(
            event_id=event.event_id,
            tenant_id=tenant_id,
            type=event.type.value,
            stripe_created_at=event.created,
            outcome=BillingEventOutcome.APPLIED.value,
        )
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(BillingEventRow.event_id)
    )
    if inserted is None:
        plan = await _follow_subscription(session, account, at=now, now=now)
        return BillingState(
            outcome=BillingEventOutcome.DUPLICATE, plan=plan, grace_until=account.grace_until
        )
    if event.type is StripeEventType.CHECKOUT_COMPLETED:
        changed = _apply_checkout(account, event)
    elif event.type in SUBSCRIPTION_EVENTS:
        changed = _apply_subscription(account, event)
    else:
        changed = await _apply_invoice(session, event)
        await _refresh_grace(session, account, grace)
    if not changed:
        row = await session.get(BillingEventRow, event.event_id)
        if row is not None:
            row.outcome = BillingEventOutcome.STALE.value
    await session.flush()
    plan = await _follow_subscription(session, account, at=event.created, now=now)
    outcome = BillingEventOutcome.APPLIED if changed else BillingEventOutcome.STALE
    return BillingState(outcome=outcome, plan=plan, grace_until=account.grace_until)


async def expire_grace(
    session: AsyncSession, tenant_id: uuid.UUID, *, now: datetime
) -> BillingState:
    """Move the tenant to Free if its grace period has ended with a payment still failed.

    Raises:
        TenantNotFound: The tenant was deleted.
    """
    if await session.scalar(select(Tenant.id).where(Tenant.id == tenant_id)) is None:
        raise TenantNotFound(str(tenant_id))
    account = await locked_account(session, tenant_id)
    at = account.grace_until if account.grace_until is not None else now
    plan = await _follow_subscription(session, account, at=min(at, now), now=now)
    return BillingState(plan=plan, grace_until=account.grace_until)


async def account_of(session: AsyncSession, tenant_id: uuid.UUID) -> BillingAccount | None:
    """The tenant's billing account, if it ever had one (read only)."""
    return await session.get(BillingAccount, tenant_id)


async def tenant_for_customer(session: AsyncSession, customer_id: str) -> uuid.UUID | None:
    """The tenant a Stripe customer belongs to, if we created or linked it."""
    return await session.scalar(
        select(BillingAccount.tenant_id).where(BillingAccount.stripe_customer_id == customer_id)
    )


async def link_customer(session: AsyncSession, tenant_id: uuid.UUID, customer_id: str) -> None:
    """Remember the tenant's Stripe customer (the caller commits)."""
    account = await locked_account(session, tenant_id)
    account.stripe_customer_id = customer_id
    await session.flush()


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
