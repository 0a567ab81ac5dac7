"""A migrated database per module for the billing workflow's real activities."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.core.db import SessionFactory, create_engine, session_factory
from reelflow.core.migrate import upgrade_database


@pytest.fixture(scope="module")
def migrated_url(database_url: str) -> str:
    upgrade_database(database_url)
    return database_url


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    db = create_engine(migrated_url, pool_size=8)
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionFactory:
    return session_factory(engine)
