"""The real API app against the session's PostgreSQL and Temporal dev server.

Each test gets a fresh app (its own storage directory and settings) and two fresh tenants,
`alice` and `bob`; runs started for them are terminated afterwards so no worker elsewhere
in the session ever picks them up.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from reelflow.core.db import create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from reelflow.core.tenants import create_tenant
from tests.api.api_support import MAX_UPLOAD_BYTES, BagOfWordsEmbedder, TenantKey


@pytest.fixture(scope="session")
def api_database_url(postgres_url: str) -> str:
    upgrade_database(postgres_url)
    return postgres_url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def api_engine(api_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(api_database_url, pool_size=5)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def temporal(local_env: WorkflowEnvironment) -> Client:
    return local_env.client


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "media")


@pytest.fixture
def embedder() -> BagOfWordsEmbedder:
    return BagOfWordsEmbedder()


@pytest.fixture
def settings(api_database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        database_url=api_database_url,
        storage_url=(tmp_path / "media").as_uri(),
        reelflow_home=tmp_path,
        max_upload_bytes=MAX_UPLOAD_BYTES,
        upload_url_ttl_s=600,
        secret_key=SecretStr("test-secret-key"),
        api_host="api.test",
        api_port=8080,
        # A queue family of our own: no worker anywhere in the session runs these tests'
        # workflows, so they stay exactly as the API started them.
        task_queue_prefix=f"apitest-{uuid.uuid4().hex[:12]}",
    )


@pytest_asyncio.fixture(loop_scope="session")
async def app(
    settings: Settings,
    api_engine: AsyncEngine,
    temporal: Client,
    storage: LocalStorage,
    embedder: BagOfWordsEmbedder,
) -> AsyncIterator[FastAPI]:
    application = create_app(
        settings, engine=api_engine, temporal=temporal, storage=storage, embedder=embedder
    )
    # httpx's ASGI transport does not run the lifespan; the app's own context does.
    async with application.router.lifespan_context(application):
        yield application


@pytest_asyncio.fixture(loop_scope="session")
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test:8080") as client:
        yield client


TenantFactory = Callable[[str], Awaitable[TenantKey]]


@pytest_asyncio.fixture(loop_scope="session")
async def make_tenant(api_engine: AsyncEngine, temporal: Client) -> AsyncIterator[TenantFactory]:
    created: list[TenantKey] = []

    async def make(name: str) -> TenantKey:
        async with session_factory(api_engine)() as session:
            tenant = await create_tenant(session, name=name)
            await session.commit()
        key = TenantKey(tenant_id=tenant.tenant_id, api_key=tenant.api_key)
        created.append(key)
        return key

    yield make
    for key in created:
        async for execution in temporal.list_workflows(
            f"TenantId = '{key.tenant_id}' AND ExecutionStatus = 'Running'"
        ):
            # The visibility list lags: a run listed as running may have just finished.
            with contextlib.suppress(RPCError):
                await temporal.get_workflow_handle(execution.id).terminate("api test finished")


@pytest_asyncio.fixture(loop_scope="session")
async def alice(make_tenant: TenantFactory) -> TenantKey:
    return await make_tenant("alice")


@pytest_asyncio.fixture(loop_scope="session")
async def bob(make_tenant: TenantFactory) -> TenantKey:
    return await make_tenant("bob")
