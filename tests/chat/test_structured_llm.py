"""One structured answer from each chat provider, through its official SDK.

Each case runs the same behaviour against the three SDKs and the chat tests' local
wire-format server (`tests/chat/answerers/servers.py`), which answers with the providers'
non-streamed JSON bodies: an Anthropic `message` with a `tool_use` block, an OpenAI
`chat.completion`, a Gemini `GenerateContentResponse` (`llm_server` comes from the chat
tests' conftest).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from reelflow.chat.structured import TokenUsage
from reelflow.chat.structured_llm import (
    AnswerFormat,
    ChatProvider,
    StructuredAnswerFailed,
    StructuredChat,
    build_structured_chat,
)
from reelflow.core.provider_errors import ProviderPermanentError, ProviderTransientError
from reelflow.core.settings import Settings, SettingsError
from schemas.failures import FailureCode
from tests.chat.answerers.servers import (
    FakeLLMServer,
    JsonReply,
    anthropic_error,
    gemini_error,
    openai_error,
)


class Verdict(BaseModel):
    """A small answer schema: a label and its reasons."""

    label: str
    reasons: list[str]


GOOD = {"label": "keep", "reasons": ["the hook lands in one second"]}


def _no_blank_label(verdict: Verdict) -> str | None:
    return None if verdict.label.strip() else "the label is blank"


VERDICT = AnswerFormat(
    schema=Verdict,
    name="record_verdict",
    what="the verdict",
    task="judge this clip",
    subject="this verdict",
    usable=_no_blank_label,
)


# --- each provider's replies -------------------------------------------------------------------


def anthropic_reply(answer: object, *, refused: bool = False) -> JsonReply:
    content: list[dict[str, Any]] = []
    if answer is not None:
        content.append(
            {"type": "tool_use", "id": "toolu_1", "name": "record_verdict", "input": answer}
        )
    return JsonReply(
        200,
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5",
            "content": content,
            "stop_reason": "refusal" if refused else "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 100, "output_tokens": 20},
        },
        {"request-id": "req_test"},
    )


def openai_reply(answer: object, *, refused: bool = False) -> JsonReply:
    message = {
        "role": "assistant",
        "content": None if refused else json.dumps(answer),
        "refusal": "I can't judge that." if refused else None,
    }
    return JsonReply(
        200,
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1_790_000_000,
            "model": "gpt-4o-mini",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        },
    )


def gemini_reply(answer: object, *, refused: bool = False) -> JsonReply:
    return JsonReply(
        200,
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"text": "" if refused else json.dumps(answer)}],
                    },
                    "finishReason": "SAFETY" if refused else "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 100,
                "candidatesTokenCount": 15,
                "thoughtsTokenCount": 5,
                "totalTokenCount": 120,
            },
            "modelVersion": "gemini-2.5-flash",
        },
    )


@dataclass(frozen=True)
class Provider:
    name: ChatProvider
    model: str
    reply: Callable[..., JsonReply]
    rate_limited: JsonReply
    unauthorized: JsonReply
    sent_schema: Callable[[dict[str, Any]], dict[str, Any]]
    """Where the request body carries the answer's JSON schema."""


PROVIDERS = [
    Provider(
        "anthropic",
        "claude-haiku-4-5",
        anthropic_reply,
        JsonReply(429, anthropic_error(429, "rate_limit_error").body, {"retry-after": "7"}),
        anthropic_error(401, "authentication_error"),
        lambda body: body["tools"][0]["input_schema"],
    ),
    Provider(
        "openai",
        "gpt-4o-mini",
        openai_reply,
        JsonReply(429, openai_error(429, "rate_limit_error").body, {"retry-after": "7"}),
        openai_error(401, "invalid_request_error", "invalid_api_key"),
        lambda body: body["response_format"]["json_schema"]["schema"],
    ),
    Provider(
        "gemini",
        "gemini-2.5-flash",
        gemini_reply,
        JsonReply(429, gemini_error(429, "RESOURCE_EXHAUSTED").body, {"retry-after": "7"}),
        gemini_error(403, "PERMISSION_DENIED"),
        lambda body: body["generationConfig"]["responseJsonSchema"],
    ),
]
ONE_CALL = TokenUsage(100, 20)
TWO_CALLS = TokenUsage(200, 40)


