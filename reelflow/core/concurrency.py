"""Per-tenant limits on runs executing at once: run slots kept in Postgres.

A run asks for a slot before its first real step and gives it back when it ends, however
it ends. A run that finds its tenant's slots all taken is `queued` and waits; slots are
handed out strictly in the order runs asked (`run_admissions.id`), so one tenant's burst
cannot overtake its own earlier runs, and it can never occupy more workers than its plan's
`concurrent_runs`, leaving the rest to other tenants.

Every decision runs under a transaction-scoped advisory lock on the tenant, so API
processes and workers deciding at the same moment agree. Asking again for a run that
already has a row is idempotent (a retried activity, a replayed workflow): it answers the
row's current state. A run that ended without giving its slot back (terminated, timed out)
is found by `reap_slots`, which asks the workflow engine which holders have closed.

The limit is passed in on every call (from the tenant's plan), so a plan
change applies to the next admission; running runs are never stopped by a downgrade.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from reelflow.core.db import SessionFactory
from schemas.access_tables import RunAdmission
from schemas.tables import Tenant

SlotStatus = Literal["running", "queued"]

RUNNING: SlotStatus = "running"
QUEUED: SlotStatus = "queued"


@dataclass(frozen=True)
class SlotState:
    """Where a run stands: holding a slot, or waiting at `position` (1 = next)."""

    workflow_id: str
    state: SlotStatus
    position: int
    """0 while running; otherwise how many queued runs of the tenant go first, plus one."""
    running: int
    """The tenant's runs holding a slot now."""
    limit: int

    @property
    def admitted(self) -> bool:
        return self.state == RUNNING

    def describe(self) -> str:
        """A line for the run's stage or error field, e.g. in `GET /v1/runs/{id}`."""
        if self.admitted:
            return "running"
        return (
            f"queued: {self.running} of {self.limit} concurrent runs in use; "
            f"position {self.position} in the tenant's queue"
        )


async def _lock_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> None:
    # Serializes every admission decision of one tenant across processes until commit.
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"run_admissions:{tenant_id}"},
    )


async def _running_count(session: AsyncSession, tenant_id: uuid.UUID) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(RunAdmission)
        .where(RunAdmission.tenant_id == tenant_id, RunAdmission.state == RUNNING)
    )
    return int(count or 0)


async def _admit_waiting(session: AsyncSession, tenant_id: uuid.UUID, limit: int) -> list[str]:
    """Give free slots to the oldest queued runs; the tenant must be locked."""
    free = limit - await _running_count(session, tenant_id)
    if free <= 0:
        return []
    chosen = list(
        await session.scalars(
            select(RunAdmission.id)
            .where(RunAdmission.tenant_id == tenant_id, RunAdmission.state == QUEUED)
            .order_by(RunAdmission.id)
            .limit(free)
        )
    )
    if not chosen:
        return []
    await session.execute(
        update(RunAdmission)
        .where(RunAdmission.id.in_(chosen))
        .values(state=RUNNING, started_at=func.now())
    )
    return list(
        await session.scalars(
            select(RunAdmission.workflow_id)
            .where(RunAdmission.id.in_(chosen))
            .order_by(RunAdmission.id)
        )
    )


async def _state_of(
    session: AsyncSession, tenant_id: uuid.UUID, workflow_id: str, limit: int
) -> SlotState | None:
    row = await session.scalar(
        select(RunAdmission).where(
            RunAdmission.workflow_id == workflow_id, RunAdmission.tenant_id == tenant_id
        )
    )
    if row is None:
        return None
    running = await _running_count(session, tenant_id)
    position = 0
    if row.state == QUEUED:
        ahead = await session.scalar(
            select(func.count())
            .select_from(RunAdmission)
            .where(
                RunAdmission.tenant_id == tenant_id,
                RunAdmission.state == QUEUED,
                RunAdmission.id < row.id,
            )
        )
        position = int(ahead or 0) + 1
    state: SlotStatus = RUNNING if row.state == RUNNING else QUEUED
    return SlotState(
        workflow_id=workflow_id, state=state, position=position, running=running, limit=limit
    )


