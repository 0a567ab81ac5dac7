"""Stand-ins for the run-slot activities: every run is admitted at once.

For the pipelines' own workflow tests, which run many runs of one tenant and are not about
concurrency limits; `tests/workflows/test_run_slots.py` runs the real activities.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from schemas.admission_activities import (
    ACQUIRE_RUN_SLOT,
    RELEASE_RUN_SLOT,
    AcquireRunSlotInput,
    ReleaseRunSlotInput,
    ReleaseRunSlotOutput,
    RunSlotState,
)


def admit_every_run() -> list[Callable[..., Any]]:
    """`acquire_run_slot` that always admits and `release_run_slot` that frees nothing."""

    @activity.defn(name=ACQUIRE_RUN_SLOT.name)
    async def acquire_run_slot(input: AcquireRunSlotInput) -> RunSlotState:
        return RunSlotState(admitted=True)

    @activity.defn(name=RELEASE_RUN_SLOT.name)
    async def release_run_slot(input: ReleaseRunSlotInput) -> ReleaseRunSlotOutput:
        return ReleaseRunSlotOutput()

    return [acquire_run_slot, release_run_slot]
