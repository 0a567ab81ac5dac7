"""Billing accounts, Stripe events and invoices, plan history, metered usage.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_QUANTITY = sa.Numeric(20, 6)


def _tenant_fk(*, primary_key: bool = False, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(
        "tenant_id",
        UUID(as_uuid=True),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        primary_key=primary_key,
        nullable=nullable,
    )


def _now(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "billing_accounts",
        _tenant_fk(primary_key=True),
        sa.Column("stripe_customer_id", sa.String(255), nullable=True, unique=True),
        sa.Column("stripe_subscription_id", sa.String(255), nullable=True),
        sa.Column("subscription_plan", sa.String(40), nullable=True),
        sa.Column("subscription_status", sa.String(40), nullable=True),
        sa.Column("billing_anchor_day", sa.Integer(), nullable=True),
        sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("grace_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state_as_of", sa.DateTime(timezone=True), nullable=True),
        _now("updated_at"),
    )
    op.create_table(
        "billing_events",
        sa.Column("event_id", sa.String(255), primary_key=True),
        _tenant_fk(nullable=True),
        sa.Column("type", sa.String(80), nullable=False),
        sa.Column("stripe_created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        _now("applied_at"),
    )
    op.create_index(
        "ix_billing_events_tenant_created", "billing_events", ["tenant_id", "stripe_created_at"]
    )
    op.create_table(
        "billing_invoices",
        sa.Column("id", sa.String(255), primary_key=True),
        _tenant_fk(),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("hosted_invoice_url", sa.Text(), nullable=True),
        sa.Column("stripe_created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_as_of", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_billing_invoices_tenant_created", "billing_invoices", ["tenant_id", "stripe_created_at"]
    )
    op.create_table(
        "plan_changes",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        _tenant_fk(),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_plan", sa.String(40), nullable=False),
        sa.Column("to_plan", sa.String(40), nullable=False),
        sa.Column("reason", sa.String(40), nullable=False),
    )
    op.create_index("ix_plan_changes_tenant_changed", "plan_changes", ["tenant_id", "changed_at"])
    op.create_table(
        "meter_usage",
        _tenant_fk(primary_key=True),
        sa.Column("meter", sa.String(40), primary_key=True),
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("used", _QUANTITY, nullable=False),
        sa.Column("reserved", _QUANTITY, nullable=False),
        _now("updated_at"),
    )
    op.create_table(
        "meter_reservations",
        sa.Column("key", sa.String(200), primary_key=True),
        _tenant_fk(),
        sa.Column("meter", sa.String(40), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("amount", _QUANTITY, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        _now("created_at"),
        _now("updated_at"),
    )
    op.create_index("ix_meter_reservations_tenant_id", "meter_reservations", ["tenant_id"])


def downgrade() -> None:
    for table in (
        "meter_reservations",
        "meter_usage",
        "plan_changes",
        "billing_invoices",
        "billing_events",
        "billing_accounts",
    ):
        op.drop_table(table)
