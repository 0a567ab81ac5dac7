"""The operator's billing report: revenue, churn, plans, heavy users and failed payments.

* **MRR** is the list price of every tenant whose plan is paid *and* whose Stripe
  subscription is in force (a plan given with the CLI is not revenue).
* **Churn** over [since, until) is the share of tenants paying at `since` who moved to
  Free within the window (cancellation or an expired grace period), from the plan history.
* **Top tenants** are ranked by provider dollars in the window (the cost ledger), with
  their generated videos and seconds.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.billing.accounts import IN_FORCE_STATUSES, PAYMENT_FAILED
from reelflow.billing.plans import PLANS, PLANS_VERSION, plan_limits
from reelflow.billing.usage import AI_OPERATIONS
from schemas.billing import (
    AdminBillingReport,
    FailedPaymentView,
    PlanCount,
    TenantUsageView,
)
from schemas.billing_tables import BillingAccount, BillingInvoice, PlanChange
from schemas.generation_tables import Generation
from schemas.tables import LedgerEntry, Tenant


def _paid(plan: str) -> bool:
    return plan_limits(plan).price_usd_month > 0


async def _plans_at(
    session: AsyncSession, since: datetime, current: dict[uuid.UUID, str]
) -> dict[uuid.UUID, str]:
    """Each tenant's plan at `since`: the target of its last change before it, else the
    source of its first change after it, else its plan now."""
    changes = (
        await session.execute(
            select(
                PlanChange.tenant_id,
                PlanChange.changed_at,
                PlanChange.from_plan,
                PlanChange.to_plan,
            ).order_by(PlanChange.tenant_id, PlanChange.changed_at, PlanChange.id)
        )
    ).all()
    history: dict[uuid.UUID, list[tuple[datetime, str, str]]] = defaultdict(list)
    for tenant_id, at, before, after in changes:
        history[tenant_id].append((at, before, after))
    plans = dict(current)
    for tenant_id, rows in history.items():
        before_since = [r for r in rows if r[0] < since]
        if before_since:
            plans[tenant_id] = before_since[-1][2]
        else:
            plans[tenant_id] = rows[0][1]
    return plans


async def billing_report(
    session: AsyncSession, *, since: datetime, until: datetime, top: int = 10
) -> AdminBillingReport:
    """The report for [since, until); tenants created after `since` are not in the churn base."""
    tenants = (
        await session.execute(select(Tenant.id, Tenant.name, Tenant.plan, Tenant.created_at))
    ).all()
    names = {row[0]: row[1] for row in tenants}
    current = {row[0]: row[2] for row in tenants}
    accounts = {
        row[0]: row[1]
        for row in (
            await session.execute(
                select(BillingAccount.tenant_id, BillingAccount.subscription_status)
            )
        ).all()
    }
    subscribed = {t for t, status in accounts.items() if status in IN_FORCE_STATUSES}
    paying = [t for t, plan in current.items() if _paid(plan) and t in subscribed]
    mrr = sum((plan_limits(current[t]).price_usd_month for t in paying), Decimal(0))

    existed = {row[0] for row in tenants if row[3] < since}
    at_start = await _plans_at(session, since, current)
    paying_at_start = {t for t in existed if _paid(at_start.get(t, "free"))}
    churned_rows = (
        await session.execute(
            select(PlanChange.tenant_id, PlanChange.to_plan).where(
                PlanChange.changed_at >= since, PlanChange.changed_at < until
            )
        )
    ).all()
    churned = {t for t, to_plan in churned_rows if t in paying_at_start and not _paid(to_plan)}

    distribution = Counter(plan_limits(plan).name for plan in current.values())
    spend = (
        await session.execute(
            select(
                LedgerEntry.tenant_id,
                func.sum(LedgerEntry.cost_usd).filter(LedgerEntry.operation.in_(AI_OPERATIONS)),
                func.sum(LedgerEntry.cost_usd),
            )
            .where(LedgerEntry.created_at >= since, LedgerEntry.created_at < until)
            .group_by(LedgerEntry.tenant_id)
        )
    ).all()
    generated = {
        row[0]: (int(row[1] or 0), int(row[2] or 0))
        for row in (
            await session.execute(
                select(Generation.tenant_id, func.count(), func.sum(Generation.duration_s))
                .where(Generation.created_at >= since, Generation.created_at < until)
                .group_by(Generation.tenant_id)
            )
        ).all()
    }
    ranked = sorted(
        {*(row[0] for row in spend), *generated},
        key=lambda t: (
            -next((Decimal(r[2] or 0) for r in spend if r[0] == t), Decimal(0)),
            -generated.get(t, (0, 0))[1],
            str(t),
        ),
    )[:top]
    ai_by_tenant = {row[0]: Decimal(row[1] or 0) for row in spend}
    top_tenants = [
        TenantUsageView(
            tenant_id=str(t),
            name=names.get(t, ""),
            plan=plan_limits(current.get(t, "free")).name,
            ai_usd=float(ai_by_tenant.get(t, Decimal(0))),
            videos=generated.get(t, (0, 0))[0],
            generated_seconds=generated.get(t, (0, 0))[1],
        )
        for t in ranked
        if t in names
    ]
    failed = (
        await session.execute(
            select(BillingInvoice, BillingAccount.grace_until)
            .join(
                BillingAccount, BillingAccount.tenant_id == BillingInvoice.tenant_id, isouter=True
            )
            .where(BillingInvoice.status == PAYMENT_FAILED)
            .order_by(BillingInvoice.status_as_of.desc())
            .limit(100)
        )
    ).all()
    return AdminBillingReport(
        since=since,
        until=until,
        plans_version=PLANS_VERSION,
        mrr_usd=float(mrr),
        paying_tenants=len(paying),
        paying_at_start=len(paying_at_start),
        churned_tenants=len(churned),
        churn_rate=len(churned) / len(paying_at_start) if paying_at_start else 0.0,
        plan_distribution=[PlanCount(plan=p, tenants=distribution.get(p, 0)) for p in PLANS],
        top_tenants=top_tenants,
        failed_payments=[
            FailedPaymentView(
                tenant_id=str(invoice.tenant_id),
                name=names.get(invoice.tenant_id, ""),
                invoice_id=invoice.id,
                amount=invoice.amount_cents / 100,
                currency=invoice.currency,
                failed_at=invoice.status_as_of,
                grace_until=grace_until,
            )
            for invoice, grace_until in failed
        ],
    )
