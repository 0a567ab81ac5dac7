"""API keys through the API: several per tenant, scopes, rotation, revocation, last use."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.app import create_app
from api.deps import install_rate_limit_headers
from api.routers import keys as key_routes
from api.routers import listings as listing_routes
from reelflow.core.db import create_engine, session_factory
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from schemas.tables import ApiKey
from tests.api.api_support import BagOfWordsEmbedder, TenantKey, assert_error


def wire_access_routes(app: FastAPI) -> FastAPI:
    """Mount the key and list routes and the headers middleware, unless the app has them."""
    paths = {getattr(route, "path", "") for route in app.routes}
    if "/v1/keys" not in paths:
        app.include_router(key_routes.router)
        install_rate_limit_headers(app)
    if not any(
        getattr(route, "path", "") == "/v1/runs" and "GET" in getattr(route, "methods", ())
        for route in app.routes
    ):
        app.include_router(listing_routes.router)
    return app


def bearer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@pytest_asyncio.fixture(loop_scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    wire_access_routes(app)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api.test:8080"
    ) as http:
        yield http


@pytest_asyncio.fixture(loop_scope="session")
async def other_process(
    settings: Settings, temporal: Client, storage: LocalStorage, api_database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A second API instance with its own engine: what another API process sees."""
    engine = create_engine(api_database_url, pool_size=2)
    application = wire_access_routes(
        create_app(
            settings,
            engine=engine,
            temporal=temporal,
            storage=storage,
            embedder=BagOfWordsEmbedder(),
        )
    )
    try:
        async with (
            application.router.lifespan_context(application),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=application), base_url="http://api.test:8080"
            ) as http,
        ):
            yield http
    finally:
        await engine.dispose()


