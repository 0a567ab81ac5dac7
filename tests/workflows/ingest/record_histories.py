"""Record the checked-in ingest histories that the replay tests guard.

Run after an intentional workflow change that is made safe with `workflow.patched`, to
add histories of the new code next to the old ones (never delete the old ones while runs
of that code may still be open):

    .venv/bin/python -m tests.workflows.ingest.record_histories --tag <change>

Without `--tag` it writes `<scenario>.json` and refuses to replace an existing file.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from schemas.ingest import IngestInput
from tests.support import start_time_skipping_environment
from tests.support.histories import history_path, recorder_tag
from tests.workflows.ingest.fakes import FakePipeline
from tests.workflows.ingest.test_ingest_workflow import new_plan, pipeline_workers
from workflows.ingest import IngestWorkflow

HISTORIES = Path(__file__).parent / "histories"

SCENARIOS: dict[str, FakePipeline] = {
    "ingest_completed": FakePipeline(plan=new_plan(), duration_s=300.0, chunk_count=12),
    "ingest_no_audio": FakePipeline(plan=new_plan(), has_audio=False),
    "ingest_rejected": FakePipeline(
        plan=new_plan(),
        probe_error=ApplicationError(
            "the file is not a video", type="not_a_video", non_retryable=True
        ),
    ),
    "ingest_resumed": FakePipeline(
        plan=new_plan(
            duration_s=300.0,
            has_audio=True,
            audio_key="k/audio.wav",
            thumbnail_key="k/thumbnail.jpg",
            windows_done=[0, 1],
        ),
        chunk_count=4,
    ),
    # Windows cut at silences, over audio longer than the container declared.
    "ingest_speech_windows": FakePipeline(
        plan=new_plan(segment_s=30.0),
        duration_s=5.0,
        audio_duration_s=60.0,
        speech_windows=[(0.0, 30.5), (30.5, 60.0)],
        chunk_count=3,
    ),
    "ingest_resumed_speech_windows": FakePipeline(
        plan=new_plan(
            duration_s=300.0,
            has_audio=True,
            audio_key="k/audio.wav",
            thumbnail_key="k/thumbnail.jpg",
            windows=[(0.0, 118.2), (118.2, 236.9), (236.9, 300.0)],
            windows_done=[0, 2],
        ),
        chunk_count=4,
    ),
}


async def record(tag: str | None) -> None:
    env = await start_time_skipping_environment()
    try:
        for name, fake in SCENARIOS.items():
            async with pipeline_workers(env.client, fake):
                video_id = str(uuid.uuid4())
                handle = await env.client.start_workflow(
                    IngestWorkflow.run,
                    IngestInput(tenant_id=str(uuid.uuid4()), video_id=video_id),
                    id=f"ingest-{video_id}",
                    task_queue=fake.queues.workflows,
                )
                with contextlib.suppress(WorkflowFailureError):
                    await handle.result()
                history = await handle.fetch_history()
            history_path(HISTORIES, name, tag).write_text(history.to_json())
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record(recorder_tag(__doc__)))
