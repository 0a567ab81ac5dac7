"""The improvement run end to end on real workers: Postgres, the statistical insights, the
template writer, the generation child on the local renderer (ffmpeg), and the version link.

The lead wires the improvement activities into `workers.pools`; until then this test serves
them itself, next to every activity the pools already serve, on the same queues.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from reelflow.core.db import SessionFactory, create_engine, session_factory
from reelflow.core.settings import Settings
from reelflow.core.tenants import create_tenant
from reelflow.improve import improvements, performance
from reelflow.improve.versions import compare_versions, version_history
from schemas.discover import Platform
from schemas.generation_tables import Generation, QuotaReservation
from schemas.improve import PerformanceIn, TrafficSource
from schemas.improvement import ImprovementStatus, ImproveResult
from schemas.improvement_run_tables import Improvement
from schemas.queues import POOLS, TaskQueues
from schemas.tables import TranscriptSegment, Video
from tests.e2e.conftest import pipeline_settings
from workers.pools import WorkerDependencies, build_workers

NOW = datetime.now(UTC)


@dataclass
class Improve:
    settings: Settings
    sessions: SessionFactory
    client: Client
    tenant_id: uuid.UUID


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def improve(
    migrated_url: str, local_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Improve]:
    settings = pipeline_settings(
        migrated_url,
        tmp_path_factory.mktemp("home"),
        generation_poll_initial_s=0.5,
        generation_poll_max_s=2.0,
    )
    engine = create_engine(migrated_url, pool_size=4)
    sessions = session_factory(engine)
    async with sessions.begin() as session:
        tenant = await create_tenant(session, name=f"e2e-improve-{uuid.uuid4().hex[:6]}")
    try:
        yield Improve(settings, sessions, local_env.client, tenant.tenant_id)
    finally:
        await engine.dispose()


@asynccontextmanager
async def running_workers(improve: Improve) -> AsyncIterator[None]:
    """The product's own pools, improvement included (`workers.pools.build_workers`)."""
    deps = WorkerDependencies.build(improve.settings)
    workers = build_workers(improve.client, deps, POOLS)
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        yield
    finally:
        await asyncio.gather(*(worker.shutdown() for worker in workers))
        await asyncio.gather(*tasks, return_exceptions=True)
        await deps.close()


async def add_video(
    improve: Improve, title: str, *, prompt: str | None = None, views: int | None = None
) -> uuid.UUID:
    """A completed video; with `prompt`, made by a local generation of 2 s at 480p."""
    video_id = uuid.uuid4()
    async with improve.sessions.begin() as session:
        session.add(
            Video(
                id=video_id,
                tenant_id=improve.tenant_id,
                title=title,
                origin="generated" if prompt else "upload",
                source_key=f"tenants/{improve.tenant_id}/videos/{video_id}/source.mp4",
                status="completed",
                stage="completed",
                progress=1.0,
                cost_usd=Decimal(0),
                duration_s=2.0,
                width=480,
                height=854,
            )
        )
        if prompt:
            await session.flush()
            session.add(
                Generation(
                    id=uuid.uuid4(),
                    tenant_id=improve.tenant_id,
                    prompt=prompt,
                    requested_provider="local",
                    provider="local",
                    duration_s=2,
                    aspect_ratio="9:16",
                    resolution="480p",
                    estimated_cost_usd=Decimal(0),
                    status="completed",
                    video_id=video_id,
                )
            )
        if views is not None:
            await session.flush()
            for day, share in ((3, 0.4), (1, 1.0)):
                await performance.add_snapshot(
                    session,
                    tenant_id=improve.tenant_id,
                    video_id=video_id,
                    snapshot=PerformanceIn(
                        platform=Platform.TIKTOK,
                        views=int(views * share),
                        likes=int(views * share) // 20,
                        shares=int(views * share) // 500,
                        completion_rate=35.0,
                        traffic_source=TrafficSource.FYP,
                        recorded_at=NOW - timedelta(days=day),
                    ),
                    now=NOW,
                )
    return video_id


async def start(
    improve: Improve, video_id: uuid.UUID, *, approve_over_budget: bool = False
) -> tuple[uuid.UUID, WorkflowHandle[Any, Any]]:
    """As `POST /v1/videos/{id}/improvements` does: checked, written, started."""
    async with improve.sessions() as session:
        row = await improvements.request_improvement(
            session,
            tenant_id=improve.tenant_id,
            video_id=video_id,
            provider=None,
            max_cost_usd=None,
            approve_over_budget=approve_over_budget,
        )
        await session.commit()
        workflow_id = await improvements.start_improvement(
            improve.client,
            tenant_id=improve.tenant_id,
            improvement=row,
            task_queue=TaskQueues.for_prefix(improve.settings.task_queue_prefix).workflows,
        )
        return row.id, improve.client.get_workflow_handle(workflow_id, result_type=ImproveResult)


