"""Usage against every limit of a tenant's plan, per billing period.

**Periods.** A period runs from the tenant's billing anchor (the day of month its
subscription started; on Free, the day the tenant was created) to the same day next month,
clamped to short months as Stripe does (an anchor on the 31st starts February's period on
the 28th). A period is named by the month it starts in, ``"YYYY-MM"``: with an anchor on
the 1st that is the calendar month, and every period has a different name.

**What is counted where.** Each limit is counted from where the truth already is, so no
number can drift from the records it describes:

========================= ============================================================
limit                     counted from
========================= ============================================================
videos per month          ``meter_usage`` (meter ``videos``), reserved per generation
generated seconds         ``quota_usage`` (the generation pipeline's own rows)
AI credits (dollars)      the cost ledger's chat and analysis rows in the period, plus
                          dollars reserved by calls still running (``ai_credits_usd``)
ingest minutes            durations of uploaded and imported videos created in the period
storage                   bytes of the tenant's stored videos (declared size while uploading)
projects                  the tenant's projects
========================= ============================================================

**Reserve, then settle or release.** Metered work reserves before it starts, keyed by the
work's id (so a retried request reserves once) with the tenant's usage row locked
(``SELECT … FOR UPDATE``: two requests never both take the last unit), and settles or
releases after. Live-counted limits (storage, ingest minutes, projects) are admitted under a
per-tenant transaction lock instead: the row the work writes *is* its reservation.
"""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.billing.plans import (
    DEFAULT_PLAN,
    WARNING_FRACTION,
    PlanLimits,
    plan_limits,
    upgrade_path,
)
from reelflow.core.errors import DomainError
from schemas.billing_tables import BillingAccount, MeterReservation, MeterUsage
from schemas.discover_tables import Project
from schemas.failures import FailureCode
from schemas.generation_tables import QuotaUsage
from schemas.tables import LedgerEntry, Tenant, Video

RESERVED = "reserved"
COMMITTED = "committed"
RELEASED = "released"

AI_OPERATIONS = ("chat_input", "chat_output", "analysis_input", "analysis_output")
"""Ledger operations paid from AI credits: chat, insights and video analysis."""

INGESTED_ORIGINS = ("upload", "import")
_GB = Decimal(1024**3)


class Meter(StrEnum):
    """Every limit a plan sets that usage is counted against."""

    VIDEOS = "videos"
    GENERATED_SECONDS = "generated_seconds"
    STORAGE_GB = "storage_gb"
    INGEST_MINUTES = "ingest_minutes"
    AI_CREDITS_USD = "ai_credits_usd"
    PROJECTS = "projects"


_UNITS = {
    Meter.VIDEOS: "videos",
    Meter.GENERATED_SECONDS: "seconds",
    Meter.STORAGE_GB: "GB",
    Meter.INGEST_MINUTES: "minutes",
    Meter.AI_CREDITS_USD: "USD",
    Meter.PROJECTS: "projects",
}

MONTHLY_METERS = frozenset(
    {Meter.VIDEOS, Meter.GENERATED_SECONDS, Meter.INGEST_MINUTES, Meter.AI_CREDITS_USD}
)


def limit_of(plan: PlanLimits, meter: Meter) -> Decimal | None:
    """The plan's limit for `meter`; None means unlimited."""
    if meter is Meter.VIDEOS:
        return Decimal(plan.videos_per_month)
    if meter is Meter.GENERATED_SECONDS:
        return Decimal(plan.generated_seconds_per_month)
    if meter is Meter.STORAGE_GB:
        return plan.storage_gb
    if meter is Meter.INGEST_MINUTES:
        return Decimal(plan.ingest_minutes_per_month)
    if meter is Meter.AI_CREDITS_USD:
        return plan.ai_credits_usd_per_month
    return None if plan.projects is None else Decimal(plan.projects)


# --- periods -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """One billing period: [start, end), named by the month it starts in."""

    name: str
    start: datetime
    end: datetime


