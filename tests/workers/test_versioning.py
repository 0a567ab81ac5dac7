"""Worker Versioning on the dev server: a new release does not take an old run's tasks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from temporalio.api.enums.v1 import VersioningBehavior
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from reelflow.core.db import create_engine
from reelflow.core.runs import start_ingest
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from schemas.queues import TaskQueues
from tests.api.api_support import BagOfWordsEmbedder
from tests.schemas.test_activity_contracts import NoTranscriber
from workers.pools import WorkerDependencies, build_workers
from workers.versioning import code_build_id, deployment_version, promote

PINNED = VersioningBehavior.VERSIONING_BEHAVIOR_PINNED


def _settings(tmp_path: Path, deployment: str, build_id: str, prefix: str) -> Settings:
    return Settings(
        environment="test",
        database_url="postgresql+psycopg://reelflow@127.0.0.1:1/none",
        reelflow_home=tmp_path,
        task_queue_prefix=prefix,
        worker_deployment=deployment,
        worker_build_id=build_id,
    )


@asynccontextmanager
async def _release(client: Client, settings: Settings, tmp_path: Path) -> AsyncIterator[None]:
    """The workflow pool of one release, made current once it polls."""
    deps = WorkerDependencies(
        settings=settings,
        engine=create_engine(settings.database_url, pool_size=1),
        storage=LocalStorage(tmp_path / "media"),
        transcriber=NoTranscriber(),  # type: ignore[arg-type]
        embedder=BagOfWordsEmbedder(),
        scratch_dir=tmp_path / "scratch",
        media_executor=ThreadPoolExecutor(1),
        io_executor=ThreadPoolExecutor(1),
    )
    (worker,) = build_workers(client, deps, ["workflows"])
    task = asyncio.create_task(worker.run())
    try:
        version = deployment_version(settings)
        assert version is not None
        await promote(client, version)
        yield
    finally:
        await worker.shutdown()
        await asyncio.gather(task, return_exceptions=True)
        await deps.close()


async def _version_of(handle: WorkflowHandle[object, object]) -> tuple[str, int]:
    """The build id and behaviour a run's first workflow task recorded."""
    for _ in range(200):
        info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
        if info.deployment_version.build_id:
            return info.deployment_version.build_id, info.behavior
        await asyncio.sleep(0.1)
    raise AssertionError(f"{handle.id} never ran a workflow task")


async def test_a_run_stays_on_the_release_that_started_it(
    local_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = local_env.client
    deployment, prefix = f"reelflow-{uuid.uuid4().hex[:6]}", f"v{uuid.uuid4().hex[:8]}"
    queue = TaskQueues.for_prefix(prefix).workflows
    tenant = str(uuid.uuid4())
    # No activity workers: each run waits at its first activity, as a long run would.
    async with _release(client, _settings(tmp_path / "one", deployment, "1", prefix), tmp_path):
        first = await start_ingest(
            client, tenant_id=tenant, video_id=str(uuid.uuid4()), task_queue=queue
        )
        first_handle = client.get_workflow_handle(first)
        assert await _version_of(first_handle) == (
            "1",
            VersioningBehavior.VERSIONING_BEHAVIOR_PINNED,
        )
        async with _release(client, _settings(tmp_path / "two", deployment, "2", prefix), tmp_path):
            second = await start_ingest(
                client, tenant_id=tenant, video_id=str(uuid.uuid4()), task_queue=queue
            )
            second_handle = client.get_workflow_handle(second)
            assert await _version_of(second_handle) == ("2", PINNED)
            # The run started on release 1 is still pinned there after release 2 took over.
            assert await _version_of(first_handle) == ("1", PINNED)
        for handle in (first_handle, second_handle):
            await handle.terminate("versioning test finished")


def test_without_a_build_id_the_version_follows_the_workflow_code(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "reelflow", "", "p")
    version = deployment_version(settings)
    assert version is not None and version.build_id == code_build_id()
    assert deployment_version(_settings(tmp_path, "", "", "p")) is None

    checkout = tmp_path / "checkout"
    for package in ("workflows", "schemas", "activities"):
        (checkout / package).mkdir(parents=True)
        (checkout / package / "steps.py").write_text("STEPS = 1\n")
    before = code_build_id(checkout)
    # Activity code may change within a version: running workflows cannot notice it.
    (checkout / "activities" / "steps.py").write_text("STEPS = 2\n")
    assert code_build_id(checkout) == before
    # Workflow or contract code may not: that is a new version.
    (checkout / "workflows" / "steps.py").write_text("STEPS = 2\n")
    after_workflow = code_build_id(checkout)
    assert after_workflow != before
    (checkout / "schemas" / "steps.py").write_text("STEPS = 2\n")
    assert code_build_id(checkout) != after_workflow