async def request_slot(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    workflow_id: str,
    pipeline: str,
    limit: int,
    start: dict[str, Any] | None = None,
) -> SlotState:
    """Ask for a run slot: running at once when the tenant has one free, else queued.

    Idempotent per `workflow_id`: asking again answers the current state (and admits the
    run if a slot has come free meanwhile). The caller commits.

    Args:
        session: A session; the decision holds the tenant's lock until it commits.
        tenant_id: The run's tenant.
        workflow_id: The run (its business id, e.g. `ingest-<video_id>`).
        pipeline: The run's pipeline, for operators.
        limit: The tenant's concurrent runs now (its plan's).
        start: What a dispatcher would need to start the run later, if it starts runs.
    """
    if limit < 1:
        raise ValueError("a tenant's concurrent-run limit is at least 1")
    await _lock_tenant(session, tenant_id)
    await session.execute(
        insert(RunAdmission)
        .values(
            workflow_id=workflow_id,
            tenant_id=tenant_id,
            pipeline=pipeline,
            state=QUEUED,
            start=start or {},
        )
        .on_conflict_do_nothing(index_elements=[RunAdmission.workflow_id])
    )
    await _admit_waiting(session, tenant_id, limit)
    state = await _state_of(session, tenant_id, workflow_id, limit)
    if state is None:
        raise LookupError(f"run {workflow_id} belongs to another tenant")
    return state


async def slot_state(
    session: AsyncSession, *, tenant_id: uuid.UUID, workflow_id: str, limit: int
) -> SlotState | None:
    """The run's slot now (admitting it first if a slot is free); None without a request."""
    await _lock_tenant(session, tenant_id)
    await _admit_waiting(session, tenant_id, limit)
    return await _state_of(session, tenant_id, workflow_id, limit)


async def release_slot(
    session: AsyncSession, *, tenant_id: uuid.UUID, workflow_id: str, limit: int
) -> list[str]:
    """Give a run's slot (or its place in the queue) back; idempotent. The caller commits.

    Returns:
        The queued runs this admitted, oldest first: wake them (e.g. signal them) so they
        need not wait for their next poll.
    """
    await _lock_tenant(session, tenant_id)
    await session.execute(
        delete(RunAdmission).where(
            RunAdmission.workflow_id == workflow_id, RunAdmission.tenant_id == tenant_id
        )
    )
    return await _admit_waiting(session, tenant_id, limit)


async def reap_slots(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    limit: int,
    closed: Callable[[list[str]], Awaitable[Iterable[str]]],
) -> list[str]:
    """Free the slots of runs that ended without giving them back; admit the next runs.

    Args:
        closed: Given the running holders' workflow ids, answers those whose runs have
            closed (see `closed_workflows`).

    Returns:
        The queued runs admitted in their place, oldest first.
    """
    holders = list(
        await session.scalars(
            select(RunAdmission.workflow_id).where(
                RunAdmission.tenant_id == tenant_id, RunAdmission.state == RUNNING
            )
        )
    )
    finished = set(await closed(holders)) if holders else set()
    await _lock_tenant(session, tenant_id)
    if finished:
        await session.execute(
            delete(RunAdmission).where(
                RunAdmission.tenant_id == tenant_id,
                RunAdmission.workflow_id.in_(finished),
                RunAdmission.state == RUNNING,
            )
        )
    return await _admit_waiting(session, tenant_id, limit)


