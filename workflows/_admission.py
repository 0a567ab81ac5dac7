"""A run's place among its tenant's concurrent runs, shared by every pipeline's workflow.

A run takes one of its tenant's slots before its work and gives it back however it ends
(completed, failed, canceled). While the tenant's slots are all taken the run is queued: it
says so (the workflow's `on_queued` sets its stage and records it) and waits for the
wake-up signal a released slot sends, looking again every `WAITING_POLL_S` in case the
signal was lost or a holder died without releasing.

Who takes a slot: a run nobody waits for (started by the API, the CLI, a schedule, or as a
child its parent abandons, marked with the memo `run_slot: own`). A child its parent waits
for works under its parent's slot: asking for a second slot of the same tenant could only
deadlock (the parent holds the only slot while waiting for the child that waits for it),
and the parent's slot already stands for all the work its run causes.

A run that continues as new keeps its slot: the next run asks again under the same
workflow id and is answered "running" at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from types import TracebackType

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows._steps import call, step

with workflow.unsafe.imports_passed_through():
    from schemas.admission_activities import (
        ACQUIRE_RUN_SLOT,
        OWN_SLOT,
        RELEASE_RUN_SLOT,
        RUN_SLOT_MEMO,
        RUN_SLOT_PATCH,
        RUN_SLOT_SIGNAL,
        WAITING_POLL_S,
        AcquireRunSlotInput,
        ReleaseRunSlotInput,
        RunSlotState,
    )
    from schemas.queues import TaskQueues

OnQueued = Callable[[RunSlotState], Awaitable[None]]
"""Called when the run is first queued and whenever its position changes."""


def takes_own_slot() -> bool:
    """Whether this run asks for a slot: recorded after the gate existed, and not working
    under a parent that waits for it."""
    if not workflow.patched(RUN_SLOT_PATCH):
        return False
    if workflow.info().parent is None:
        return True
    return bool(workflow.memo_value(RUN_SLOT_MEMO, default=None, type_hint=str) == OWN_SLOT)


class RunSlot:
    """One run's slot: `async with RunSlot(...):` around the run's work.

    Entering takes the slot or waits for it (queued); leaving gives it back, unless the
    run continues as new. Canceled while queued, the run leaves the queue and the
    `CancelledError` reaches the workflow, which records the cancel as it always does.
    """

    def __init__(
        self,
        *,
        tenant_id: str,
        pipeline: str,
        queues: TaskQueues,
        on_queued: OnQueued,
    ) -> None:
        self._tenant_id = tenant_id
        self._pipeline = pipeline
        self._queues = queues
        self._on_queued = on_queued
        self._workflow_id = workflow.info().workflow_id
        self.gated = takes_own_slot()
        self.state: RunSlotState | None = None
        """The last answer: queued with its position, or admitted; None without a slot."""
        self._asked = False
        self._woken = False
        if self.gated:
            workflow.set_signal_handler(RUN_SLOT_SIGNAL, self._wake)

    def _wake(self) -> None:
        self._woken = True

    async def __aenter__(self) -> RunSlot:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, workflow.ContinueAsNewError):
            return
        await self.release()

    async def acquire(self) -> None:
        """Take the slot, waiting (queued, in request order) while the tenant has none free.

        Raises:
            StepFailed: the slot could not be asked for (the database stayed unreachable).
            asyncio.CancelledError: the run was canceled while queued; it has left the queue.
        """
        if not self.gated or self._asked:
            return
        self._asked = True
        request = AcquireRunSlotInput(
            tenant_id=self._tenant_id, workflow_id=self._workflow_id, pipeline=self._pipeline
        )
        try:
            # Cleared before each look, so a signal sent while the look runs is not lost.
            self._woken = False
            state = await step(call(ACQUIRE_RUN_SLOT, request, self._queues))
            shown: int | None = None
            while not state.admitted:
                self.state = state
                if state.position != shown:
                    shown = state.position
                    await self._on_queued(state)
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self._woken, timeout=timedelta(seconds=WAITING_POLL_S)
                    )
                self._woken = False
                state = await step(call(ACQUIRE_RUN_SLOT, request, self._queues))
            self.state = state
        except (Exception, asyncio.CancelledError):
            # Canceled or failed while asking: leave the queue (or the slot just granted).
            # Not on other exits (a worker evicting the run from its cache): no step may run.
            await self.release()
            raise

    async def release(self) -> None:
        """Give the slot (or the place in the queue) back; once, and never failing the run.

        A release that cannot reach the database is left to the reaper: the next run of
        the tenant that finds no free slot frees the slots of closed runs.
        """
        if not self._asked:
            return
        self._asked = False
        try:
            await call(
                RELEASE_RUN_SLOT,
                ReleaseRunSlotInput(tenant_id=self._tenant_id, workflow_id=self._workflow_id),
                self._queues,
            )
        except ActivityError:
            workflow.logger.warning("could not give back the run slot of %s", self._workflow_id)
        except asyncio.CancelledError:
            # Canceled while giving back: the reaper frees the slot once the run closes.
            workflow.logger.warning("run slot of %s left to the reaper", self._workflow_id)
            raise
