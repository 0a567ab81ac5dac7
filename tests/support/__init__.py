"""Helpers shared by the test suite: ports, task queues, polling, databases, Temporal.

Import as ``from tests.support import free_port, new_task_queue, assert_eventually``.
"""

from __future__ import annotations

from tests.support.helpers import (
    REPO_ROOT,
    assert_eventually,
    free_port,
    new_task_queue,
    pid_is_gone,
)
from tests.support.postgres import (
    TEST_CLUSTER_PREFIX,
    create_database,
    drop_database,
    libpq_url,
    reap_orphaned_clusters,
)
from tests.support.temporal import (
    WORKFLOW_ENVIRONMENT_OPTION,
    start_local_environment,
    start_time_skipping_environment,
)

__all__ = [
    "REPO_ROOT",
    "TEST_CLUSTER_PREFIX",
    "WORKFLOW_ENVIRONMENT_OPTION",
    "assert_eventually",
    "create_database",
    "drop_database",
    "free_port",
    "libpq_url",
    "new_task_queue",
    "pid_is_gone",
    "reap_orphaned_clusters",
    "start_local_environment",
    "start_time_skipping_environment",
]
