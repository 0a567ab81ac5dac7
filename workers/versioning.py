"""Worker Versioning: which code a run's tasks may reach, and how a release becomes current.

With `WORKER_DEPLOYMENT` set, every worker of a process is a version (`WORKER_BUILD_ID`) of
that Temporal worker deployment. New runs go to the deployment's *current* version; a
release polls first, is made current with `promote` (`python deploy/ops.py promote-version`),
and the previous version keeps serving the runs pinned to it until they drain.

Every run is **pinned**: it finishes on the release that started it, so no worker ever
takes a task of a run it was not built for, and a change to a workflow cannot break a run in
flight. The price is that a release keeps its workers until its runs drain (an ingest takes
minutes; a generation can wait up to `APPROVAL_TIMEOUT_S` for approval, then up to two hours
for its provider): `temporal worker deployment describe-version` shows when a version is
drained. A run that must move sooner can be switched to auto-upgrade with
`temporal workflow update-options --versioning-override-behavior auto_upgrade`, which is safe
because every workflow change still replays the checked-in histories and uses
`workflow.patched` where its commands change.

The behaviour is the workers' default rather than each workflow's, because a workflow that
declares one cannot run on unversioned workers (the tests and the embedded stack).
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from pathlib import Path

from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError
from temporalio.worker import WorkerDeploymentConfig

from reelflow.core.settings import Settings

_PROJECT_ROOT = Path(__file__).resolve().parent.parent
_VERSIONED_CODE = ("workflows", "schemas")
"""What decides whether two workers can run each other's workflow tasks."""

PROMOTE_POLL = timedelta(milliseconds=500)


def deployment_version(settings: Settings) -> WorkerDeploymentVersion | None:
    """This process's worker version, or None when versioning is off."""
    if not settings.worker_deployment:
        return None
    return WorkerDeploymentVersion(
        deployment_name=settings.worker_deployment,
        build_id=settings.worker_build_id or code_build_id(),
    )


def code_build_id(root: Path = _PROJECT_ROOT) -> str:
    """A hash of the workflow and contract code, for workers started without a build id.

    Two workers agree exactly when their workflows and the contracts they call are the
    same; activity code may change between them without making runs incompatible.

    Args:
        root: the checkout whose `workflows/` and `schemas/` are hashed.
    """
    digest = hashlib.sha256()
    for package in _VERSIONED_CODE:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return f"code-{digest.hexdigest()[:12]}"


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """The `deployment_config` of every worker in this process (None: unversioned)."""
    version = deployment_version(settings)
    if version is None:
        return None
    return WorkerDeploymentConfig(
        version=version,
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.PINNED,
    )


async def promote(
    client: Client, version: WorkerDeploymentVersion, *, timeout: timedelta = timedelta(minutes=2)
) -> None:
    """Make `version` the deployment's current version once its workers have polled.

    Temporal refuses a version no worker has polled yet, so this waits (up to `timeout`)
    for the version to register, then sets it. Idempotent.

    Raises:
        TimeoutError: no worker of `version` polled within `timeout`.
    """
    deadline = asyncio.get_running_loop().time() + timeout.total_seconds()
    while True:
        if await _registered(client, version):
            try:
                await client.workflow_service.set_worker_deployment_current_version(
                    SetWorkerDeploymentCurrentVersionRequest(
                        namespace=client.namespace,
                        deployment_name=version.deployment_name,
                        build_id=version.build_id,
                    )
                )
                return
            except RPCError:
                # Registration is eventually consistent across the deployment's queues.
                pass
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(
                f"no worker of {version.deployment_name}/{version.build_id} polled within "
                f"{timeout}; start the release's workers first"
            )
        await asyncio.sleep(PROMOTE_POLL.total_seconds())


async def _registered(client: Client, version: WorkerDeploymentVersion) -> bool:
    try:
        described = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(
                namespace=client.namespace, deployment_name=version.deployment_name
            )
        )
    except RPCError:
        return False  # the deployment appears with its first poller
    return any(
        summary.deployment_version.build_id == version.build_id
        for summary in described.worker_deployment_info.version_summaries
    )
