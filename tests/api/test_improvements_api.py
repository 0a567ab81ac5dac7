"""`/v1/videos/{id}/improvements`, `/v1/improvements/{id}`, versions and a script's predicted
vs actual on the real app. No worker serves these tests' queues: runs stay as started."""

from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from api.app import create_app
from api.routers.improvements import router as improvements_router
from reelflow.core.db import SessionFactory, session_factory
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from schemas import search_attributes as sa
from schemas.discover_tables import Script
from schemas.generation import GenerationProgress, GenerationStatus, generation_workflow_id
from schemas.generation_tables import Generation
from schemas.improvement import ImprovementStatus, ImproveResult, improvement_generation_id
from schemas.improvement_run_tables import Improvement
from schemas.queues import TaskQueues
from schemas.tables import Video
from tests.api.api_support import BagOfWordsEmbedder, TenantKey
from tests.improve.test_insights import add_metrics, new_video
from tests.support import assert_eventually, free_port
from tests.workflows.generation.fakes import FakeGeneration, fake_plan
from tests.workflows.improve.fakes import FakeImprove


@pytest.fixture
def sessions(api_engine: AsyncEngine) -> SessionFactory:
    return session_factory(api_engine)


@pytest.fixture
def improve_api(app: FastAPI, api: httpx.AsyncClient) -> httpx.AsyncClient:
    """The client, on an app that serves the improvement routes."""
    paths = {getattr(route, "path", None) for route in app.routes}
    if "/v1/improvements/{improvement_id}" not in paths:
        app.include_router(improvements_router)
    return api


async def video_with_metrics(sessions: SessionFactory, tenant: TenantKey) -> uuid.UUID:
    video = await new_video(sessions, tenant.tenant_id)
    await add_metrics(sessions, tenant.tenant_id, video, views=12_000, completion=40.0)
    return video


async def test_an_improvement_is_accepted_started_and_shown(
    improve_api: httpx.AsyncClient, alice: TenantKey, sessions: SessionFactory, temporal: Client
) -> None:
    video = await video_with_metrics(sessions, alice)

    response = await improve_api.post(
        f"/v1/videos/{video}/improvements",
        json={"max_cost_usd": 2.5, "approve_over_budget": True},
        headers=alice.headers,
    )

    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["workflow_id"] == f"improve-{accepted['improvement_id']}"
    shown = await improve_api.get(
        f"/v1/improvements/{accepted['improvement_id']}", headers=alice.headers
    )
    assert shown.status_code == 200
    detail = shown.json()
    assert detail["status"] == "queued" and detail["video_id"] == str(video)
    assert detail["iteration"] == 1 and detail["requested_provider"] == "auto"
    assert (detail["max_cost_usd"], detail["approve_over_budget"]) == (2.5, True)
    assert detail["generation_id"] is None and detail["new_video_id"] is None
    assert detail["cost_usd"] == 0.0
    run = await temporal.get_workflow_handle(accepted["workflow_id"]).describe()
    attributes = run.typed_search_attributes
    assert attributes.get(sa.PIPELINE) == "improve"
    assert attributes.get(sa.TENANT_ID) == str(alice.tenant_id)
    assert attributes.get(sa.VIDEO_ID) == str(video)


async def test_a_video_without_metrics_or_with_a_running_improvement_is_a_409(
    improve_api: httpx.AsyncClient, alice: TenantKey, sessions: SessionFactory
) -> None:
    bare = await new_video(sessions, alice.tenant_id)
    refused = await improve_api.post(f"/v1/videos/{bare}/improvements", headers=alice.headers)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "no_insights"
    assert "no performance metrics" in refused.json()["error"]["message"]

    video = await video_with_metrics(sessions, alice)
    first = await improve_api.post(f"/v1/videos/{video}/improvements", headers=alice.headers)
    assert first.status_code == 202
    second = await improve_api.post(f"/v1/videos/{video}/improvements", headers=alice.headers)
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "improvement_running"
    assert first.json()["improvement_id"] in second.json()["error"]["message"]