def _anchored(year: int, month: int, anchor_day: int) -> datetime:
    day = min(anchor_day, calendar.monthrange(year, month)[1])
    return datetime.combine(date(year, month, day), time(), tzinfo=UTC)


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def period_for(anchor_day: int, moment: datetime) -> Period:
    """The period containing `moment` for a tenant whose periods start on `anchor_day`.

    Raises:
        ValueError: `anchor_day` outside 1–31.
    """
    if not 1 <= anchor_day <= 31:
        raise ValueError(f"a billing anchor is a day of month (1–31), not {anchor_day}")
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    start = _anchored(utc.year, utc.month, anchor_day)
    if utc < start:
        start = _anchored(*_add_months(utc.year, utc.month, -1), anchor_day)
    end = _anchored(*_add_months(start.year, start.month, 1), anchor_day)
    return Period(f"{start.year:04d}-{start.month:02d}", start, end)


async def billing_anchor_day(session: AsyncSession, tenant_id: uuid.UUID) -> int:
    """The day of month the tenant's periods start on (Free: its creation day)."""
    anchor = await session.scalar(
        select(BillingAccount.billing_anchor_day).where(BillingAccount.tenant_id == tenant_id)
    )
    if anchor is not None:
        return int(anchor)
    created = await session.scalar(select(Tenant.created_at).where(Tenant.id == tenant_id))
    return created.astimezone(UTC).day if created is not None else 1


async def current_period(session: AsyncSession, tenant_id: uuid.UUID, now: datetime) -> Period:
    """The tenant's period containing `now`."""
    return period_for(await billing_anchor_day(session, tenant_id), now)


async def tenant_plan(session: AsyncSession, tenant_id: uuid.UUID) -> PlanLimits:
    """The plan the tenant is on now (Free for a tenant that no longer exists)."""
    name = await session.scalar(select(Tenant.plan).where(Tenant.id == tenant_id))
    return plan_limits(name or DEFAULT_PLAN)


# --- refusals and warnings ----------------------------------------------------------------


class QuotaExceeded(DomainError):
    """New work would take the tenant past one of its plan's limits (HTTP 402).

    Attributes:
        meter: The limit that was reached.
        plan: The tenant's plan.
        upgrade_to: The next plan up, or None on the top plan.
    """

    def __init__(self, message: str, *, meter: Meter, plan: str, upgrade_to: str | None) -> None:
        super().__init__(FailureCode.QUOTA_EXCEEDED, message)
        self.meter = meter
        self.plan = plan
        self.upgrade_to = upgrade_to


def _amount(value: Decimal) -> str:
    """`12.500000` → `12.5`; whole numbers without a point."""
    normalized = value.normalize()
    return f"{normalized:f}" if normalized == normalized.to_integral() else f"{value:.2f}"


def upgrade_hint(plan_name: str) -> str:
    """How to get more: the next plan up, or a word with us on the top plan."""
    nxt = upgrade_path(plan_name)
    if nxt is None:
        return "contact us for a larger limit"
    return f'upgrade to {nxt} (POST /v1/billing/checkout {{"plan": "{nxt}"}})'


@dataclass(frozen=True)
class LimitUsage:
    """Usage of one limit in one period (or now, for storage and projects)."""

    meter: Meter
    plan: str
    period: str
    limit: Decimal | None
    used: Decimal
    reserved: Decimal

    @property
    def unit(self) -> str:
        return _UNITS[self.meter]

    @property
    def taken(self) -> Decimal:
        """Used plus reserved: what new work cannot have."""
        return self.used + self.reserved

    @property
    def fraction(self) -> float:
        """Share of the limit taken (0 for unlimited, 1 for a zero limit); may pass 1."""
        if self.limit is None:
            return 0.0
        if self.limit <= 0:
            return 1.0
        return float(self.taken / self.limit)

    def warning(self) -> str | None:
        """A sentence once usage reaches 80 % of the limit, else None."""
        if self.limit is None or self.fraction < WARNING_FRACTION:
            return None
        when = f" in the period {self.period}" if self.meter in MONTHLY_METERS else ""
        return (
            f"{min(self.fraction, 9.99):.0%} of the {self.plan} plan's {self.meter.value} limit "
            f"is used ({_amount(self.taken)} of {_amount(self.limit)} {self.unit}{when}); "
            f"{upgrade_hint(self.plan)}"
        )

    def refusal(self, amount: Decimal) -> QuotaExceeded | None:
        """Why `amount` more cannot be admitted, or None when it fits."""
        if self.limit is None:
            return None
        left = self.limit - self.taken
        if amount <= left and not (amount == 0 and left <= 0):
            return None
        when = f" in the period {self.period}" if self.meter in MONTHLY_METERS else ""
        return QuotaExceeded(
            f"the {self.plan} plan's {self.meter.value} limit is reached: this needs "
            f"{_amount(amount)} {self.unit} but {_amount(max(Decimal(0), left))} of "
            f"{_amount(self.limit)} are left{when}; {upgrade_hint(self.plan)}",
            meter=self.meter,
            plan=self.plan,
            upgrade_to=upgrade_path(self.plan),
        )


