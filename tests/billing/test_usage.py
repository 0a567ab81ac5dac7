"""Plans, billing periods and limits on PostgreSQL: warnings at 80 %, refusals at 100 %."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import update

from reelflow.billing import accounts, usage
from reelflow.billing.plans import PLANS, canonical_plan_name, plan_limits, upgrade_path
from reelflow.billing.usage import Meter, QuotaExceeded, period_for
from reelflow.core.db import SessionFactory
from reelflow.generation import quotas
from schemas.tables import Tenant, Video

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


async def new_tenant(sessions: SessionFactory, plan: str = "free", day: int = 1) -> uuid.UUID:
    tenant_id = uuid.uuid4()
    async with sessions.begin() as session:
        session.add(
            Tenant(
                id=tenant_id,
                name="billing",
                plan=plan,
                created_at=datetime(2026, 1, day, 9, tzinfo=UTC),
            )
        )
    return tenant_id


def test_the_plan_table_has_the_seed_tiers_and_maps_former_names() -> None:
    assert list(PLANS) == ["free", "premium", "starter", "pro", "agency"]
    assert (PLANS["free"].videos_per_month, PLANS["free"].projects) == (10, 5)
    assert PLANS["premium"].price_usd_month == Decimal(29)
    assert PLANS["premium"].videos_per_month == 100
    assert [PLANS[p].price_usd_month for p in ("starter", "pro", "agency")] == [49, 149, 499]
    assert PLANS["premium"].sora and not PLANS["free"].sora
    assert canonical_plan_name("creator") == "premium"
    assert canonical_plan_name("Enterprise") == "agency"
    # An unknown stored name gets the smallest plan, never an unlimited one.
    assert plan_limits("platinum") == PLANS["free"]
    assert upgrade_path("free") == "premium" and upgrade_path("agency") is None
    with pytest.raises(ValueError, match="unknown plan"):
        canonical_plan_name("platinum")


def test_periods_roll_over_on_the_anchor_day_clamped_to_short_months() -> None:
    before = period_for(15, datetime(2026, 11, 14, 23, 59, tzinfo=UTC))
    after = period_for(15, datetime(2026, 11, 15, 0, 0, tzinfo=UTC))
    assert (before.name, after.name) == ("2026-10", "2026-11")
    assert before.end == after.start == datetime(2026, 11, 15, tzinfo=UTC)
    # An anchor on the 31st starts February's period on its last day.
    february = period_for(31, datetime(2027, 2, 28, 12, tzinfo=UTC))
    assert february.start == datetime(2027, 2, 28, tzinfo=UTC)
    assert february.end == datetime(2027, 3, 31, tzinfo=UTC)
    assert period_for(1, NOW).name == quotas.period_of(NOW) == "2026-11"
    december = period_for(5, datetime(2026, 12, 31, tzinfo=UTC))
    assert december.end == datetime(2027, 1, 5, tzinfo=UTC)


async def test_a_month_rollover_gives_the_full_quota_back(sessions: SessionFactory) -> None:
    tenant_id = await new_tenant(sessions, day=20)
    async with sessions.begin() as session:
        for n in range(10):
            await usage.reserve(
                session,
                tenant_id=tenant_id,
                meter=Meter.VIDEOS,
                amount=Decimal(1),
                work_id=f"g{n}",
                now=datetime(2026, 11, 19, tzinfo=UTC),
            )
    async with sessions.begin() as session:
        with pytest.raises(QuotaExceeded) as refused:
            await usage.reserve(
                session,
                tenant_id=tenant_id,
                meter=Meter.VIDEOS,
                amount=Decimal(1),
                work_id="g10",
                now=datetime(2026, 11, 19, 23, tzinfo=UTC),
            )
    assert refused.value.code == "quota_exceeded" and refused.value.upgrade_to == "premium"
    assert "videos limit is reached" in refused.value.message
    assert "upgrade to premium" in refused.value.message
    # The tenant was created on the 20th: its new period starts then.
    async with sessions.begin() as session:
        hold = await usage.reserve(
            session,
            tenant_id=tenant_id,
            meter=Meter.VIDEOS,
            amount=Decimal(1),
            work_id="g10",
            now=datetime(2026, 11, 20, 0, 1, tzinfo=UTC),
        )
    assert hold.created and hold.usage.period == "2026-11" and hold.usage.taken == 1


async def test_warning_from_eighty_percent_and_settling_once(sessions: SessionFactory) -> None:
    tenant_id = await new_tenant(sessions)
    warnings = []
    for n in range(8):
        async with sessions.begin() as session:
            hold = await usage.reserve(
                session,
                tenant_id=tenant_id,
                meter=Meter.VIDEOS,
                amount=Decimal(1),
                work_id=f"w{n}",
                now=NOW,
            )
            warnings.append(hold.warning)
    assert warnings[:7] == [None] * 7
    assert warnings[7] is not None and "80% of the free plan's videos limit" in warnings[7]
    async with sessions.begin() as session:
        again = await usage.reserve(
            session,
            tenant_id=tenant_id,
            meter=Meter.VIDEOS,
            amount=Decimal(1),
            work_id="w0",
            now=NOW,
        )
        assert not again.created and again.usage.taken == 8
        assert await usage.commit(session, meter=Meter.VIDEOS, work_id="w0")
        assert not await usage.commit(session, meter=Meter.VIDEOS, work_id="w0")
        assert await usage.release(session, meter=Meter.VIDEOS, work_id="w1")
        assert not await usage.release(session, meter=Meter.VIDEOS, work_id="w1")
    async with sessions() as session:
        summary = await usage.usage_summary(session, tenant_id, NOW)
    videos = next(limit for limit in summary.limits if limit.meter is Meter.VIDEOS)
    assert (videos.used, videos.reserved) == (Decimal(1), Decimal(6))
    assert {limit.meter for limit in summary.limits} == set(Meter)


async def test_an_upgrade_mid_month_raises_limits_at_once_and_a_downgrade_deletes_nothing(
    sessions: SessionFactory,
) -> None:
    tenant_id = await new_tenant(sessions)
    big = 900 * 1024**2  # 0.88 GB of the free plan's 1 GB
    async with sessions.begin() as session:
        session.add(
            Video(
                id=uuid.uuid4(),
                tenant_id=tenant_id,
                title="stored",
                origin="upload",
                source_key="k",
                status="completed",
                stage="done",
                size_bytes=big,
                duration_s=600.0,
                created_at=NOW,
            )
        )
    async with sessions.begin() as session:
        warnings = await usage.admit_media(
            session, tenant_id=tenant_id, incoming_bytes=10 * 1024**2, now=NOW
        )
    assert any("storage_gb limit" in w for w in warnings)
    async with sessions.begin() as session:
        with pytest.raises(QuotaExceeded) as refused:
            await usage.admit_media(
                session, tenant_id=tenant_id, incoming_bytes=200 * 1024**2, now=NOW
            )
    assert refused.value.meter is Meter.STORAGE_GB

    async with sessions.begin() as session:
        await accounts.set_plan(session, tenant_id, "premium", reason="cli", at=NOW)
    async with sessions.begin() as session:
        assert (
            await usage.admit_media(
                session, tenant_id=tenant_id, incoming_bytes=200 * 1024**2, now=NOW
            )
            == []
        )
        for n in range(12):
            await usage.reserve(
                session,
                tenant_id=tenant_id,
                meter=Meter.VIDEOS,
                amount=Decimal(1),
                work_id=f"u{n}",
                now=NOW,
            )

    # Back to Free with 12 videos and 0.9 GB used: nothing is removed, nothing new starts.
    async with sessions.begin() as session:
        await accounts.set_plan(session, tenant_id, "free", reason="cli", at=NOW)
    async with sessions.begin() as session:
        with pytest.raises(QuotaExceeded):
            await usage.reserve(
                session,
                tenant_id=tenant_id,
                meter=Meter.VIDEOS,
                amount=Decimal(1),
                work_id="after-downgrade",
                now=NOW,
            )
        with pytest.raises(QuotaExceeded):
            await usage.admit_media(
                session, tenant_id=tenant_id, incoming_bytes=200 * 1024**2, now=NOW
            )
    async with sessions() as session:
        summary = await usage.usage_summary(session, tenant_id, NOW)
    videos = next(limit for limit in summary.limits if limit.meter is Meter.VIDEOS)
    assert videos.taken == 12 and videos.fraction > 1
    assert any("videos limit" in w for w in summary.warnings())


async def test_ingest_minutes_refuse_new_media_once_the_period_is_used_up(
    sessions: SessionFactory,
) -> None:
    tenant_id = await new_tenant(sessions)
    async with sessions.begin() as session:
        await session.execute(update(Tenant).where(Tenant.id == tenant_id).values(plan="free"))
        session.add(
            Video(
                id=uuid.uuid4(),
                tenant_id=tenant_id,
                title="long",
                origin="import",
                source_key="k2",
                status="completed",
                stage="done",
                size_bytes=1024,
                duration_s=30 * 60.0,
                created_at=NOW,
            )
        )
    async with sessions.begin() as session:
        with pytest.raises(QuotaExceeded) as refused:
            await usage.admit_media(session, tenant_id=tenant_id, incoming_bytes=1, now=NOW)
    assert refused.value.meter is Meter.INGEST_MINUTES


async def test_generation_counts_videos_and_seconds_on_the_plan_table(
    sessions: SessionFactory,
) -> None:
    tenant_id = await new_tenant(sessions)
    plan = quotas.plan_named("free")
    assert (plan.monthly_videos, plan.monthly_video_seconds) == (10, 80)
    assert quotas.plan_named("creator") == quotas.PLANS["premium"]
    # Ten 4-second clips use 40 of 80 seconds but all 10 videos: the eleventh is refused.
    for _ in range(10):
        async with sessions.begin() as session:
            await quotas.reserve(
                session,
                tenant_id=tenant_id,
                plan=plan,
                generation_id=uuid.uuid4(),
                seconds=4,
                cost_usd=Decimal(0),
                now=NOW,
            )
    async with sessions.begin() as session:
        with pytest.raises(quotas.QuotaExceeded, match="videos limit is reached"):
            await quotas.reserve(
                session,
                tenant_id=tenant_id,
                plan=plan,
                generation_id=uuid.uuid4(),
                seconds=4,
                cost_usd=Decimal(0),
                now=NOW,
            )
