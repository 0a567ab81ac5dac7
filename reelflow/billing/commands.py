"""`reelflow billing …` and `reelflow admin billing`: plans, usage and the operator's report.

Talks to the database directly (`DATABASE_URL`). With billing off these commands are how
plans are assigned; with billing on, Stripe's events set the plan and `billing plan`
is for comped accounts (a later subscription event overrides it). Refusals are one line
on stderr and exit status 1.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.billing import accounts
from reelflow.billing.admin import billing_report
from reelflow.billing.plans import PLANS, PLANS_VERSION, UnknownPlan
from reelflow.billing.usage import usage_summary
from reelflow.core.db import create_engine, session_factory
from reelflow.core.settings import SettingsError, load_settings

app = typer.Typer(help="Plans and usage of tenants.", no_args_is_help=True)
admin_app = typer.Typer(help="Operator reports.", no_args_is_help=True)


@admin_app.callback()
def _admin() -> None:
    """Operator reports (a group even with one command, so `admin billing` stays stable)."""


T = TypeVar("T")
_err = Console(stderr=True)
_out = Console()


def _fail(message: str) -> typer.Exit:
    _err.print(f"error: {message}", markup=False, highlight=False)
    return typer.Exit(1)


def _with_session(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise _fail(str(exc)) from None

    async def run() -> T:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with session_factory(engine).begin() as session:
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except DBAPIError as exc:
        raise _fail(f"the database refused: {type(exc.orig).__name__}") from None


def _tenant_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise _fail(f"not a tenant id: {raw!r}") from None


@app.command("plans")
def plans_command() -> None:
    """The plan table and its limits."""
    table = Table(title=f"plans (version {PLANS_VERSION})")
    table.add_column("plan", no_wrap=True, min_width=7)
    for column in ("$/month", "videos", "seconds", "storage GB", "ingest min", "AI $"):
        table.add_column(column)
    for column in ("projects", "runs", "req/10s"):
        table.add_column(column)
    for p in PLANS.values():
        table.add_row(
            p.name,
            str(p.price_usd_month),
            str(p.videos_per_month),
            str(p.generated_seconds_per_month),
            str(p.storage_gb),
            str(p.ingest_minutes_per_month),
            str(p.ai_credits_usd_per_month),
            "unlimited" if p.projects is None else str(p.projects),
            str(p.concurrent_runs),
            str(p.requests_per_10s),
        )
    _out.print(table)


@app.command("plan")
def set_plan_command(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    plan: Annotated[str, typer.Argument(help=f"One of: {', '.join(PLANS)}.")],
) -> None:
    """Put a tenant on a plan; its limits change at once and nothing is deleted."""
    tenant_id = _tenant_id(tenant)

    async def work(session: AsyncSession) -> bool:
        return await accounts.set_plan(session, tenant_id, plan, reason="cli", at=datetime.now(UTC))

    try:
        changed = _with_session(work)
    except UnknownPlan as exc:
        raise _fail(str(exc)) from None
    except accounts.TenantNotFound:
        raise _fail(f"no tenant with id {tenant}") from None
    _out.print(f"{tenant}: {plan}" + ("" if changed else " (unchanged)"), markup=False)


@app.command("show")
def show_command(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A tenant's plan, period and usage against every limit."""
    tenant_id = _tenant_id(tenant)
    summary = _with_session(lambda s: usage_summary(s, tenant_id, datetime.now(UTC)))
    if as_json:
        rows = [
            {
                "limit": u.meter.value,
                "unit": u.unit,
                "max": None if u.limit is None else str(u.limit),
                "used": str(u.used),
                "reserved": str(u.reserved),
                "warning": u.warning(),
            }
            for u in summary.limits
        ]
        _out.print_json(
            data={"plan": summary.plan.name, "period": summary.period.name, "limits": rows}
        )
        return
    table = Table(title=f"{summary.plan.name} plan, period {summary.period.name}")
    for column in ("limit", "used", "reserved", "max"):
        table.add_column(column)
    for u in summary.limits:
        table.add_row(
            u.meter.value,
            f"{u.used:f}",
            f"{u.reserved:f}",
            "unlimited" if u.limit is None else f"{u.limit:f} {u.unit}",
        )
    _out.print(table)
    for warning in summary.warnings():
        _out.print(f"warning: {warning}", markup=False)


@admin_app.command("billing")
def admin_billing_command(
    days: Annotated[int, typer.Option(min=1, max=3660, help="Window: the last N days.")] = 30,
    top: Annotated[int, typer.Option(min=1, max=100, help="Top tenants shown.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """MRR, churn, plan distribution, top tenants by usage and failed payments."""
    until = datetime.now(UTC)
    since = until - timedelta(days=days)
    report = _with_session(lambda s: billing_report(s, since=since, until=until, top=top))
    if as_json:
        _out.print_json(report.model_dump_json())
        return
    _out.print(f"MRR: ${report.mrr_usd:,.2f} from {report.paying_tenants} paying tenants")
    _out.print(
        f"churn over {days} days: {report.churned_tenants} of {report.paying_at_start} "
        f"({report.churn_rate:.1%})"
    )
    plans = Table(title="plans")
    plans.add_column("plan")
    plans.add_column("tenants")
    for row in report.plan_distribution:
        plans.add_row(row.plan, str(row.tenants))
    _out.print(plans)
    heavy = Table(title="top tenants by usage")
    for column in ("tenant", "plan", "AI $", "videos", "seconds"):
        heavy.add_column(column)
    for t in report.top_tenants:
        heavy.add_row(t.name, t.plan, f"{t.ai_usd:.2f}", str(t.videos), str(t.generated_seconds))
    _out.print(heavy)
    failed = Table(title="failed payments")
    for column in ("tenant", "invoice", "amount", "failed at", "grace until"):
        failed.add_column(column)
    for f in report.failed_payments:
        failed.add_row(
            f.name,
            f.invoice_id,
            f"{f.amount:.2f} {f.currency}",
            f.failed_at.isoformat(timespec="minutes"),
            f.grace_until.isoformat(timespec="minutes") if f.grace_until else "-",
        )
    _out.print(failed)