async def _create(
    client: httpx.AsyncClient, admin_key: str, name: str, scopes: list[str]
) -> dict[str, object]:
    response = await client.post(
        "/v1/keys", json={"name": name, "scopes": scopes}, headers=bearer(admin_key)
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def test_a_tenant_has_several_named_keys_listed_without_their_secrets(
    client: httpx.AsyncClient, alice: TenantKey
) -> None:
    ci = await _create(client, alice.api_key, "ci", ["read", "write"])
    dashboard = await _create(client, alice.api_key, "dashboard", ["read"])

    for created in (ci, dashboard):
        secret = str(created["api_key"])
        assert secret.startswith("rf_")
        assert (await client.get("/v1/videos", headers=bearer(secret))).status_code == 200

    listed = await client.get("/v1/keys", headers=bearer(alice.api_key))
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert [item["name"] for item in items] == ["dashboard", "ci", "default"]
    assert [item["scopes"] for item in items] == [
        ["read"],
        ["read", "write"],
        ["read", "write", "admin"],
    ]
    assert all(item["status"] == "active" for item in items)
    assert str(ci["api_key"]) not in listed.text and str(dashboard["api_key"]) not in listed.text
    assert items[1]["prefix"] == str(ci["api_key"])[:10]


async def test_a_read_key_can_read_but_not_write(
    client: httpx.AsyncClient, alice: TenantKey
) -> None:
    reader = str((await _create(client, alice.api_key, "reader", ["read"]))["api_key"])

    assert (await client.get("/v1/generations", headers=bearer(reader))).status_code == 200
    refused = await client.post(
        "/v1/generations",
        json={"prompt": "a cat", "provider": "local", "duration_s": 4},
        headers=bearer(reader),
    )
    assert "write" in assert_error(refused, 403, "insufficient_scope")["message"]
    assert_error(
        await client.post("/v1/brands", json={"name": "b"}, headers=bearer(reader)),
        403,
        "insufficient_scope",
    )
    assert_error(
        await client.delete(f"/v1/keys/{alice.tenant_id}", headers=bearer(reader)),
        403,
        "insufficient_scope",
    )
    assert_error(await client.get("/v1/keys", headers=bearer(reader)), 403, "insufficient_scope")


async def test_only_an_admin_key_manages_keys(client: httpx.AsyncClient, alice: TenantKey) -> None:
    writer = str((await _create(client, alice.api_key, "writer", ["write"]))["api_key"])
    # Write includes read.
    assert (await client.get("/v1/videos", headers=bearer(writer))).status_code == 200
    refused = await client.post(
        "/v1/keys", json={"name": "escalate", "scopes": ["admin"]}, headers=bearer(writer)
    )
    assert "admin" in assert_error(refused, 403, "insufficient_scope")["message"]


async def test_bad_key_requests_are_422_and_unknown_ids_404(
    client: httpx.AsyncClient, alice: TenantKey, bob: TenantKey
) -> None:
    headers = bearer(alice.api_key)
    for body in (
        {"name": "x", "scopes": ["root"]},
        {"name": "x", "scopes": []},
        {"name": "", "scopes": ["read"]},
        {"name": "x" * 101, "scopes": ["read"]},
        {"name": "nul\u0000byte", "scopes": ["read"]},
        {"name": "x", "scopes": "read"},
    ):
        assert_error(
            await client.post("/v1/keys", json=body, headers=headers), 422, "invalid_request"
        )
    bobs = (await client.get("/v1/keys", headers=bearer(bob.api_key))).json()["items"][0]
    for key_id in (bobs["key_id"], "not-a-uuid"):
        assert_error(await client.delete(f"/v1/keys/{key_id}", headers=headers), 404, "not_found")
        assert_error(
            await client.post(f"/v1/keys/{key_id}/rotate", headers=headers), 404, "not_found"
        )
    # Bob's key is untouched.
    assert (await client.get("/v1/videos", headers=bearer(bob.api_key))).status_code == 200
    assert_error(
        await client.post(
            f"/v1/keys/{bobs['key_id']}/rotate",
            json={"grace_period_s": -1},
            headers=headers,
        ),
        422,
        "invalid_request",
    )


async def test_rotation_returns_a_new_key_and_the_old_one_lasts_its_grace_period(
    client: httpx.AsyncClient, alice: TenantKey
) -> None:
    old = await _create(client, alice.api_key, "deploy", ["read", "write"])
    old_id, old_secret = old["key"]["key_id"], str(old["api_key"])  # type: ignore[index]

    rotated = await client.post(
        f"/v1/keys/{old_id}/rotate", json={"grace_period_s": 3600}, headers=bearer(alice.api_key)
    )
    assert rotated.status_code == 201, rotated.text
    body = rotated.json()
    new_secret = body["api_key"]
    assert new_secret != old_secret
    assert body["key"]["name"] == "deploy" and body["key"]["scopes"] == ["read", "write"]
    assert body["previous"]["status"] == "expiring"
    assert body["previous"]["replaced_by"] == body["key"]["key_id"]
    expires = datetime.fromisoformat(body["previous"]["expires_at"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)

    # Both work during the grace period.
    for secret in (old_secret, new_secret):
        assert (await client.get("/v1/videos", headers=bearer(secret))).status_code == 200
    # A rotated key is not rotated twice.
    assert_error(
        await client.post(f"/v1/keys/{old_id}/rotate", headers=bearer(alice.api_key)),
        409,
        "key_not_active",
    )

    # With no grace the replaced key ends at once.
    again = await client.post(
        f"/v1/keys/{body['key']['key_id']}/rotate",
        json={"grace_period_s": 0},
        headers=bearer(alice.api_key),
    )
    assert again.status_code == 201
    assert_error(await client.get("/v1/videos", headers=bearer(new_secret)), 401, "unauthorized")
    assert (
        await client.get("/v1/videos", headers=bearer(again.json()["api_key"]))
    ).status_code == 200
    statuses = {
        item["key_id"]: item["status"]
        for item in (await client.get("/v1/keys", headers=bearer(alice.api_key))).json()["items"]
    }
    assert statuses[body["key"]["key_id"]] == "expired"
    assert statuses[old_id] == "expiring"


async def test_the_grace_period_ends_for_the_old_key(
    client: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine
) -> None:
    old = await _create(client, alice.api_key, "short", ["read"])
    old_id, old_secret = old["key"]["key_id"], str(old["api_key"])  # type: ignore[index]
    await client.post(
        f"/v1/keys/{old_id}/rotate", json={"grace_period_s": 600}, headers=bearer(alice.api_key)
    )
    assert (await client.get("/v1/videos", headers=bearer(old_secret))).status_code == 200
    # Ten minutes pass: move the end of the grace period into the past.
    async with session_factory(api_engine)() as session:
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == old_id)
            .values(expires_at=text("now() - interval '1 second'"))
        )
        await session.commit()
    assert_error(await client.get("/v1/videos", headers=bearer(old_secret)), 401, "unauthorized")


async def test_a_revocation_is_seen_by_another_api_process_at_once(
    client: httpx.AsyncClient, other_process: httpx.AsyncClient, alice: TenantKey
) -> None:
    created = await _create(client, alice.api_key, "leaked", ["read"])
    secret = str(created["api_key"])
    # The other process has just served this key.
    assert (await other_process.get("/v1/videos", headers=bearer(secret))).status_code == 200

    revoked = await client.delete(
        f"/v1/keys/{created['key']['key_id']}",  # type: ignore[index]
        headers=bearer(alice.api_key),
    )
    assert revoked.status_code == 204

    assert_error(await other_process.get("/v1/videos", headers=bearer(secret)), 401, "unauthorized")
    assert_error(await client.get("/v1/videos", headers=bearer(secret)), 401, "unauthorized")
    listed = (await other_process.get("/v1/keys", headers=bearer(alice.api_key))).json()
    assert {i["name"]: i["status"] for i in listed["items"]}["leaked"] == "revoked"
    # Revoking again changes nothing.
    again = await other_process.delete(
        f"/v1/keys/{created['key']['key_id']}",  # type: ignore[index]
        headers=bearer(alice.api_key),
    )
    assert again.status_code == 204


