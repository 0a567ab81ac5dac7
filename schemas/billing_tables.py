"""Tables of plans, billing and metered usage (migration `0008`).

The plan table itself lives in code (`reelflow.billing.plans`); these rows hold only what
changes per tenant: its Stripe customer and subscription, the events already applied, its
invoices, its plan history (for MRR and churn) and its metered usage per period.

Declared on `schemas.tables.Base`, which imports this module at its end.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, Numeric, String, Text, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from schemas.tables import Base

Quantity = Numeric(20, 6)
"""Metered amounts: minutes, dollars, gigabytes or counts, exact to a millionth."""


class BillingAccount(Base):
    """A tenant's link to Stripe and the subscription state last applied to it."""

    __tablename__ = "billing_accounts"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255))
    subscription_plan: Mapped[str | None] = mapped_column(String(40))
    """The plan the subscription pays for; the tenant's plan follows it while it is in force."""
    subscription_status: Mapped[str | None] = mapped_column(String(40))
    """Stripe's status (``active``, ``past_due``, ``canceled`` …) of the latest state applied."""
    billing_anchor_day: Mapped[int | None] = mapped_column(Integer)
    """Day of month periods start on (the subscription's start); None: the tenant's creation day."""
    current_period_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    grace_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """Set by a failed payment: the paid plan is kept until then, then Free."""
    state_as_of: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """Stripe timestamp of the subscription state applied; older events cannot override it."""
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class BillingEvent(Base):
    """A Stripe event already handled: its id is the key that makes delivery exactly-once."""

    __tablename__ = "billing_events"
    __table_args__ = (Index("ix_billing_events_tenant_created", "tenant_id", "stripe_created_at"),)

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE")
    )
    type: Mapped[str] = mapped_column(String(80))
    stripe_created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str] = mapped_column(String(20))
    """``applied``, ``stale`` (older than the state already held) or ``ignored``."""
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BillingInvoice(Base):
    """A Stripe invoice as last reported (paid or failed), for `GET /v1/billing` and admin."""

    __tablename__ = "billing_invoices"
    __table_args__ = (
        Index("ix_billing_invoices_tenant_created", "tenant_id", "stripe_created_at"),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20))
    """``paid`` or ``payment_failed``."""
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    hosted_invoice_url: Mapped[str | None] = mapped_column(Text)
    stripe_created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status_as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """Timestamp of the event that set `status`, so an older event never overrides it."""


class PlanChange(Base):
    """Every change of a tenant's plan: MRR at any date and churn over a period come from here."""

    __tablename__ = "plan_changes"
    __table_args__ = (Index("ix_plan_changes_tenant_changed", "tenant_id", "changed_at"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    from_plan: Mapped[str] = mapped_column(String(40))
    to_plan: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(String(40))
    """``cli``, ``subscription``, ``canceled`` or ``grace_expired``."""


class MeterUsage(Base):
    """A tenant's use of one metered quantity in one period, locked on every change."""

    __tablename__ = "meter_usage"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    meter: Mapped[str] = mapped_column(String(40), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    used: Mapped[Decimal] = mapped_column(Quantity, default=Decimal(0))
    reserved: Mapped[Decimal] = mapped_column(Quantity, default=Decimal(0))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class MeterReservation(Base):
    """What one piece of work holds of a meter; keyed by the work, so retries reserve once."""

    __tablename__ = "meter_reservations"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    """``<meter>:<work id>``."""
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    meter: Mapped[str] = mapped_column(String(40))
    period: Mapped[str] = mapped_column(String(7))
    amount: Mapped[Decimal] = mapped_column(Quantity)
    state: Mapped[str] = mapped_column(String(20))
    """``reserved``, ``committed`` or ``released``."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
