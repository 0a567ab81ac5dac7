"""Fixtures for the storage tests: a real S3 wire-protocol server (moto) on localhost."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

from reelflow.core.s3_storage import S3Storage
from reelflow.core.storage import MIN_PART_SIZE, LocalStorage, Storage
from tests.core.storage.storage_helpers import Backend

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """An S3-compatible HTTP server in a background thread, on a free local port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


def _apply_dummy_aws_env(mp: pytest.MonkeyPatch, scratch: Path) -> None:
    """Dummy credentials and no proxy, so boto3 never reaches real AWS or a user's config."""
    for name, value in DUMMY_AWS_ENV.items():
        mp.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        mp.delenv(name, raising=False)
    mp.setenv("AWS_CONFIG_FILE", str(scratch / "no-aws-config"))
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(scratch / "no-aws-credentials"))


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy AWS environment for one test (for code that builds its own boto3 client)."""
    _apply_dummy_aws_env(monkeypatch, tmp_path)


@pytest.fixture(scope="session")
def s3_client(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> S3Client:
    """One client for the session; the env is only patched while it reads credentials."""
    with pytest.MonkeyPatch.context() as mp:
        _apply_dummy_aws_env(mp, tmp_path_factory.mktemp("aws"))
        return boto3.session.Session().client(
            "s3",
            endpoint_url=moto_endpoint,
            region_name="us-east-1",
            config=Config(retries={"mode": "standard", "max_attempts": 2}),
        )


@pytest.fixture
def bucket(s3_client: S3Client) -> str:
    name = f"reelflow-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        root = tmp_path / "media"
        return Backend("local", LocalStorage(root), local_root=root.resolve())
    client: S3Client = request.getfixturevalue("s3_client")
    bucket_name: str = request.getfixturevalue("bucket")
    storage = S3Storage(client, bucket_name, "media", part_size=MIN_PART_SIZE)
    return Backend("s3", storage, s3_client=client, bucket=bucket_name)


@pytest.fixture
def storage(backend: Backend) -> Storage:
    return backend.storage
