"""The generation quota: reserve before a provider is called, settle or release after.

Each plan in the plan table (`reelflow.billing.plans`) gives a tenant, per billing period
(monthly, from its billing anchor; see `reelflow.billing.usage`):

* **generated videos** and **generated video-seconds**, hard limits: a request that would
  go over either is refused with ``quota_exceeded`` before anything is submitted; a
  request that brings usage to 80 % or more gets a warning in the API response;
* a **budget in dollars**, a soft limit: a generation whose estimate is over what is
  left of it waits for approval (see the generation workflow).

Plan names used before the plan table still resolve: ``creator`` is now ``premium`` and
``enterprise`` is ``agency`` (`reelflow.billing.plans.canonical_plan_name`).

**Atomicity.** Every change locks the tenant's `quota_usage` row for the period
(``SELECT … FOR UPDATE``) in the caller's transaction, then the videos meter's row, so two
concurrent requests can never both take the last seconds or the last video.
**Idempotency.** A reservation is keyed by generation id: reserving again returns the
existing reservation; commit and release act once, on seconds and videos alike.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.billing import usage as billing_usage
from reelflow.billing.plans import (
    LEGACY_PLAN_NAMES,
    PlanLimits,
    canonical_plan_name,
    plan_limits,
)
from reelflow.billing.plans import PLANS as PLAN_TABLE
from reelflow.billing.plans import WARNING_FRACTION as WARNING_FRACTION
from reelflow.billing.plans import UnknownPlan as UnknownPlan
from reelflow.billing.usage import Meter, period_for
from schemas.generation_tables import QuotaReservation, QuotaUsage

RESERVED = "reserved"
COMMITTED = "committed"
RELEASED = "released"


@dataclass(frozen=True)
class Plan:
    """What a plan allows generation per period (a view of the plan table).

    Attributes:
        name: The plan's name in the plan table.
        monthly_video_seconds: Hard limit on generated seconds.
        monthly_budget_usd: Generation dollars that need no approval.
        monthly_videos: Hard limit on generated videos.
    """

    name: str
    monthly_video_seconds: int
    monthly_budget_usd: Decimal
    monthly_videos: int = 0

    @classmethod
    def of(cls, limits: PlanLimits) -> Plan:
        return cls(
            limits.name,
            limits.generated_seconds_per_month,
            limits.generation_budget_usd,
            limits.videos_per_month,
        )


PLANS: MappingProxyType[str, Plan] = MappingProxyType(
    {
        **{name: Plan.of(limits) for name, limits in PLAN_TABLE.items()},
        **{old: Plan.of(PLAN_TABLE[new]) for old, new in LEGACY_PLAN_NAMES.items()},
    }
)
"""Every plan by name, former names (``creator``, ``enterprise``) included."""


def plan_named(name: str) -> Plan:
    """The plan called `name` (a former plan name gives the plan it now means).

    Raises:
        UnknownPlan: no plan has that name.
    """
    return PLANS[canonical_plan_name(name)]


def period_of(moment: datetime, anchor_day: int = 1) -> str:
    """The name of the billing period containing `moment` (see `reelflow.billing.usage`).

    With the default anchor, the calendar month in UTC, e.g. ``"2026-11"``.
    """
    return period_for(anchor_day, moment).name


class QuotaExceeded(Exception):
    """The request would take the tenant over its plan's generated videos or video-seconds.

    Attributes:
        code: Always ``quota_exceeded``.
        message: How much is needed and how much is left, for the caller.
    """

    code = "quota_exceeded"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class QuotaSnapshot:
    """A tenant's usage in one period, against its plan."""

    plan: Plan
    period: str
    used_seconds: int
    reserved_seconds: int
    spent_usd: Decimal
    reserved_usd: Decimal

    @property
    def taken_seconds(self) -> int:
        """Used plus reserved: what new requests cannot have."""
        return self.used_seconds + self.reserved_seconds

    @property
    def fraction(self) -> float:
        """Share of the quota taken, 0.0–1.0 (1.0 for a zero quota)."""
        limit = self.plan.monthly_video_seconds
        return 1.0 if limit <= 0 else min(1.0, self.taken_seconds / limit)

    @property
    def budget_left_usd(self) -> Decimal:
        """Dollars of the monthly budget not yet spent or reserved (never negative)."""
        return max(Decimal(0), self.plan.monthly_budget_usd - self.spent_usd - self.reserved_usd)

    def warning(self) -> str | None:
        """A sentence for the API response once usage reaches 80 %, else None."""
        if self.fraction < WARNING_FRACTION:
            return None
        return (
            f"{self.fraction:.0%} of the {self.plan.name} plan's generation quota is used "
            f"or reserved this month ({self.taken_seconds} of "
            f"{self.plan.monthly_video_seconds} video-seconds in {self.period})"
        )

    def refusal(self, seconds: int) -> str | None:
        """Why `seconds` more cannot be reserved, or None when they fit."""
        left = self.plan.monthly_video_seconds - self.taken_seconds
        if seconds <= left:
            return None
        return (
            f"this generation needs {seconds} video-seconds but only {max(0, left)} of the "
            f"{self.plan.name} plan's {self.plan.monthly_video_seconds} per month are left "
            f"in the period {self.period}; {billing_usage.upgrade_hint(self.plan.name)}"
        )


