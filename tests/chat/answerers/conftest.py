"""Fixtures for answerer tests: a local server speaking the providers' streaming formats."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chat.answerers.servers import FakeLLMServer


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