# --- counting ------------------------------------------------------------------------------


async def _metered(
    session: AsyncSession, tenant_id: uuid.UUID, meter: Meter, period: str, *, lock: bool
) -> tuple[Decimal, Decimal]:
    if lock:
        await session.execute(
            insert(MeterUsage)
            .values(
                tenant_id=tenant_id,
                meter=meter.value,
                period=period,
                used=Decimal(0),
                reserved=Decimal(0),
            )
            .on_conflict_do_nothing(index_elements=["tenant_id", "meter", "period"])
        )
    query = select(MeterUsage.used, MeterUsage.reserved).where(
        MeterUsage.tenant_id == tenant_id,
        MeterUsage.meter == meter.value,
        MeterUsage.period == period,
    )
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return (Decimal(0), Decimal(0)) if row is None else (row[0], row[1])


async def _ai_dollars(session: AsyncSession, tenant_id: uuid.UUID, period: Period) -> Decimal:
    spent = await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.cost_usd), 0)).where(
            LedgerEntry.tenant_id == tenant_id,
            LedgerEntry.operation.in_(AI_OPERATIONS),
            LedgerEntry.created_at >= period.start,
            LedgerEntry.created_at < period.end,
        )
    )
    return Decimal(spent or 0)


async def _ingest_minutes(session: AsyncSession, tenant_id: uuid.UUID, period: Period) -> Decimal:
    seconds = await session.scalar(
        select(func.coalesce(func.sum(Video.duration_s), 0.0)).where(
            Video.tenant_id == tenant_id,
            Video.origin.in_(INGESTED_ORIGINS),
            Video.created_at >= period.start,
            Video.created_at < period.end,
        )
    )
    return (Decimal(str(seconds or 0)) / 60).quantize(Decimal("0.01"))


async def _storage_gb(session: AsyncSession, tenant_id: uuid.UUID) -> Decimal:
    stored = await session.scalar(
        select(
            func.coalesce(func.sum(func.coalesce(Video.size_bytes, Video.declared_size_bytes)), 0)
        ).where(Video.tenant_id == tenant_id)
    )
    return (Decimal(int(stored or 0)) / _GB).quantize(Decimal("0.000001"))


async def _projects(session: AsyncSession, tenant_id: uuid.UUID) -> Decimal:
    count = await session.scalar(
        select(func.count()).select_from(Project).where(Project.tenant_id == tenant_id)
    )
    return Decimal(int(count or 0))


async def limit_usage(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    plan: PlanLimits,
    meter: Meter,
    period: Period,
    lock: bool = False,
) -> LimitUsage:
    """Usage of one limit; `lock` takes the row lock a reservation needs."""
    reserved = Decimal(0)
    if meter is Meter.VIDEOS:
        used, reserved = await _metered(session, tenant_id, meter, period.name, lock=lock)
    elif meter is Meter.GENERATED_SECONDS:
        row = (
            await session.execute(
                select(QuotaUsage.used_seconds, QuotaUsage.reserved_seconds).where(
                    QuotaUsage.tenant_id == tenant_id, QuotaUsage.period == period.name
                )
            )
        ).first()
        used, reserved = (
            (Decimal(0), Decimal(0)) if row is None else (Decimal(row[0]), Decimal(row[1]))
        )
    elif meter is Meter.AI_CREDITS_USD:
        _, reserved = await _metered(session, tenant_id, meter, period.name, lock=lock)
        used = await _ai_dollars(session, tenant_id, period)
    elif meter is Meter.INGEST_MINUTES:
        used = await _ingest_minutes(session, tenant_id, period)
    elif meter is Meter.STORAGE_GB:
        used = await _storage_gb(session, tenant_id)
    else:
        used = await _projects(session, tenant_id)
    return LimitUsage(meter, plan.name, period.name, limit_of(plan, meter), used, reserved)


