"""Record the checked-in improvement histories that the replay tests guard.

Run after an intentional workflow change that is made safe with `workflow.patched`, to add
histories of the new code next to the old ones (never delete the old ones while runs of that
code may still be open):

    .venv/bin/python -m tests.workflows.improve.record_histories --tag <change>

Without `--tag` it writes `<scenario>.json` and refuses to replace an existing file. Each
scenario records the improvement run and its child generation run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from temporalio.client import Client, WorkflowFailureError

from tests.support import assert_eventually, start_time_skipping_environment
from tests.support.histories import history_path, recorder_tag
from tests.workflows.generation.fakes import FakeGeneration, fake_plan
from tests.workflows.improve.fakes import FakeImprove
from tests.workflows.improve.test_improve_workflow import Handle, child_of, over_budget, start

HISTORIES = Path(__file__).parent / "histories"


async def _nothing(client: Client, handle: Handle, fake: FakeImprove) -> None:
    return None


async def _cancel_while_polling(client: Client, handle: Handle, fake: FakeImprove) -> None:
    await assert_eventually(lambda: bool(fake.generation.polls), timeout=20)
    await handle.cancel()


Scenario = tuple[
    Callable[[], FakeImprove], bool, Callable[[Client, Handle, FakeImprove], Awaitable[None]]
]

SCENARIOS: dict[str, Scenario] = {
    "improve_completed": (FakeImprove, False, _nothing),
    "improve_child_failed": (
        lambda: FakeImprove(
            generation=FakeGeneration(
                plan=fake_plan(poll_initial_s=0.2), latency_s=0.1, failed_jobs={1, 2, 3}
            )
        ),
        False,
        _nothing,
    ),
    "improve_canceled": (
        lambda: FakeImprove(
            generation=FakeGeneration(plan=fake_plan(poll_initial_s=0.2), latency_s=3600.0)
        ),
        False,
        _cancel_while_polling,
    ),
    "improve_approved_in_advance": (over_budget, True, _nothing),
}


async def record(tag: str | None) -> None:
    env = await start_time_skipping_environment()
    try:
        for name, (make, approve_over_budget, act) in SCENARIOS.items():
            fake = make()
            async with fake.workers(env.client):
                handle = await start(env.client, fake, approve_over_budget=approve_over_budget)
                await act(env.client, handle, fake)
                with contextlib.suppress(WorkflowFailureError):
                    await handle.result()
                history = await handle.fetch_history()
                history_path(HISTORIES, name, tag).write_text(history.to_json())
                child = await child_of(env.client, handle).fetch_history()
                history_path(HISTORIES, f"{name}_generation", tag).write_text(child.to_json())
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record(recorder_tag(__doc__)))
