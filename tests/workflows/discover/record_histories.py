"""Record the checked-in discover histories that the replay tests guard.

Run after an intentional workflow change that is made safe with `workflow.patched`, to add
histories of the new code next to the old ones (never delete the old ones while runs of that
code may still be open):

    .venv/bin/python -m tests.workflows.discover.record_histories --tag <change>

Without `--tag` it writes `<scenario>.json` and refuses to replace an existing file. Each
scenario records the scrape run and, where it has one, its first outlier's child run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from temporalio.client import WorkflowFailureError

from schemas.discover import Platform, ScrapeSource
from tests.support import start_time_skipping_environment
from tests.support.histories import history_path, recorder_tag
from tests.workflows.discover.fakes import FakeDiscover, post_ids
from tests.workflows.discover.test_discover_workflow import start

HISTORIES = Path(__file__).parent / "histories"


def _refused() -> FakeDiscover:
    outliers = post_ids(3)
    return FakeDiscover(outliers=outliers, refused_posts={outliers[0]})


SCENARIOS: dict[str, Callable[[], FakeDiscover]] = {
    "discover_apify_completed": lambda: FakeDiscover(
        platforms=[Platform.INSTAGRAM, Platform.TIKTOK]
    ),
    "discover_actor_failed": lambda: FakeDiscover(final_status="FAILED"),
    "discover_outlier_refused": _refused,
    "discover_continued": lambda: FakeDiscover(
        source=ScrapeSource.DATASET_FILE, outliers=post_ids(5), per_run=2
    ),
}


async def record(tag: str | None) -> None:
    env = await start_time_skipping_environment()
    try:
        for name, make in SCENARIOS.items():
            fake = make()
            async with fake.workers(env.client):
                handle = await start(env.client, fake)
                with contextlib.suppress(WorkflowFailureError):
                    await handle.result()
                # The first run of the chain (continue-as-new) is the one open runs resemble.
                first = env.client.get_workflow_handle(
                    handle.id, run_id=handle.first_execution_run_id
                )
                history = await first.fetch_history()
                history_path(HISTORIES, name, tag).write_text(history.to_json())
                if fake.outliers and "import_posts" in fake.calls:
                    child = env.client.get_workflow_handle(
                        f"discover-outlier-{fake.scrape_id}-{fake.outliers[0]}"
                    )
                    child_history = await child.fetch_history()
                    history_path(HISTORIES, f"{name}_outlier", tag).write_text(
                        child_history.to_json()
                    )
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record(recorder_tag(__doc__)))
