"""Run slots per tenant: the plan's limit holds, queued runs start in order and say where."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from reelflow.core import concurrency
from reelflow.core.concurrency import SlotState
from reelflow.core.db import SessionFactory, create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.tenants import create_tenant


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


async def _tenant(sessions: SessionFactory) -> uuid.UUID:
    async with sessions() as session:
        created = await create_tenant(session, name="busy")
        await session.commit()
    return created.tenant_id


async def _request(
    sessions: SessionFactory, tenant: uuid.UUID, workflow_id: str, limit: int = 2
) -> SlotState:
    async with sessions() as session:
        state = await concurrency.request_slot(
            session, tenant_id=tenant, workflow_id=workflow_id, pipeline="ingest", limit=limit
        )
        await session.commit()
    return state


async def _release(
    sessions: SessionFactory, tenant: uuid.UUID, workflow_id: str, limit: int = 2
) -> list[str]:
    async with sessions() as session:
        admitted = await concurrency.release_slot(
            session, tenant_id=tenant, workflow_id=workflow_id, limit=limit
        )
        await session.commit()
    return admitted


async def _state(
    sessions: SessionFactory, tenant: uuid.UUID, workflow_id: str, limit: int = 2
) -> SlotState | None:
    async with sessions() as session:
        state = await concurrency.slot_state(
            session, tenant_id=tenant, workflow_id=workflow_id, limit=limit
        )
        await session.commit()
    return state


async def _known(
    sessions: SessionFactory, tenant: uuid.UUID, workflow_id: str, limit: int = 2
) -> SlotState:
    state = await _state(sessions, tenant, workflow_id, limit)
    assert state is not None
    return state


async def test_runs_past_the_limit_wait_in_order_and_say_where(sessions: SessionFactory) -> None:
    tenant = await _tenant(sessions)
    states = [await _request(sessions, tenant, f"run-{i}") for i in range(5)]

    assert [(s.state, s.position) for s in states] == [
        ("running", 0),
        ("running", 0),
        ("queued", 1),
        ("queued", 2),
        ("queued", 3),
    ]
    assert states[4].describe() == (
        "queued: 2 of 2 concurrent runs in use; position 3 in the tenant's queue"
    )

    assert await _release(sessions, tenant, "run-1") == ["run-2"]
    assert (await _state(sessions, tenant, "run-2")) == SlotState("run-2", "running", 0, 2, 2)
    assert [(await _known(sessions, tenant, f"run-{i}")).position for i in (3, 4)] == [1, 2]

    # A run that gives up its place in the queue lets the later ones move up.
    assert await _release(sessions, tenant, "run-3") == []
    assert (await _known(sessions, tenant, "run-4")).position == 1
    assert await _release(sessions, tenant, "run-0") == ["run-4"]
    assert await _release(sessions, tenant, "run-0") == []  # idempotent


async def test_asking_again_is_idempotent(sessions: SessionFactory) -> None:
    tenant = await _tenant(sessions)
    first = await _request(sessions, tenant, "a", limit=1)
    queued = await _request(sessions, tenant, "b", limit=1)
    assert first.admitted and not queued.admitted
    assert await _request(sessions, tenant, "a", limit=1) == first
    assert await _request(sessions, tenant, "b", limit=1) == queued
    assert await _state(sessions, tenant, "never-asked", limit=1) is None


async def test_simultaneous_requests_never_exceed_the_limit(sessions: SessionFactory) -> None:
    tenant = await _tenant(sessions)
    states = await asyncio.gather(*(_request(sessions, tenant, f"burst-{i}", 3) for i in range(20)))

    assert sum(s.admitted for s in states) == 3
    assert sorted(s.position for s in states if not s.admitted) == list(range(1, 18))


async def test_tenants_have_their_own_slots(sessions: SessionFactory) -> None:
    busy, quiet = await _tenant(sessions), await _tenant(sessions)
    for i in range(4):
        await _request(sessions, busy, f"busy-{i}", limit=1)
    assert (await _request(sessions, quiet, "quiet-0", limit=1)).admitted


async def test_a_higher_limit_admits_waiting_runs_and_a_lower_one_stops_nothing(
    sessions: SessionFactory,
) -> None:
    tenant = await _tenant(sessions)
    for i in range(4):
        await _request(sessions, tenant, f"up-{i}", limit=1)
    # Upgraded: the next look at the queue admits up to the new limit, in order.
    assert (await _known(sessions, tenant, "up-2", limit=3)).admitted
    assert not (await _known(sessions, tenant, "up-3", limit=3)).admitted
    # Downgraded: the three running keep running; nothing new starts until they end.
    assert await _release(sessions, tenant, "up-0", limit=1) == []
    assert await _release(sessions, tenant, "up-1", limit=1) == []
    assert await _release(sessions, tenant, "up-2", limit=1) == ["up-3"]


async def test_positions_for_a_list_of_runs(sessions: SessionFactory) -> None:
    tenant = await _tenant(sessions)
    for i in range(3):
        await _request(sessions, tenant, f"pos-{i}", limit=1)
    async with sessions() as session:
        positions = await concurrency.queue_positions(session, ["pos-0", "pos-2", "unknown"])
    assert positions == {"pos-0": 0, "pos-2": 2}


async def test_slots_of_runs_that_ended_without_releasing_are_reaped(
    sessions: SessionFactory, local_env: WorkflowEnvironment
) -> None:
    client: Client = local_env.client
    tenant = await _tenant(sessions)
    # Runs no worker serves: they stay running until terminated, like a stuck run.
    holders = [f"slot-holder-{uuid.uuid4()}" for _ in range(2)]
    for workflow_id in holders:
        await client.start_workflow("NoSuchWorkflow", id=workflow_id, task_queue="nobody-serves")
        await _request(sessions, tenant, workflow_id, limit=2)
    waiting = await _request(sessions, tenant, "waiting", limit=2)
    assert not waiting.admitted

    async def reap() -> list[str]:
        async with sessions() as session:
            admitted = await concurrency.reap_slots(
                session,
                tenant_id=tenant,
                limit=2,
                closed=lambda ids: concurrency.closed_workflows(client, ids),
            )
            await session.commit()
        return admitted

    assert await reap() == []
    await client.get_workflow_handle(holders[0]).terminate("stuck")
    assert await reap() == ["waiting"]
    await client.get_workflow_handle(holders[1]).terminate("done with the test")
    assert await concurrency.closed_workflows(client, [*holders, "never-started"]) == {
        *holders,
        "never-started",
    }


async def test_a_run_takes_its_plans_slots_and_its_release_wakes_the_next(
    sessions: SessionFactory, local_env: WorkflowEnvironment
) -> None:
    client: Client = local_env.client
    tenant = await _tenant(sessions)
    plans_seen: list[str] = []

    def one_run(plan: str) -> int:
        plans_seen.append(plan)
        return 1

    runs = [f"gated-{uuid.uuid4()}" for _ in range(3)]
    for workflow_id in runs:
        await client.start_workflow("NoSuchWorkflow", id=workflow_id, task_queue="nobody-serves")
    states = [
        await concurrency.acquire(
            sessions,
            tenant_id=tenant,
            workflow_id=workflow_id,
            pipeline="ingest",
            run_limit=one_run,
            client=client,
        )
        for workflow_id in runs
    ]
    assert [s.state for s in states] == ["running", "queued", "queued"]
    assert set(plans_seen) == {"free"}

    assert await concurrency.release_and_wake(
        sessions, tenant_id=tenant, workflow_id=runs[0], run_limit=one_run, client=client
    ) == [runs[1]]
    history = await client.get_workflow_handle(runs[1]).fetch_history()
    signals = [
        event.workflow_execution_signaled_event_attributes.signal_name
        for event in history.events
        if event.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert signals == [concurrency.RUN_SLOT_SIGNAL]

    # The holder is terminated without releasing: the next acquire reaps its slot.
    await client.get_workflow_handle(runs[1]).terminate("killed by an operator")
    again = await concurrency.acquire(
        sessions,
        tenant_id=tenant,
        workflow_id=runs[2],
        pipeline="ingest",
        run_limit=one_run,
        client=client,
    )
    assert again.admitted
    await client.get_workflow_handle(runs[0]).terminate("test finished")
    await client.get_workflow_handle(runs[2]).terminate("test finished")
