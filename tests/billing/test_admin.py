"""The operator's report: MRR from subscriptions in force, churn from the plan history."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from reelflow.billing import accounts
from reelflow.billing.admin import billing_report
from reelflow.billing.commands import admin_app
from reelflow.billing.commands import app as billing_app
from reelflow.core.db import SessionFactory
from schemas.billing_tables import BillingAccount, BillingInvoice
from schemas.tables import Tenant

START = datetime(2026, 10, 1, tzinfo=UTC)


async def tenant_on(sessions: SessionFactory, plan: str, *, status: str | None) -> uuid.UUID:
    tenant_id = uuid.uuid4()
    async with sessions.begin() as session:
        session.add(
            Tenant(
                id=tenant_id, name=f"t-{plan}", plan="free", created_at=START - timedelta(days=40)
            )
        )
        await session.flush()
        await accounts.set_plan(
            session, tenant_id, plan, reason="subscription", at=START - timedelta(days=30)
        )
        if status is not None:
            session.add(
                BillingAccount(
                    tenant_id=tenant_id, subscription_plan=plan, subscription_status=status
                )
            )
    return tenant_id


async def test_mrr_counts_subscriptions_in_force_and_churn_counts_paying_tenants_lost(
    sessions: SessionFactory,
) -> None:
    pro = await tenant_on(sessions, "pro", status="active")
    premium = await tenant_on(sessions, "premium", status="past_due")
    await tenant_on(sessions, "agency", status=None)  # comped with the CLI: not revenue
    leaver = await tenant_on(sessions, "premium", status="active")
    async with sessions.begin() as session:
        await accounts.set_plan(
            session, leaver, "free", reason="canceled", at=START + timedelta(days=3)
        )
        account = await session.get(BillingAccount, leaver)
        assert account is not None
        account.subscription_status = "canceled"
        session.add(
            BillingInvoice(
                id=f"in_{uuid.uuid4().hex}",
                tenant_id=premium,
                status="payment_failed",
                amount_cents=2900,
                currency="usd",
                stripe_created_at=START + timedelta(days=5),
                status_as_of=START + timedelta(days=5),
            )
        )
    async with sessions() as session:
        report = await billing_report(session, since=START, until=START + timedelta(days=30))
    assert report.mrr_usd == 149 + 29
    assert report.paying_tenants == 2
    assert (report.churned_tenants, report.paying_at_start) == (1, 4)
    assert report.churn_rate == pytest.approx(0.25)
    counts = {row.plan: row.tenants for row in report.plan_distribution}
    assert counts["agency"] == 1 and counts["pro"] == 1
    assert [f.tenant_id for f in report.failed_payments] == [str(premium)]
    assert str(pro) not in {f.tenant_id for f in report.failed_payments}


def test_the_cli_sets_plans_and_prints_the_report(
    sessions: SessionFactory, migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", migrated_url)
    runner = CliRunner()
    created = runner.invoke(billing_app, ["plan", str(uuid.uuid4()), "pro"])
    assert created.exit_code == 1 and "no tenant" in created.output
    unknown = runner.invoke(billing_app, ["plan", str(uuid.uuid4()), "platinum"])
    assert unknown.exit_code == 1 and "unknown plan" in unknown.output
    report = runner.invoke(admin_app, ["billing", "--json"])
    assert report.exit_code == 0, report.output
    assert "mrr_usd" in json.loads(report.output)
    table = runner.invoke(billing_app, ["plans"])
    assert table.exit_code == 0 and "agency" in table.output