async def test_bad_options_are_422_before_anything_is_stored(
    improve_api: httpx.AsyncClient, alice: TenantKey, sessions: SessionFactory
) -> None:
    video = await video_with_metrics(sessions, alice)
    url = f"/v1/videos/{video}/improvements"

    for body in ({"provider": "imaginary"}, {"max_cost_usd": -1}, {"max_cost_usd": 1e12}):
        response = await improve_api.post(url, json=body, headers=alice.headers)
        assert response.status_code == 422, body
    async with sessions() as session:
        stored = await session.scalars(select(Improvement.id).where(Improvement.video_id == video))
        assert stored.all() == []
    accepted = await improve_api.post(url, json={"provider": "local"}, headers=alice.headers)
    assert accepted.status_code == 202


async def test_other_tenants_see_nothing(
    improve_api: httpx.AsyncClient, alice: TenantKey, bob: TenantKey, sessions: SessionFactory
) -> None:
    video = await video_with_metrics(sessions, alice)
    accepted = await improve_api.post(f"/v1/videos/{video}/improvements", headers=alice.headers)
    improvement = accepted.json()["improvement_id"]

    for method, url in (
        ("POST", f"/v1/videos/{video}/improvements"),
        ("GET", f"/v1/improvements/{improvement}"),
        ("POST", f"/v1/improvements/{improvement}/cancel"),
        ("POST", f"/v1/improvements/{improvement}/approve"),
        ("GET", f"/v1/videos/{video}/versions"),
        ("GET", f"/v1/videos/{video}/versions/compare?with={video}"),
        ("GET", "/v1/improvements/not-a-uuid"),
    ):
        response = await improve_api.request(method, url, headers=bob.headers)
        assert response.status_code == 404, (method, url, response.text)


