"""EmbeddedStack: starts what is missing, reuses what already answers, stops what it started."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from temporalio.client import Client

from reelflow.core.settings import Settings
from reelflow.dev.stack import (
    SEARCH_ATTRIBUTES,
    EmbeddedPostgres,
    EmbeddedStack,
    TemporalDevServer,
    is_port_open,
    registered_search_attributes,
)
from tests.support import TEST_CLUSTER_PREFIX, drop_database, free_port, libpq_url


@pytest.fixture
def home() -> Iterator[Path]:
    # Not tmp_path: pytest keeps its base directory private, out of the postgres user's reach.
    root = Path(tempfile.mkdtemp(prefix=f"{TEST_CLUSTER_PREFIX}home-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _settings(home: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "reelflow_home": home,
        "postgres_port": free_port(),
        "temporal_port": free_port(),
        "temporal_ui_port": free_port(),
        "database_url": "postgresql+psycopg://postgres@127.0.0.1/reelflow",
        **overrides,
    }
    return Settings.model_validate(values)


def _has_vector(url: str) -> bool:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone()
    return row == (1,)


async def test_starts_everything_under_home_and_a_second_stack_reuses_it(home: Path) -> None:
    settings = _settings(home)
    stack = EmbeddedStack(settings, durable=False)
    try:
        await asyncio.to_thread(stack.start_infrastructure)
        assert stack.postgres is not None and stack.temporal is not None
        assert [p.name for p in stack.processes] == ["postgres", "temporal"]
        assert (home / "postgres" / "PG_VERSION").exists()
        assert (home / "temporal" / "temporal.db").exists()
        assert {"postgres.log", "temporal.log"} <= {p.name for p in (home / "logs").iterdir()}
        assert stack.database_url.endswith(f":{settings.postgres_port}/reelflow")
        assert _has_vector(stack.database_url)
        client = await Client.connect(stack.temporal_target)
        assert await registered_search_attributes(client, "default") == SEARCH_ATTRIBUTES

        second = EmbeddedStack(settings)
        await asyncio.to_thread(second.start_infrastructure)
        assert (second.postgres, second.temporal) == (None, None)
        assert len(second.processes) == 0
        second.stop()
        assert stack.postgres.is_running and stack.temporal.is_running, "reuse must not stop"
    finally:
        await asyncio.to_thread(stack.stop)
    assert not is_port_open("127.0.0.1", settings.postgres_port)
    assert not is_port_open("127.0.0.1", settings.temporal_port)


async def test_reused_servers_get_database_and_search_attributes(
    home: Path, postgres_server: EmbeddedPostgres
) -> None:
    # A plain `temporal server start-dev` someone else started: no custom attributes.
    plain = TemporalDevServer(
        home / "plain.db", free_port(), free_port(), ui=False, search_attributes={}
    )
    database = f"stack_{uuid.uuid4().hex[:8]}"
    settings = _settings(
        home,
        postgres_port=postgres_server.port,
        temporal_port=plain.port,
        database_url=f"postgresql+psycopg://postgres@127.0.0.1/{database}",
    )
    try:
        await asyncio.to_thread(plain.start)
        client = await Client.connect(plain.target)
        assert "TenantId" not in await registered_search_attributes(client, "default")

        stack = EmbeddedStack(settings)
        await asyncio.to_thread(stack.start_infrastructure)
        assert len(stack.processes) == 0, "nothing should have been started"
        assert _has_vector(postgres_server.url_for(database))
        assert await registered_search_attributes(client, "default") == SEARCH_ATTRIBUTES
    finally:
        await asyncio.to_thread(plain.stop)
        drop_database(postgres_server.port, database)
