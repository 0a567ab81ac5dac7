"""The three generation activity classes in `ActivityEnvironment`.

* `GenerationCatalogActivities` — database steps: no heartbeats; a cancel rolls back.
* `GenerationProviderActivities` — provider calls through `run_blocking`, heartbeated by
  step. The local renderer's ffmpeg belongs to the *job*, not to the activity that
  submitted or polled it: canceling a poll must not kill it (the next poll finds the job).
* `GenerationMediaActivities` — validation runs ffprobe/ffmpeg; a cancel stops the
  running ffmpeg within 2 s and records nothing.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, text

from activities.generation import (
    GenerationCatalogActivities,
    GenerationMediaActivities,
    GenerationProviderActivities,
    output_key,
)
from reelflow.generation import quotas
from reelflow.generation.providers.local import LocalRenderer
from reelflow.generation.routing import (
    GenerationSpec,
    ProviderRegistry,
    admit_generation,
    plan_route,
)
from schemas.generation import (
    DownloadOutputInput,
    PollJobInput,
    PrepareGenerationInput,
    SubmitJobInput,
    ValidateOutputInput,
)
from schemas.generation_tables import Generation, GenerationAttempt, QuotaReservation
from tests.activities.conftest import World
from tests.activities.support import (
    CANCEL_BOUND_S,
    activity_env,
    assert_stopped,
    cancel_and_wait,
    executor_is_free,
    ffmpeg_writing,
    recording_processes,
    start,
)


@pytest.fixture
def registry(world: World) -> ProviderRegistry:
    return ProviderRegistry([LocalRenderer(world.home / "jobs", fps=12)])


def renderer_of(registry: ProviderRegistry) -> LocalRenderer:
    provider = registry.get("local", "ffmpeg")
    assert isinstance(provider, LocalRenderer)
    return provider


async def job_finished(registry: ProviderRegistry, job_id: str) -> str:
    """The local job's final state, once its render thread has ended."""
    for thread in threading.enumerate():
        if thread.name == f"render-{job_id}":
            await asyncio.to_thread(thread.join, 120)
            assert not thread.is_alive()
    return renderer_of(registry).status(job_id).state


async def new_generation(world: World, registry: ProviderRegistry, duration_s: int = 1) -> str:
    spec = GenerationSpec("local", duration_s, "16:9", "480p", None)
    generation_id = uuid.uuid4()
    async with world.sessions.begin() as session:
        await admit_generation(
            session,
            tenant_id=world.tenant_id,
            plan=quotas.PLANS["pro"],
            generation_id=generation_id,
            prompt="A lighthouse at dusk",
            spec=spec,
            route=plan_route(registry, spec),
            improved_from_video_id=None,
            now=datetime.now(UTC),
        )
    return str(generation_id)


async def generation_row(world: World, generation_id: str) -> Generation:
    async with world.sessions() as session:
        row = await session.get(Generation, uuid.UUID(generation_id))
    assert row is not None
    return row


def provider_activities(world: World, registry: ProviderRegistry) -> GenerationProviderActivities:
    return GenerationProviderActivities(
        sessions=world.sessions,
        storage=world.storage,
        registry=registry,
        scratch_dir=world.scratch / "generation",
        executor=world.executor,
    )


def media_activities(world: World) -> GenerationMediaActivities:
    return GenerationMediaActivities(
        sessions=world.sessions,
        storage=world.storage,
        settings=world.settings,
        scratch_dir=world.scratch / "generation",
        executor=world.executor,
    )


# --- catalog --------------------------------------------------------------------------------


async def test_prepare_is_a_database_step_without_heartbeats(
    world: World, registry: ProviderRegistry
) -> None:
    generation_id = await new_generation(world, registry)
    env, heartbeats = activity_env()

    plan = await env.run(
        GenerationCatalogActivities(world.sessions, world.settings, registry).prepare_generation,
        PrepareGenerationInput(tenant_id=str(world.tenant_id), generation_id=generation_id),
    )

    assert [c.provider for c in plan.candidates] == ["local"]
    assert heartbeats.details == []


async def test_a_canceled_prepare_changes_nothing(world: World, registry: ProviderRegistry) -> None:
    generation_id = await new_generation(world, registry)
    before = await generation_row(world, generation_id)
    env, _ = activity_env()

    async with world.sessions.begin() as holder:
        # Another transaction holds the generation, so prepare waits on its row lock.
        await holder.execute(
            select(Generation).where(Generation.id == uuid.UUID(generation_id)).with_for_update()
        )
        run = start(
            env.run(
                GenerationCatalogActivities(
                    world.sessions, world.settings, registry
                ).prepare_generation,
                PrepareGenerationInput(tenant_id=str(world.tenant_id), generation_id=generation_id),
            )
        )
        await wait_until_blocked_on_a_lock(world)
        elapsed = await cancel_and_wait(env, run)

    assert elapsed < CANCEL_BOUND_S
    after = await generation_row(world, generation_id)
    assert (after.status, after.provider, after.approval) == (
        before.status,
        before.provider,
        before.approval,
    )
    async with world.sessions() as session:
        reservation = await session.get(QuotaReservation, uuid.UUID(generation_id))
    assert reservation is not None  # the API's reservation, untouched


async def wait_until_blocked_on_a_lock(world: World) -> None:
    for _ in range(200):
        async with world.sessions() as session:  # a fresh statistics snapshot each time
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


# --- providers ------------------------------------------------------------------------------


