"""Record the history of a generation that indexes its video (`index: true`).

`record_histories` records the scenarios every generation goes through; this one needs the
stand-in ingest workflow on the workflow queue as well, so it has its own recorder:

    .venv/bin/python -m tests.workflows.generation.record_index_history --tag index-result
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from schemas.generation import GenerationInput, generation_workflow_id
from tests.support import start_time_skipping_environment
from tests.support.histories import history_path, recorder_tag
from tests.workflows.generation.fakes import FakeGeneration, fake_plan
from tests.workflows.generation.indexing import indexing_workers
from workflows.generation import GenerationWorkflow

HISTORIES = Path(__file__).parent / "histories"


async def record(tag: str | None) -> None:
    env = await start_time_skipping_environment()
    try:
        fake = FakeGeneration(
            plan=fake_plan(poll_initial_s=1.0).model_copy(update={"index": True}), latency_s=0.5
        )
        generation_id = str(uuid.uuid4())
        async with indexing_workers(env.client, fake):
            handle = await env.client.start_workflow(
                GenerationWorkflow.run,
                GenerationInput(tenant_id=str(uuid.uuid4()), generation_id=generation_id),
                id=generation_workflow_id(generation_id),
                task_queue=fake.queues.workflows,
            )
            await handle.result()
        history = await handle.fetch_history()
        history_path(HISTORIES, "generation_indexed", tag).write_text(history.to_json())
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record(recorder_tag(__doc__)))