@dataclass(frozen=True)
class UsageSummary:
    """A tenant's plan, period and usage against every limit."""

    plan: PlanLimits
    period: Period
    limits: tuple[LimitUsage, ...]

    def warnings(self) -> list[str]:
        return [w for w in (limit.warning() for limit in self.limits) if w is not None]


async def usage_summary(session: AsyncSession, tenant_id: uuid.UUID, now: datetime) -> UsageSummary:
    """Usage against every limit of the tenant's plan, in its current period."""
    plan = await tenant_plan(session, tenant_id)
    period = await current_period(session, tenant_id, now)
    limits = [
        await limit_usage(session, tenant_id=tenant_id, plan=plan, meter=meter, period=period)
        for meter in Meter
    ]
    return UsageSummary(plan, period, tuple(limits))


def warning_header(warnings: Iterable[str]) -> str | None:
    """The `Quota-Warning` header value: the warnings joined, or None without any."""
    joined = " | ".join(warnings)
    # Headers are latin-1; our sentences are ASCII but a plan name could one day not be.
    return joined.encode("ascii", "replace").decode() or None


# --- reservations --------------------------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    """A reservation's outcome: usage after it, and whether this call created it."""

    usage: LimitUsage
    created: bool

    @property
    def warning(self) -> str | None:
        return self.usage.warning()


RESERVABLE = frozenset({Meter.VIDEOS, Meter.AI_CREDITS_USD})


async def reserve(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    meter: Meter,
    amount: Decimal,
    work_id: str,
    now: datetime,
    plan: PlanLimits | None = None,
) -> Hold:
    """Reserve `amount` of `meter` for the work `work_id`, inside the caller's transaction.

    Reserving again for the same work returns its reservation unchanged; a reservation
    released earlier (a failed attempt being retried) is taken again.

    Raises:
        QuotaExceeded: The amount does not fit in what is left of the limit.
        ValueError: A negative amount, or a meter that is counted live.
    """
    if amount < 0:
        raise ValueError("a reservation must not be negative")
    if meter not in RESERVABLE:
        raise ValueError(f"{meter.value} is counted from records; admit work with admit_media")
    plan = plan or await tenant_plan(session, tenant_id)
    key = f"{meter.value}:{work_id}"
    existing_period = await session.scalar(
        select(MeterReservation.period).where(MeterReservation.key == key)
    )
    period = await current_period(session, tenant_id, now)
    if existing_period is not None and existing_period != period.name:
        period = Period(existing_period, period.start, period.end)
    usage = await limit_usage(
        session, tenant_id=tenant_id, plan=plan, meter=meter, period=period, lock=True
    )
    state = await session.scalar(
        select(MeterReservation.state).where(MeterReservation.key == key).with_for_update()
    )
    if state in (RESERVED, COMMITTED):
        return Hold(usage, created=False)
    refusal = usage.refusal(amount)
    if refusal is not None:
        raise refusal
    await session.execute(
        update(MeterUsage)
        .where(
            MeterUsage.tenant_id == tenant_id,
            MeterUsage.meter == meter.value,
            MeterUsage.period == period.name,
        )
        .values(reserved=MeterUsage.reserved + amount)
    )
    await session.execute(
        insert(MeterReservation)
        .values(
            key=key,
            tenant_id=tenant_id,
            meter=meter.value,
            period=period.name,
            amount=amount,
            state=RESERVED,
        )
        .on_conflict_do_update(index_elements=["key"], set_={"amount": amount, "state": RESERVED})
    )
    after = LimitUsage(
        meter, plan.name, period.name, usage.limit, usage.used, usage.reserved + amount
    )
    return Hold(after, created=True)


