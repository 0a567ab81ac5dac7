"""Every activity a workflow calls is declared once, and implemented exactly as declared."""

from __future__ import annotations

import inspect
import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity

from reelflow.core.db import create_engine
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from schemas.admission_activities import ADMISSION_ACTIVITIES
from schemas.billing_activities import BILLING_ACTIVITIES
from schemas.contracts import ActivityContract
from schemas.discover_activities import DISCOVER_ACTIVITIES
from schemas.failures import NON_RETRYABLE_ERROR_TYPES
from schemas.generation_activities import GENERATION_ACTIVITIES
from schemas.improve_activities import IMPROVE_ACTIVITIES
from schemas.ingest_activities import INGEST_ACTIVITIES
from schemas.queues import POOLS, TaskQueues
from tests.api.api_support import BagOfWordsEmbedder
from workers.pools import WorkerDependencies, activities_by_queue

CONTRACTS: tuple[ActivityContract[Any, Any], ...] = (
    INGEST_ACTIVITIES
    + GENERATION_ACTIVITIES
    + DISCOVER_ACTIVITIES
    + IMPROVE_ACTIVITIES
    + BILLING_ACTIVITIES
    + ADMISSION_ACTIVITIES
)


class NoTranscriber:
    """Stands in for the transcriber: building workers must not need a model."""

    model_name = "none"

    def transcribe(self, *args: object, **kwargs: object) -> Any:
        raise AssertionError("not called")


@pytest.fixture
def served(tmp_path: Path) -> dict[str, dict[str, Any]]:
    settings = Settings(
        environment="test",
        database_url="postgresql+psycopg://reelflow@127.0.0.1:1/none",
        reelflow_home=tmp_path,
        task_queue_prefix="contracts",
    )
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
    by_queue: dict[str, dict[str, Any]] = {}
    for queue in activities_by_queue(deps, POOLS):
        names = {
            str(activity._Definition.must_from_callable(fn).name): fn for fn in queue.activities
        }
        by_queue[queue.task_queue] = names
    return by_queue


def test_contract_names_are_unique() -> None:
    names = [contract.name for contract in CONTRACTS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_each_contract_is_served_on_its_pool_with_its_exact_types(
    contract: ActivityContract[Any, Any], served: dict[str, dict[str, Any]]
) -> None:
    queues = TaskQueues.for_prefix("contracts")
    implementation = served[queues.by_pool(contract.pool)].get(contract.name)
    assert implementation is not None, f"no worker serves {contract.name} on {contract.pool}"
    hints = typing.get_type_hints(implementation)
    parameters = [p for p in inspect.signature(implementation).parameters if p != "self"]
    assert len(parameters) == 1, f"{contract.name} must take exactly one input"
    assert hints[parameters[0]] is contract.input
    assert hints["return"] is contract.output


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_every_retry_policy_speaks_the_failure_vocabulary(
    contract: ActivityContract[Any, Any],
) -> None:
    assert contract.retry.non_retryable_error_types == list(NON_RETRYABLE_ERROR_TYPES)
    long_running = contract.start_to_close.total_seconds() > 60
    if long_running and contract.schedule_to_close is None:
        # A step that may run for minutes must prove it is alive, or a dead worker holds
        # the run until the start-to-close timeout.
        assert contract.heartbeat is not None, f"{contract.name} needs a heartbeat timeout"


def test_every_activity_a_worker_serves_has_a_contract(
    served: dict[str, dict[str, Any]],
) -> None:
    declared = {contract.name for contract in CONTRACTS}
    for queue, names in served.items():
        assert set(names) <= declared, (queue, set(names) - declared)


def test_host_bound_job_calls_have_their_own_queue(served: dict[str, dict[str, Any]]) -> None:
    host_queues = [queue for queue in served if "-host-" in queue]
    assert len(host_queues) == 1
    assert set(served[host_queues[0]]) == {
        "poll_generation_job",
        "download_generation_output",
        "cancel_generation_job",
    }
