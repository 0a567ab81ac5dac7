"""`POST /v1/generations` with `index`: the request is remembered on the generation row,
where the run reads it when it plans (so a retried run indexes too)."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.core.db import session_factory
from schemas.generation_tables import Generation
from tests.api.api_support import TenantKey

LOCAL = {
    "prompt": "A lighthouse at dusk",
    "provider": "local",
    "duration_s": 2,
    "aspect_ratio": "16:9",
    "resolution": "480p",
}


async def index_result(engine: AsyncEngine, generation_id: str) -> object:
    async with session_factory(engine)() as session:
        row = await session.get(Generation, uuid.UUID(generation_id))
    assert row is not None
    return row.index_result


async def test_index_true_is_stored_as_requested(
    api: httpx.AsyncClient, api_engine: AsyncEngine, alice: TenantKey
) -> None:
    response = await api.post(
        "/v1/generations", json={**LOCAL, "index": True}, headers=alice.headers
    )
    assert response.status_code == 202, response.text
    assert await index_result(api_engine, response.json()["generation_id"]) == {
        "status": "requested"
    }


async def test_without_index_nothing_is_to_be_indexed(
    api: httpx.AsyncClient, api_engine: AsyncEngine, alice: TenantKey
) -> None:
    response = await api.post("/v1/generations", json=LOCAL, headers=alice.headers)
    assert response.status_code == 202, response.text
    assert await index_result(api_engine, response.json()["generation_id"]) is None


async def test_index_must_be_a_boolean(api: httpx.AsyncClient, alice: TenantKey) -> None:
    response = await api.post(
        "/v1/generations", json={**LOCAL, "index": "every frame"}, headers=alice.headers
    )
    assert response.status_code == 422, response.text
