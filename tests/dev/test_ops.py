"""deploy/ops.py: the worker liveness check and search attribute registration."""

from __future__ import annotations

import importlib.util
import socket
from types import ModuleType

from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from reelflow.core.settings import Settings
from tests.support import REPO_ROOT, assert_eventually, new_task_queue


def _load_ops() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reelflow_ops", REPO_ROOT / "deploy" / "ops.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ops = _load_ops()


@activity.defn
async def noop() -> None:
    """Something for the worker to register; never called."""


async def test_worker_health_sees_only_live_pollers_from_this_host(
    local_env: WorkflowEnvironment,
) -> None:
    client = local_env.client
    polled, idle = new_task_queue("health"), new_task_queue("idle")
    async with Worker(client, task_queue=polled, activities=[noop]):

        async def healthy() -> None:
            assert await ops.stale_queues(client, [polled]) == []

        await assert_eventually(healthy, timeout=20)
        assert await ops.stale_queues(client, [polled, idle]) == [idle]
        other_host = f"not-{socket.gethostname()}"
        assert await ops.stale_queues(client, [polled], host=other_host) == [polled]


async def test_register_search_attributes_is_idempotent(local_env: WorkflowEnvironment) -> None:
    settings = Settings(
        temporal_address=local_env.client.service_client.config.target_host,
        temporal_namespace=local_env.client.namespace,
    )
    assert await ops.register_search_attributes(settings) == []
