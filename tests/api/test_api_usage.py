"""`GET /v1/usage`: the tenant's ledger, grouped and windowed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.core.db import session_factory
from schemas.tables import LedgerEntry
from tests.api.api_support import TenantKey, assert_error


def entry(
    tenant: TenantKey,
    when: str,
    provider: str,
    operation: str,
    units: str,
    cost: str,
) -> LedgerEntry:
    return LedgerEntry(
        idempotency_key=f"api-test-{uuid.uuid4()}",
        tenant_id=tenant.tenant_id,
        step="test",
        provider=provider,
        operation=operation,
        model="m",
        units=Decimal(units),
        unit="unit",
        unit_price_usd=Decimal(0),
        price_version="test",
        cost_usd=Decimal(cost),
        created_at=datetime.fromisoformat(when),
    )


@pytest_asyncio.fixture(loop_scope="session")
async def ledger(api_engine: AsyncEngine, alice: TenantKey, bob: TenantKey) -> None:
    async with session_factory(api_engine)() as session:
        session.add_all(
            [
                entry(alice, "2025-03-01T08:00:00+00:00", "openai", "transcription", "10", "0.06"),
                entry(alice, "2025-03-01T23:30:00+00:00", "openai", "embedding", "1000", "0.00002"),
                # 23:30 in New York is already March 2nd in UTC: days are UTC days.
                entry(alice, "2025-03-01T23:30:00-05:00", "local", "transcription", "5", "0"),
                entry(alice, "2025-03-02T12:00:00+00:00", "openai", "transcription", "2", "0.012"),
                entry(alice, "2025-04-15T12:00:00+00:00", "openai", "transcription", "1", "0.006"),
                entry(bob, "2025-03-01T09:00:00+00:00", "openai", "transcription", "99", "9.99"),
            ]
        )
        await session.commit()


MARCH = {"since": "2025-03-01T00:00:00Z", "until": "2025-04-01T00:00:00Z"}


@pytest.mark.usefixtures("ledger")
async def test_group_by_day(api: httpx.AsyncClient, alice: TenantKey) -> None:
    response = await api.get(
        "/v1/usage", params={**MARCH, "group_by": "day"}, headers=alice.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["since"].startswith("2025-03-01T00:00:00")
    assert body["until"].startswith("2025-04-01T00:00:00")
    assert body["group_by"] == ["day"]
    assert body["total_usd"] == pytest.approx(0.07202)
    assert body["groups"] == [
        {
            "day": "2025-03-01",
            "provider": None,
            "operation": None,
            "units": 1010.0,
            "cost_usd": pytest.approx(0.06002),
            "calls": 2,
        },
        {
            "day": "2025-03-02",
            "provider": None,
            "operation": None,
            "units": 7.0,
            "cost_usd": pytest.approx(0.012),
            "calls": 2,
        },
    ]


@pytest.mark.usefixtures("ledger")
async def test_group_by_provider_and_operation(api: httpx.AsyncClient, alice: TenantKey) -> None:
    response = await api.get(
        "/v1/usage",
        params={**MARCH, "group_by": "provider, operation"},
        headers=alice.headers,
    )
    body = response.json()
    assert body["group_by"] == ["provider", "operation"]
    groups = [
        (g["provider"], g["operation"], g["units"], g["calls"], g["day"]) for g in body["groups"]
    ]
    assert groups == [
        ("local", "transcription", 5.0, 1, None),
        ("openai", "embedding", 1000.0, 1, None),
        ("openai", "transcription", 12.0, 2, None),
    ]
    assert body["total_usd"] == pytest.approx(0.07202)


@pytest.mark.usefixtures("ledger")
async def test_window_is_half_open(api: httpx.AsyncClient, alice: TenantKey) -> None:
    response = await api.get(
        "/v1/usage",
        params={
            "since": "2025-03-02T12:00:00+00:00",
            "until": "2025-04-15T12:00:00+00:00",
            "group_by": "operation",
        },
        headers=alice.headers,
    )
    body = response.json()
    assert body["groups"] == [
        {
            "day": None,
            "provider": None,
            "operation": "transcription",
            "units": 2.0,
            "cost_usd": pytest.approx(0.012),
            "calls": 1,
        }
    ]


@pytest.mark.usefixtures("ledger")
async def test_other_tenants_usage_is_invisible(api: httpx.AsyncClient, bob: TenantKey) -> None:
    body = (await api.get("/v1/usage", params=MARCH, headers=bob.headers)).json()
    assert body["total_usd"] == pytest.approx(9.99)
    assert [g["calls"] for g in body["groups"]] == [1]


async def test_no_usage_is_zero(api: httpx.AsyncClient, alice: TenantKey) -> None:
    body = (await api.get("/v1/usage", headers=alice.headers)).json()
    assert (body["total_usd"], body["groups"]) == (0.0, [])
    until = datetime.fromisoformat(body["until"])
    since = datetime.fromisoformat(body["since"])
    assert (until - since).days == 30
    assert abs((datetime.now(UTC) - until).total_seconds()) < 60


@pytest.mark.parametrize(
    "params",
    [
        {"since": "2025-03-02T00:00:00Z", "until": "2025-03-01T00:00:00Z"},
        {"group_by": "week"},
        {"group_by": ","},
        {"since": "yesterday"},
    ],
)
async def test_bad_usage_parameters_are_422(
    api: httpx.AsyncClient, alice: TenantKey, params: dict[str, str]
) -> None:
    assert_error(
        await api.get("/v1/usage", params=params, headers=alice.headers), 422, "invalid_request"
    )