@dataclass(frozen=True)
class Reservation:
    """The outcome of `reserve`.

    Attributes:
        snapshot: Usage after the reservation.
        budget_left_usd: Dollars of the budget left *before* this reservation, which is
            what its estimate is compared with for approval.
        state: ``reserved`` or ``committed`` (an earlier reservation of the same id).
        created: False when the generation already held a reservation.
    """

    snapshot: QuotaSnapshot
    budget_left_usd: Decimal
    state: str
    created: bool
    videos_warning: str | None = None

    @property
    def warning(self) -> str | None:
        """The seconds warning, else the videos one (each from 80 % of its limit)."""
        return self.snapshot.warning() or self.videos_warning


async def snapshot(
    session: AsyncSession, *, tenant_id: uuid.UUID, plan: Plan, period: str
) -> QuotaSnapshot:
    """Usage of a period without locking anything (for estimates and reports)."""
    row = (
        await session.execute(
            select(
                QuotaUsage.used_seconds,
                QuotaUsage.reserved_seconds,
                QuotaUsage.spent_usd,
                QuotaUsage.reserved_usd,
            ).where(QuotaUsage.tenant_id == tenant_id, QuotaUsage.period == period)
        )
    ).first()
    if row is None:
        return QuotaSnapshot(plan, period, 0, 0, Decimal(0), Decimal(0))
    return QuotaSnapshot(plan, period, row[0], row[1], row[2], row[3])


async def _locked_usage(
    session: AsyncSession, *, tenant_id: uuid.UUID, plan: Plan, period: str
) -> QuotaSnapshot:
    """The period's usage row, created if missing, locked until the transaction ends."""
    await session.execute(
        insert(QuotaUsage)
        .values(
            tenant_id=tenant_id,
            period=period,
            used_seconds=0,
            reserved_seconds=0,
            spent_usd=Decimal(0),
            reserved_usd=Decimal(0),
        )
        .on_conflict_do_nothing(index_elements=["tenant_id", "period"])
    )
    row = (
        await session.execute(
            select(
                QuotaUsage.used_seconds,
                QuotaUsage.reserved_seconds,
                QuotaUsage.spent_usd,
                QuotaUsage.reserved_usd,
            )
            .where(QuotaUsage.tenant_id == tenant_id, QuotaUsage.period == period)
            .with_for_update()
        )
    ).one()
    return QuotaSnapshot(plan, period, row[0], row[1], row[2], row[3])


async def reserve(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    plan: Plan,
    generation_id: uuid.UUID,
    seconds: int,
    cost_usd: Decimal,
    now: datetime,
) -> Reservation:
    """Reserve `seconds` and `cost_usd` for a generation, inside the caller's transaction.

    Reserving again for the same generation returns its reservation unchanged; a
    reservation released earlier (a failed run being retried) is taken again.

    Raises:
        QuotaExceeded: The seconds do not fit in what is left of the month's quota.
        ValueError: Negative seconds or cost.
    """
    if seconds < 0 or cost_usd < 0:
        raise ValueError("seconds and cost must not be negative")
    existing_period = await session.scalar(
        select(QuotaReservation.period).where(QuotaReservation.generation_id == generation_id)
    )
    period = existing_period or (await billing_usage.current_period(session, tenant_id, now)).name
    usage = await _locked_usage(session, tenant_id=tenant_id, plan=plan, period=period)
    existing = (
        await session.execute(
            select(QuotaReservation.state, QuotaReservation.seconds, QuotaReservation.cost_usd)
            .where(QuotaReservation.generation_id == generation_id)
            .with_for_update()
        )
    ).first()
    if existing is not None and existing[0] in (RESERVED, COMMITTED):
        # Budget left before this generation's own reservation, as on the first call.
        own = existing[2] if existing[0] == RESERVED else Decimal(0)
        before = plan.monthly_budget_usd - usage.spent_usd - (usage.reserved_usd - own)
        return Reservation(usage, max(Decimal(0), before), existing[0], created=False)
    refusal = usage.refusal(seconds)
    if refusal is not None:
        raise QuotaExceeded(refusal)
    try:
        videos = await billing_usage.reserve(
            session,
            tenant_id=tenant_id,
            meter=Meter.VIDEOS,
            amount=Decimal(1),
            work_id=str(generation_id),
            now=now,
            plan=plan_limits(plan.name),
        )
    except billing_usage.QuotaExceeded as exc:
        raise QuotaExceeded(exc.message) from None
    budget_left = usage.budget_left_usd
    await session.execute(
        update(QuotaUsage)
        .where(QuotaUsage.tenant_id == tenant_id, QuotaUsage.period == period)
        .values(
            reserved_seconds=QuotaUsage.reserved_seconds + seconds,
            reserved_usd=QuotaUsage.reserved_usd + cost_usd,
        )
    )
    await session.execute(
        insert(QuotaReservation)
        .values(
            generation_id=generation_id,
            tenant_id=tenant_id,
            period=period,
            seconds=seconds,
            cost_usd=cost_usd,
            state=RESERVED,
        )
        .on_conflict_do_update(
            index_elements=["generation_id"],
            set_={"seconds": seconds, "cost_usd": cost_usd, "state": RESERVED},
        )
    )
    after = QuotaSnapshot(
        plan,
        period,
        usage.used_seconds,
        usage.reserved_seconds + seconds,
        usage.spent_usd,
        usage.reserved_usd + cost_usd,
    )
    return Reservation(after, budget_left, RESERVED, created=True, videos_warning=videos.warning)


