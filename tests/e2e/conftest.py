"""A real pipeline for end-to-end tests: migrated Postgres, local storage, real workers.

Each module gets its own database and its own task-queue family, so runs of different
tests never meet.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from reelflow.core.db import SessionFactory, create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.settings import Settings
from reelflow.core.tenants import create_tenant
from reelflow.dev.samples import SpeechVideo, make_speech_video

SENTENCES = (
    "Good morning and welcome to the kitchen, today we bake bread together.",
    "First, mix the flour with warm water, salt and a spoon of yeast.",
    "Knead the dough for ten minutes until it feels smooth and elastic.",
    "While the dough rises, let us talk about the history of sourdough in Europe.",
    "The oven should be very hot, about two hundred and thirty degrees.",
    "Finally, let the bread cool down before you cut the first slice.",
)


@dataclass
class Pipeline:
    settings: Settings
    sessions: SessionFactory
    client: Client
    tenant_id: str


@pytest.fixture(scope="module")
def speech_video(tmp_path_factory: pytest.TempPathFactory) -> SpeechVideo:
    return make_speech_video(tmp_path_factory.mktemp("media") / "bread.mp4", SENTENCES)


@pytest.fixture(scope="module")
def migrated_url(database_url: str) -> str:
    upgrade_database(database_url)
    return database_url


def pipeline_settings(database_url: str, home: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "test",
        "database_url": database_url,
        "reelflow_home": home,
        "storage_url": (home / "media").resolve().as_uri(),
        "task_queue_prefix": f"t{uuid.uuid4().hex[:12]}",
        # Short windows so a short video still transcribes in parallel.
        "transcribe_segment_s": 12.0,
        "media_concurrency": 2,
        "provider_concurrency": 8,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pipeline(
    migrated_url: str, local_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    settings = pipeline_settings(migrated_url, tmp_path_factory.mktemp("home"))
    engine = create_engine(migrated_url, pool_size=4)
    sessions = session_factory(engine)
    async with sessions.begin() as session:
        tenant = await create_tenant(session, name="e2e")
    try:
        yield Pipeline(settings, sessions, local_env.client, str(tenant.tenant_id))
    finally:
        await engine.dispose()