async def test_cancel_and_approve_are_409_when_the_state_forbids_them(
    improve_api: httpx.AsyncClient, alice: TenantKey, sessions: SessionFactory
) -> None:
    video = await video_with_metrics(sessions, alice)
    accepted = await improve_api.post(f"/v1/videos/{video}/improvements", headers=alice.headers)
    improvement = accepted.json()["improvement_id"]

    # No generation yet, so nothing waits for approval.
    approve = await improve_api.post(
        f"/v1/improvements/{improvement}/approve", headers=alice.headers
    )
    assert approve.status_code == 409
    assert approve.json()["error"]["code"] == "not_awaiting_approval"

    cancel = await improve_api.post(f"/v1/improvements/{improvement}/cancel", headers=alice.headers)
    assert cancel.status_code == 202 and cancel.json()["status"] == "cancel_requested"

    async with sessions.begin() as session:
        row = await session.get(Improvement, uuid.UUID(improvement))
        assert row is not None
        row.status = "completed"
    again = await improve_api.post(f"/v1/improvements/{improvement}/cancel", headers=alice.headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_finished"


async def test_versions_compare_and_predicted_vs_actual(
    improve_api: httpx.AsyncClient, alice: TenantKey, sessions: SessionFactory
) -> None:
    original = await video_with_metrics(sessions, alice)
    newer = await new_video(sessions, alice.tenant_id, "Smoothie · v2")
    unrelated = await new_video(sessions, alice.tenant_id, "Something else")
    async with sessions.begin() as session:
        linked = await session.get(Video, newer)
        assert linked is not None
        linked.improved_from_video_id = original
        linked.improvement_iteration = 1
        script_id = uuid.uuid4()
        session.add(
            Script(
                id=script_id,
                tenant_id=alice.tenant_id,
                title="Hook",
                content={},
                status="produced",
                status_history=[],
                predicted_viral_score=4.0,
                produced_video_id=original,
            )
        )

    chain = await improve_api.get(f"/v1/videos/{newer}/versions", headers=alice.headers)
    assert chain.status_code == 200
    assert [v["video_id"] for v in chain.json()["versions"]] == [str(original), str(newer)]
    assert chain.json()["versions"][0]["metrics"]["views"] == 12_000

    compare_url = f"/v1/videos/{original}/versions/compare"
    compared = await improve_api.get(
        compare_url,
        params={"with": str(newer)},
        headers=alice.headers,
    )
    assert compared.status_code == 200
    assert compared.json()["comparable"] is False
    refused = await improve_api.get(
        compare_url,
        params={"with": str(unrelated)},
        headers=alice.headers,
    )
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "not_a_version"
    missing = await improve_api.get(
        f"/v1/videos/{original}/versions/compare", headers=alice.headers
    )
    assert missing.status_code == 422

    performance = await improve_api.get(
        f"/v1/scripts/{script_id}/performance", headers=alice.headers
    )
    assert performance.status_code == 200
    body = performance.json()
    assert body["predicted_viral_score"] == 4.0
    assert body["actual_source"] == "produced_video"
    unknown = await improve_api.get(
        f"/v1/scripts/{uuid.uuid4()}/performance", headers=alice.headers
    )
    assert unknown.status_code == 404


async def test_approve_passes_the_decision_to_the_waiting_generation(
    improve_api: httpx.AsyncClient,
    alice: TenantKey,
    sessions: SessionFactory,
    temporal: Client,
    settings: Settings,
) -> None:
    # Stand-in steps on this app's queues; the child is the real generation workflow,
    # whose estimate needs approval.
    fake = FakeImprove(
        generation=FakeGeneration(
            plan=fake_plan(estimate=1.2, approval_required=True, poll_initial_s=0.2),
            latency_s=0.1,
            queues=TaskQueues.for_prefix(settings.task_queue_prefix),
        )
    )
    video = await video_with_metrics(sessions, alice)
    async with fake.workers(temporal):
        accepted = await improve_api.post(f"/v1/videos/{video}/improvements", headers=alice.headers)
        improvement = accepted.json()["improvement_id"]
        generation_id = improvement_generation_id(improvement)
        child = temporal.get_workflow_handle(generation_workflow_id(str(generation_id)))

        async def waiting() -> bool:
            try:
                progress: GenerationProgress = await child.query(
                    "progress", result_type=GenerationProgress
                )
            except RPCError:
                return False
            return progress.status == GenerationStatus.AWAITING_APPROVAL

        await assert_eventually(waiting, timeout=20)
        # What the real admission and prepare steps write (the stand-ins write nothing).
        async with sessions.begin() as session:
            session.add(
                Generation(
                    id=generation_id,
                    tenant_id=alice.tenant_id,
                    prompt="improved",
                    requested_provider="local",
                    duration_s=4,
                    aspect_ratio="16:9",
                    resolution="720p",
                    estimated_cost_usd=Decimal("1.2"),
                    status=GenerationStatus.AWAITING_APPROVAL.value,
                    approval="pending",
                    workflow_id=child.id,
                )
            )
            await session.flush()
            row = await session.get(Improvement, uuid.UUID(improvement))
            assert row is not None
            row.generation_id = generation_id
            row.status = "generating"

        shown = await improve_api.get(f"/v1/improvements/{improvement}", headers=alice.headers)
        assert shown.json()["status"] == "awaiting_approval"
        assert shown.json()["estimated_cost_usd"] == 1.2
        approved = await improve_api.post(
            f"/v1/improvements/{improvement}/approve", headers=alice.headers
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["approval"] == "approved"
        result = await temporal.get_workflow_handle(
            accepted.json()["workflow_id"], result_type=ImproveResult
        ).result()

    assert result.status == ImprovementStatus.COMPLETED
    assert len(fake.generation.submits) == 1, "generated once approved"


async def test_when_temporal_does_not_answer_the_improvement_is_503_and_marked_failed(
    settings: Settings,
    api_engine: AsyncEngine,
    storage: LocalStorage,
    alice: TenantKey,
    sessions: SessionFactory,
) -> None:
    # Nothing listens on this port; lazy, so creating the client succeeds like at startup.
    dead = await Client.connect(
        f"127.0.0.1:{free_port()}", lazy=True, data_converter=pydantic_data_converter
    )
    app = create_app(
        settings, engine=api_engine, temporal=dead, storage=storage, embedder=BagOfWordsEmbedder()
    )
    app.include_router(improvements_router)
    video = await video_with_metrics(sessions, alice)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        response = await client.post(f"/v1/videos/{video}/improvements", headers=alice.headers)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "temporal_unavailable"
    async with sessions() as session:
        [row] = (
            await session.scalars(select(Improvement).where(Improvement.video_id == video))
        ).all()
    assert (row.status, row.error_code) == ("failed", "start_failed")