def settings_for(provider: ChatProvider, server: FakeLLMServer) -> Settings:
    return Settings(
        chat_provider=provider,
        chat_base_url=server.url if provider != "openai" else f"{server.url}/v1",
        anthropic_api_key="ak-test",
        openai_api_key="sk-test",
        gemini_api_key="gm-test",
    )


def chat_for(provider: Provider, server: FakeLLMServer) -> StructuredChat:
    return build_structured_chat(
        settings_for(provider.name, server), provider.name, provider.model, chosen_by="TEST"
    )


def ask(chat: StructuredChat) -> Any:
    return chat.ask("You judge clips.", "Judge this clip.", VERDICT, max_tokens=256, temperature=0)


by_provider = pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)


# --- behaviour shared by the three -------------------------------------------------------------


@by_provider
def test_a_valid_answer_comes_back_with_its_model_and_usage(
    provider: Provider, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(provider.reply(GOOD))
    chat = chat_for(provider, llm_server)

    answered = ask(chat)

    assert answered.answer == Verdict.model_validate(GOOD)
    assert (answered.model, answered.usage) == (provider.model, ONE_CALL)
    assert (chat.provider, chat.model) == (provider.name, provider.model)
    schema = provider.sent_schema(llm_server.requests[0].json)
    assert set(schema["properties"]) == {"label", "reasons"}
    assert schema["additionalProperties"] is False


@by_provider
def test_an_invalid_answer_is_asked_once_more_and_both_calls_are_billed(
    provider: Provider, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(provider.reply({"label": "keep"}))  # reasons missing
    llm_server.enqueue(provider.reply(GOOD))

    answered = ask(chat_for(provider, llm_server))

    assert answered.answer.label == "keep"
    assert answered.usage == TWO_CALLS
    assert len(llm_server.requests) == 2


@by_provider
def test_two_unusable_answers_are_refused_with_their_usage(
    provider: Provider, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(provider.reply({"label": 3}))
    llm_server.enqueue(provider.reply({"label": " ", "reasons": []}))  # valid, but blank

    with pytest.raises(StructuredAnswerFailed) as raised:
        ask(chat_for(provider, llm_server))

    assert raised.value.code == FailureCode.ANALYSIS_INVALID
    assert "the label is blank" in raised.value.message
    assert raised.value.usage == TWO_CALLS
    assert len(llm_server.requests) == 2


@by_provider
def test_a_refusal_after_an_invalid_answer_is_blocked_and_bills_both(
    provider: Provider, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(provider.reply({"label": 3}))
    llm_server.enqueue(provider.reply(None, refused=True))

    with pytest.raises(StructuredAnswerFailed) as raised:
        ask(chat_for(provider, llm_server))

    assert raised.value.code == FailureCode.CONTENT_BLOCKED
    assert raised.value.usage == TWO_CALLS


@by_provider
def test_rate_limits_are_transient_with_retry_after_and_bad_keys_permanent(
    provider: Provider, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(provider.rate_limited)
    llm_server.enqueue(provider.unauthorized)
    chat = chat_for(provider, llm_server)

    with pytest.raises(ProviderTransientError) as transient:
        ask(chat)
    assert transient.value.retry_after_s == 7
    with pytest.raises(ProviderPermanentError):
        ask(chat)
    assert len(llm_server.requests) == 2  # SDK retries are off


# --- building ------------------------------------------------------------------------------------


def test_a_missing_key_names_the_setting_that_chose_the_provider() -> None:
    with pytest.raises(SettingsError, match="OPENAI_API_KEY is required when INSIGHTS_PROVIDER"):
        build_structured_chat(Settings(), "openai", "gpt-4o-mini", chosen_by="INSIGHTS_PROVIDER")


def test_building_one_provider_loads_only_its_sdk() -> None:
    code = (
        "import sys\n"
        "from reelflow.chat.structured_llm import build_structured_chat\n"
        "from reelflow.core.settings import Settings\n"
        "build_structured_chat(Settings(openai_api_key='sk'), 'openai', 'm', chosen_by='X')\n"
        "loaded = [m for m in ('anthropic', 'openai', 'google.genai') if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "openai"
