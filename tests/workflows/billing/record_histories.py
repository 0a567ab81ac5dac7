"""Record the checked-in billing histories that the replay tests guard.

Run after an intentional workflow change that is made safe with `workflow.patched`, to add
histories of the new code next to the old ones (never delete the old ones while runs of that
code may still be open):

    .venv/bin/python -m tests.workflows.billing.record_histories --tag <change>

Without `--tag` it writes `<scenario>.json` and refuses to replace an existing file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support import start_time_skipping_environment
from tests.support.histories import history_path, recorder_tag
from tests.workflows.billing.fakes import FakeBilling
from tests.workflows.billing.scenarios import SCENARIOS, run_scenario

HISTORIES = Path(__file__).parent / "histories"


async def record(tag: str | None) -> None:
    HISTORIES.mkdir(exist_ok=True)
    env = await start_time_skipping_environment()
    try:
        for name, make in SCENARIOS.items():
            fake = FakeBilling()
            workflow_id, _ = await run_scenario(env, fake, make(fake.tenant_id), copies=2)
            history = await env.client.get_workflow_handle(workflow_id).fetch_history()
            history_path(HISTORIES, name, tag).write_text(history.to_json())
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record(recorder_tag(__doc__)))
