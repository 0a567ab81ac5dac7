"""Script adapters: the offline template on a known case, the providers through their SDKs.

The provider adapters run the official SDKs against the chat tests' local wire-format
server (`tests/chat/answerers/servers.py`), answering with the providers' non-streamed
JSON bodies: an Anthropic `message` with a `tool_use` block, an OpenAI `chat.completion`,
a Gemini `GenerateContentResponse`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from reelflow.chat.structured import TokenUsage
from reelflow.core.errors import DomainError
from reelflow.core.provider_errors import ProviderPermanentError, ProviderTransientError
from reelflow.core.settings import Settings, SettingsError
from reelflow.discover.adapters import (
    AdaptationAnswer,
    AdaptationFailed,
    ModelAdapter,
    OfflineTemplateAdapter,
    ScriptAdapter,
    build_adapter,
)
from schemas.discover import (
    AdaptedScene,
    Hook,
    ProductBrief,
    Scene,
    Score,
    VideoAnalysis,
)
from schemas.failures import FailureCode
from tests.chat.answerers.servers import (
    FakeLLMServer,
    JsonReply,
    anthropic_error,
    gemini_error,
    openai_error,
)

# --- a video and two products whose fit is known ---------------------------------------------

ANALYSIS = VideoAnalysis(
    hook=Hook(text="Busy parents, this is your new morning routine.", technique="direct address"),
    scenes=[
        Scene(start_s=0, end_s=3, audio="Busy parents, this is your new morning routine."),
        Scene(start_s=3, end_s=7, audio="Frozen fruit and ice, crushed smooth in ten seconds."),
        Scene(start_s=7, end_s=11, audio="Quiet enough that the kids keep sleeping."),
        Scene(start_s=11, end_s=14, audio="Follow for more quick breakfast ideas."),
    ],
    transcript_excerpt=(
        "Busy parents, this is your new morning routine. Frozen fruit and ice, crushed smooth "
        "in ten seconds. Quiet enough that the kids keep sleeping. Follow for more quick "
        "breakfast ideas."
    ),
    viral_patterns=["morning routine", "before/after"],
    call_to_action="Follow for more quick breakfast ideas.",
)

BLENDER = ProductBrief(
    product_id=uuid.UUID(int=1),
    name="WhirlPro Blender",
    brand="Whirl",
    audience="busy parents who make breakfast smoothies",
    benefits=["Crushes ice in seconds", "Quiet motor for early mornings", "Dishwasher-safe jar"],
    tone="warm, upbeat",
)
MOUSE = ProductBrief(
    product_id=uuid.UUID(int=2),
    name="Viper X Mouse",
    audience="competitive esports gamers",
    benefits=["Eight thousand hertz polling", "Featherweight magnesium shell"],
)


def test_offline_template_ranks_the_product_whose_audience_the_video_speaks_to() -> None:
    adapter = OfflineTemplateAdapter()

    blender = adapter.adapt(ANALYSIS, BLENDER, source_title="My 10-second smoothie").adaptation
    mouse = adapter.adapt(ANALYSIS, MOUSE, source_title=None).adaptation

    assert blender.audience_fit.score > mouse.audience_fit.score
    assert mouse.audience_fit.score == 0
    reasons = " | ".join(blender.audience_fit.reasons)
    assert "busy" in reasons and "parents" in reasons
    assert '"Crushes ice in seconds"' in reasons
    assert 'does not touch: "Dishwasher-safe jar"' in reasons
    assert any("no word of the audience" in r for r in mouse.audience_fit.reasons)


def test_offline_template_says_it_is_one_and_maps_scenes_to_benefits() -> None:
    result = OfflineTemplateAdapter().adapt(ANALYSIS, BLENDER, source_title="Smoothie")
    adaptation = result.adaptation

    assert adaptation.is_template is True
    assert adaptation.adapter == result.model == "offline-template"
    assert result.usage is None
    assert [(s.start_s, s.end_s) for s in adaptation.scenes] == [
        (s.start_s, s.end_s) for s in ANALYSIS.scenes
    ]
    # Scene i carries benefit i; the scene past the last benefit shows the product in use.
    assert [s.on_screen_text for s in adaptation.scenes] == [*BLENDER.benefits, None]
    assert "in use" in adaptation.scenes[3].direction
    assert adaptation.scenes[1].original == ANALYSIS.scenes[1].audio
    assert adaptation.hook.startswith("WhirlPro Blender: Crushes ice in seconds")
    assert "WhirlPro Blender" in adaptation.call_to_action
    assert adaptation.title == "WhirlPro Blender × Smoothie"


def test_offline_template_without_words_scores_zero_and_says_why() -> None:
    silent = VideoAnalysis(hook=Hook(), scenes=[Scene(start_s=0, end_s=5)])
    fit = OfflineTemplateAdapter().adapt(silent, BLENDER, source_title=None).adaptation
    assert fit.audience_fit.score == 0
    assert "no words" in fit.audience_fit.reasons[0]


# --- providers -----------------------------------------------------------------------------------

ANSWER = AdaptationAnswer(
    title="WhirlPro mornings",
    hook="Busy parents: breakfast in ten seconds.",
    scenes=[
        AdaptedScene(start_s=0, end_s=3, direction="Parent at dawn", voiceover="Busy parents?"),
        AdaptedScene(start_s=3, end_s=7, direction="Ice crushed", on_screen_text="10 seconds"),
    ],
    call_to_action="Tap the link to get yours.",
    audience_fit=Score(score=8.5, reasons=["same audience: busy parents"]),
)
# What a strict-schema provider sends: every field, nulls included.
ANSWER_JSON: dict[str, Any] = ANSWER.model_dump(mode="json")


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def anthropic_message(tool_input: object, *, stop_reason: str = "tool_use") -> JsonReply:
    content: list[dict[str, Any]] = []
    if tool_input is not None:
        content.append(
            {"type": "tool_use", "id": "toolu_1", "name": "write_script", "input": tool_input}
        )
    return JsonReply(
        200,
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5",
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": 1200, "output_tokens": 300},
        },
        {"request-id": "req_test"},
    )


def openai_completion(
    content: str | None, *, refusal: str | None = None, finish_reason: str = "stop"
) -> JsonReply:
    return JsonReply(
        200,
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1_790_000_000,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": refusal},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {"prompt_tokens": 900, "completion_tokens": 250, "total_tokens": 1150},
        },
    )


def gemini_response(text: str, *, finish_reason: str = "STOP") -> JsonReply:
    return JsonReply(
        200,
        {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": finish_reason,
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 800,
                "candidatesTokenCount": 200,
                "thoughtsTokenCount": 50,
                "totalTokenCount": 1050,
            },
            "modelVersion": "gemini-2.5-flash",
        },
    )


def settings_for(provider: str, server: FakeLLMServer, **extra: Any) -> Settings:
    return Settings(
        discover_adapter=provider,
        chat_provider=provider,
        chat_base_url=server.url if provider != "openai" else f"{server.url}/v1",
        anthropic_api_key="ak-test",
        openai_api_key="sk-test",
        gemini_api_key="gm-test",
        **extra,
    )


def adapt(adapter: ScriptAdapter) -> Any:
    return adapter.adapt(ANALYSIS, BLENDER, source_title="My 10-second smoothie")


def test_anthropic_writes_through_a_forced_tool_call(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(anthropic_message(ANSWER_JSON))
    adapter = build_adapter(settings_for("anthropic", llm_server))
    assert isinstance(adapter, ModelAdapter) and adapter.provider == "anthropic"

    result = adapt(adapter)

    assert result.adaptation.model_dump(exclude={"adapter", "is_template"}) == ANSWER.model_dump()
    assert result.adaptation.adapter == "anthropic/claude-haiku-4-5"
    assert result.adaptation.is_template is False
    assert (result.model, result.usage) == ("claude-haiku-4-5", TokenUsage(1200, 300))
    sent = llm_server.requests[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["authorization"] == "Bearer ak-test"
    body = sent.json
    assert body["tool_choice"] == {"type": "tool", "name": "write_script"}
    schema = body["tools"][0]["input_schema"]
    assert schema["additionalProperties"] is False
    # Anthropic takes bounds as descriptions, not as keywords.
    score = schema["properties"]["audience_fit"]["properties"]["score"]
    assert "maximum" not in score and "maximum 10" in score["description"]
    prompt = body["messages"][0]["content"]
    assert "WhirlPro Blender" in prompt and "Busy parents" in prompt
    assert "product_id" not in prompt and "keyframe_key" not in prompt


def test_anthropic_wrong_shape_is_asked_again_then_refused(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(anthropic_message({"title": "only a title"}))
    llm_server.enqueue(anthropic_message({"hook": 3}))
    adapter = build_adapter(settings_for("anthropic", llm_server))

    with pytest.raises(AdaptationFailed) as raised:
        adapt(adapter)

    assert raised.value.code == FailureCode.ANALYSIS_INVALID
    assert raised.value.usage == TokenUsage(2400, 600)
    assert len(llm_server.requests) == 2


def test_anthropic_refusal_is_content_blocked(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(anthropic_message(None, stop_reason="refusal"))

    with pytest.raises(DomainError) as raised:
        adapt(build_adapter(settings_for("anthropic", llm_server)))

    assert raised.value.code == FailureCode.CONTENT_BLOCKED
    assert len(llm_server.requests) == 1


def test_anthropic_overload_is_transient(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(anthropic_error(529, "overloaded_error"))

    with pytest.raises(ProviderTransientError):
        adapt(build_adapter(settings_for("anthropic", llm_server)))


def test_openai_uses_a_strict_json_schema_response_format(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(openai_completion(json.dumps(ANSWER_JSON)))
    adapter = build_adapter(settings_for("openai", llm_server))
    assert isinstance(adapter, ModelAdapter) and adapter.provider == "openai"

    result = adapt(adapter)

    assert result.adaptation.hook == ANSWER.hook
    assert result.adaptation.adapter == "openai/gpt-4o-mini"
    assert result.usage == TokenUsage(900, 250)
    body = llm_server.requests[0].json
    assert llm_server.requests[0].path == "/v1/chat/completions"
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    assert schema["required"] == list(schema["properties"])
    assert body["messages"][0]["role"] == "system"


def test_openai_fenced_answer_is_repaired_and_invalid_one_retried(
    llm_server: FakeLLMServer,
) -> None:
    llm_server.enqueue(openai_completion('{"title": "cut'))
    llm_server.enqueue(openai_completion(f"```json\n{json.dumps(ANSWER_JSON)}\n```"))

    result = adapt(build_adapter(settings_for("openai", llm_server)))

    assert result.adaptation.title == ANSWER.title
    assert result.usage == TokenUsage(1800, 500)


def test_openai_refusal_is_content_blocked(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(openai_completion(None, refusal="I can't help with that."))

    with pytest.raises(DomainError) as raised:
        adapt(build_adapter(settings_for("openai", llm_server)))

    assert raised.value.code == FailureCode.CONTENT_BLOCKED
    assert "can't help" in raised.value.message


def test_openai_429_is_transient_and_401_permanent(llm_server: FakeLLMServer) -> None:
    limited = openai_error(429, "rate_limit_error")
    llm_server.enqueue(JsonReply(429, limited.body, {"retry-after": "7"}))
    llm_server.enqueue(openai_error(401, "invalid_request_error", "invalid_api_key"))
    adapter = build_adapter(settings_for("openai", llm_server))

    with pytest.raises(ProviderTransientError) as transient:
        adapt(adapter)
    assert transient.value.retry_after_s == 7
    with pytest.raises(ProviderPermanentError):
        adapt(adapter)


def test_gemini_uses_a_response_json_schema(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(gemini_response(json.dumps(ANSWER_JSON)))
    adapter = build_adapter(settings_for("gemini", llm_server))
    assert isinstance(adapter, ModelAdapter) and adapter.provider == "gemini"

    result = adapt(adapter)

    assert result.adaptation.call_to_action == ANSWER.call_to_action
    assert result.adaptation.adapter == "gemini/gemini-2.5-flash"
    assert result.usage == TokenUsage(800, 250)  # thinking billed as output
    sent = llm_server.requests[0]
    assert sent.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    config = sent.json["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert "responseJsonSchema" in config


def test_gemini_safety_stop_is_content_blocked(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(gemini_response("", finish_reason="SAFETY"))

    with pytest.raises(AdaptationFailed) as raised:
        adapt(build_adapter(settings_for("gemini", llm_server)))

    assert raised.value.code == FailureCode.CONTENT_BLOCKED
    assert raised.value.usage == TokenUsage(800, 250)


def test_gemini_503_is_transient(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(gemini_error(503, "UNAVAILABLE"))

    with pytest.raises(ProviderTransientError):
        adapt(build_adapter(settings_for("gemini", llm_server)))


def test_build_adapter_defaults_model_and_needs_the_key(llm_server: FakeLLMServer) -> None:
    assert isinstance(build_adapter(Settings()), OfflineTemplateAdapter)
    chosen = build_adapter(settings_for("gemini", llm_server, discover_adapter_model="gemini-x"))
    assert (
        isinstance(chosen, ModelAdapter)
        and chosen.provider == "gemini"
        and chosen.model == "gemini-x"
    )
    with pytest.raises(SettingsError, match="ANTHROPIC_API_KEY"):
        build_adapter(Settings(discover_adapter="anthropic"))


def test_no_provider_sdk_is_loaded_until_one_is_chosen() -> None:
    code = (
        "import sys\n"
        "import reelflow.discover.adapters, reelflow.discover.analyzers\n"
        "from reelflow.core.settings import Settings\n"
        "reelflow.discover.adapters.build_adapter(Settings())\n"
        "reelflow.discover.analyzers.build_analyzer(Settings())\n"
        "loaded = [m for m in ('anthropic', 'openai', 'google.genai') if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
