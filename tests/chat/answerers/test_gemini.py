"""GeminiAnswerer through the real google-genai SDK against a local streamGenerateContent server."""

from __future__ import annotations

import httpx2
import pytest
from google.genai import errors as genai_errors

from reelflow.chat.answerers import SYSTEM_PROMPT, AnswerInterrupted, TextDelta, build_prompt
from reelflow.chat.providers import gemini
from reelflow.chat.providers.gemini import GeminiAnswerer, build_gemini_client
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
    JsonReply,
    StreamReply,
    gemini_chunk,
    gemini_error,
    gemini_error_body,
    gemini_stream,
)

MODEL = "gemini-2.0-flash"
# google-genai 3.x talks to the Gemini Developer API's v1 by default (v1beta when
# GOOGLE_GENAI_API_VERSION=beta); the path is the SDK's, not ours.
STREAM_PATH = f"/v1/models/{MODEL}:streamGenerateContent?alt=sse"


@pytest.fixture
def answerer(llm_server: FakeLLMServer) -> GeminiAnswerer:
    return GeminiAnswerer(build_gemini_client("gm-test-key", llm_server.url), model=MODEL)


def test_streams_text_and_usage_and_sends_the_prompt(
    answerer: GeminiAnswerer, llm_server: FakeLLMServer
) -> None:
    parts = ["Temporal retries ", "failed activities ", "with backoff [1]."]
    llm_server.enqueue(gemini_stream(parts, prompt_tokens=733, candidates_tokens=[3, 6, 11]))
    request = sample_request(history_pairs=1, max_output_tokens=200)

    deltas, finished = collect(answerer.stream(request))

    assert deltas == parts
    assert (finished.input_tokens, finished.output_tokens) == (733, 11)
    assert finished.stop_reason == "STOP"
    assert finished.usage_estimated is False

    assert len(llm_server.requests) == 1
    sent = llm_server.requests[0]
    assert sent.path == STREAM_PATH
    assert sent.headers["x-goog-api-key"] == "gm-test-key"
    # The rules go in systemInstruction, never among the conversation's contents.
    assert sent.json["systemInstruction"]["parts"] == [{"text": SYSTEM_PROMPT}]
    assert sent.json["generationConfig"]["maxOutputTokens"] == 200
    prompt = build_prompt(request)
    assert sent.json["contents"] == [
        {"role": "user", "parts": [{"text": "question 1"}]},
        {"role": "model", "parts": [{"text": "answer 1 [1]"}]},
        {"role": "user", "parts": [{"text": prompt.messages[-1].content}]},
    ]
    assert "&lt;/passage&gt;" in sent.json["contents"][-1]["parts"][0]["text"]


def test_thought_parts_are_not_part_of_the_answer(
    answerer: GeminiAnswerer, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(
        StreamReply(
            [
                SSE(
                    {
                        "candidates": [
                            {
                                "content": {
                                    "role": "model",
                                    "parts": [
                                        {"text": "thinking about it", "thought": True},
                                        {"text": "The answer [1]."},
                                    ],
                                },
                                "finishReason": "STOP",
                            }
                        ],
                        "usageMetadata": {
                            "promptTokenCount": 50,
                            "candidatesTokenCount": 5,
                            "thoughtsTokenCount": 20,
                        },
                    }
                )
            ]
        )
    )
    deltas, finished = collect(answerer.stream(sample_request()))
    assert deltas == ["The answer [1]."]
    # Thinking tokens are billed as output.
    assert finished.output_tokens == 25


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        (429, "RESOURCE_EXHAUSTED", ProviderTransientError),
        (500, "INTERNAL", ProviderTransientError),
        (503, "UNAVAILABLE", ProviderTransientError),
        (400, "INVALID_ARGUMENT", ProviderPermanentError),
        (401, "UNAUTHENTICATED", ProviderPermanentError),
        (403, "PERMISSION_DENIED", ProviderPermanentError),
        (404, "NOT_FOUND", ProviderPermanentError),
    ],
)
def test_errors_before_the_stream_are_classified_with_one_request(
    answerer: GeminiAnswerer,
    llm_server: FakeLLMServer,
    code: int,
    status: str,
    kind: type[ProviderError],
) -> None:
    llm_server.enqueue(gemini_error(code, status))

    with pytest.raises(kind) as caught:
        collect(answerer.stream(sample_request()))

    assert not isinstance(caught.value, AnswerInterrupted)
    assert caught.value.status_code == code
    assert status in str(caught.value)
    assert isinstance(caught.value.__cause__, genai_errors.APIError)
    # HttpRetryOptions(attempts=1): the SDK did not try again.
    assert len(llm_server.requests) == 1


