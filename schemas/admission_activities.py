"""Run slots as workflows ask for them: take one before the work, give it back after.

A tenant may have at most its plan's `concurrent_runs` runs working at once
(`reelflow/core/concurrency.py`); a run beyond that waits, queued in request order. These
two steps are how a workflow takes part: `acquire_run_slot` first (again while queued,
on a wake-up signal or a periodic look), `release_run_slot` last, however the run ended.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from schemas.contracts import (
    DATABASE_DEADLINE,
    DATABASE_RETRY,
    DATABASE_TIMEOUT,
    ActivityContract,
    Pool,
)

RUN_SLOT_PATCH = "run-slots"
"""The `workflow.patched` marker of runs that take a slot; runs recorded before it take none."""

RUN_SLOT_MEMO = "run_slot"
"""Memo key a parent sets on a child it does not wait for (`"own"`): that child takes a slot
of its own. A child its parent waits for works under the parent's slot instead."""
OWN_SLOT = "own"


class AcquireRunSlotInput(BaseModel):
    """Ask for (or look again at) a run's slot; idempotent per workflow id."""

    tenant_id: str
    workflow_id: str
    pipeline: str


class RunSlotState(BaseModel):
    """Where the run stands among its tenant's runs."""

    admitted: bool
    """True: the run holds a slot (or limits are off) and may work."""
    position: int = Field(default=0, ge=0)
    """While queued, its place in the tenant's queue (1 is next); 0 once admitted."""
    running: int = 0
    """The tenant's runs holding a slot when it looked."""
    limit: int = 0
    """The tenant's concurrent runs (its plan's); 0 when limits are off."""
    detail: str = "running"
    """A line a person reads, e.g. `queued: 1 of 1 concurrent runs in use; position 2 …`."""


class ReleaseRunSlotInput(BaseModel):
    """Give the run's slot (or its place in the queue) back; idempotent."""

    tenant_id: str
    workflow_id: str


class ReleaseRunSlotOutput(BaseModel):
    woken: list[str] = Field(default_factory=list)
    """Queued runs the freed slot went to, oldest first (each was signaled)."""


ACQUIRE_RUN_SLOT = ActivityContract(
    name="acquire_run_slot",
    input=AcquireRunSlotInput,
    output=RunSlotState,
    pool=Pool.PROVIDERS,
    start_to_close=DATABASE_TIMEOUT,
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)
"""Take one of the tenant's slots, or queue for one (and free slots of runs that closed)."""

RELEASE_RUN_SLOT = ActivityContract(
    name="release_run_slot",
    input=ReleaseRunSlotInput,
    output=ReleaseRunSlotOutput,
    pool=Pool.PROVIDERS,
    start_to_close=DATABASE_TIMEOUT,
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)
"""Free the run's slot and wake the queued runs it goes to."""

ADMISSION_ACTIVITIES: tuple[ActivityContract[Any, Any], ...] = (
    ACQUIRE_RUN_SLOT,
    RELEASE_RUN_SLOT,
)
"""Every run-slot activity; the worker pools register each on its contract's pool."""

RUN_SLOT_SIGNAL = "run_slot_granted"
"""Sent to a queued run when a freed slot goes to it (`reelflow.core.concurrency`'s name)."""
WAITING_POLL_S = 30
"""A queued run looks again this often when no signal came (a lost signal, a reaped slot)."""
RUN_SLOT_QUERY = "run_slot"
"""Every slot-taking workflow answers this query with its `RunSlotState` (None: it takes none)."""
