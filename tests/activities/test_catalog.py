"""`CatalogActivities` in `ActivityEnvironment`: short database steps.

They run no blocking work, so they send no heartbeats and there is nothing to resume; a
cancel must still end them promptly, with their transaction rolled back.
"""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import select, text, update

from activities.catalog import CatalogActivities
from reelflow.ingest.speech_plan import SpeechPlan
from schemas.ingest import IngestPlanInput, IngestStage, VideoStateInput, VideoStatus
from schemas.tables import Video
from tests.activities.conftest import World
from tests.activities.support import CANCEL_BOUND_S, activity_env, cancel_and_wait, start


def catalog_activities(world: World) -> CatalogActivities:
    return CatalogActivities(world.sessions, world.settings, embedding_model="local/test-model")


def state(world: World, video_id: str, status: VideoStatus) -> VideoStateInput:
    return VideoStateInput(
        tenant_id=str(world.tenant_id),
        video_id=video_id,
        status=status,
        stage=IngestStage.TRANSCRIBING,
        progress=0.4,
    )


async def test_the_plan_and_the_state_are_written_without_heartbeats(world: World) -> None:
    video_id, key = await world.add_video(duration_s=12.5, has_audio=True)
    env, heartbeats = activity_env()

    plan = await env.run(
        catalog_activities(world).load_ingest_plan,
        IngestPlanInput(tenant_id=str(world.tenant_id), video_id=video_id),
    )
    updated = await env.run(
        catalog_activities(world).set_video_state,
        state(world, video_id, VideoStatus.TRANSCRIBING),
    )

    assert (plan.source_key, plan.duration_s, plan.has_audio) == (key, 12.5, True)
    assert plan.windows_done == [] and plan.chunks_embedded == 0
    assert updated.updated
    row = await world.video(video_id)
    assert (row.status, row.stage, row.progress) == ("transcribing", "transcribing", 0.4)
    assert heartbeats.details == []


async def test_a_canceled_state_write_leaves_the_row_as_it_was(world: World) -> None:
    video_id, _ = await world.add_video()
    env, _ = activity_env()

    # Another transaction holds the row, so the activity's UPDATE waits on its lock.
    async with world.sessions.begin() as holder:
        await holder.execute(select(Video).where(Video.id == uuid.UUID(video_id)).with_for_update())
        run = start(
            env.run(
                catalog_activities(world).set_video_state,
                state(world, video_id, VideoStatus.COMPLETED),
            )
        )
        await wait_until_blocked_on_a_lock(world)
        elapsed = await cancel_and_wait(env, run)

    assert elapsed < CANCEL_BOUND_S
    row = await world.video(video_id)
    assert row.status == "processing" and row.completed_at is None


async def wait_until_blocked_on_a_lock(world: World) -> None:
    """Until some backend waits for a lock (the activity's UPDATE on our locked row)."""
    for _ in range(200):
        # A fresh transaction each time: statistics views are a snapshot per transaction.
        async with world.sessions() as session:
            waiting = await session.scalar(
                text(
                    "select count(*) from pg_stat_activity "
                    "where wait_event_type = 'Lock' and datname = current_database()"
                )
            )
        if waiting:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the activity never reached the database")


async def test_the_plan_returns_the_stored_windows_cut_at_silences(world: World) -> None:
    video_id, _ = await world.add_video(duration_s=250.0, has_audio=True)
    stored = SpeechPlan(
        audio_duration_s=250.0,
        voiced=[(2.0, 98.0), (100.0, 150.0), (152.0, 250.0)],
        windows=[(0.0, 99.0), (99.0, 250.0)],
    )
    env, _ = activity_env()
    load = IngestPlanInput(tenant_id=str(world.tenant_id), video_id=video_id)

    before = await env.run(catalog_activities(world).load_ingest_plan, load)
    async with world.sessions.begin() as session:
        await session.execute(
            update(Video)
            .where(Video.id == uuid.UUID(video_id))
            .values(transcription_plan=stored.to_json())
        )
    after = await env.run(catalog_activities(world).load_ingest_plan, load)

    assert before.windows is None
    assert after.windows == [(0.0, 99.0), (99.0, 250.0)]
