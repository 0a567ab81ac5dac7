"""AnthropicAnswerer through the real anthropic SDK against a local Messages API server."""

from __future__ import annotations

import anthropic
import httpx2
import pytest

from reelflow.chat.answerers import (
    SYSTEM_PROMPT,
    AnswerInterrupted,
    TextDelta,
    build_prompt,
    estimate_tokens,
)
from reelflow.chat.providers.claude import AnthropicAnswerer, build_anthropic_client
from reelflow.core.provider_errors import (
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
)
from tests.chat.answerers.samples import collect, sample_request
from tests.chat.answerers.servers import (
    SSE,
    Drop,
    FakeLLMServer,
    Hold,
    StreamReply,
    anthropic_deltas,
    anthropic_error,
    anthropic_error_body,
    anthropic_stream,
    anthropic_stream_head,
    anthropic_stream_tail,
)

MODEL = "claude-haiku-4-5"


@pytest.fixture
def answerer(llm_server: FakeLLMServer) -> AnthropicAnswerer:
    return AnthropicAnswerer(build_anthropic_client("sk-ant-test", llm_server.url), model=MODEL)


def test_streams_text_and_usage_and_sends_the_prompt(
    answerer: AnthropicAnswerer, llm_server: FakeLLMServer
) -> None:
    parts = ["Temporal retries ", "the activity", " with backoff [1]."]
    llm_server.enqueue(anthropic_stream(MODEL, parts, input_tokens=812, output_tokens=17))
    request = sample_request(history_pairs=2, max_output_tokens=300)

    deltas, finished = collect(answerer.stream(request))

    assert deltas == parts
    assert (finished.input_tokens, finished.output_tokens) == (812, 17)
    assert finished.stop_reason == "end_turn"
    assert finished.usage_estimated is False

    assert len(llm_server.requests) == 1
    sent = llm_server.requests[0]
    assert sent.path == "/v1/messages"
    # This SDK version sends the API key as a bearer token.
    assert sent.headers["authorization"] == "Bearer sk-ant-test"
    assert sent.headers["x-stainless-retry-count"] == "0"
    assert "anthropic-version" in sent.headers
    assert sent.json["model"] == MODEL
    assert sent.json["max_tokens"] == 300
    assert sent.json["stream"] is True
    # The rules go in the top-level system field, never among the messages.
    assert sent.json["system"] == SYSTEM_PROMPT
    prompt = build_prompt(request)
    assert sent.json["messages"] == [
        {"role": "user", "content": "question 1"},
        {"role": "assistant", "content": "answer 1 [1]"},
        {"role": "user", "content": "question 2"},
        {"role": "assistant", "content": "answer 2 [1]"},
        {"role": "user", "content": prompt.messages[-1].content},
    ]
    assert '<passage ref="1" video="vid-durable"' in sent.json["messages"][-1]["content"]


