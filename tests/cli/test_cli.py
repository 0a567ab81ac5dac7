"""The `reelflow` command line, run as a user would run it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from reelflow.core.db import create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.tenants import tenant_for_api_key


def reelflow(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reelflow.cli", *args],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def migrated_url(database_url: str) -> str:
    upgrade_database(database_url)
    return database_url


async def _tenant_name(database_url: str, api_key: str) -> str | None:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            tenant = await tenant_for_api_key(session, api_key)
            return tenant.name if tenant else None
    finally:
        await engine.dispose()


def test_tenants_create_prints_a_working_api_key_once(migrated_url: str) -> None:
    result = reelflow(
        "tenants", "create", "acme", "--plan", "pro", "--json", database_url=migrated_url
    )
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["plan"] == "pro" and created["api_key"].startswith("rf_")
    assert asyncio.run(_tenant_name(migrated_url, created["api_key"])) == "acme"


def test_tenants_create_refuses_an_unknown_plan(migrated_url: str) -> None:
    result = reelflow("tenants", "create", "acme", "--plan", "platinum", database_url=migrated_url)
    assert result.returncode == 2
    assert "unknown plan 'platinum'" in result.stdout + result.stderr


def test_bad_settings_fail_fast_with_the_variable_named(migrated_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reelflow.cli", "tenants", "create", "acme"],
        env={**os.environ, "DATABASE_URL": migrated_url, "STORAGE_URL": "ftp://nowhere"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "invalid configuration: STORAGE_URL must start with file:// or s3://, got 'ftp'"
    )