async def queue_positions(session: AsyncSession, workflow_ids: Iterable[str]) -> dict[str, int]:
    """Queued runs among `workflow_ids` and their positions (1 = next); running ones are 0."""
    ids = list(workflow_ids)
    if not ids:
        return {}
    ranked = (
        select(
            RunAdmission.workflow_id,
            RunAdmission.state,
            func.row_number()
            .over(
                partition_by=(RunAdmission.tenant_id, RunAdmission.state), order_by=RunAdmission.id
            )
            .label("position"),
        )
        .where(
            RunAdmission.tenant_id.in_(
                select(RunAdmission.tenant_id).where(RunAdmission.workflow_id.in_(ids))
            )
        )
        .subquery()
    )
    rows = await session.execute(
        select(ranked.c.workflow_id, ranked.c.state, ranked.c.position).where(
            ranked.c.workflow_id.in_(ids)
        )
    )
    return {wid: (0 if state == RUNNING else int(pos)) for wid, state, pos in rows}


async def closed_workflows(client: Client, workflow_ids: list[str]) -> set[str]:
    """Those of `workflow_ids` whose latest run has closed (or that the engine does not know).

    For `reap_slots`. A run that continued as new is still running: `describe` follows the
    chain to its latest run.
    """
    finished: set[str] = set()
    for workflow_id in workflow_ids:
        try:
            description = await client.get_workflow_handle(workflow_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                finished.add(workflow_id)
                continue
            raise
        if description.status not in (None, WorkflowExecutionStatus.RUNNING):
            finished.add(workflow_id)
    return finished


RUN_SLOT_SIGNAL = "run_slot_granted"
"""What `release_and_wake` signals to the runs it admitted, so they need not wait for a poll."""
WAITING_POLL_S = 30
"""How often a queued run should look again when no signal came (a lost signal, a reaped slot)."""


RunLimit = Callable[[str], int]
"""A plan's concurrent runs, by plan name: `lambda plan: plan_limits(plan).concurrent_runs`
(passed in, since `reelflow.core` knows no plans)."""


async def tenant_run_limit(session: AsyncSession, tenant_id: uuid.UUID, run_limit: RunLimit) -> int:
    """The tenant's concurrent runs, from its plan now."""
    plan = await session.scalar(select(Tenant.plan).where(Tenant.id == tenant_id))
    return max(1, run_limit(plan or "free"))


async def acquire(
    sessions: SessionFactory,
    *,
    tenant_id: uuid.UUID,
    workflow_id: str,
    pipeline: str,
    run_limit: RunLimit,
    client: Client | None = None,
) -> SlotState:
    """A run's first step: take one of its tenant's slots, or queue for one.

    With a `client`, a tenant whose slots are all taken first has the holders checked
    (`reap_slots`), so a run terminated without releasing cannot block its tenant for good.
    Runs again (a retried activity, a periodic look while queued) answer the current state.
    """
    async with sessions() as session:
        limit = await tenant_run_limit(session, tenant_id, run_limit)
        state = await request_slot(
            session, tenant_id=tenant_id, workflow_id=workflow_id, pipeline=pipeline, limit=limit
        )
        await session.commit()
    if state.admitted or client is None:
        return state
    async with sessions() as session:
        await reap_slots(
            session,
            tenant_id=tenant_id,
            limit=limit,
            closed=lambda ids: closed_workflows(client, ids),
        )
        refreshed = await _state_of(session, tenant_id, workflow_id, limit)
        await session.commit()
    return refreshed or state


async def release_and_wake(
    sessions: SessionFactory,
    *,
    tenant_id: uuid.UUID,
    workflow_id: str,
    run_limit: RunLimit,
    client: Client | None = None,
) -> list[str]:
    """A run's last step, however it ended: give the slot back and signal who got it.

    A signal that fails is not an error: the admitted run finds its slot at its next poll.

    Returns:
        The runs admitted in its place, oldest first.
    """
    async with sessions() as session:
        limit = await tenant_run_limit(session, tenant_id, run_limit)
        admitted = await release_slot(
            session, tenant_id=tenant_id, workflow_id=workflow_id, limit=limit
        )
        await session.commit()
    if client is not None:
        for admitted_id in admitted:
            try:
                await client.get_workflow_handle(admitted_id).signal(RUN_SLOT_SIGNAL)
            except RPCError:
                continue
    return admitted
