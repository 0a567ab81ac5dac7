"""OpenAIEmbedder through the real openai SDK against a local OpenAI-compatible server."""

from __future__ import annotations

import numpy as np
import openai
import pytest
from pydantic import SecretStr

from reelflow.core.openai_client import build_openai_client
from reelflow.core.provider_errors import (
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
)
from reelflow.core.settings import Settings, SettingsError
from reelflow.search.embedding import EMBEDDING_DIMENSIONS, build_embedder
from reelflow.search.openai_embedding import OpenAIEmbedder
from tests.support.openai_server import (
    FakeOpenAIServer,
    ScriptedResponse,
    fake_vector,
    openai_error,
)


def _settings(base_url: str, *, model: str = "text-embedding-3-small") -> Settings:
    # Keyword arguments take precedence over the environment and any .env file.
    return Settings(
        embedding_provider="openai",
        openai_api_key=SecretStr("sk-test-key"),
        openai_base_url=base_url,
        openai_embedding_model=model,
    )


@pytest.fixture
def embedder(fake_openai: FakeOpenAIServer) -> OpenAIEmbedder:
    built = build_embedder(_settings(fake_openai.base_url))
    assert isinstance(built, OpenAIEmbedder)
    return built


def test_embeds_in_input_order_and_reports_usage(
    embedder: OpenAIEmbedder, fake_openai: FakeOpenAIServer
) -> None:
    texts = ["first chunk of a transcript", "second chunk", "third"]

    batch = embedder.embed(texts)

    assert len(fake_openai.requests) == 1
    sent = fake_openai.requests[0]
    assert sent.path == "/v1/embeddings"
    assert sent.headers["authorization"] == "Bearer sk-test-key"
    assert sent.json["model"] == "text-embedding-3-small"
    assert sent.json["input"] == texts
    assert sent.json["dimensions"] == EMBEDDING_DIMENSIONS

    # The server answered out of order and un-normalized; we return input order, unit length.
    expected = np.asarray([fake_vector(t, EMBEDDING_DIMENSIONS) for t in texts], np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert batch.vectors.dtype == np.float32
    np.testing.assert_allclose(batch.vectors, expected, atol=1e-6)
    assert batch.input_tokens == sum(len(t.split()) + 1 for t in texts)
    assert embedder.model_name == "openai/text-embedding-3-small"
    assert embedder.provider == "openai"


def test_model_comes_from_settings(fake_openai: FakeOpenAIServer) -> None:
    embedder = build_embedder(_settings(fake_openai.base_url, model="text-embedding-3-large"))
    embedder.embed(["x"])
    assert fake_openai.requests[0].json["model"] == "text-embedding-3-large"
    assert embedder.model_name == "openai/text-embedding-3-large"


def test_empty_input_makes_no_request(
    embedder: OpenAIEmbedder, fake_openai: FakeOpenAIServer
) -> None:
    batch = embedder.embed([])
    assert batch.vectors.shape == (0, EMBEDDING_DIMENSIONS)
    assert fake_openai.requests == []


def test_wrong_width_from_server_is_permanent(
    embedder: OpenAIEmbedder, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.enqueue(
        ScriptedResponse(
            200,
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5] * 1536}],
                "model": "text-embedding-ada-002",
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            },
        )
    )
    with pytest.raises(ProviderPermanentError, match="shape"):
        embedder.embed(["x"])


# (status, error type, error code, expected kind) as the API sends them.
ERROR_CASES = [
    (429, "requests", "rate_limit_exceeded", ProviderTransientError),
    (500, "server_error", None, ProviderTransientError),
    (503, "server_error", None, ProviderTransientError),
    (401, "invalid_request_error", "invalid_api_key", ProviderPermanentError),
    (400, "invalid_request_error", None, ProviderPermanentError),
    (404, "invalid_request_error", "model_not_found", ProviderPermanentError),
    # Out of credit: a 429, but waiting does not help.
    (429, "insufficient_quota", "insufficient_quota", ProviderPermanentError),
]


@pytest.mark.parametrize(("status", "error_type", "code", "kind"), ERROR_CASES)
def test_http_errors_are_classified_without_sdk_retries(
    embedder: OpenAIEmbedder,
    fake_openai: FakeOpenAIServer,
    status: int,
    error_type: str,
    code: str | None,
    kind: type[ProviderError],
) -> None:
    fake_openai.enqueue(openai_error(status, "request failed", type_=error_type, code=code))

    with pytest.raises(kind) as caught:
        embedder.embed(["hello"])

    assert caught.value.status_code == status
    assert isinstance(caught.value.__cause__, openai.APIStatusError)
    # Retries belong to Temporal: the SDK must not have tried again on its own.
    assert len(fake_openai.requests) == 1


def test_rate_limit_carries_retry_after(
    embedder: OpenAIEmbedder, fake_openai: FakeOpenAIServer
) -> None:
    limited = openai_error(429, "Rate limit reached", type_="requests", code="rate_limit_exceeded")
    limited.headers["retry-after"] = "7"
    fake_openai.enqueue(limited)

    with pytest.raises(ProviderTransientError) as caught:
        embedder.embed(["hello"])

    assert caught.value.retry_after_s == 7.0
    assert len(fake_openai.requests) == 1


def test_timeout_is_transient(fake_openai: FakeOpenAIServer) -> None:
    client = openai.OpenAI(
        api_key="sk-test", base_url=fake_openai.base_url, max_retries=0, timeout=0.3
    )
    fake_openai.enqueue(ScriptedResponse(200, {}, delay_s=1.5))

    with pytest.raises(ProviderTransientError, match="timed out"):
        OpenAIEmbedder(client).embed(["hello"])

    assert len(fake_openai.requests) == 1


def test_connection_refused_is_transient(fake_openai: FakeOpenAIServer) -> None:
    url = fake_openai.base_url
    fake_openai.stop()  # nothing listens on the port any more
    embedder = build_embedder(_settings(url))

    with pytest.raises(ProviderTransientError, match="connect"):
        embedder.embed(["hello"])


def test_client_has_sdk_retries_off_and_needs_a_key(fake_openai: FakeOpenAIServer) -> None:
    client = build_openai_client(_settings(fake_openai.base_url))
    assert client.max_retries == 0
    assert str(client.base_url).rstrip("/") == fake_openai.base_url

    keyless = Settings(openai_api_key=None)
    with pytest.raises(SettingsError, match="OPENAI_API_KEY"):
        build_openai_client(keyless)


def test_count_tokens_estimates_without_network(
    embedder: OpenAIEmbedder, fake_openai: FakeOpenAIServer
) -> None:
    assert embedder.count_tokens(["one two three", "four"]) == 4
    assert fake_openai.requests == []
