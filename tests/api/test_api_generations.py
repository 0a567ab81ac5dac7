"""`/v1/generations`: bad input, quotas, tenancy, estimate, approve, cancel.

The app runs against the session's PostgreSQL and Temporal dev server. Its provider
registry holds the local renderer and a "sora" whose clips are rendered locally (so an
estimate costs money and approval can be exercised with real files). Tests that need
runs to progress start the generation activities for the app's own queue family.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.worker import Worker

from activities.generation import (
    GenerationCatalogActivities,
    GenerationMediaActivities,
    GenerationProviderActivities,
)
from api.app import create_app
from reelflow.core.db import session_factory
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from reelflow.generation.capabilities import get_capabilities
from reelflow.generation.routing import ProviderRegistry
from schemas.generation import MAX_PROMPT_CHARS
from schemas.generation_tables import Generation, QuotaReservation
from schemas.queues import TaskQueues
from schemas.tables import Tenant
from tests.api.api_support import BagOfWordsEmbedder, TenantKey, assert_error
from tests.workflows.admission import admit_every_run
from tests.workflows.generation.providers import RenamedRenderer, renderer
from workers.pools import activity_worker
from workflows.generation import GenerationWorkflow

LOCAL = {"provider": "local", "duration_s": 2, "aspect_ratio": "16:9", "resolution": "480p"}
SORA = {"provider": "sora", "duration_s": 4, "aspect_ratio": "16:9", "resolution": "720p"}
OVER_MAX = {**SORA, "max_cost_usd": 0.2}
"""A Sora request whose $0.40 estimate is over its own limit: it waits for approval."""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Short polls: these runs are real-time on the dev server.
    return settings.model_copy(
        update={"generation_poll_initial_s": 0.3, "generation_poll_max_s": 1.0}
    )


@pytest_asyncio.fixture(loop_scope="session")
async def alice_on_premium(alice: TenantKey, api_engine: AsyncEngine) -> TenantKey:
    """alice on Premium, the first plan that includes Sora (seed 001)."""
    async with session_factory(api_engine).begin() as session:
        await session.execute(
            update(Tenant).where(Tenant.id == alice.tenant_id).values(plan="premium")
        )
    return alice


@pytest.fixture
def registry(tmp_path: Path) -> ProviderRegistry:
    sora = RenamedRenderer(renderer(tmp_path / "sora-jobs").renderer, get_capabilities("sora"))
    return ProviderRegistry([renderer(tmp_path / "local-jobs"), sora])


@pytest_asyncio.fixture(loop_scope="session")
async def app(
    settings: Settings,
    api_engine: AsyncEngine,
    temporal: Client,
    storage: LocalStorage,
    embedder: BagOfWordsEmbedder,
    registry: ProviderRegistry,
) -> AsyncIterator[FastAPI]:
    application = create_app(
        settings,
        engine=api_engine,
        temporal=temporal,
        storage=storage,
        embedder=embedder,
        video_providers=registry,
    )
    async with application.router.lifespan_context(application):
        yield application


@asynccontextmanager
async def generation_workers(
    settings: Settings,
    api_engine: AsyncEngine,
    temporal: Client,
    storage: LocalStorage,
    registry: ProviderRegistry,
) -> AsyncIterator[None]:
    sessions = session_factory(api_engine)
    queues = TaskQueues.for_prefix(settings.task_queue_prefix)
    scratch = settings.reelflow_home / "scratch"
    with ThreadPoolExecutor(4) as executor:
        jobs = GenerationProviderActivities(
            sessions=sessions,
            storage=storage,
            registry=registry,
            scratch_dir=scratch,
            executor=executor,
        )
        catalog = GenerationCatalogActivities(sessions, settings, registry)
        media = GenerationMediaActivities(
            sessions=sessions,
            storage=storage,
            settings=settings,
            scratch_dir=scratch,
            executor=executor,
        )
        activities: list[Callable[..., Any]] = [
            catalog.prepare_generation,
            catalog.finalize_generation,
            catalog.release_generation,
            media.validate_generation_output,
            jobs.submit_generation_job,
            jobs.poll_generation_job,
            jobs.download_generation_output,
            jobs.cancel_generation_job,
            *admit_every_run(),
        ]
        async with (
            Worker(temporal, task_queue=queues.workflows, workflows=[GenerationWorkflow]),
            activity_worker(
                temporal,
                queues.media,
                activities,
            ),
            activity_worker(
                temporal,
                queues.providers,
                activities,
            ),
        ):
            yield


@pytest_asyncio.fixture(loop_scope="session")
async def workers(
    settings: Settings,
    api_engine: AsyncEngine,
    temporal: Client,
    storage: LocalStorage,
    registry: ProviderRegistry,
) -> AsyncIterator[None]:
    async with generation_workers(settings, api_engine, temporal, storage, registry):
        yield


async def generations_of(engine: AsyncEngine, tenant: TenantKey) -> int:
    async with session_factory(engine)() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Generation)
            .where(Generation.tenant_id == tenant.tenant_id)
        )
    return int(count or 0)


async def settled(
    api: httpx.AsyncClient, tenant: TenantKey, generation_id: str, *statuses: str
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(600):
        body = (await api.get(f"/v1/generations/{generation_id}", headers=tenant.headers)).json()
        if body["status"] in statuses:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"generation {generation_id} never reached {statuses}: {body}")


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "mentions"),
    [
        ({**LOCAL, "prompt": ""}, "invalid_request", "prompt"),
        ({**LOCAL, "prompt": "   \n "}, "invalid_request", "must not be empty"),
        ({**LOCAL, "prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "invalid_request", "2000"),
        ({**LOCAL, "prompt": "a cat", "duration_s": 61}, "unsupported_request", "1–60"),
        ({**LOCAL, "prompt": "a cat", "duration_s": 2.5}, "invalid_request", "duration_s"),
        ({**LOCAL, "prompt": "a cat", "duration_s": "2"}, "invalid_request", "duration_s"),
        ({**SORA, "prompt": "a cat", "duration_s": 5}, "unsupported_request", "4, 8, 12, 15"),
        (
            {**LOCAL, "prompt": "a cat", "aspect_ratio": "4:3"},
            "unsupported_request",
            "16:9, 9:16, 1:1",
        ),
        (
            # Only sora-2 is registered here: the allowed values are what can be made.
            {**SORA, "prompt": "a cat", "resolution": "4k"},
            "unsupported_request",
            "allowed: 720p",
        ),
        ({**LOCAL, "prompt": "a cat", "provider": "veo"}, "unsupported_request", "auto, sora"),
        ({**LOCAL, "prompt": "a cat", "provider": "kling"}, "unsupported_request", "local"),
        ({**LOCAL, "prompt": "a cat", "max_cost_usd": -0.01}, "invalid_request", "max_cost_usd"),
    ],
)
@pytest.mark.usefixtures("alice_on_premium")
async def test_bad_requests_are_422_and_store_nothing(
    api: httpx.AsyncClient,
    alice: TenantKey,
    api_engine: AsyncEngine,
    body: dict[str, Any],
    code: str,
    mentions: str,
) -> None:
    for path in ("/v1/generations", "/v1/generations/estimate"):
        error = assert_error(await api.post(path, json=body, headers=alice.headers), 422, code)
        assert mentions in error["message"], error
    assert await generations_of(api_engine, alice) == 0


async def test_a_generation_is_accepted_with_its_estimate_and_readable(
    api: httpx.AsyncClient, alice: TenantKey, temporal: Client
) -> None:
    response = await api.post(
        "/v1/generations", json={**LOCAL, "prompt": "  A red kite  "}, headers=alice.headers
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued" and accepted["estimated_cost_usd"] == 0.0
    assert (accepted["provider"], accepted["model"]) == ("local", "ffmpeg")
    assert accepted["approval_required"] is False and accepted["quota_warning"] is None
    generation_id = accepted["generation_id"]
    assert accepted["workflow_id"] == f"generate-{generation_id}"

    detail = (await api.get(f"/v1/generations/{generation_id}", headers=alice.headers)).json()
    assert detail["prompt"] == "A red kite" and detail["status"] == "queued"
    assert detail["attempts"] == [] and detail["video_id"] is None
    description = await temporal.get_workflow_handle(accepted["workflow_id"]).describe()
    assert description.workflow_type == "GenerationWorkflow"
    run = (await api.get(f"/v1/runs/{accepted['workflow_id']}", headers=alice.headers)).json()
    assert (run["pipeline"], run["stage"]) == ("generation", "queued")


async def test_another_tenants_generation_is_404(
    api: httpx.AsyncClient, alice: TenantKey, bob: TenantKey
) -> None:
    created = await api.post(
        "/v1/generations", json={**LOCAL, "prompt": "x"}, headers=alice.headers
    )
    generation_id = created.json()["generation_id"]
    for method, suffix in (("GET", ""), ("POST", "/cancel"), ("POST", "/approve")):
        url = f"/v1/generations/{generation_id}{suffix}"
        assert_error(await api.request(method, url, headers=bob.headers), 404, "not_found")
    for unknown in (str(uuid.uuid4()), "not-a-uuid"):
        assert_error(
            await api.get(f"/v1/generations/{unknown}", headers=alice.headers), 404, "not_found"
        )
    # Improving another tenant's video is asking about a video that, for you, does not exist.
    bobs = await api.post(
        "/v1/videos",
        headers=bob.headers,
        data={"title": "bob's"},
        files={"file": ("b.mp4", b"bytes", "video/mp4")},
    )
    assert_error(
        await api.post(
            "/v1/generations",
            json={**LOCAL, "prompt": "x", "improved_from_video_id": bobs.json()["video_id"]},
            headers=alice.headers,
        ),
        404,
        "not_found",
    )


async def test_quota_warns_at_eighty_percent_and_refuses_past_the_plan(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine
) -> None:
    # alice is on the free plan: 80 video-seconds a month.
    estimate = await api.post(
        "/v1/generations/estimate",
        json={**LOCAL, "prompt": "x", "duration_s": 60},
        headers=alice.headers,
    )
    assert estimate.status_code == 200 and estimate.json()["quota"]["limit_seconds"] == 80
    first = await api.post(
        "/v1/generations", json={**LOCAL, "prompt": "x", "duration_s": 60}, headers=alice.headers
    )
    assert first.status_code == 202 and first.json()["quota_warning"] is None
    second = await api.post(
        "/v1/generations", json={**LOCAL, "prompt": "x", "duration_s": 5}, headers=alice.headers
    )
    assert second.status_code == 202
    assert "81% of the free plan" in second.json()["quota_warning"]
    refused = await api.post(
        "/v1/generations", json={**LOCAL, "prompt": "x", "duration_s": 16}, headers=alice.headers
    )
    error = assert_error(refused, 402, "quota_exceeded")
    assert "needs 16 video-seconds but only 15" in error["message"]
    assert await generations_of(api_engine, alice) == 2
    # The estimate says so too, without reserving anything.
    estimate = await api.post(
        "/v1/generations/estimate",
        json={**LOCAL, "prompt": "x", "duration_s": 16},
        headers=alice.headers,
    )
    body = estimate.json()
    assert body["quota_exceeded"] is True and body["quota"]["reserved_seconds"] == 65
    assert await generations_of(api_engine, alice) == 2


@pytest.mark.usefixtures("alice_on_premium")
async def test_the_estimate_prices_and_routes_without_reserving(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine
) -> None:
    response = await api.post(
        "/v1/generations/estimate",
        json={**OVER_MAX, "prompt": "x"},
        headers=alice.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["provider"], body["model"], body["estimated_cost_usd"]) == ("sora", "sora-2", 0.4)
    assert body["approval_required"] is True and "max_cost_usd" in body["approval_reason"]
    assert body["quota"]["reserved_seconds"] == 0
    assert await generations_of(api_engine, alice) == 0


# --- with workers -------------------------------------------------------------------------


@pytest.mark.usefixtures("workers")
@pytest.mark.usefixtures("alice_on_premium")
async def test_over_budget_generation_waits_for_approval_then_is_served_as_a_video(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine
) -> None:
    created = await api.post(
        "/v1/generations",
        json={**OVER_MAX, "prompt": "A paper boat on a river"},
        headers=alice.headers,
    )
    assert created.status_code == 202, created.text
    accepted = created.json()
    assert accepted["approval_required"] is True
    assert accepted["status"] == "awaiting_approval" and accepted["estimated_cost_usd"] == 0.4
    generation_id = accepted["generation_id"]
    await settled(api, alice, generation_id, "awaiting_approval")

    approved = await api.post(
        f"/v1/generations/{generation_id}/approve", json={}, headers=alice.headers
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["approval"] == "approved"
    done = await settled(api, alice, generation_id, "completed", "failed")
    assert done["status"] == "completed", done
    assert (done["provider"], done["model"], done["approval"]) == ("sora", "sora-2", "approved")
    assert done["cost_usd"] == pytest.approx(0.4)
    assert done["validation"]["passed"] is True
    [attempt] = done["attempts"]
    assert attempt["outcome"] == "passed" and attempt["provider_job_id"] == done["provider_job_id"]
    assert {c["name"] for c in attempt["validation"]["checks"]} >= {"duration", "black_frames"}
    assert_error(
        await api.post(f"/v1/generations/{generation_id}/approve", headers=alice.headers),
        409,
        "not_awaiting_approval",
    )

    video_id = done["video_id"]
    video = (await api.get(f"/v1/videos/{video_id}", headers=alice.headers)).json()
    assert video["origin"] == "generated" and video["status"] == "completed"
    assert (video["width"], video["height"]) == (1280, 720)
    content = await api.get(f"/v1/videos/{video_id}/content", headers=alice.headers)
    assert content.status_code == 200 and content.content[4:8] == b"ftyp"
    thumbnail = await api.get(f"/v1/videos/{video_id}/thumbnail", headers=alice.headers)
    assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"
    usage = await api.get("/v1/usage", params={"group_by": "provider"}, headers=alice.headers)
    assert {"provider": "sora", "cost_usd": pytest.approx(0.4)}.items() <= next(
        g for g in usage.json()["groups"] if g["provider"] == "sora"
    ).items()


@pytest.mark.usefixtures("workers")
@pytest.mark.usefixtures("alice_on_premium")
async def test_rejected_and_canceled_generations_release_their_quota(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine
) -> None:
    ids = []
    for _ in range(2):
        created = await api.post(
            "/v1/generations", json={**OVER_MAX, "prompt": "x"}, headers=alice.headers
        )
        ids.append(created.json()["generation_id"])
        await settled(api, alice, ids[-1], "awaiting_approval")
    rejected, canceled = ids

    response = await api.post(
        f"/v1/generations/{rejected}/approve",
        json={"approve": False, "note": "too dear"},
        headers=alice.headers,
    )
    assert response.status_code == 200 and response.json()["approval"] == "rejected"
    response = await api.post(f"/v1/generations/{canceled}/cancel", headers=alice.headers)
    assert response.status_code == 202 and response.json()["status"] == "cancel_requested"

    body = await settled(api, alice, rejected, "canceled")
    assert body["error"]["code"] == "approval_rejected" and "too dear" in body["error"]["message"]
    assert body["approval"] == "rejected" and body["attempts"] == []
    body = await settled(api, alice, canceled, "canceled")
    assert body["error"]["code"] == "canceled"
    assert_error(
        await api.post(f"/v1/generations/{canceled}/cancel", headers=alice.headers),
        409,
        "already_finished",
    )
    async with session_factory(api_engine)() as session:
        states = (
            await session.scalars(
                select(QuotaReservation.state).where(
                    QuotaReservation.generation_id.in_([uuid.UUID(i) for i in ids])
                )
            )
        ).all()
    assert sorted(states) == ["released", "released"]


async def test_a_plan_without_sora_is_told_to_upgrade_and_nothing_is_stored(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine
) -> None:
    refused = await api.post("/v1/generations", json={**SORA, "prompt": "x"}, headers=alice.headers)
    message = assert_error(refused, 402, "quota_exceeded")["message"]
    assert "sora is not included in the free plan" in message and "premium" in message
    auto = await api.post(
        "/v1/generations/estimate",
        json={**SORA, "provider": "auto", "prompt": "x"},
        headers=alice.headers,
    )
    assert auto.status_code == 200 and auto.json()["provider"] != "sora"
    assert await generations_of(api_engine, alice) == 0
