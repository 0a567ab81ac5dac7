"""build_answerer: one entry point from provider name and key to a ready answerer."""

from __future__ import annotations

import pytest

from reelflow.chat.answerers import (
    DEFAULT_ANTHROPIC_MODEL,
    DEFAULT_GEMINI_MODEL,
    DEFAULT_OPENAI_MODEL,
    build_answerer,
)
from reelflow.chat.offline import OfflineAnswerer
from reelflow.chat.providers.claude import AnthropicAnswerer
from reelflow.chat.providers.gemini import GeminiAnswerer
from reelflow.chat.providers.gpt import OpenAIAnswerer
from reelflow.core.settings import SettingsError
from tests.chat.answerers.samples import collect, sample_request
from tests.chat.answerers.servers import FakeLLMServer, openai_stream


def test_local_is_the_offline_answerer_and_needs_no_key() -> None:
    answerer = build_answerer("local", api_key=None)
    assert isinstance(answerer, OfflineAnswerer)
    assert (answerer.provider, answerer.model) == ("local", "offline-extractive")


@pytest.mark.parametrize(
    ("provider", "kind", "default_model"),
    [
        ("anthropic", AnthropicAnswerer, DEFAULT_ANTHROPIC_MODEL),
        ("openai", OpenAIAnswerer, DEFAULT_OPENAI_MODEL),
        ("gemini", GeminiAnswerer, DEFAULT_GEMINI_MODEL),
    ],
)
def test_providers_get_their_answerer_and_default_model(
    provider: str, kind: type[object], default_model: str
) -> None:
    answerer = build_answerer(provider, api_key="key", base_url="http://127.0.0.1:9")
    assert isinstance(answerer, kind)
    assert answerer.provider == provider
    assert answerer.model == default_model
    chosen = build_answerer(provider, api_key="key", model="my-model")
    assert chosen.model == "my-model"


def test_defaults_are_the_issue_s_models() -> None:
    assert DEFAULT_ANTHROPIC_MODEL == "claude-haiku-4-5"
    assert DEFAULT_OPENAI_MODEL == "gpt-4o-mini"
    assert DEFAULT_GEMINI_MODEL == "gemini-2.0-flash"


@pytest.mark.parametrize("provider", ["anthropic", "openai", "gemini"])
def test_a_key_is_required(provider: str) -> None:
    with pytest.raises(SettingsError, match=provider):
        build_answerer(provider, api_key=None)
    with pytest.raises(SettingsError):
        build_answerer(provider, api_key="")


def test_unknown_provider_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown chat provider 'mistral'"):
        build_answerer("mistral", api_key="key")


def test_built_answerer_talks_to_base_url(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(openai_stream("gpt-x", ["ok"], prompt_tokens=3, completion_tokens=1))
    answerer = build_answerer(
        "openai", api_key="sk-test", base_url=f"{llm_server.url}/v1", model="gpt-x"
    )
    deltas, finished = collect(answerer.stream(sample_request()))
    assert deltas == ["ok"]
    assert finished.input_tokens == 3
    assert llm_server.requests[0].json["model"] == "gpt-x"
