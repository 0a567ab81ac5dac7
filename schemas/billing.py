"""Billing contracts: the API's plan, usage and admin views, and the billing workflow's payloads."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

BILLING_WORKFLOW_ID_PREFIX = "billing-"
STRIPE_EVENT_SIGNAL = "stripe_event"
"""The billing workflow's signal carrying one `BillingEvent`."""


def billing_workflow_id(tenant_id: str) -> str:
    """One billing workflow per tenant: every Stripe event of a tenant goes through it in turn."""
    return f"{BILLING_WORKFLOW_ID_PREFIX}{tenant_id}"


class StripeEventType(StrEnum):
    """Stripe events that change a tenant's billing; other types are acknowledged, ignored."""

    CHECKOUT_COMPLETED = "checkout.session.completed"
    SUBSCRIPTION_CREATED = "customer.subscription.created"
    SUBSCRIPTION_UPDATED = "customer.subscription.updated"
    SUBSCRIPTION_DELETED = "customer.subscription.deleted"
    INVOICE_PAID = "invoice.paid"
    INVOICE_PAYMENT_FAILED = "invoice.payment_failed"


class BillingEventOutcome(StrEnum):
    APPLIED = "applied"
    STALE = "stale"
    """Older than the state already held (a late or re-sent delivery): recorded, no effect."""
    DUPLICATE = "duplicate"
    """The event id was applied before."""


class BillingEvent(BaseModel):
    """A verified Stripe event reduced to what billing needs; the workflow carries this.

    Attributes:
        event_id: Stripe's `evt_…` id, the key that makes applying exactly-once.
        created: The event's own timestamp; subscription and invoice states are ordered by it.
        plan: The plan the subscription is for (from its price, else its metadata).
        anchor_day: Day of month of the subscription's billing cycle anchor.
    """

    event_id: str = Field(min_length=1, max_length=255)
    type: StripeEventType
    created: datetime
    tenant_id: str
    customer_id: str | None = None
    subscription_id: str | None = None
    subscription_status: str | None = None
    plan: str | None = None
    anchor_day: int | None = Field(default=None, ge=1, le=31)
    current_period_end: datetime | None = None
    invoice_id: str | None = None
    invoice_amount_cents: int | None = None
    invoice_currency: str | None = None
    invoice_url: str | None = None


class BillingWorkflowInput(BaseModel):
    """A tenant's billing workflow; `seen` carries applied event ids across continue-as-new."""

    tenant_id: str
    seen: list[str] = Field(default_factory=list)


class ApplyBillingEventInput(BaseModel):
    event: BillingEvent


class BillingState(BaseModel):
    """What the workflow needs to know after a step: the plan and when a grace period ends."""

    outcome: BillingEventOutcome = BillingEventOutcome.APPLIED
    plan: str
    grace_until: datetime | None = None


class ExpireGraceInput(BaseModel):
    tenant_id: str


# --- API --------------------------------------------------------------------------------------


class CheckoutRequest(BaseModel):
    plan: str = Field(min_length=1, max_length=40, description="A paid plan, e.g. `premium`.")


class RedirectUrl(BaseModel):
    url: str


class PeriodView(BaseModel):
    name: str
    start: datetime
    end: datetime


class LimitView(BaseModel):
    """Usage of one limit; `limit` null means unlimited."""

    name: str
    unit: str
    limit: float | None
    used: float
    reserved: float
    fraction: float
    warning: str | None = None


class InvoiceView(BaseModel):
    id: str
    status: str
    amount: float
    currency: str
    created_at: datetime
    url: str | None = None


class BillingView(BaseModel):
    """`GET /v1/billing`: the plan, the period, usage against every limit, and invoices."""

    plan: str
    price_usd_month: float
    billing_enabled: bool
    subscription_status: str | None
    grace_until: datetime | None
    upgrade_to: str | None
    period: PeriodView
    limits: list[LimitView]
    warnings: list[str]
    invoices: list[InvoiceView]


class PlanCount(BaseModel):
    plan: str
    tenants: int


class TenantUsageView(BaseModel):
    tenant_id: str
    name: str
    plan: str
    ai_usd: float
    videos: int
    generated_seconds: int


class FailedPaymentView(BaseModel):
    tenant_id: str
    name: str
    invoice_id: str
    amount: float
    currency: str
    failed_at: datetime
    grace_until: datetime | None


class AdminBillingReport(BaseModel):
    """`GET /v1/admin/billing`: revenue, churn, plans, heavy users and payments that failed."""

    since: datetime
    until: datetime
    plans_version: str
    mrr_usd: float
    paying_tenants: int
    paying_at_start: int
    churned_tenants: int
    churn_rate: float
    plan_distribution: list[PlanCount]
    top_tenants: list[TenantUsageView]
    failed_payments: list[FailedPaymentView]
