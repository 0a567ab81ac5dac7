"""The real generation activities against PostgreSQL, local storage and test providers.

`harness` gives each test its own tenant, queue family, storage directory and settings on
a database migrated once per module; `harness.workers(client, registry)` runs the three
pools with the real activity classes (no ingest models are loaded).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities.admission import AdmissionActivities
from activities.generation import (
    GenerationCatalogActivities,
    GenerationMediaActivities,
    GenerationProviderActivities,
)
from reelflow.core.db import SessionFactory, create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.runs import start_generation
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from reelflow.core.tenants import create_tenant
from reelflow.generation import quotas
from reelflow.generation.routing import (
    GenerationSpec,
    ProviderRegistry,
    admit_generation,
    list_attempts,
    plan_route,
)
from schemas.generation import GenerationResult, generation_workflow_id
from schemas.generation_tables import (
    Generation,
    GenerationAttempt,
    QuotaReservation,
    QuotaUsage,
)
from schemas.queues import TaskQueues
from workers.pools import activity_worker
from workflows.generation import GenerationWorkflow


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


@dataclass
class Harness:
    settings: Settings
    sessions: SessionFactory
    storage: LocalStorage
    tenant_id: uuid.UUID
    plan: quotas.Plan
    queues: TaskQueues
    home: Path

    def jobs_dir(self, name: str) -> Path:
        return self.home / "jobs" / name

    async def request(
        self,
        registry: ProviderRegistry,
        *,
        prompt: str = "A lighthouse at dusk, waves below",
        provider: str = "local",
        duration_s: int = 1,
        aspect_ratio: str = "16:9",
        resolution: str = "480p",
        max_cost_usd: Decimal | None = None,
        reserve: bool = True,
    ) -> str:
        """Write a generation as the API does (row + quota reservation); returns its id."""
        spec = GenerationSpec(provider, duration_s, aspect_ratio, resolution, max_cost_usd)
        route = plan_route(registry, spec)
        generation_id = uuid.uuid4()
        async with self.sessions.begin() as session:
            if reserve:
                await admit_generation(
                    session,
                    tenant_id=self.tenant_id,
                    plan=self.plan,
                    generation_id=generation_id,
                    prompt=prompt,
                    spec=spec,
                    route=route,
                    improved_from_video_id=None,
                    now=datetime.now(UTC),
                )
            else:
                session.add(
                    Generation(
                        id=generation_id,
                        tenant_id=self.tenant_id,
                        prompt=prompt,
                        requested_provider=provider,
                        duration_s=duration_s,
                        aspect_ratio=aspect_ratio,
                        resolution=resolution,
                        estimated_cost_usd=route.estimated_cost_usd,
                        cost_usd=Decimal(0),
                        status="queued",
                        approval="not_required",
                    )
                )
        return str(generation_id)

    async def start(
        self, client: Client, generation_id: str
    ) -> WorkflowHandle[GenerationWorkflow, GenerationResult]:
        await start_generation(
            client,
            tenant_id=str(self.tenant_id),
            generation_id=generation_id,
            task_queue=self.queues.workflows,
        )
        return client.get_workflow_handle_for(
            GenerationWorkflow.run, generation_workflow_id(generation_id)
        )

    @asynccontextmanager
    async def workers(self, client: Client, registry: ProviderRegistry) -> AsyncIterator[None]:
        """The three pools with the real generation activities, as `workers/pools.py` wires
        them (media: validation and local jobs; providers: the database and remote jobs)."""
        scratch = self.home / "scratch"
        with ThreadPoolExecutor(4, thread_name_prefix="test-gen") as executor:

            def jobs() -> GenerationProviderActivities:
                return GenerationProviderActivities(
                    sessions=self.sessions,
                    storage=self.storage,
                    registry=registry,
                    scratch_dir=scratch,
                    executor=executor,
                )

            catalog = GenerationCatalogActivities(self.sessions, self.settings, registry)
            admission = AdmissionActivities(
                sessions=self.sessions, settings=self.settings, client=client
            )
            media = GenerationMediaActivities(
                sessions=self.sessions,
                storage=self.storage,
                settings=self.settings,
                scratch_dir=scratch,
                executor=executor,
            )
            local, remote = jobs(), jobs()
            job_calls = [
                "submit_generation_job",
                "poll_generation_job",
                "download_generation_output",
                "cancel_generation_job",
            ]
            async with (
                Worker(client, task_queue=self.queues.workflows, workflows=[GenerationWorkflow]),
                activity_worker(
                    client,
                    self.queues.media,
                    [
                        media.validate_generation_output,
                        *(getattr(local, name) for name in job_calls),
                    ],
                ),
                activity_worker(
                    client,
                    self.queues.providers,
                    [
                        catalog.prepare_generation,
                        catalog.finalize_generation,
                        catalog.release_generation,
                        *(getattr(remote, name) for name in job_calls),
                        admission.acquire_run_slot,
                        admission.release_run_slot,
                    ],
                ),
            ):
                yield

    # --- reads --------------------------------------------------------------------------

    async def generation(self, generation_id: str) -> Generation:
        async with self.sessions() as session:
            row = await session.get(Generation, uuid.UUID(generation_id))
        assert row is not None
        return row

    async def attempts(self, generation_id: str) -> list[GenerationAttempt]:
        async with self.sessions() as session:
            return await list_attempts(session, uuid.UUID(generation_id))

    async def reservation(self, generation_id: str) -> QuotaReservation | None:
        async with self.sessions() as session:
            return await session.get(QuotaReservation, uuid.UUID(generation_id))

    async def usage(self) -> QuotaUsage | None:
        async with self.sessions() as session:
            return await session.scalar(
                select(QuotaUsage).where(QuotaUsage.tenant_id == self.tenant_id)
            )


@pytest_asyncio.fixture(loop_scope="session")
async def harness(migrated_url: str, engine: AsyncEngine, tmp_path: Path) -> Harness:
    sessions = session_factory(engine)
    async with sessions.begin() as session:
        tenant = await create_tenant(session, name="generation-tests", plan="pro")
    settings = Settings(
        environment="test",
        database_url=migrated_url,
        reelflow_home=tmp_path,
        storage_url=(tmp_path / "media").as_uri(),
        generation_poll_initial_s=0.5,
        generation_poll_max_s=2.0,
    )
    return Harness(
        settings=settings,
        sessions=sessions,
        storage=LocalStorage(tmp_path / "media"),
        tenant_id=tenant.tenant_id,
        plan=quotas.PLANS["pro"],
        queues=TaskQueues.for_prefix(f"gen{uuid.uuid4().hex[:12]}"),
        home=tmp_path,
    )