async def _settle(session: AsyncSession, meter: Meter, work_id: str, *, keep: bool) -> bool:
    key = f"{meter.value}:{work_id}"
    found = (
        await session.execute(
            select(MeterReservation.tenant_id, MeterReservation.period).where(
                MeterReservation.key == key
            )
        )
    ).first()
    if found is None:
        return False
    where = (
        MeterUsage.tenant_id == found[0],
        MeterUsage.meter == meter.value,
        MeterUsage.period == found[1],
    )
    # Usage row first, then the reservation: the order `reserve` locks in, so no deadlock.
    await session.execute(select(MeterUsage.used).where(*where).with_for_update())
    row = (
        await session.execute(
            select(MeterReservation.state, MeterReservation.amount)
            .where(MeterReservation.key == key)
            .with_for_update()
        )
    ).one()
    if row[0] != RESERVED:
        return False
    amount = row[1]
    values = (
        {"reserved": MeterUsage.reserved - amount, "used": MeterUsage.used + amount}
        if keep
        else {"reserved": MeterUsage.reserved - amount}
    )
    await session.execute(update(MeterUsage).where(*where).values(**values))
    await session.execute(
        update(MeterReservation)
        .where(MeterReservation.key == key)
        .values(state=COMMITTED if keep else RELEASED)
    )
    return True


async def commit(session: AsyncSession, *, meter: Meter, work_id: str) -> bool:
    """Turn a reservation into usage. True if this call did it (False: already settled)."""
    return await _settle(session, meter, work_id, keep=True)


async def release(session: AsyncSession, *, meter: Meter, work_id: str) -> bool:
    """Give a reservation back. True if this call did it (False: already settled or absent)."""
    return await _settle(session, meter, work_id, keep=False)


# --- admission of live-counted work --------------------------------------------------------


async def _lock_tenant_admissions(session: AsyncSession, tenant_id: uuid.UUID) -> None:
    """Serialize admissions of one tenant until the transaction ends (other tenants run on)."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"reelflow-admission:{tenant_id}"},
    )


async def admit_media(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    incoming_bytes: int,
    now: datetime,
) -> list[str]:
    """Admit a new upload or import: storage and ingest minutes must have room.

    Call it in the transaction that writes the video row; the lock it takes is held until
    that commits, and the row (with its declared size) then counts as the reservation, so
    concurrent uploads cannot overshoot storage together. Ingest minutes are known only
    once the video is probed: a period at its limit admits nothing more, and the last video
    admitted may pass the limit by its own length.

    Returns:
        Warnings for limits at 80 % or more after this admission.

    Raises:
        QuotaExceeded: Storage would overflow, or the period's ingest minutes are used up.
    """
    await _lock_tenant_admissions(session, tenant_id)
    plan = await tenant_plan(session, tenant_id)
    period = await current_period(session, tenant_id, now)
    storage = await limit_usage(
        session, tenant_id=tenant_id, plan=plan, meter=Meter.STORAGE_GB, period=period
    )
    incoming_gb = (Decimal(max(0, incoming_bytes)) / _GB).quantize(Decimal("0.000001"))
    minutes = await limit_usage(
        session, tenant_id=tenant_id, plan=plan, meter=Meter.INGEST_MINUTES, period=period
    )
    for refusal in (storage.refusal(incoming_gb), minutes.refusal(Decimal(0))):
        if refusal is not None:
            raise refusal
    after = LimitUsage(
        Meter.STORAGE_GB,
        plan.name,
        period.name,
        storage.limit,
        storage.used + incoming_gb,
        Decimal(0),
    )
    return [w for w in (after.warning(), minutes.warning()) if w is not None]


async def admit_project(session: AsyncSession, *, tenant_id: uuid.UUID, now: datetime) -> list[str]:
    """Admit one more project (call it in the transaction that inserts it).

    Raises:
        QuotaExceeded: The plan's projects are all in use.
    """
    await _lock_tenant_admissions(session, tenant_id)
    plan = await tenant_plan(session, tenant_id)
    period = await current_period(session, tenant_id, now)
    projects = await limit_usage(
        session, tenant_id=tenant_id, plan=plan, meter=Meter.PROJECTS, period=period
    )
    refusal = projects.refusal(Decimal(1))
    if refusal is not None:
        raise refusal
    after = LimitUsage(
        Meter.PROJECTS, plan.name, period.name, projects.limit, projects.used + 1, Decimal(0)
    )
    warning = after.warning()
    return [] if warning is None else [warning]
