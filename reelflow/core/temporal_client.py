"""The one way every entry point (API, workers, CLI) connects to Temporal."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import TLSConfig

from reelflow.core.settings import Settings, SettingsError


def _read(path: Path, variable: str) -> bytes:
    try:
        return path.expanduser().read_bytes()
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot read {path}: {exc.strerror or exc}") from exc


def tls_config(settings: Settings) -> bool | TLSConfig:
    """TLS for the Temporal connection, as `Client.connect` takes it.

    A client certificate means mTLS (self-hosted or Temporal Cloud with certificates). An
    API key implies TLS because Temporal Cloud only accepts keys over TLS. Otherwise TLS
    follows ``TEMPORAL_TLS`` (server-verified TLS with the system roots).

    Raises:
        SettingsError: If a certificate or key file cannot be read.
    """
    if settings.temporal_tls_cert_path is not None:
        # The settings validator guarantees the key path accompanies the cert path.
        assert settings.temporal_tls_key_path is not None
        return TLSConfig(
            client_cert=_read(settings.temporal_tls_cert_path, "TEMPORAL_TLS_CERT_PATH"),
            client_private_key=_read(settings.temporal_tls_key_path, "TEMPORAL_TLS_KEY_PATH"),
        )
    return settings.temporal_tls or settings.temporal_api_key is not None


async def connect_temporal(
    settings: Settings,
    *,
    identity: str | None = None,
    interceptors: Sequence[Interceptor] = (),
    lazy: bool = False,
) -> Client:
    """Connect to the configured Temporal namespace with our data converter.

    Every workflow, activity, signal and update contract is a pydantic model, so the
    client always uses `pydantic_data_converter`; a client without it would fail to
    (de)serialize our payloads, which is why no entry point should call
    `Client.connect` itself.

    Args:
        settings: Address, namespace and credentials (``TEMPORAL_*``).
        identity: Identity recorded in workflow history (the SDK default is pid@host).
        interceptors: Client interceptors (e.g. tracing).
        lazy: Connect on first use instead of now, so a process can start while the
            server is still coming up.

    Returns:
        A connected client.

    Raises:
        SettingsError: If TLS files cannot be read.
        RuntimeError: From the SDK, if the server cannot be reached.
    """
    api_key = settings.temporal_api_key
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=api_key.get_secret_value() if api_key is not None else None,
        tls=tls_config(settings),
        data_converter=pydantic_data_converter,
        interceptors=interceptors,
        identity=identity,
        lazy=lazy,
    )
