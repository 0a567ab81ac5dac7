"""Per-tenant concurrent-run limits, through real workflows and the real run-slot activities.

The pipelines' own steps are stand-ins (`tests/workflows/*/fakes.py`); taking, waiting for
and giving back slots runs against Postgres, on the dev server, as in production: a free
tenant (one concurrent run) starting two ingests sees the second wait, queued at position
1, and start when the first ends however it ends; other tenants are not held up; a
scrape's outlier ingests work under the scrape's slot instead of waiting for a second one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.admission import AdmissionActivities
from reelflow.billing.plans import plan_limits
from reelflow.core.concurrency import queue_positions
from reelflow.core.db import SessionFactory, create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.settings import Settings
from reelflow.core.tenants import create_tenant
from schemas.admission_activities import (
    ACQUIRE_RUN_SLOT,
    RELEASE_RUN_SLOT,
    RUN_SLOT_QUERY,
    RUN_SLOT_SIGNAL,
    WAITING_POLL_S,
    RunSlotState,
)
from schemas.discover import DiscoverInput, DiscoverOutcome, ScrapeStatus
from schemas.ingest import (
    IngestInput,
    IngestResult,
    IngestStage,
    ProbeVideoInput,
    ProbeVideoOutput,
    VideoStatus,
)
from schemas.queues import TaskQueues
from tests.support import assert_eventually
from tests.workflows.discover.fakes import FakeDiscover
from tests.workflows.ingest.fakes import FakePipeline
from tests.workflows.ingest.test_ingest_workflow import new_plan
from workers.pools import activity_worker
from workflows.discover import DiscoverWorkflow, ProcessOutlierWorkflow
from workflows.ingest import IngestWorkflow

SLOT_ACTIVITIES = {ACQUIRE_RUN_SLOT.name, RELEASE_RUN_SLOT.name}

IngestHandle = WorkflowHandle[IngestWorkflow, IngestResult]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    upgrade_database(database_url)
    engine = create_engine(database_url, pool_size=10)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionFactory:
    return session_factory(engine)


@pytest.fixture
def admission(
    sessions: SessionFactory, local_env: WorkflowEnvironment, tmp_path: Path
) -> AdmissionActivities:
    settings = Settings(environment="test", run_concurrency_enabled=True, reelflow_home=tmp_path)
    return AdmissionActivities(sessions=sessions, settings=settings, client=local_env.client)


async def free_tenant(sessions: SessionFactory) -> str:
    async with sessions() as session:
        created = await create_tenant(session, name="one run at a time", plan="free")
        await session.commit()
    return str(created.tenant_id)


def _name(fn: Callable[..., Any]) -> str:
    return str(activity._Definition.must_from_callable(fn).name)


def without_slot_stand_ins(activities: list[Callable[..., Any]]) -> list[Callable[..., Any]]:
    return [fn for fn in activities if _name(fn) not in SLOT_ACTIVITIES]


@dataclass
class HeldIngests:
    """Ingest stand-ins whose probe step holds each run until the test lets it go."""

    fake: FakePipeline = field(default_factory=lambda: FakePipeline(plan=new_plan()))
    probing: set[str] = field(default_factory=set)
    """Videos whose run is inside its probe step (so it holds its slot)."""
    outcome: dict[str, asyncio.Future[str]] = field(default_factory=dict)

    def let_go(self, video_id: str, how: str = "complete") -> None:
        self.outcome.setdefault(video_id, asyncio.get_running_loop().create_future())
        self.outcome[video_id].set_result(how)

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="probe_video")
        async def probe_video(input: ProbeVideoInput) -> ProbeVideoOutput:
            self.probing.add(input.video_id)
            waiting = self.outcome.setdefault(
                input.video_id, asyncio.get_running_loop().create_future()
            )
            how = await asyncio.shield(waiting)
            if how == "fail":
                raise ApplicationError(
                    "the file is not a video", type="not_a_video", non_retryable=True
                )
            return ProbeVideoOutput(
                duration_s=60.0,
                has_audio=False,
                width=640,
                height=360,
                container="mp4",
                video_codec="h264",
                audio_codec=None,
                size_bytes=1000,
            )

        stand_ins = [fn for fn in self.fake.activities() if _name(fn) != "probe_video"]
        return [*without_slot_stand_ins(stand_ins), probe_video]


@asynccontextmanager
async def ingest_workers(
    client: Client, held: HeldIngests, admission: AdmissionActivities
) -> AsyncIterator[TaskQueues]:
    queues = held.fake.queues
    activities: list[Callable[..., Any]] = [
        *held.activities(),
        admission.acquire_run_slot,
        admission.release_run_slot,
    ]
    async with (
        Worker(client, task_queue=queues.workflows, workflows=[IngestWorkflow]),
        activity_worker(client, queues.media, activities),
        activity_worker(client, queues.providers, activities),
    ):
        yield queues


async def start_ingest(client: Client, queues: TaskQueues, tenant_id: str) -> IngestHandle:
    video_id = str(uuid.uuid4())
    return await client.start_workflow(
        IngestWorkflow.run,
        IngestInput(tenant_id=tenant_id, video_id=video_id),
        id=f"ingest-{video_id}",
        task_queue=queues.workflows,
    )


def video_of(handle: IngestHandle) -> str:
    return handle.id.removeprefix("ingest-")


async def slot_of(handle: IngestHandle) -> RunSlotState | None:
    state: RunSlotState | None = await handle.query(
        RUN_SLOT_QUERY,
        result_type=RunSlotState,
    )
    return state


async def queued_at(handle: IngestHandle, position: int) -> RunSlotState:
    async def check() -> RunSlotState:
        state = await slot_of(handle)
        assert state is not None and not state.admitted and state.position == position
        return state

    return await assert_eventually(check, timeout=30)


def test_the_workflows_and_the_library_agree_on_the_wake_up_signal() -> None:
    from reelflow.core import concurrency

    assert RUN_SLOT_SIGNAL == concurrency.RUN_SLOT_SIGNAL
    assert WAITING_POLL_S == concurrency.WAITING_POLL_S
    assert plan_limits("free").concurrent_runs == 1


@pytest.mark.parametrize("first_ends", ["complete", "fail", "cancel"])
async def test_a_free_tenants_second_ingest_waits_queued_until_the_first_ends(
    first_ends: str,
    local_env: WorkflowEnvironment,
    sessions: SessionFactory,
    admission: AdmissionActivities,
) -> None:
    client = local_env.client
    tenant = await free_tenant(sessions)
    held = HeldIngests()
    async with ingest_workers(client, held, admission) as queues:
        first = await start_ingest(client, queues, tenant)
        await assert_eventually(lambda: video_of(first) in held.probing, timeout=30)
        second = await start_ingest(client, queues, tenant)

        waiting = await queued_at(second, 1)
        assert waiting.limit == 1 and waiting.running == 1
        assert "position 1" in waiting.detail

        # It says so where people look: the video reads queued, and so does the run list.
        def reads_queued() -> None:
            states = [s for s in held.fake.states if s.video_id == video_of(second)]
            assert [(s.stage, s.status) for s in states] == [
                (IngestStage.QUEUED, VideoStatus.PENDING)
            ]

        await assert_eventually(reads_queued, timeout=10)
        async with sessions() as session:
            positions = await queue_positions(session, [first.id, second.id])
        assert positions == {first.id: 0, second.id: 1}
        assert video_of(second) not in held.probing

        if first_ends == "cancel":
            await first.cancel()
        else:
            held.let_go(video_of(first), first_ends)
        if first_ends == "complete":
            assert (await first.result()).status == VideoStatus.COMPLETED
        else:
            with pytest.raises(WorkflowFailureError):
                await first.result()
        if first_ends == "cancel":
            held.let_go(video_of(first))  # the stand-in step ends too; nobody waits for it

        # The freed slot goes to the queued run, which starts its work at once (woken by
        # the release, not by its next look in WAITING_POLL_S).
        await assert_eventually(lambda: video_of(second) in held.probing, timeout=20)
        admitted = await slot_of(second)
        assert admitted is not None and admitted.admitted
        held.let_go(video_of(second))
        assert (await second.result()).status == VideoStatus.COMPLETED

    async with sessions() as session:
        assert await queue_positions(session, [first.id, second.id]) == {}


async def test_a_run_canceled_while_queued_leaves_the_queue_and_reads_canceled(
    local_env: WorkflowEnvironment, sessions: SessionFactory, admission: AdmissionActivities
) -> None:
    client = local_env.client
    tenant = await free_tenant(sessions)
    held = HeldIngests()
    async with ingest_workers(client, held, admission) as queues:
        first = await start_ingest(client, queues, tenant)
        await assert_eventually(lambda: video_of(first) in held.probing, timeout=30)
        # Queued in the order the runs asked for a slot.
        second = await start_ingest(client, queues, tenant)
        await queued_at(second, 1)
        third = await start_ingest(client, queues, tenant)
        await queued_at(third, 2)

        await second.cancel()
        with pytest.raises(WorkflowFailureError):
            await second.result()
        # The run behind it moves up (the run list shows it at once; the run itself
        # learns its new place at its next look), and the canceled video says why it stopped.
        async with sessions() as session:
            assert await queue_positions(session, [second.id, third.id]) == {third.id: 1}
        last = [s for s in held.fake.states if s.video_id == video_of(second)][-1]
        assert last.status == VideoStatus.FAILED and last.error_code == "canceled"

        held.let_go(video_of(first))
        await first.result()
        await assert_eventually(lambda: video_of(third) in held.probing, timeout=20)
        held.let_go(video_of(third))
        await third.result()


async def test_another_tenant_is_not_held_up_by_a_busy_one(
    local_env: WorkflowEnvironment, sessions: SessionFactory, admission: AdmissionActivities
) -> None:
    client = local_env.client
    busy, other = await free_tenant(sessions), await free_tenant(sessions)
    held = HeldIngests()
    async with ingest_workers(client, held, admission) as queues:
        first = await start_ingest(client, queues, busy)
        await assert_eventually(lambda: video_of(first) in held.probing, timeout=30)
        queued = await start_ingest(client, queues, busy)
        await queued_at(queued, 1)

        elsewhere = await start_ingest(client, queues, other)
        await assert_eventually(lambda: video_of(elsewhere) in held.probing, timeout=30)
        state = await slot_of(elsewhere)
        assert state is not None and state.admitted
        held.let_go(video_of(elsewhere))
        assert (await elsewhere.result()).status == VideoStatus.COMPLETED
        # Still waiting: only its own tenant's slot frees it.
        assert (await slot_of(queued)) == await queued_at(queued, 1)

        held.let_go(video_of(first))
        await first.result()
        await assert_eventually(lambda: video_of(queued) in held.probing, timeout=20)
        held.let_go(video_of(queued))
        await queued.result()


async def test_a_scrapes_outlier_ingests_work_under_the_scrapes_slot(
    local_env: WorkflowEnvironment, sessions: SessionFactory, admission: AdmissionActivities
) -> None:
    """One slot (Free) and a scrape whose outliers each ingest as a grandchild: were the
    ingests to ask for a slot of their own, they would wait for the scrape forever."""
    client = local_env.client
    tenant = await free_tenant(sessions)
    fake = FakeDiscover(outliers=sorted(uuid.uuid4() for _ in range(3)))
    activities: list[Callable[..., Any]] = [
        *without_slot_stand_ins([*fake.activities(), *fake.ingest.activities()]),
        admission.acquire_run_slot,
        admission.release_run_slot,
    ]
    async with (
        Worker(
            client,
            task_queue=fake.queues.workflows,
            workflows=[DiscoverWorkflow, ProcessOutlierWorkflow, IngestWorkflow],
        ),
        activity_worker(client, fake.queues.media, activities),
        activity_worker(client, fake.queues.providers, activities),
    ):
        handle = await client.start_workflow(
            DiscoverWorkflow.run,
            DiscoverInput(
                tenant_id=uuid.UUID(tenant), project_id=uuid.uuid4(), scrape_id=fake.scrape_id
            ),
            id=f"discover-{fake.scrape_id}",
            task_queue=fake.queues.workflows,
        )
        outcome: DiscoverOutcome = await asyncio.wait_for(handle.result(), timeout=120)
        slot = await handle.query(RUN_SLOT_QUERY, result_type=RunSlotState)

    assert outcome.status == ScrapeStatus.COMPLETED
    assert outcome.processed == 3 and outcome.failed_outliers == 0
    assert len({state.video_id for state in fake.ingest.states}) == 3
    assert slot is not None and slot.admitted
    async with sessions() as session:
        assert await queue_positions(session, [handle.id]) == {}