def test_max_tokens_stop_reason_is_reported(
    answerer: AnthropicAnswerer, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(
        anthropic_stream(MODEL, ["cut"], input_tokens=5, output_tokens=1, stop_reason="max_tokens")
    )
    _, finished = collect(answerer.stream(sample_request()))
    assert finished.stop_reason == "max_tokens"


@pytest.mark.parametrize(
    ("status", "error_type", "kind"),
    [
        (429, "rate_limit_error", ProviderTransientError),
        (500, "api_error", ProviderTransientError),
        (529, "overloaded_error", ProviderTransientError),
        (400, "invalid_request_error", ProviderPermanentError),
        (401, "authentication_error", ProviderPermanentError),
        (404, "not_found_error", ProviderPermanentError),  # e.g. a retired model id
    ],
)
def test_errors_before_the_stream_are_classified_with_one_request(
    answerer: AnthropicAnswerer,
    llm_server: FakeLLMServer,
    status: int,
    error_type: str,
    kind: type[ProviderError],
) -> None:
    llm_server.enqueue(anthropic_error(status, error_type))

    with pytest.raises(kind) as caught:
        collect(answerer.stream(sample_request()))

    assert not isinstance(caught.value, AnswerInterrupted)
    assert caught.value.status_code == status
    assert error_type in str(caught.value)
    assert isinstance(caught.value.__cause__, anthropic.APIStatusError)
    # Retries belong to Temporal: the SDK must not have tried again on its own.
    assert len(llm_server.requests) == 1


def test_rate_limit_carries_retry_after(
    answerer: AnthropicAnswerer, llm_server: FakeLLMServer
) -> None:
    limited = anthropic_error(429, "rate_limit_error")
    limited.headers["retry-after"] = "12"
    llm_server.enqueue(limited)
    with pytest.raises(ProviderTransientError) as caught:
        collect(answerer.stream(sample_request()))
    assert caught.value.retry_after_s == 12.0
    assert len(llm_server.requests) == 1


def test_overloaded_error_mid_stream_keeps_partial_text_and_usage(
    answerer: AnthropicAnswerer, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(
        StreamReply(
            [
                *anthropic_stream_head(MODEL, input_tokens=640),
                *anthropic_deltas(["Temporal retries ", "failed activities"]),
                SSE(anthropic_error_body("overloaded_error", "Overloaded"), event="error"),
            ]
        )
    )
    received: list[str] = []

    with pytest.raises(AnswerInterrupted) as caught:
        for event in answerer.stream(sample_request()):
            assert isinstance(event, TextDelta)
            received.append(event.text)

    interrupted = caught.value
    assert received == ["Temporal retries ", "failed activities"]
    assert interrupted.partial_text == "Temporal retries failed activities"
    assert interrupted.transient is True
    assert isinstance(interrupted.error, ProviderTransientError)
    assert "overloaded_error" in str(interrupted)
    assert interrupted.status_code is None  # the HTTP status was a 200
    assert isinstance(interrupted.__cause__, ProviderTransientError)
    assert isinstance(interrupted.__cause__.__cause__, anthropic.APIStatusError)
    # Input as reported in message_start; output estimated, since the final count never came.
    assert interrupted.input_tokens == 640
    assert interrupted.output_tokens == estimate_tokens(interrupted.partial_text)
    assert interrupted.usage_estimated is True
    assert len(llm_server.requests) == 1


def test_unrecognised_error_mid_stream_is_transient(
    answerer: AnthropicAnswerer, llm_server: FakeLLMServer
) -> None:
    # The request was accepted, so an error nobody recognises is the service's trouble.
    llm_server.enqueue(
        StreamReply(
            [
                *anthropic_stream_head(MODEL, input_tokens=10),
                *anthropic_deltas(["Hi"]),
                SSE("upstream went away", event="error"),
            ]
        )
    )
    with pytest.raises(AnswerInterrupted) as caught:
        collect(answerer.stream(sample_request()))
    assert caught.value.transient is True


def test_invalid_request_mid_stream_is_permanent(
    answerer: AnthropicAnswerer, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(
        StreamReply(
            [
                *anthropic_stream_head(MODEL, input_tokens=10),
                *anthropic_deltas(["Hi"]),
                SSE(anthropic_error_body("invalid_request_error", "bad"), event="error"),
            ]
        )
    )
    with pytest.raises(AnswerInterrupted) as caught:
        collect(answerer.stream(sample_request()))
    assert caught.value.transient is False
    assert caught.value.partial_text == "Hi"


def test_dropped_connection_mid_stream_is_transient_and_interrupted(
    answerer: AnthropicAnswerer, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(
        StreamReply(
            [*anthropic_stream_head(MODEL, input_tokens=99), *anthropic_deltas(["Half"]), Drop()]
        )
    )
    with pytest.raises(AnswerInterrupted) as caught:
        collect(answerer.stream(sample_request()))
    assert caught.value.transient is True
    assert caught.value.partial_text == "Half"
    assert caught.value.input_tokens == 99
    assert isinstance(caught.value.__cause__.__cause__, httpx2.TransportError)  # type: ignore[union-attr]


def test_stream_without_message_stop_is_incomplete(
    answerer: AnthropicAnswerer, llm_server: FakeLLMServer
) -> None:
    # The server ends the body cleanly but the message never finished.
    llm_server.enqueue(
        StreamReply([*anthropic_stream_head(MODEL, input_tokens=7), *anthropic_deltas(["So"])])
    )
    with pytest.raises(AnswerInterrupted, match="message_stop") as caught:
        collect(answerer.stream(sample_request()))
    assert caught.value.transient is True
    assert caught.value.partial_text == "So"


def test_error_event_before_any_text_still_reports_usage(
    answerer: AnthropicAnswerer, llm_server: FakeLLMServer
) -> None:
    # message_start already counted the prompt, so the caller gets tokens to price.
    llm_server.enqueue(
        StreamReply(
            [
                *anthropic_stream_head(MODEL, input_tokens=321),
                SSE(anthropic_error_body("overloaded_error", "Overloaded"), event="error"),
            ]
        )
    )
    with pytest.raises(AnswerInterrupted) as caught:
        collect(answerer.stream(sample_request()))
    assert caught.value.partial_text == ""
    assert caught.value.input_tokens == 321


def test_stopping_iteration_closes_the_connection(
    answerer: AnthropicAnswerer, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(
        StreamReply(
            [
                *anthropic_stream_head(MODEL, input_tokens=5),
                *anthropic_deltas(["First"]),
                Hold(5.0),
                *anthropic_deltas(["never read"]),
                *anthropic_stream_tail(3),
            ]
        )
    )
    stream = answerer.stream(sample_request())

    assert next(stream) == TextDelta("First")
    stream.close()

    assert llm_server.client_disconnected.wait(3.0), "the HTTP response was left open"
    assert not llm_server.stream_finished.is_set()


def test_timeout_is_transient(llm_server: FakeLLMServer) -> None:
    client = anthropic.Anthropic(
        api_key="sk-ant-test", base_url=llm_server.url, max_retries=0, timeout=0.3
    )
    llm_server.enqueue(StreamReply([Hold(2.0), *anthropic_stream_head(MODEL, input_tokens=1)]))

    with pytest.raises(ProviderTransientError, match="timed out"):
        collect(AnthropicAnswerer(client, model=MODEL).stream(sample_request()))
    assert len(llm_server.requests) == 1


def test_connection_refused_is_transient(llm_server: FakeLLMServer) -> None:
    url = llm_server.url
    llm_server.stop()
    answerer = AnthropicAnswerer(build_anthropic_client("sk-ant-test", url), model=MODEL)
    with pytest.raises(ProviderTransientError, match="connect"):
        collect(answerer.stream(sample_request()))


def test_client_has_sdk_retries_off() -> None:
    client = build_anthropic_client("sk-ant-test", "http://127.0.0.1:9")
    assert client.max_retries == 0
    assert str(client.base_url).rstrip("/") == "http://127.0.0.1:9"
