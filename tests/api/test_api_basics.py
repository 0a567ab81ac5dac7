"""Health, OpenAPI, authentication and the error envelope."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.app import create_app
from reelflow.core.db import create_engine, session_factory
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from schemas.tables import ApiKey
from tests.api.api_support import BagOfWordsEmbedder, TenantKey, assert_error
from tests.support import free_port


async def test_healthz_reports_database_and_temporal(api: httpx.AsyncClient) -> None:
    response = await api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "temporal": "ok"}


async def test_openapi_documents_every_route(api: httpx.AsyncClient) -> None:
    response = await api.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    paths = spec["paths"]
    for path, method in [
        ("/healthz", "get"),
        ("/v1/videos", "post"),
        ("/v1/videos/uploads", "post"),
        ("/v1/videos/{video_id}/upload", "put"),
        ("/v1/videos/{video_id}/confirm", "post"),
        ("/v1/videos/import", "post"),
        ("/v1/videos/{video_id}", "get"),
        ("/v1/videos/{video_id}/transcript", "get"),
        ("/v1/videos/{video_id}/content", "get"),
        ("/v1/videos/{video_id}/thumbnail", "get"),
        ("/v1/search", "get"),
        ("/v1/runs/{workflow_id}", "get"),
        ("/v1/runs/{workflow_id}/retry", "post"),
        ("/v1/runs/{workflow_id}/cancel", "post"),
        ("/v1/usage", "get"),
    ]:
        operation = paths[path][method]
        assert operation.get("description") or operation.get("summary"), (path, method)
    upload_body = paths["/v1/videos"]["post"]["requestBody"]["content"]
    assert "file" in upload_body["multipart/form-data"]["schema"]["properties"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


async def test_unknown_route_is_a_404_envelope(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/v1/nothing-here"), 404, "not_found")


async def test_wrong_method_is_a_405_envelope(api: httpx.AsyncClient) -> None:
    assert_error(await api.delete("/healthz"), 405, "method_not_allowed")


async def test_missing_api_key_is_401(api: httpx.AsyncClient) -> None:
    response = await api.get(f"/v1/videos/{uuid.uuid4()}")
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_wrong_api_key_is_401_and_not_echoed(api: httpx.AsyncClient) -> None:
    secret = "rf_this-key-does-not-exist"
    response = await api.get(
        f"/v1/videos/{uuid.uuid4()}", headers={"Authorization": f"Bearer {secret}"}
    )
    assert_error(response, 401, "unauthorized")
    assert secret not in response.text


async def test_non_bearer_scheme_is_401(api: httpx.AsyncClient, alice: TenantKey) -> None:
    response = await api.get(
        f"/v1/videos/{uuid.uuid4()}", headers={"Authorization": f"Basic {alice.api_key}"}
    )
    assert_error(response, 401, "unauthorized")


async def test_revoked_api_key_is_401(
    api: httpx.AsyncClient, api_engine: AsyncEngine, alice: TenantKey
) -> None:
    assert (await api.get("/v1/usage", headers=alice.headers)).status_code == 200
    async with session_factory(api_engine)() as session:
        await session.execute(
            update(ApiKey)
            .where(ApiKey.tenant_id == alice.tenant_id)
            .values(revoked_at=datetime.now(UTC))
        )
        await session.commit()
    assert_error(await api.get("/v1/usage", headers=alice.headers), 401, "unauthorized")


async def test_unknown_video_is_404(api: httpx.AsyncClient, alice: TenantKey) -> None:
    assert_error(
        await api.get(f"/v1/videos/{uuid.uuid4()}", headers=alice.headers), 404, "not_found"
    )


async def test_malformed_video_id_is_404_not_500(api: httpx.AsyncClient, alice: TenantKey) -> None:
    assert_error(await api.get("/v1/videos/not-a-uuid", headers=alice.headers), 404, "not_found")
    assert_error(
        await api.get("/v1/videos/not-a-uuid/transcript", headers=alice.headers), 404, "not_found"
    )


async def test_malformed_json_is_422_invalid_request(
    api: httpx.AsyncClient, alice: TenantKey
) -> None:
    response = await api.post(
        "/v1/videos/uploads",
        content=b"{not json",
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 422, "invalid_request")


async def test_validation_error_names_the_field(api: httpx.AsyncClient, alice: TenantKey) -> None:
    response = await api.post(
        "/v1/videos/uploads", json={"filename": "a.mp4"}, headers=alice.headers
    )
    error = assert_error(response, 422, "invalid_request")
    assert "size_bytes" in error["message"]


async def test_lifespan_builds_every_client_from_settings(
    api_database_url: str, temporal: Client, tmp_path: Path
) -> None:
    """Nothing injected: the app builds its clients from the settings at startup."""
    settings = Settings(
        environment="test",
        database_url=api_database_url,
        temporal_address=temporal.service_client.config.target_host,
        storage_url=(tmp_path / "built").as_uri(),
        reelflow_home=tmp_path,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        resources = app.state.resources
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            assert (await client.get("/healthz")).json()["status"] == "ok"
        assert resources.embedder.model_name == "local/all-MiniLM-L6-v2"
        assert (tmp_path / "built").is_dir()


async def test_healthz_is_503_when_the_database_is_down(
    settings: Settings, temporal: Client, storage: LocalStorage
) -> None:
    dead = create_engine(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none")
    app = create_app(
        settings, engine=dead, temporal=temporal, storage=storage, embedder=BagOfWordsEmbedder()
    )
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
        ):
            response = await c.get("/healthz")
    finally:
        await dead.dispose()
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "database": "error", "temporal": "ok"}
