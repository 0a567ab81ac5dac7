"""Operational one-shots for containers: migrate, register search attributes, worker health.

Run inside the reelflow image (settings come from the environment, as for every process)::

    python deploy/ops.py migrate
    python deploy/ops.py register-search-attributes
    python deploy/ops.py worker-health reelflow-media [more queues...]
    python deploy/ops.py promote-version

``promote-version`` makes this release (``WORKER_DEPLOYMENT`` / ``WORKER_BUILD_ID``) the
current version of the worker deployment once its workers poll: new runs go to it, and
runs pinned to the previous version finish there (see ``workers/versioning.py``).

``worker-health`` is the worker pools' liveness check: Temporal workers serve no HTTP, so
"healthy" means Temporal has seen a poller from this host on each queue recently. Exit
status is 0 when everything is fine, 1 otherwise, with the reason on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from reelflow.core.settings import Settings, load_settings
from reelflow.core.temporal_client import connect_temporal
from reelflow.dev.stack import ensure_search_attributes

logger = logging.getLogger("reelflow.ops")

POLLER_MAX_AGE = timedelta(minutes=2)
"""Idle workers re-poll at least every minute (long-poll timeout), so older means stuck."""


def migrate(settings: Settings) -> None:
    """Bring the database schema to head (idempotent)."""
    from reelflow.core.migrate import upgrade_database

    upgrade_database(settings.database_url)


async def register_search_attributes(settings: Settings) -> list[str]:
    """Add our custom search attributes to the namespace; returns the names added.

    Temporal Cloud does not accept this through the API; register them with ``tcld``.
    """
    client = await connect_temporal(settings)
    return await ensure_search_attributes(client, settings.temporal_namespace)


async def stale_queues(
    client: Client,
    queues: Sequence[str],
    *,
    host: str | None = None,
    max_age: timedelta = POLLER_MAX_AGE,
) -> list[str]:
    """Queues on which no worker from ``host`` has polled within ``max_age``.

    Worker identities default to ``<pid>@<hostname>``, so the host part tells this
    container's pollers apart from other replicas'.

    Args:
        client: Connected client.
        queues: Task queue names.
        host: Hostname to look for; defaults to this machine's.
        max_age: Oldest acceptable poll.

    Returns:
        The queue names that look dead, empty if all are healthy.
    """
    suffix = f"@{host or socket.gethostname()}"
    now = datetime.now(UTC)
    stale: list[str] = []
    for queue in queues:
        seen = False
        for queue_type in (
            TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        ):
            response = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                    task_queue_type=queue_type,
                ),
                timeout=timedelta(seconds=5),
            )
            seen = seen or any(
                poller.identity.endswith(suffix)
                and now - poller.last_access_time.ToDatetime(UTC) <= max_age
                for poller in response.pollers
            )
        if not seen:
            stale.append(queue)
    return stale


async def promote_version(settings: Settings) -> str:
    """Make this release the worker deployment's current version; returns its build id."""
    from workers.versioning import deployment_version, promote

    version = deployment_version(settings)
    if version is None:
        raise SystemExit("WORKER_DEPLOYMENT is not set: the workers run unversioned")
    await promote(await connect_temporal(settings), version)
    return version.build_id


async def _worker_health(settings: Settings, queues: Sequence[str]) -> int:
    client = await connect_temporal(settings)
    stale = await stale_queues(client, queues)
    if stale:
        logger.error("no recent poll from this host on: %s", ", ".join(stale))
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply database migrations")
    commands.add_parser("register-search-attributes", help="add missing search attributes")
    health = commands.add_parser("worker-health", help="liveness of this host's workers")
    health.add_argument("queues", nargs="+", help="task queues this container polls")
    commands.add_parser("promote-version", help="make this release the current worker version")
    args = parser.parse_args(argv)

    settings = load_settings()
    if args.command == "migrate":
        migrate(settings)
        return 0
    if args.command == "register-search-attributes":
        added = asyncio.run(register_search_attributes(settings))
        logger.info("search attributes added: %s", ", ".join(added) or "none (all present)")
        return 0
    if args.command == "promote-version":
        build_id = asyncio.run(promote_version(settings))
        logger.info("%s/%s is now current", settings.worker_deployment, build_id)
        return 0
    return asyncio.run(_worker_health(settings, args.queues))


if __name__ == "__main__":
    sys.exit(main())
