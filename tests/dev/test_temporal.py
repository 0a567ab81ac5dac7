"""TemporalDevServer, the Temporal fixtures and the shared client factory."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode, TLSConfig
from temporalio.testing import WorkflowEnvironment

from reelflow.core.settings import Settings, SettingsError
from reelflow.core.temporal_client import connect_temporal, tls_config
from reelflow.dev.stack import (
    SEARCH_ATTRIBUTES,
    TemporalDevServer,
    ensure_search_attributes,
    indexed_value_types,
    is_port_open,
    registered_search_attributes,
    wait_for_http,
)
from tests.support import free_port


async def test_dev_server_registers_search_attributes_and_persists(tmp_path: Path) -> None:
    db_file = tmp_path / "temporal" / "temporal.db"
    server = TemporalDevServer(db_file, free_port(), free_port(), namespace="reelflow-test")
    try:
        await asyncio.to_thread(server.start)
        client = await Client.connect(server.target, namespace="reelflow-test")
        assert await registered_search_attributes(client, "reelflow-test") == SEARCH_ATTRIBUTES
        # Already there: nothing to add.
        assert await ensure_search_attributes(client, "reelflow-test") == []

        response = await asyncio.to_thread(wait_for_http, server.ui_url, 30.0)
        assert response.status_code == 200
        assert db_file.exists(), "history must go to the SQLite file, not memory"
        assert db_file.with_name("temporal.db-wal").exists(), "WAL journal mode expected"
    finally:
        await asyncio.to_thread(server.stop)
    assert server.process is not None and server.process.returncode is not None
    assert not is_port_open("127.0.0.1", server.port)


async def test_local_env_fixture_has_search_attributes_and_pydantic(
    local_env: WorkflowEnvironment,
) -> None:
    assert local_env.client.data_converter is pydantic_data_converter
    namespace = local_env.client.namespace
    registered = await registered_search_attributes(local_env.client, namespace)
    assert SEARCH_ATTRIBUTES.items() <= registered.items()


async def test_time_skipping_env_fixture_skips_time(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    assert time_skipping_env.client.data_converter is pydantic_data_converter
    assert time_skipping_env.supports_time_skipping
    before = await time_skipping_env.get_current_time()
    await asyncio.wait_for(time_skipping_env.sleep(timedelta(hours=6)), timeout=30)
    assert await time_skipping_env.get_current_time() - before >= timedelta(hours=6)


async def test_time_skipping_env_fixture_has_search_attributes(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    # The test server cannot list them; adding one again is how it tells us it exists.
    with pytest.raises(RPCError) as exists:
        await time_skipping_env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=time_skipping_env.client.namespace,
                search_attributes=indexed_value_types({"TenantId": "Keyword"}),
            )
        )
    assert exists.value.status == RPCStatusCode.ALREADY_EXISTS


async def test_connect_temporal_uses_settings_and_pydantic(
    local_env: WorkflowEnvironment,
) -> None:
    target = local_env.client.service_client.config.target_host
    settings = Settings(temporal_address=target, temporal_namespace=local_env.client.namespace)
    client = await connect_temporal(settings)
    assert client.data_converter is pydantic_data_converter
    assert client.namespace == local_env.client.namespace
    registered = await registered_search_attributes(client, client.namespace)
    assert "TenantId" in registered


def test_tls_config_follows_settings(tmp_path: Path) -> None:
    assert tls_config(Settings()) is False
    assert tls_config(Settings(temporal_tls=True)) is True
    # Temporal Cloud only takes API keys over TLS.
    assert tls_config(Settings(temporal_api_key=SecretStr("key"))) is True

    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_bytes(b"CERT")
    key.write_bytes(b"KEY")
    mtls = tls_config(Settings(temporal_tls_cert_path=cert, temporal_tls_key_path=key))
    assert isinstance(mtls, TLSConfig)
    assert (mtls.client_cert, mtls.client_private_key) == (b"CERT", b"KEY")

    missing = Settings(temporal_tls_cert_path=tmp_path / "nope.pem", temporal_tls_key_path=key)
    with pytest.raises(SettingsError, match="TEMPORAL_TLS_CERT_PATH"):
        tls_config(missing)


def test_search_attributes_match_the_schema_contract() -> None:
    contract = pytest.importorskip("schemas.search_attributes")
    assert contract.REGISTRATION == SEARCH_ATTRIBUTES
