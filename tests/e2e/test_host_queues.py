"""Host-bound work finds its host: two media hosts, each with its own local renderer disk.

The local renderer keeps a job on the disk of the host that made it. With one shared media
queue, a poll or download could land on the other host, which has never heard of the job.
Each media host therefore also serves a queue of its own, and a job's later calls go there.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.app import create_app
from reelflow.core.db import create_engine, session_factory
from reelflow.core.storage import LocalStorage
from reelflow.core.tenants import create_tenant
from tests.api.api_support import BagOfWordsEmbedder
from tests.e2e.conftest import pipeline_settings
from tests.e2e.test_generation_pipeline import wait_until_settled
from workers.pools import WorkerDependencies, build_workers

GENERATIONS = 4


async def _serve(workers: list[Worker]) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(worker.run()) for worker in workers]


@pytest_asyncio.fixture(loop_scope="session")
async def two_media_hosts(
    migrated_url: str, local_env: WorkflowEnvironment, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, list[Path], Callable[[], Awaitable[None]]]]:
    settings = pipeline_settings(
        migrated_url,
        tmp_path / "home",
        task_queue_prefix=f"hosts-{uuid.uuid4().hex[:6]}",
        generation_poll_initial_s=0.3,
        generation_poll_max_s=0.6,
        media_concurrency=1,
    )
    job_dirs = [tmp_path / "host-a-jobs", tmp_path / "host-b-jobs"]
    central = WorkerDependencies.build(settings)
    hosts = [
        WorkerDependencies.build(settings.model_copy(update={"generation_jobs_dir": jobs}))
        for jobs in job_dirs
    ]
    assert hosts[0].host_id != hosts[1].host_id
    workers = build_workers(local_env.client, central, ["workflows", "providers"])
    workers += build_workers(local_env.client, hosts[0], ["media"])
    tasks = await _serve(workers)
    # Another host is another process with its own connection: one client may not run two
    # workers on the same (shared media) queue.
    second_client = await Client.connect(
        local_env.client.service_client.config.target_host,
        namespace=local_env.client.namespace,
        data_converter=pydantic_data_converter,
    )
    second_host = build_workers(second_client, hosts[1], ["media"])

    async def start_second_host() -> None:
        workers.extend(second_host)
        tasks.extend(await _serve(second_host))

    engine = create_engine(settings.database_url, pool_size=4)
    async with session_factory(engine).begin() as session:
        tenant = await create_tenant(session, name=f"hosts-{uuid.uuid4().hex[:6]}", plan="creator")
    app = create_app(
        settings,
        engine=engine,
        temporal=local_env.client,
        storage=LocalStorage(Path(settings.resolved_storage_url.removeprefix("file://"))),
        embedder=BagOfWordsEmbedder(),
    )
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://reelflow.test",
                headers={"Authorization": f"Bearer {tenant.api_key}"},
                timeout=60,
            ) as client,
        ):
            yield client, job_dirs, start_second_host
    finally:
        await asyncio.gather(*(worker.shutdown() for worker in workers))
        await asyncio.gather(*tasks, return_exceptions=True)
        for deps in (central, *hosts):
            await deps.close()
        await engine.dispose()


async def _request(api: httpx.AsyncClient, index: int) -> str:
    response = await api.post(
        "/v1/generations",
        json={
            "prompt": f"Clip {index}: a lighthouse at dusk",
            "provider": "local",
            "duration_s": 1,
            "aspect_ratio": "16:9",
            "resolution": "480p",
        },
    )
    assert response.status_code == 202, response.text
    return str(response.json()["generation_id"])


async def _submitted(api: httpx.AsyncClient, generation_id: str) -> None:
    for _ in range(600):
        state = (await api.get(f"/v1/generations/{generation_id}")).json()
        if state.get("provider_job_id"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"generation {generation_id} was never submitted")


async def test_every_local_job_is_polled_and_downloaded_on_the_host_that_made_it(
    two_media_hosts: tuple[httpx.AsyncClient, list[Path], Callable[[], Awaitable[None]]],
) -> None:
    api, job_dirs, start_second_host = two_media_hosts
    # Host A alone takes the first submits; then host B joins the shared media queue. From
    # then on a poll sent to the shared queue would reach B half the time, and B has never
    # heard of A's jobs.
    first = [await _request(api, index) for index in range(GENERATIONS // 2)]
    await asyncio.gather(*(_submitted(api, gid) for gid in first))
    await start_second_host()
    later = [await _request(api, index) for index in range(GENERATIONS // 2, GENERATIONS)]

    states = await asyncio.gather(*(wait_until_settled(api, gid) for gid in first + later))
    for state in states:
        assert state["status"] == "completed", state
        # One attempt each: no poll or download ever asked a host that lacked the job.
        assert [a["outcome"] for a in state["attempts"]] == ["passed"], state["attempts"]

    # Job records are `<job id>.json` on the disk of the host that made the job.
    per_host = [{path.stem for path in jobs.glob("*.json")} for jobs in job_dirs]
    first_jobs = {s["provider_job_id"] for s in states[: GENERATIONS // 2]}
    assert first_jobs <= per_host[0], (first_jobs, per_host)
    assert not per_host[0] & per_host[1]
    assert {s["provider_job_id"] for s in states} <= per_host[0] | per_host[1]