def test_rate_limit_carries_the_retry_delay(
    answerer: GeminiAnswerer, llm_server: FakeLLMServer
) -> None:
    body = gemini_error_body(429, "RESOURCE_EXHAUSTED", "quota")
    body["error"]["details"] = [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}
    ]
    llm_server.enqueue(JsonReply(429, body))
    with pytest.raises(ProviderTransientError) as caught:
        collect(answerer.stream(sample_request()))
    assert caught.value.retry_after_s == 17.0


def test_error_payload_mid_stream_keeps_partial_text_and_reported_usage(
    answerer: GeminiAnswerer, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(
        StreamReply(
            [
                gemini_chunk("Temporal ", prompt_tokens=700, candidates_tokens=2),
                gemini_chunk("retries", prompt_tokens=700, candidates_tokens=3),
                SSE(gemini_error_body(503, "UNAVAILABLE", "The model is overloaded.")),
            ]
        )
    )
    received: list[str] = []

    with pytest.raises(AnswerInterrupted) as caught:
        for event in answerer.stream(sample_request()):
            assert isinstance(event, TextDelta)
            received.append(event.text)

    interrupted = caught.value
    assert "".join(received) == interrupted.partial_text == "Temporal retries"
    assert interrupted.transient is True
    assert interrupted.status_code == 503
    assert isinstance(interrupted.__cause__, ProviderTransientError)
    assert isinstance(interrupted.__cause__.__cause__, genai_errors.ServerError)
    # Gemini's chunks carry running usage, so nothing had to be estimated.
    assert (interrupted.input_tokens, interrupted.output_tokens) == (700, 3)
    assert interrupted.usage_estimated is False
    assert len(llm_server.requests) == 1


def test_dropped_connection_mid_stream_is_transient_and_interrupted(
    answerer: GeminiAnswerer, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(
        StreamReply([gemini_chunk("Half", prompt_tokens=10, candidates_tokens=1), Drop()])
    )
    with pytest.raises(AnswerInterrupted) as caught:
        collect(answerer.stream(sample_request()))
    assert caught.value.transient is True
    assert caught.value.partial_text == "Half"
    assert isinstance(caught.value.__cause__.__cause__, httpx2.TransportError)  # type: ignore[union-attr]
    # No automatic continuation or reconnect: one stream is one request.
    assert len(llm_server.requests) == 1


def test_stream_without_finish_reason_is_incomplete(
    answerer: GeminiAnswerer, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(StreamReply([gemini_chunk("So far", prompt_tokens=10, candidates_tokens=2)]))
    with pytest.raises(AnswerInterrupted, match="finish reason") as caught:
        collect(answerer.stream(sample_request()))
    assert caught.value.partial_text == "So far"
    assert len(llm_server.requests) == 1


def test_blocked_prompt_finishes_without_text(
    answerer: GeminiAnswerer, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(
        StreamReply(
            [
                SSE(
                    {
                        "promptFeedback": {"blockReason": "SAFETY"},
                        "usageMetadata": {"promptTokenCount": 40, "totalTokenCount": 40},
                    }
                )
            ]
        )
    )
    deltas, finished = collect(answerer.stream(sample_request()))
    assert deltas == []
    assert finished.stop_reason == "prompt_blocked:SAFETY"
    assert finished.input_tokens == 40


def test_stopping_iteration_closes_the_connection(
    answerer: GeminiAnswerer, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(
        StreamReply(
            [
                gemini_chunk("First", prompt_tokens=5, candidates_tokens=1),
                Hold(5.0),
                gemini_chunk(" never", prompt_tokens=5, candidates_tokens=2, finish_reason="STOP"),
            ]
        )
    )
    stream = answerer.stream(sample_request())

    assert next(stream) == TextDelta("First")
    stream.close()

    assert llm_server.client_disconnected.wait(3.0), "the HTTP response was left open"
    assert not llm_server.stream_finished.is_set()


def test_client_has_sdk_retries_off() -> None:
    client = build_gemini_client("gm-test-key", "http://127.0.0.1:9")
    options = client._api_client._http_options
    assert options.retry_options is not None
    assert options.retry_options.attempts == 1
    assert client.vertexai is False


def test_client_reports_each_response_it_opens(llm_server: FakeLLMServer) -> None:
    # The sync SDK never closes a stream's response itself; the answerer closes what the
    # client reported, instead of waiting for garbage collection to do it.
    llm_server.enqueue(gemini_stream(["Hi"], prompt_tokens=1, candidates_tokens=[1]))
    client = build_gemini_client("gm-test-key", llm_server.url)
    opened: list[gemini._Closable] = []
    token = gemini._gemini_responses.set(opened)
    try:
        chunks = client.models.generate_content_stream(model=MODEL, contents="Hi")
        next(iter(chunks))
    finally:
        gemini._gemini_responses.reset(token)
    assert len(opened) == 1
    assert isinstance(opened[0], httpx2.Response)
    assert not opened[0].is_closed
    opened[0].close()
