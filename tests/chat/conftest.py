"""Fixtures for the chat tests: the session's PostgreSQL, the local embedder, an LLM server.

The local MiniLM embedder is loaded once for the whole run (it is the model the chunks are
indexed with, so retrieval quality here is the product's). Tests get fresh tenants, so they
share the database without seeing each other's videos, sessions or ledger rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.core.db import create_engine
from reelflow.core.migrate import upgrade_database
from reelflow.search.minilm import LocalMiniLMEmbedder
from tests.chat.answerers.servers import FakeLLMServer
from tests.chat.chat_support import AppFactory, Tenant, new_tenant


@pytest.fixture(scope="session")
def chat_database_url(postgres_url: str) -> str:
    upgrade_database(postgres_url)
    return postgres_url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chat_engine(chat_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(chat_database_url, pool_size=5)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def minilm() -> LocalMiniLMEmbedder:
    return LocalMiniLMEmbedder()


@pytest.fixture
def apps(
    chat_engine: AsyncEngine, minilm: LocalMiniLMEmbedder, chat_database_url: str, tmp_path: Path
) -> AppFactory:
    return AppFactory(chat_engine, minilm, chat_database_url, tmp_path)


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def alice(chat_engine: AsyncEngine) -> Tenant:
    return await new_tenant(chat_engine, "alice")


@pytest_asyncio.fixture(loop_scope="session")
async def bob(chat_engine: AsyncEngine) -> Tenant:
    return await new_tenant(chat_engine, "bob")
