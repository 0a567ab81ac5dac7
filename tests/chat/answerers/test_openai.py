"""OpenAIAnswerer through the real openai SDK against a local chat completions server."""

from __future__ import annotations

import openai
import pytest

from reelflow.chat.answerers import (
    SYSTEM_PROMPT,
    AnswerInterrupted,
    TextDelta,
    build_prompt,
    estimate_prompt_tokens,
    estimate_tokens,
)
from reelflow.chat.providers.gpt import OpenAIAnswerer, build_openai_chat_client
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
    openai_deltas,
    openai_error,
    openai_error_body,
    openai_stream,
)

MODEL = "gpt-4o-mini"


@pytest.fixture
def answerer(llm_server: FakeLLMServer) -> OpenAIAnswerer:
    return OpenAIAnswerer(build_openai_chat_client("sk-test", f"{llm_server.url}/v1"), model=MODEL)


def test_streams_text_and_usage_and_sends_the_prompt(
    answerer: OpenAIAnswerer, llm_server: FakeLLMServer
) -> None:
    parts = ["Temporal ", "retries failed ", "activities [1]."]
    llm_server.enqueue(openai_stream(MODEL, parts, prompt_tokens=905, completion_tokens=12))
    request = sample_request(history_pairs=1, max_output_tokens=256)

    deltas, finished = collect(answerer.stream(request))

    # The role-only first chunk adds no text.
    assert deltas == parts
    assert (finished.input_tokens, finished.output_tokens) == (905, 12)
    assert finished.stop_reason == "stop"
    assert finished.usage_estimated is False

    assert len(llm_server.requests) == 1
    sent = llm_server.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.json["model"] == MODEL
    assert sent.json["max_completion_tokens"] == 256
    assert sent.json["stream"] is True
    assert sent.json["stream_options"] == {"include_usage": True}
    prompt = build_prompt(request)
    assert sent.json["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "question 1"},
        {"role": "assistant", "content": "answer 1 [1]"},
        {"role": "user", "content": prompt.messages[-1].content},
    ]
    assert '<passage ref="2" video="vid-hostile"' in sent.json["messages"][-1]["content"]


def test_missing_usage_chunk_is_estimated(
    answerer: OpenAIAnswerer, llm_server: FakeLLMServer
) -> None:
    # OpenAI-compatible servers may ignore include_usage; the answer is still complete.
    request = sample_request()
    llm_server.enqueue(
        StreamReply(
            [
                *openai_deltas(MODEL, ["Just ", "text."]),
                SSE(
                    {
                        "id": "c",
                        "object": "chat.completion.chunk",
                        "created": 1,
                        "model": MODEL,
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
                    }
                ),
                SSE("[DONE]"),
            ]
        )
    )
    deltas, finished = collect(answerer.stream(request))
    assert "".join(deltas) == "Just text."
    assert finished.stop_reason == "length"
    assert finished.usage_estimated is True
    assert finished.input_tokens == estimate_prompt_tokens(build_prompt(request))
    assert finished.output_tokens == estimate_tokens("Just text.")


@pytest.mark.parametrize(
    ("status", "error_type", "code", "kind"),
    [
        (429, "requests", "rate_limit_exceeded", ProviderTransientError),
        (503, "server_error", None, ProviderTransientError),
        (400, "invalid_request_error", None, ProviderPermanentError),
        (401, "invalid_request_error", "invalid_api_key", ProviderPermanentError),
        (429, "insufficient_quota", "insufficient_quota", ProviderPermanentError),
    ],
)
def test_errors_before_the_stream_are_classified_with_one_request(
    answerer: OpenAIAnswerer,
    llm_server: FakeLLMServer,
    status: int,
    error_type: str,
    code: str | None,
    kind: type[ProviderError],
) -> None:
    llm_server.enqueue(openai_error(status, error_type, code))

    with pytest.raises(kind) as caught:
        collect(answerer.stream(sample_request()))

    assert not isinstance(caught.value, AnswerInterrupted)
    assert caught.value.status_code == status
    assert isinstance(caught.value.__cause__, openai.APIStatusError)
    assert len(llm_server.requests) == 1


