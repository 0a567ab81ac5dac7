"""Run-slot activities: a run takes one of its tenant's slots first and gives it back last.

Built once per worker with the sessions, the settings and the worker's Temporal client:
the client checks whether slot holders have closed (a run terminated without releasing)
and signals the queued runs a freed slot goes to, so they start without waiting for
their next look.
"""

from __future__ import annotations

import uuid

from temporalio import activity
from temporalio.client import Client

from reelflow.billing.plans import plan_limits
from reelflow.core import concurrency
from reelflow.core.db import SessionFactory
from reelflow.core.settings import Settings
from schemas.admission_activities import (
    ACQUIRE_RUN_SLOT,
    RELEASE_RUN_SLOT,
    AcquireRunSlotInput,
    ReleaseRunSlotInput,
    ReleaseRunSlotOutput,
    RunSlotState,
)


def run_slots_on(settings: Settings) -> bool:
    """Whether runs are limited: `RUN_CONCURRENCY_ENABLED`, or on outside the test environment."""
    if settings.run_concurrency_enabled is not None:
        return settings.run_concurrency_enabled
    return settings.environment != "test"


def plan_run_limit(plan: str) -> int:
    """The plan's concurrent runs (the table's; an unknown plan gets Free's)."""
    return plan_limits(plan).concurrent_runs


class AdmissionActivities:
    """Built once per worker; the providers pool runs them (short database transactions)."""

    def __init__(
        self, *, sessions: SessionFactory, settings: Settings, client: Client | None
    ) -> None:
        self._sessions = sessions
        self._enabled = run_slots_on(settings)
        self._client = client
        """None (a worker built without one): no wake-up signals and no reaping; queued
        runs still find their slot at their next look."""

    @activity.defn(name=ACQUIRE_RUN_SLOT.name)
    async def acquire_run_slot(self, input: AcquireRunSlotInput) -> RunSlotState:
        """Take a slot or queue for one; with limits off, every run is admitted at once."""
        if not self._enabled:
            return RunSlotState(admitted=True)
        state = await concurrency.acquire(
            self._sessions,
            tenant_id=uuid.UUID(input.tenant_id),
            workflow_id=input.workflow_id,
            pipeline=input.pipeline,
            run_limit=plan_run_limit,
            client=self._client,
        )
        return RunSlotState(
            admitted=state.admitted,
            position=state.position,
            running=state.running,
            limit=state.limit,
            detail=state.describe(),
        )

    @activity.defn(name=RELEASE_RUN_SLOT.name)
    async def release_run_slot(self, input: ReleaseRunSlotInput) -> ReleaseRunSlotOutput:
        """Free the run's slot (or queue place) and signal the runs admitted in its place.

        Runs even with limits off, so a row left from when they were on is not kept.
        """
        woken = await concurrency.release_and_wake(
            self._sessions,
            tenant_id=uuid.UUID(input.tenant_id),
            workflow_id=input.workflow_id,
            run_limit=plan_run_limit,
            client=self._client,
        )
        return ReleaseRunSlotOutput(woken=woken)