async def submit(world: World, registry: ProviderRegistry, generation_id: str) -> str:
    env, heartbeats = activity_env()
    out = await env.run(
        provider_activities(world, registry).submit_generation_job,
        SubmitJobInput(
            tenant_id=str(world.tenant_id),
            generation_id=generation_id,
            attempt=1,
            provider="local",
            model="ffmpeg",
            idempotency_key=f"{generation_id}/1",
        ),
    )
    assert set(heartbeats.steps) <= {"submit"}
    return out.job_id


def poll_input(world: World, generation_id: str, job_id: str) -> PollJobInput:
    return PollJobInput(
        tenant_id=str(world.tenant_id),
        generation_id=generation_id,
        attempt=1,
        provider="local",
        model="ffmpeg",
        job_id=job_id,
        run_id=f"generation-{generation_id}",
    )


async def test_a_local_job_is_submitted_polled_and_downloaded(
    world: World, registry: ProviderRegistry
) -> None:
    generation_id = await new_generation(world, registry)
    job_id = await submit(world, registry, generation_id)
    assert await job_finished(registry, job_id) == "succeeded"
    env, heartbeats = activity_env()

    polled = await env.run(
        provider_activities(world, registry).poll_generation_job,
        poll_input(world, generation_id, job_id),
    )
    downloaded = await env.run(
        provider_activities(world, registry).download_generation_output,
        DownloadOutputInput(
            tenant_id=str(world.tenant_id),
            generation_id=generation_id,
            attempt=1,
            provider="local",
            model="ffmpeg",
            job_id=job_id,
        ),
    )

    assert polled.state == "succeeded"
    assert downloaded.output_key == output_key(str(world.tenant_id), generation_id, 1)
    assert world.storage.size(downloaded.output_key) == downloaded.size_bytes > 0
    # Provider calls are quick here; any heartbeat names its step and claims nothing.
    assert set(heartbeats.steps) <= {"status", "download"}
    assert all(d["done"] == {} for d in heartbeats.details)
    async with world.sessions() as session:
        attempt = await session.get(GenerationAttempt, (uuid.UUID(generation_id), 1))
    assert attempt is not None and attempt.provider_job_id == job_id
    assert attempt.output_key == downloaded.output_key


async def test_canceling_a_poll_leaves_the_jobs_own_render_running(
    world: World, registry: ProviderRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    generation_id = await new_generation(world, registry, duration_s=30)
    with recording_processes(monkeypatch) as processes:
        job_id = await submit(world, registry, generation_id)
        render = await processes.wait_for(ffmpeg_writing("mp4"))
        env, _ = activity_env()
        run = start(
            env.run(
                provider_activities(world, registry).poll_generation_job,
                poll_input(world, generation_id, job_id),
            )
        )
        await asyncio.sleep(0)
        await cancel_and_wait(env, run)
        await executor_is_free(world.executor)

        # The render is the provider's job, not the activity's work: it goes on, and the
        # next poll (the retried activity) finds it finished.
        assert render.poll() is None or render.returncode == 0
        assert await job_finished(registry, job_id) == "succeeded"
    assert render.returncode == 0
    retried, _ = activity_env(attempt=2)
    polled = await retried.run(
        provider_activities(world, registry).poll_generation_job,
        poll_input(world, generation_id, job_id),
    )
    assert polled.state == "succeeded"


# --- media ----------------------------------------------------------------------------------


async def stored_output(world: World, generation_id: str, source: Path) -> str:
    key = output_key(str(world.tenant_id), generation_id, 1)
    world.storage.put_file(key, source, content_type="video/mp4")
    return key


def validate_input(world: World, generation_id: str, key: str) -> ValidateOutputInput:
    return ValidateOutputInput(
        tenant_id=str(world.tenant_id),
        generation_id=generation_id,
        attempt=1,
        output_key=key,
        duration_s=2,
        aspect_ratio="4:3",
        resolution="240p",
    )


async def test_validation_heartbeats_its_step(
    world: World, registry: ProviderRegistry, short_clip: Path
) -> None:
    generation_id = await new_generation(world, registry)
    key = await stored_output(world, generation_id, short_clip)
    env, heartbeats = activity_env(heartbeat_timeout_s=0.15)

    out = await env.run(
        media_activities(world).validate_generation_output,
        validate_input(world, generation_id, key),
    )

    assert out.report.checks and out.report.passed
    assert heartbeats.details, "probing and scanning a clip outlast a 0.1 s heartbeat"
    assert set(heartbeats.steps) == {"validate"}
    assert all(d["done"] == {} for d in heartbeats.details)


async def test_cancel_stops_the_black_frame_scan_within_two_seconds(
    world: World, registry: ProviderRegistry, long_media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generation_id = await new_generation(world, registry)
    key = await stored_output(world, generation_id, long_media)
    env, heartbeats = activity_env()

    with recording_processes(monkeypatch) as processes:
        run = start(
            env.run(
                media_activities(world).validate_generation_output,
                validate_input(world, generation_id, key),
            )
        )
        scan = await processes.wait_for(
            lambda argv: ffmpeg_writing("null")(argv) and "blackdetect" in " ".join(argv)
        )
        await heartbeats.wait_for(lambda d: d["step"] == "validate")
        elapsed = await cancel_and_wait(env, run, scan)
        started_before_cancel = len(processes.started)

    assert elapsed < CANCEL_BOUND_S
    assert_stopped(scan)
    await executor_is_free(world.executor)
    assert len(processes.started) == started_before_cancel
    assert (await generation_row(world, generation_id)).validation is None
    assert not world.storage.exists(
        f"tenants/{world.tenant_id}/videos/{generation_id}/thumbnail.jpg"
    )