def test_error_object_mid_stream_keeps_partial_text(
    answerer: OpenAIAnswerer, llm_server: FakeLLMServer
) -> None:
    request = sample_request()
    llm_server.enqueue(
        StreamReply(
            [
                *openai_deltas(MODEL, ["Temporal ", "retries"]),
                SSE(openai_error_body("The server had an error", type_="server_error")),
            ]
        )
    )
    received: list[str] = []

    with pytest.raises(AnswerInterrupted) as caught:
        for event in answerer.stream(request):
            assert isinstance(event, TextDelta)
            received.append(event.text)

    interrupted = caught.value
    assert "".join(received) == interrupted.partial_text == "Temporal retries"
    assert interrupted.transient is True
    assert "server_error" in str(interrupted)
    assert isinstance(interrupted.__cause__, ProviderTransientError)
    assert isinstance(interrupted.__cause__.__cause__, openai.APIError)
    # OpenAI reports usage only at the end, so both counts are estimates here.
    assert interrupted.usage_estimated is True
    assert interrupted.input_tokens == estimate_prompt_tokens(build_prompt(request))
    assert interrupted.output_tokens == estimate_tokens("Temporal retries")
    assert len(llm_server.requests) == 1


def test_permanent_error_object_mid_stream(
    answerer: OpenAIAnswerer, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(
        StreamReply(
            [
                *openai_deltas(MODEL, ["Hi"]),
                SSE(openai_error_body("bad", type_="invalid_request_error")),
            ]
        )
    )
    with pytest.raises(AnswerInterrupted) as caught:
        collect(answerer.stream(sample_request()))
    assert caught.value.transient is False


def test_dropped_connection_mid_stream_is_transient_and_interrupted(
    answerer: OpenAIAnswerer, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(StreamReply([*openai_deltas(MODEL, ["Half ", "an answer"]), Drop()]))
    with pytest.raises(AnswerInterrupted) as caught:
        collect(answerer.stream(sample_request()))
    assert caught.value.transient is True
    assert caught.value.partial_text == "Half an answer"
    assert isinstance(caught.value.__cause__.__cause__, openai.APIConnectionError)  # type: ignore[union-attr]


def test_connection_lost_after_finish_reason_still_delivers_the_answer(
    answerer: OpenAIAnswerer, llm_server: FakeLLMServer
) -> None:
    finish = SSE(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": MODEL,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
    )
    llm_server.enqueue(StreamReply([*openai_deltas(MODEL, ["Whole answer."]), finish, Drop()]))
    deltas, finished = collect(answerer.stream(sample_request()))
    assert deltas == ["Whole answer."]
    assert finished.stop_reason == "stop"
    assert finished.usage_estimated is True  # the usage chunk never came


def test_error_before_any_text_is_not_an_interruption(
    answerer: OpenAIAnswerer, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(
        StreamReply(
            [*openai_deltas(MODEL, []), SSE(openai_error_body("busy", type_="server_error"))]
        )
    )
    with pytest.raises(ProviderTransientError) as caught:
        collect(answerer.stream(sample_request()))
    assert not isinstance(caught.value, AnswerInterrupted)


def test_stream_without_finish_reason_is_incomplete(
    answerer: OpenAIAnswerer, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(StreamReply([*openai_deltas(MODEL, ["So far"]), SSE("[DONE]")]))
    with pytest.raises(AnswerInterrupted, match="finish_reason") as caught:
        collect(answerer.stream(sample_request()))
    assert caught.value.partial_text == "So far"
    assert caught.value.transient is True


def test_stopping_iteration_closes_the_connection(
    answerer: OpenAIAnswerer, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(
        StreamReply(
            [*openai_deltas(MODEL, ["First"]), Hold(5.0), *openai_deltas(MODEL, ["x"], first=False)]
        )
    )
    stream = answerer.stream(sample_request())

    assert next(stream) == TextDelta("First")
    stream.close()

    assert llm_server.client_disconnected.wait(3.0), "the HTTP response was left open"
    assert not llm_server.stream_finished.is_set()


def test_client_has_sdk_retries_off() -> None:
    client = build_openai_chat_client("sk-test", "http://127.0.0.1:9/v1")
    assert client.max_retries == 0