async def test_a_generated_video_gets_an_improved_version_linked_to_it(improve: Improve) -> None:
    for index in range(3):  # the tenant's usual: 20k views on TikTok
        await add_video(improve, f"usual {index}", views=20_000)
    original = await add_video(
        improve,
        "Balloon at sunrise",
        prompt="A hot-air balloon over a green valley at sunrise",
        views=60_000,
    )

    async with running_workers(improve):
        improvement_id, handle = await start(improve, original)
        result: ImproveResult = await asyncio.wait_for(handle.result(), timeout=180)

    assert result.status == ImprovementStatus.COMPLETED and result.iteration == 1
    assert result.new_video_id is not None
    new_id = uuid.UUID(result.new_video_id)
    async with improve.sessions() as session:
        row = await session.get(Improvement, improvement_id)
        new = await session.get(Video, new_id)
        generation = await session.get(Generation, uuid.UUID(str(result.generation_id)))
        reservation = await session.scalar(
            select(QuotaReservation).where(
                QuotaReservation.generation_id == uuid.UUID(str(result.generation_id))
            )
        )
    assert row is not None and new is not None and generation is not None
    # The link lives on the video asset itself.
    assert (new.improved_from_video_id, new.improvement_iteration) == (original, 1)
    assert new.origin == "generated" and new.status == "completed"
    assert new.title == "Balloon at sunrise · v2"
    # The improvement says what it was made from and how.
    assert row.status == "completed" and row.new_video_id == new_id
    assert row.source_kind == "prompt"
    assert row.original_prompt == "A hot-air balloon over a green valley at sunrise"
    assert row.writer == "offline-template" and row.improved_prompt is not None
    assert "hot-air balloon" in row.improved_prompt
    assert row.insights is not None and row.insights["strengths"], "statistical insights"
    # The generation was admitted like any other and its quota settled.
    assert generation.prompt == row.improved_prompt
    assert generation.improved_from_video_id == original
    assert (generation.provider, generation.duration_s, generation.resolution) == (
        "local",
        2,
        "480p",
    )
    assert reservation is not None and reservation.state == "committed"

    async with improve.sessions() as session:
        chain = await version_history(session, tenant_id=improve.tenant_id, video_id=new_id)
        early = await compare_versions(
            session, tenant_id=improve.tenant_id, video_id=original, other_id=new_id
        )
    assert [v.video_id for v in chain.versions] == [original, new_id]
    assert chain.versions[1].improvement_id == improvement_id
    assert not early.comparable

    async with improve.sessions.begin() as session:
        await performance.add_snapshot(
            session,
            tenant_id=improve.tenant_id,
            video_id=new_id,
            snapshot=PerformanceIn(
                platform=Platform.TIKTOK, views=90_000, likes=9_000, recorded_at=NOW
            ),
            now=NOW,
        )
    async with improve.sessions() as session:
        later = await compare_versions(
            session, tenant_id=improve.tenant_id, video_id=original, other_id=new_id
        )
    views = next(m for m in later.metrics if m.name == "views")
    assert later.comparable and (views.base, views.other) == (60_000, 90_000)


async def test_an_upload_with_nothing_to_improve_from_fails_saying_what_is_missing(
    improve: Improve,
) -> None:
    upload = await add_video(improve, "A silent upload", views=5_000)

    async with running_workers(improve):
        improvement_id, handle = await start(improve, upload)
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), timeout=120)

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "improvement_source_missing"
    async with improve.sessions() as session:
        row = await session.get(Improvement, improvement_id)
    assert row is not None
    assert (row.status, row.error_code) == ("failed", "improvement_source_missing")
    assert row.error_message is not None and "transcript" in row.error_message
    assert row.generation_id is None, "nothing was admitted, no quota reserved"


async def test_an_upload_is_improved_from_its_transcript(improve: Improve) -> None:
    upload = await add_video(improve, "Kitchen tip", views=30_000)
    async with improve.sessions.begin() as session:
        session.add_all(
            [
                TranscriptSegment(
                    tenant_id=improve.tenant_id,
                    video_id=upload,
                    window_index=0,
                    seq=seq,
                    start_s=float(seq),
                    end_s=float(seq + 1),
                    text=text,
                )
                for seq, text in enumerate(["Freeze the bananas first.", "Then blend."])
            ]
        )

    async with running_workers(improve):
        # Approval given in advance reaches the generation, which needs none ($0 locally).
        improvement_id, handle = await start(improve, upload, approve_over_budget=True)
        result: ImproveResult = await asyncio.wait_for(handle.result(), timeout=180)

    assert result.status == ImprovementStatus.COMPLETED
    async with improve.sessions() as session:
        row = await session.get(Improvement, improvement_id)
        generation = await session.get(Generation, uuid.UUID(str(result.generation_id)))
    assert row is not None and generation is not None
    assert row.source_kind == "transcript"
    assert "Freeze the bananas first. Then blend." in (row.original_prompt or "")
    assert "Freeze the bananas" in generation.prompt
    # No generation made the upload: the request fits its frame and length.
    assert (generation.aspect_ratio, generation.duration_s) == ("9:16", 2)
    assert generation.approval == "not_required"
