"""Fixtures for the provider tests: a local server speaking Sora's wire format."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.generation.providers.sora_server import FakeSoraServer


@pytest.fixture
def fake_sora() -> Iterator[FakeSoraServer]:
    with FakeSoraServer() as server:
        yield server


@pytest.fixture
def sora_client(fake_sora: FakeSoraServer) -> openai.OpenAI:
    # Retries deliberately left on: SoraProvider must switch them off itself.
    return openai.OpenAI(
        api_key="sk-test-key", base_url=fake_sora.base_url, max_retries=3, timeout=10.0
    )
