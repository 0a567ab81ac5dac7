"""Per-key request limits across two API processes sharing one database."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.app import create_app
from reelflow.core.db import create_engine, session_factory
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from reelflow.core.tenants import add_api_key
from tests.api.api_support import BagOfWordsEmbedder, TenantKey, assert_error
from tests.api.test_keys import bearer, wire_access_routes

FREE_LIMIT = 10
"""Seed 003's default tier: 10 requests per 10 s; tenants here are on Free."""


@pytest_asyncio.fixture(loop_scope="session")
async def processes(
    settings: Settings, temporal: Client, storage: LocalStorage, api_database_url: str
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two API instances with limits on, each with its own engine, like two processes."""
    limited = settings.model_copy(update={"rate_limits_enabled": True})
    clients: list[httpx.AsyncClient] = []
    engines: list[AsyncEngine] = []
    stack: list[Any] = []
    try:
        async with asyncio.timeout(60):
            for _ in range(2):
                engine = create_engine(api_database_url, pool_size=10)
                engines.append(engine)
                app = wire_access_routes(
                    create_app(
                        limited,
                        engine=engine,
                        temporal=temporal,
                        storage=storage,
                        embedder=BagOfWordsEmbedder(),
                    )
                )
                lifespan = app.router.lifespan_context(app)
                await lifespan.__aenter__()
                stack.append(lifespan)
                clients.append(
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=app), base_url="http://api.test:8080"
                    )
                )
        yield clients
    finally:
        for client in clients:
            await client.aclose()
        for lifespan in reversed(stack):
            await lifespan.__aexit__(None, None, None)
        for engine in engines:
            await engine.dispose()


async def _window_number(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        epoch = (
            await connection.execute(text("SELECT extract(epoch FROM clock_timestamp())"))
        ).scalar_one()
    return math.floor(float(epoch) / 10)


async def test_the_limit_is_shared_by_two_processes_and_refusals_say_when_to_retry(
    processes: list[httpx.AsyncClient], alice: TenantKey, api_engine: AsyncEngine
) -> None:
    first, second = processes
    while True:
        # A fresh key each attempt: a retried attempt must not start with spent counts.
        async with session_factory(api_engine)() as session:
            headers = bearer(await add_api_key(session, tenant_id=alice.tenant_id))
            await session.commit()
        start = await _window_number(api_engine)
        responses = [
            await (first if i % 2 else second).get("/v1/videos", headers=headers)
            for i in range(FREE_LIMIT + 5)
        ]
        if await _window_number(api_engine) == start:
            break  # all inside one window: the counts below are exact

    statuses = [r.status_code for r in responses]
    assert statuses == [200] * FREE_LIMIT + [429] * 5
    assert [r.headers["RateLimit-Remaining"] for r in responses[:FREE_LIMIT]] == [
        str(FREE_LIMIT - 1 - i) for i in range(FREE_LIMIT)
    ]
    assert all(r.headers["RateLimit-Limit"] == str(FREE_LIMIT) for r in responses)
    refused = responses[-1]
    assert "10 s" in assert_error(refused, 429, "rate_limited")["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 10
    assert refused.headers["Retry-After"] == refused.headers["RateLimit-Reset"]
    assert refused.headers["RateLimit-Remaining"] == "0"


async def test_a_burst_of_1000_gets_429s_never_a_5xx_and_the_limit_holds(
    processes: list[httpx.AsyncClient], alice: TenantKey, api_engine: AsyncEngine
) -> None:
    headers = bearer(alice.api_key)
    start = await _window_number(api_engine)
    responses = await asyncio.gather(
        *(processes[i % 2].get("/v1/videos", headers=headers) for i in range(1000))
    )
    windows = await _window_number(api_engine) - start + 1

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 429}, statuses
    assert 0 < statuses[200] <= FREE_LIMIT * windows, (statuses, windows)
    assert statuses[429] >= 1000 - FREE_LIMIT * windows
    for response in responses:
        if response.status_code == 429:
            assert_error(response, 429, "rate_limited")
            assert int(response.headers["Retry-After"]) >= 1


async def test_keys_are_limited_apart_and_health_is_not_limited(
    processes: list[httpx.AsyncClient],
    alice: TenantKey,
    bob: TenantKey,
    api_engine: AsyncEngine,
) -> None:
    first, _ = processes
    while True:
        async with session_factory(api_engine)() as session:
            spent = bearer(await add_api_key(session, tenant_id=alice.tenant_id))
            other = bearer(await add_api_key(session, tenant_id=alice.tenant_id))
            await session.commit()
        start = await _window_number(api_engine)
        for _ in range(FREE_LIMIT):
            await first.get("/v1/videos", headers=spent)
        refused = await first.get("/v1/videos", headers=spent)
        others = [await first.get("/v1/videos", headers=h) for h in (other, bearer(bob.api_key))]
        if await _window_number(api_engine) == start:
            break
    assert refused.status_code == 429
    assert [r.status_code for r in others] == [200, 200]
    # Health takes no key: load balancers and probes call it, and it must answer them.
    for _ in range(FREE_LIMIT + 1):
        health = await first.get("/healthz")
        assert health.status_code in (200, 503)
        assert "RateLimit-Limit" not in health.headers


async def test_limit_headers_are_on_errors_and_non_json_answers_too(
    processes: list[httpx.AsyncClient], bob: TenantKey
) -> None:
    first, _ = processes
    missing = await first.get(
        "/v1/videos/00000000-0000-0000-0000-000000000000", headers=bearer(bob.api_key)
    )
    assert_error(missing, 404, "not_found")
    assert missing.headers["RateLimit-Limit"] == str(FREE_LIMIT)
    assert int(missing.headers["RateLimit-Remaining"]) < FREE_LIMIT
