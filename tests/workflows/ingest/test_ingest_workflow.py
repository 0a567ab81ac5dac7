"""IngestWorkflow orchestration on the time-skipping server, with stand-in activities."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from schemas.ingest import (
    IngestInput,
    IngestPlan,
    IngestResult,
    IngestStage,
    VideoStatus,
)
from tests.workflows.ingest.fakes import FakePipeline
from workers.pools import activity_worker
from workflows.ingest import IngestWorkflow


def new_plan(**overrides: object) -> IngestPlan:
    values: dict[str, object] = {
        "source_key": "tenants/t/videos/v/source.mp4",
        "transcription_provider": "local",
        "embedding_provider": "local",
        "segment_s": 120.0,
        "embed_batch_size": 5,
    }
    values.update(overrides)
    return IngestPlan.model_validate(values)


@asynccontextmanager
async def pipeline_workers(client: Client, fake: FakePipeline) -> AsyncIterator[None]:
    """Workers on a queue family of this test's own, so tests never steal each other's tasks."""
    activities = fake.activities()
    async with (
        Worker(client, task_queue=fake.queues.workflows, workflows=[IngestWorkflow]),
        activity_worker(
            client,
            fake.queues.media,
            activities,
        ),
        activity_worker(
            client,
            fake.queues.providers,
            activities,
        ),
    ):
        yield


async def start(client: Client, fake: FakePipeline) -> WorkflowHandle[IngestWorkflow, IngestResult]:
    video_id = str(uuid.uuid4())
    return await client.start_workflow(
        IngestWorkflow.run,
        IngestInput(tenant_id=str(uuid.uuid4()), video_id=video_id),
        id=f"ingest-{video_id}",
        task_queue=fake.queues.workflows,
    )


@pytest.fixture(params=["time-skipping", "local"])
def env(request: pytest.FixtureRequest) -> WorkflowEnvironment:
    """Each test runs on the time-skipping test server and on the dev server."""
    name = "local_env" if request.param == "local" else "time_skipping_env"
    environment: WorkflowEnvironment = request.getfixturevalue(name)
    return environment


async def test_a_video_goes_through_every_stage_to_completed(env: WorkflowEnvironment) -> None:
    fake = FakePipeline(plan=new_plan(), duration_s=300.0, chunk_count=12)
    async with pipeline_workers(env.client, fake):
        handle = await start(env.client, fake)
        result = await handle.result()
        final = await handle.query(IngestWorkflow.progress)

    assert final.status == VideoStatus.COMPLETED and final.segments_done == 3
    assert result.status == VideoStatus.COMPLETED
    assert result.chunk_count == 12
    # 300 s in 120 s windows: 0-120, 120-240, 240-300, each transcribed exactly once.
    assert sorted((t.start_s, t.end_s) for t in fake.transcribed) == [
        (0.0, 120.0),
        (120.0, 240.0),
        (240.0, 300.0),
    ]
    assert len({t.ledger_key for t in fake.transcribed}) == 3
    assert sorted((e.start_index, e.end_index) for e in fake.embedded) == [
        (0, 5),
        (5, 10),
        (10, 12),
    ]
    stages = [s.stage for s in fake.states]
    assert stages[0] == IngestStage.PROBING
    assert stages[-1] == IngestStage.COMPLETED
    assert IngestStage.TRANSCRIBING in stages and IngestStage.EMBEDDING in stages
    progress = [s.progress for s in fake.states]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert result.cost_usd == pytest.approx(0.006 * 5 + 3 * 0.000002)


async def test_ledger_keys_are_derived_from_the_video_not_the_attempt(
    env: WorkflowEnvironment,
) -> None:
    fake = FakePipeline(plan=new_plan(), duration_s=100.0, transcribe_failures_left=2)
    async with pipeline_workers(env.client, fake):
        handle = await start(env.client, fake)
        await handle.result()
    video_id = (await handle.describe()).id.removeprefix("ingest-")
    assert [t.ledger_key for t in fake.transcribed] == [f"ingest-{video_id}/transcribe/local/0"]
    # Two failed attempts were retried by Temporal, not by the workflow.
    assert fake.calls.count("transcribe_window[0]") == 3


async def test_a_video_without_audio_completes_with_zero_chunks_and_says_why(
    env: WorkflowEnvironment,
) -> None:
    fake = FakePipeline(plan=new_plan(), has_audio=False)
    async with pipeline_workers(env.client, fake):
        result = await (await start(env.client, fake)).result()
    assert result.status == VideoStatus.COMPLETED
    assert result.chunk_count == 0
    assert result.note is not None and "no audio track" in result.note
    assert not fake.transcribed and "chunk_transcript" not in fake.calls
    assert fake.states[-1].chunk_count == 0
    assert fake.states[-1].note == result.note


async def test_a_rejected_file_fails_the_run_with_the_reason(env: WorkflowEnvironment) -> None:
    fake = FakePipeline(
        plan=new_plan(),
        probe_error=ApplicationError(
            "the file is not a video", type="not_a_video", non_retryable=True
        ),
    )
    async with pipeline_workers(env.client, fake):
        handle = await start(env.client, fake)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "not_a_video" and "not a video" in cause.message
    assert fake.calls.count("probe_video") == 1, "a permanent rejection is not retried"
    last = fake.states[-1]
    assert last.status == VideoStatus.FAILED
    assert last.error_code == "not_a_video"
    assert last.error_message == "the file is not a video"


async def test_a_resumed_run_skips_the_steps_already_done(env: WorkflowEnvironment) -> None:
    plan = new_plan(
        duration_s=300.0,
        has_audio=True,
        audio_key="k/audio.wav",
        thumbnail_key="k/thumbnail.jpg",
        windows_done=[0, 1],
        cost_usd_so_far=0.024,
    )
    fake = FakePipeline(plan=plan, chunk_count=4)
    async with pipeline_workers(env.client, fake):
        result = await (await start(env.client, fake)).result()
    assert "probe_video" not in fake.calls and "extract_media" not in fake.calls
    assert [t.window_index for t in fake.transcribed] == [2]
    assert result.chunk_count == 4
    assert result.cost_usd == pytest.approx(0.024 + 0.006 + 0.000002)


async def test_an_imported_video_is_downloaded_first(env: WorkflowEnvironment) -> None:
    fake = FakePipeline(
        plan=new_plan(source_ready=False, source_url="https://videos.example.com/a.mp4")
    )
    async with pipeline_workers(env.client, fake):
        await (await start(env.client, fake)).result()
    assert fake.calls[:3] == ["load_ingest_plan", "download_source", "probe_video"]


async def test_cancel_marks_the_video_failed_as_canceled(env: WorkflowEnvironment) -> None:
    fake = FakePipeline(plan=new_plan(), duration_s=300.0, transcribe_delay_s=600.0)
    async with pipeline_workers(env.client, fake):
        handle = await start(env.client, fake)
        while not any(s.stage == IngestStage.TRANSCRIBING for s in fake.states):
            await asyncio.sleep(0.05)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert fake.states[-1].status == VideoStatus.FAILED
    assert fake.states[-1].error_code == "canceled"


async def test_the_windows_cut_at_silences_are_the_ones_transcribed(
    env: WorkflowEnvironment,
) -> None:
    cut_at_pauses = [(0.0, 131.25), (131.25, 244.8), (244.8, 300.0)]
    fake = FakePipeline(plan=new_plan(), duration_s=300.0, speech_windows=cut_at_pauses)
    async with pipeline_workers(env.client, fake):
        result = await (await start(env.client, fake)).result()

    assert sorted((t.start_s, t.end_s) for t in fake.transcribed) == cut_at_pauses
    assert result.status == VideoStatus.COMPLETED


async def test_the_decoded_length_wins_over_a_container_that_understates_it(
    env: WorkflowEnvironment,
) -> None:
    # The header says 5 s; the audio decodes to 60 s with speech at 48 s.
    fake = FakePipeline(
        plan=new_plan(segment_s=30.0),
        duration_s=5.0,
        audio_duration_s=60.0,
        speech_windows=[(0.0, 30.5), (30.5, 60.0)],
    )
    async with pipeline_workers(env.client, fake):
        result = await (await start(env.client, fake)).result()

    assert result.duration_s == 60.0
    assert max(t.end_s for t in fake.transcribed) == 60.0


async def test_a_resumed_run_transcribes_the_stored_windows_it_has_not_done(
    env: WorkflowEnvironment,
) -> None:
    stored = [(0.0, 118.2), (118.2, 236.9), (236.9, 300.0)]
    plan = new_plan(
        duration_s=300.0,
        has_audio=True,
        audio_key="k/audio.wav",
        thumbnail_key="k/thumbnail.jpg",
        windows=stored,
        windows_done=[0, 2],
    )
    fake = FakePipeline(plan=plan, chunk_count=4)
    async with pipeline_workers(env.client, fake):
        await (await start(env.client, fake)).result()

    assert "extract_media" not in fake.calls
    assert [(t.window_index, t.start_s, t.end_s) for t in fake.transcribed] == [(1, 118.2, 236.9)]


async def test_speech_left_without_text_is_named_in_the_result(env: WorkflowEnvironment) -> None:
    fake = FakePipeline(plan=new_plan(), duration_s=300.0, gaps_per_window=1)
    async with pipeline_workers(env.client, fake):
        result = await (await start(env.client, fake)).result()

    assert result.status == VideoStatus.COMPLETED
    assert result.note is not None and "3 stretch(es) of speech have no text" in result.note
    assert fake.states[-1].note == result.note