async def _lock_reservation(
    session: AsyncSession, generation_id: uuid.UUID
) -> tuple[uuid.UUID, str, str, int, Decimal] | None:
    """Lock the usage row, then the reservation (always in that order: no deadlocks)."""
    found = (
        await session.execute(
            select(QuotaReservation.tenant_id, QuotaReservation.period).where(
                QuotaReservation.generation_id == generation_id
            )
        )
    ).first()
    if found is None:
        return None
    tenant_id, period = found[0], found[1]
    await session.execute(
        select(QuotaUsage.tenant_id)
        .where(QuotaUsage.tenant_id == tenant_id, QuotaUsage.period == period)
        .with_for_update()
    )
    row = (
        await session.execute(
            select(QuotaReservation.state, QuotaReservation.seconds, QuotaReservation.cost_usd)
            .where(QuotaReservation.generation_id == generation_id)
            .with_for_update()
        )
    ).one()
    return tenant_id, period, row[0], row[1], row[2]


async def commit(session: AsyncSession, *, generation_id: uuid.UUID, cost_usd: Decimal) -> bool:
    """Turn a generation's reservation into usage: its seconds and the real `cost_usd`.

    Returns:
        True if this call settled it; False if it was already settled, released or absent.
    """
    locked = await _lock_reservation(session, generation_id)
    if locked is None or locked[2] != RESERVED:
        return False
    tenant_id, period, _, seconds, reserved_usd = locked
    await session.execute(
        update(QuotaUsage)
        .where(QuotaUsage.tenant_id == tenant_id, QuotaUsage.period == period)
        .values(
            reserved_seconds=QuotaUsage.reserved_seconds - seconds,
            used_seconds=QuotaUsage.used_seconds + seconds,
            reserved_usd=QuotaUsage.reserved_usd - reserved_usd,
            spent_usd=QuotaUsage.spent_usd + cost_usd,
        )
    )
    await session.execute(
        update(QuotaReservation)
        .where(QuotaReservation.generation_id == generation_id)
        .values(state=COMMITTED, cost_usd=cost_usd)
    )
    await billing_usage.commit(session, meter=Meter.VIDEOS, work_id=str(generation_id))
    return True


async def release(session: AsyncSession, *, generation_id: uuid.UUID) -> bool:
    """Give a generation's reserved seconds and dollars back (a failure or a cancel).

    Returns:
        True if this call released it; False if it was already committed, released or absent.
    """
    locked = await _lock_reservation(session, generation_id)
    if locked is None or locked[2] != RESERVED:
        return False
    tenant_id, period, _, seconds, reserved_usd = locked
    await session.execute(
        update(QuotaUsage)
        .where(QuotaUsage.tenant_id == tenant_id, QuotaUsage.period == period)
        .values(
            reserved_seconds=QuotaUsage.reserved_seconds - seconds,
            reserved_usd=QuotaUsage.reserved_usd - reserved_usd,
        )
    )
    await session.execute(
        update(QuotaReservation)
        .where(QuotaReservation.generation_id == generation_id)
        .values(state=RELEASED)
    )
    await billing_usage.release(session, meter=Meter.VIDEOS, work_id=str(generation_id))
    return True