async def test_the_last_admin_key_cannot_be_revoked(
    client: httpx.AsyncClient, alice: TenantKey
) -> None:
    own = (await client.get("/v1/keys", headers=bearer(alice.api_key))).json()["items"][0]
    assert_error(
        await client.delete(f"/v1/keys/{own['key_id']}", headers=bearer(alice.api_key)),
        409,
        "last_admin_key",
    )
    second = str((await _create(client, alice.api_key, "admin 2", ["admin"]))["api_key"])
    assert (
        await client.delete(f"/v1/keys/{own['key_id']}", headers=bearer(second))
    ).status_code == 204
    assert_error(await client.get("/v1/keys", headers=bearer(alice.api_key)), 401, "unauthorized")
    assert (await client.get("/v1/keys", headers=bearer(second))).status_code == 200


async def test_last_use_is_recorded_at_most_once_a_minute(
    client: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine
) -> None:
    created = await _create(client, alice.api_key, "poller", ["read"])
    key_id, secret = created["key"]["key_id"], str(created["api_key"])  # type: ignore[index]
    assert created["key"]["last_used_at"] is None  # type: ignore[index]

    async def last_used() -> datetime | None:
        async with session_factory(api_engine)() as session:
            return await session.scalar(select(ApiKey.last_used_at).where(ApiKey.id == key_id))

    await client.get("/v1/videos", headers=bearer(secret))
    first = await last_used()
    assert first is not None
    for _ in range(3):
        await client.get("/v1/videos", headers=bearer(secret))
    assert await last_used() == first

    # A minute later, the next request records itself again.
    async with session_factory(api_engine)() as session:
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id)
            .values(last_used_at=text("now() - interval '61 seconds'"))
        )
        await session.commit()
    await client.get("/v1/videos", headers=bearer(secret))
    later = await last_used()
    assert later is not None and later > first


async def test_keys_are_stored_and_logged_only_as_hashes(
    client: httpx.AsyncClient,
    alice: TenantKey,
    api_engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    created = await _create(client, alice.api_key, "secret", ["read"])
    secret = str(created["api_key"])
    await client.get("/v1/videos", headers=bearer(secret))
    await client.post(
        f"/v1/keys/{created['key']['key_id']}/rotate",  # type: ignore[index]
        headers=bearer(alice.api_key),
    )
    async with api_engine.connect() as connection:
        dump = (
            await connection.execute(text("SELECT string_agg(k::text, '|') FROM api_keys k"))
        ).scalar_one()
    assert secret not in dump and secret[10:] not in dump
    assert secret not in caplog.text and alice.api_key not in caplog.text


def test_the_cli_creates_lists_rotates_and_revokes_keys(
    alice: TenantKey, api_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from reelflow.core.key_commands import app as keys_cli
    from reelflow.core.key_commands import tenants_app as tenants_cli

    monkeypatch.setenv("DATABASE_URL", api_database_url)
    monkeypatch.setenv("REELFLOW_TENANT_ID", str(alice.tenant_id))
    runner = CliRunner()

    def run(*args: str) -> object:
        result = runner.invoke(keys_cli, [*args, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    created = run("create", "--name", "cron", "--scope", "read")
    assert isinstance(created, dict) and created["scopes"] == ["read"]
    assert str(created["api_key"]).startswith("rf_")
    listed = run("list")
    assert isinstance(listed, list)
    assert [k["name"] for k in listed] == ["cron", "default"]
    assert created["api_key"] not in json.dumps(listed)

    rotated = run("rotate", str(created["key_id"]), "--grace", "60")
    assert isinstance(rotated, dict) and rotated["previous"]["status"] == "expiring"
    revoked = run("revoke", str(rotated["key_id"]))
    assert isinstance(revoked, dict) and revoked["status"] == "revoked"

    refused = runner.invoke(keys_cli, ["rotate", str(rotated["key_id"])])
    assert refused.exit_code == 1 and "revoked" in refused.output
    unknown = runner.invoke(keys_cli, ["revoke", str(uuid.uuid4())])
    assert unknown.exit_code == 1 and "no key" in unknown.output
    bad_scope = runner.invoke(keys_cli, ["create", "--scope", "root"])
    assert bad_scope.exit_code == 2 and "unknown scope" in bad_scope.output
    last_admin = runner.invoke(keys_cli, ["revoke", str(listed[1]["key_id"])])
    assert last_admin.exit_code == 1 and "last admin key" in last_admin.output

    tenants = runner.invoke(tenants_cli, ["list", "--json"])
    assert tenants.exit_code == 0, tenants.output
    mine = [t for t in json.loads(tenants.stdout) if t["tenant_id"] == str(alice.tenant_id)]
    # The default key and the rotated one still in its grace period.
    assert mine == [
        {"tenant_id": str(alice.tenant_id), "name": "alice", "plan": "free", "active_keys": 2}
    ]
