"""Counting requests per key in Postgres: the window, its refusal and its rollover."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from api.deps import limits_for
from reelflow.core.db import SessionFactory, create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.rate_limits import RateDecision, count_request, rate_limits_on
from reelflow.core.settings import Settings
from reelflow.core.tenants import authenticate, create_tenant

T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
"""A window boundary: windows start at multiples of 10 s since the epoch."""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    upgrade_database(database_url)
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionFactory:
    return session_factory(engine)


async def _new_key(sessions: SessionFactory) -> uuid.UUID:
    async with sessions() as session:
        tenant = await create_tenant(session, name="limited")
        identity = await authenticate(session, tenant.api_key)
        await session.commit()
    assert identity is not None
    return identity.key_id


async def _count(
    sessions: SessionFactory, key_id: uuid.UUID, at: datetime, limit: int = 3
) -> RateDecision:
    async with sessions() as session:
        decision = await count_request(session, key_id, limit=limit, now=at)
        await session.commit()
    return decision


async def test_a_window_allows_the_limit_then_refuses_until_it_ends(
    sessions: SessionFactory,
) -> None:
    key = await _new_key(sessions)
    decisions = [await _count(sessions, key, T0 + timedelta(seconds=i)) for i in range(5)]

    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0, 0]
    assert [d.reset_s for d in decisions] == [10, 9, 8, 7, 6]
    refused = decisions[3].headers()
    assert refused == {
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "7",
        "Retry-After": "7",
    }
    assert "Retry-After" not in decisions[0].headers()

    next_window = await _count(sessions, key, T0 + timedelta(seconds=10))
    assert next_window.allowed and next_window.remaining == 2 and next_window.reset_s == 10


async def test_a_late_request_from_an_older_window_does_not_reset_the_newer_one(
    sessions: SessionFactory,
) -> None:
    key = await _new_key(sessions)
    for _ in range(3):
        await _count(sessions, key, T0 + timedelta(seconds=12))
    late = await _count(sessions, key, T0 + timedelta(seconds=9))
    assert not late.allowed
    assert not (await _count(sessions, key, T0 + timedelta(seconds=13))).allowed


async def test_keys_are_counted_apart(sessions: SessionFactory) -> None:
    first, second = await _new_key(sessions), await _new_key(sessions)
    for _ in range(3):
        await _count(sessions, first, T0)
    assert not (await _count(sessions, first, T0)).allowed
    assert (await _count(sessions, second, T0)).allowed


async def test_the_database_clock_is_used_when_no_time_is_given(sessions: SessionFactory) -> None:
    key = await _new_key(sessions)
    async with sessions() as session:
        decision = await count_request(session, key, limit=10)
        await session.commit()
    assert decision.allowed and decision.remaining == 9 and 1 <= decision.reset_s <= 10


def test_limits_come_from_the_plan_table_with_seed_003s_default_tier() -> None:
    assert limits_for("free").requests_per_10s == 10
    assert limits_for("no-such-plan") == limits_for("free")
    assert limits_for("agency").requests_per_10s > limits_for("free").requests_per_10s


def test_limits_are_on_outside_tests_unless_settings_say_otherwise() -> None:
    assert rate_limits_on(Settings(environment="local"))
    assert not rate_limits_on(Settings(environment="test"))
    assert rate_limits_on(Settings(environment="test", rate_limits_enabled=True))
    assert not rate_limits_on(Settings(environment="local", rate_limits_enabled=False))
