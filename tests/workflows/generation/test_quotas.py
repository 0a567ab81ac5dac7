"""Quota reservations on PostgreSQL: atomic under concurrency, idempotent, settled once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.billing.usage import current_period
from reelflow.core.db import SessionFactory, session_factory
from reelflow.core.tenants import create_tenant
from reelflow.generation import quotas
from schemas.generation_tables import QuotaReservation

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
FREE = quotas.PLANS["free"]


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionFactory:
    return session_factory(engine)


async def new_tenant(sessions: SessionFactory) -> uuid.UUID:
    async with sessions.begin() as session:
        return (await create_tenant(session, name="quota")).tenant_id


async def reserve(
    sessions: SessionFactory,
    tenant_id: uuid.UUID,
    seconds: int,
    *,
    generation_id: uuid.UUID | None = None,
    cost: Decimal = Decimal(0),
    plan: quotas.Plan = FREE,
) -> quotas.Reservation:
    async with sessions.begin() as session:
        return await quotas.reserve(
            session,
            tenant_id=tenant_id,
            plan=plan,
            generation_id=generation_id or uuid.uuid4(),
            seconds=seconds,
            cost_usd=cost,
            now=NOW,
        )


async def usage(sessions: SessionFactory, tenant_id: uuid.UUID) -> quotas.QuotaSnapshot:
    async with sessions() as session:
        period = (await current_period(session, tenant_id, NOW)).name
        return await quotas.snapshot(session, tenant_id=tenant_id, plan=FREE, period=period)


def test_plans_follow_the_seed_tiers() -> None:
    assert {name: p.monthly_video_seconds for name, p in quotas.PLANS.items()} == {
        "free": 80,
        "premium": 800,
        "starter": 1200,
        "pro": 3200,
        "agency": 12000,
        # Names used before the plan table mean the plans that replaced them.
        "creator": 800,
        "enterprise": 12000,
    }
    assert quotas.period_of(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == "2026-12"
    with pytest.raises(ValueError, match="unknown plan"):
        quotas.plan_named("platinum")


async def test_warning_from_eighty_percent_and_refusal_past_the_limit(
    sessions: SessionFactory,
) -> None:
    tenant_id = await new_tenant(sessions)
    first = await reserve(sessions, tenant_id, 60)
    assert first.warning is None and first.snapshot.fraction == pytest.approx(0.75)
    second = await reserve(sessions, tenant_id, 4)
    assert second.warning is not None and "80% of the free plan" in second.warning
    with pytest.raises(quotas.QuotaExceeded) as refused:
        await reserve(sessions, tenant_id, 17)
    assert refused.value.code == "quota_exceeded"
    assert "needs 17 video-seconds but only 16" in refused.value.message
    # The refusal changed nothing; exactly what is left still fits.
    assert (await usage(sessions, tenant_id)).reserved_seconds == 64
    last = await reserve(sessions, tenant_id, 16)
    assert last.snapshot.fraction == 1.0


async def test_concurrent_reservations_never_overshoot_the_plan(
    sessions: SessionFactory,
) -> None:
    tenant_id = await new_tenant(sessions)
    results = await asyncio.gather(
        *(reserve(sessions, tenant_id, 8) for _ in range(14)), return_exceptions=True
    )
    granted = [r for r in results if isinstance(r, quotas.Reservation)]
    refused = [r for r in results if isinstance(r, quotas.QuotaExceeded)]
    assert (len(granted), len(refused)) == (10, 4), results
    assert (await usage(sessions, tenant_id)).reserved_seconds == 80


async def test_a_reservation_is_idempotent_and_settles_or_releases_once(
    sessions: SessionFactory,
) -> None:
    tenant_id = await new_tenant(sessions)
    kept, dropped = uuid.uuid4(), uuid.uuid4()
    plan = quotas.PLANS["creator"]
    first = await reserve(
        sessions, tenant_id, 8, generation_id=kept, cost=Decimal("0.80"), plan=plan
    )
    again = await reserve(
        sessions, tenant_id, 8, generation_id=kept, cost=Decimal("0.80"), plan=plan
    )
    assert first.created and not again.created
    assert again.budget_left_usd == first.budget_left_usd == Decimal(25)
    # On a plan without a budget, the repeated call (the workflow's, after the API's) must
    # see what the first one saw, or an over-budget generation would skip its approval.
    on_free, free_id = await new_tenant(sessions), uuid.uuid4()
    for _ in range(2):
        repeat = await reserve(sessions, on_free, 4, generation_id=free_id, cost=Decimal("0.4"))
        assert repeat.budget_left_usd == 0
    await reserve(sessions, tenant_id, 4, generation_id=dropped, cost=Decimal("0.40"), plan=plan)
    snapshot = await usage(sessions, tenant_id)
    assert (snapshot.reserved_seconds, snapshot.reserved_usd) == (12, Decimal("1.20"))

    async with sessions.begin() as session:
        assert await quotas.commit(session, generation_id=kept, cost_usd=Decimal("0.75"))
        assert not await quotas.commit(session, generation_id=kept, cost_usd=Decimal("0.75"))
        assert not await quotas.release(session, generation_id=kept)
        assert await quotas.release(session, generation_id=dropped)
        assert not await quotas.release(session, generation_id=dropped)
        assert not await quotas.release(session, generation_id=uuid.uuid4())
    snapshot = await usage(sessions, tenant_id)
    assert (snapshot.used_seconds, snapshot.reserved_seconds) == (8, 0)
    assert (snapshot.spent_usd, snapshot.reserved_usd) == (Decimal("0.75"), Decimal(0))

    # A released generation (a failed run) reserves again when it is retried.
    retried = await reserve(sessions, tenant_id, 4, generation_id=dropped, plan=plan)
    assert retried.created
    async with sessions() as session:
        row = await session.get(QuotaReservation, dropped)
    assert row is not None and row.state == "reserved"


async def test_the_budget_left_counts_spent_and_reserved_dollars(
    sessions: SessionFactory,
) -> None:
    tenant_id = await new_tenant(sessions)
    plan = quotas.PLANS["creator"]
    await reserve(sessions, tenant_id, 15, cost=Decimal("7.50"), plan=plan)
    second = await reserve(sessions, tenant_id, 15, cost=Decimal("7.50"), plan=plan)
    assert second.budget_left_usd == Decimal("17.50")
    assert second.snapshot.budget_left_usd == Decimal("10.00")
