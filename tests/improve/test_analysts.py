"""Insight analysts: the statistical one on histories whose answer is known, the providers
through their official SDKs against the chat tests' local wire-format server."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reelflow.chat.structured import TokenUsage
from reelflow.core.errors import DomainError
from reelflow.core.provider_errors import ProviderTransientError
from reelflow.core.settings import Settings, SettingsError
from reelflow.improve.analysts import (
    InsightsFailed,
    ModelAnalyst,
    PlatformUsual,
    SeriesInsightContext,
    StatisticalAnalyst,
    VideoInsightContext,
    build_analyst,
    build_video_prompt,
)
from schemas.discover import Platform
from schemas.failures import FailureCode
from schemas.improve import (
    CadenceBucket,
    EpisodePerformance,
    HashtagEffect,
    Insights,
    PerformanceSnapshot,
    PlatformLatest,
    SeriesPerformance,
    TrafficSource,
    VideoPerformanceSummary,
)
from tests.chat.answerers.servers import (
    FakeLLMServer,
    JsonReply,
    anthropic_error,
    gemini_error,
    openai_error,
)

VIDEO = uuid.UUID(int=7)
START = datetime(2026, 11, 1, 12, tzinfo=UTC)


def snapshot(
    day: int,
    views: int,
    *,
    platform: Platform = Platform.TIKTOK,
    likes: int = 0,
    comments: int = 0,
    shares: int = 0,
    saves: int = 0,
    completion: float | None = None,
    source: TrafficSource | None = None,
) -> PerformanceSnapshot:
    return PerformanceSnapshot(
        id=uuid.uuid4(),
        video_id=VIDEO,
        created_at=START,
        platform=platform,
        views=views,
        likes=likes,
        comments=comments,
        shares=shares,
        saves=saves,
        completion_rate=completion,
        traffic_source=source,
        recorded_at=START + timedelta(days=day),
    )


def latest_of(history: Sequence[PerformanceSnapshot], baseline: float) -> PlatformLatest:
    last = history[-1]
    engaged = last.likes + last.comments + last.shares + last.saves
    return PlatformLatest(
        platform=last.platform,
        recorded_at=last.recorded_at,
        views=last.views,
        likes=last.likes,
        comments=last.comments,
        shares=last.shares,
        saves=last.saves,
        completion_rate=last.completion_rate,
        engagement_rate=engaged / last.views,
        baseline_views=baseline,
        times_usual=last.views / baseline,
    )


def context_for(
    history: Sequence[PerformanceSnapshot],
    *,
    baseline: float,
    usual: PlatformUsual,
    traffic: dict[str, float] | None = None,
) -> VideoInsightContext:
    platform = history[-1].platform
    summary = VideoPerformanceSummary(
        video_id=VIDEO,
        snapshots=len(history),
        platforms=[latest_of(history, baseline)],
        best_platform=platform,
        traffic_breakdown=traffic or {},
        metrics_fingerprint="fp",
    )
    return VideoInsightContext(
        title="Ten-second smoothie",
        summary=summary,
        history=history,
        usual={platform.value: usual},
        prompt="A parent blends a smoothie at dawn",
        duration_s=14,
        hashtags=["#smoothie", "#morningroutine"],
    )


# A TikTok video that took off (4.2× the usual views), held viewers (72% against 45%) but
# was hardly shared (0.2% against 1%): its engagement is otherwise usual. It decays: most of
# its views came on the first day.
VIRAL_BUT_UNSHARED = [
    snapshot(0, 10_000, likes=800, comments=60, shares=20, saves=20, completion=70),
    snapshot(1, 30_000, likes=2_400, comments=180, shares=60, saves=60, completion=71),
    snapshot(2, 38_000, likes=3_040, comments=230, shares=76, saves=76, completion=72),
    snapshot(3, 42_000, likes=3_360, comments=250, shares=84, saves=84, completion=72),
]
TIKTOK_USUAL = PlatformUsual(
    views=10_000, engagement_rate=0.09, share_rate=0.01, completion_rate=45.0
)


def test_statistical_analyst_names_the_known_strength_and_weakness() -> None:
    context = context_for(
        VIRAL_BUT_UNSHARED,
        baseline=10_000,
        usual=TIKTOK_USUAL,
        traffic={"fyp": 0.75, "hashtag": 0.25},
    )

    answer = StatisticalAnalyst().analyze_video(context)
    insights = answer.insights

    assert (answer.model, answer.usage) == ("statistical", None)
    assert insights.strengths[0] == "views 4.2× your usual on TikTok"
    assert any("completion 72% on TikTok against your usual 45%" in s for s in insights.strengths)
    assert insights.weaknesses == ["share rate 0.2% on TikTok against your usual 1.0%"]
    assert not any("engagement" in line for line in insights.strengths + insights.weaknesses)
    assert "75%" in insights.traffic_insights and "For You" in insights.traffic_insights
    assert "decaying" in insights.patterns and "20,000 to 4,000" in insights.patterns
    # Recommendations follow from them: keep the hook, fix the share rate.
    assert any("Keep the hook" in r for r in insights.recommendations)
    assert any("share rate on TikTok" in r for r in insights.recommendations)
    assert insights.next_video_suggestions


def test_statistical_analyst_flags_a_flop_and_its_low_completion() -> None:
    flop = [
        snapshot(0, 900, platform=Platform.INSTAGRAM, likes=10, completion=20),
        snapshot(1, 1_500, platform=Platform.INSTAGRAM, likes=15, completion=18),
        snapshot(2, 2_400, platform=Platform.INSTAGRAM, likes=20, completion=18),
    ]
    context = context_for(flop, baseline=8_000, usual=PlatformUsual(views=8_000))

    insights = StatisticalAnalyst().analyze_video(context).insights

    assert insights.strengths == []
    assert insights.weaknesses == [
        "views only 0.3× your usual on Instagram",
        "low completion: 18% on Instagram",
    ]
    assert "accelerating" in insights.patterns  # 600 then 900 views a day
    assert "No traffic source was recorded" in insights.traffic_insights
    assert any("first two seconds" in r for r in insights.recommendations)


def test_statistical_analyst_says_when_nothing_stands_out() -> None:
    usual_video = [snapshot(0, 10_000, likes=800, shares=100, completion=45)]
    context = context_for(usual_video, baseline=10_000, usual=TIKTOK_USUAL)

    insights = StatisticalAnalyst().analyze_video(context).insights

    assert insights.strengths == insights.weaknesses == []
    assert "too few to tell" in insights.patterns
    assert "close to your usual" in insights.patterns
    assert insights.recommendations and insights.next_video_suggestions


def episode(title: str, views: int, times: float, tags: list[str]) -> EpisodePerformance:
    return EpisodePerformance(
        video_id=uuid.uuid4(),
        title=title,
        published_at=START,
        views=views,
        engagement_rate=0.05,
        times_series_median=times,
        hashtags=tags,
    )


def test_statistical_series_names_best_and_worst_episodes_cadence_and_hashtags() -> None:
    best = episode("Episode 3: the twist", 90_000, 3.0, ["twist"])
    worst = episode("Episode 1: intro", 6_000, 0.2, ["intro"])
    series = SeriesPerformance(
        collection_id=uuid.uuid4(),
        episodes=5,
        episodes_with_metrics=5,
        total_views=180_000,
        median_views=30_000,
        engagement_rate=0.05,
        best_episodes=[best],
        worst_episodes=[worst],
        episode_list=[worst, best],
        cadence=[
            CadenceBucket(
                label="1-3 days", min_gap_days=1, max_gap_days=3, episodes=3, median_views=40_000
            ),
            CadenceBucket(
                label="7 days or more",
                min_gap_days=7,
                max_gap_days=None,
                episodes=1,
                median_views=8_000,
            ),
        ],
        cadence_correlation=-0.8,
        hashtags=[
            HashtagEffect(hashtag="#twist", episodes=2, median_views=60_000, lift=2.0),
            HashtagEffect(hashtag="#intro", episodes=2, median_views=9_000, lift=0.3),
        ],
        metrics_fingerprint="series-fp",
    )

    insights = (
        StatisticalAnalyst()
        .analyze_series(SeriesInsightContext(name="Smoothies", performance=series))
        .insights
    )

    assert insights.strengths[0].startswith('"Episode 3: the twist" drew 3.0×')
    assert any("#twist" in s for s in insights.strengths)
    assert insights.weaknesses[0].startswith('"Episode 1: intro" drew only 0.2×')
    assert any("#intro" in w for w in insights.weaknesses)
    assert "soon after the previous one do better" in insights.patterns
    assert "1-3 days" in insights.patterns
    assert "Post episodes closer together." in insights.recommendations
    assert any("Episode 3" in s for s in insights.next_video_suggestions)


def test_the_prompt_carries_seed_000s_fields() -> None:
    context = context_for(VIRAL_BUT_UNSHARED, baseline=10_000, usual=TIKTOK_USUAL)

    prompt = build_video_prompt(context)

    for expected in (
        "- Title: Ten-second smoothie",
        "- Prompt: A parent blends a smoothie at dawn",
        "- Duration: 14s",
        "- Platform: TikTok",
        "- Hashtags: #smoothie, #morningroutine",
        "Likes: 3360 (9.0% engagement)",
        "Completion Rate: 72%",
        "4.2× the creator's usual",
        "TikTok: views 10,000, engagement 9.0%, share rate 1.0%, completion 45%",
    ):
        assert expected in prompt


# --- providers ---------------------------------------------------------------------------------

ANSWER = Insights(
    strengths=["strong hook"],
    weaknesses=["few shares"],
    traffic_insights="Mostly the For You feed.",
    patterns="Front-loaded views.",
    recommendations=["Add a shareable moment."],
    next_video_suggestions=["A sequel."],
)
ANSWER_JSON: dict[str, Any] = ANSWER.model_dump(mode="json")
CONTEXT = context_for(VIRAL_BUT_UNSHARED, baseline=10_000, usual=TIKTOK_USUAL)


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def settings_for(provider: str, server: FakeLLMServer, **extra: Any) -> Settings:
    return Settings(
        insights_provider=provider,
        chat_provider=provider,
        chat_base_url=server.url if provider != "openai" else f"{server.url}/v1",
        anthropic_api_key="ak-test",
        openai_api_key="sk-test",
        gemini_api_key="gm-test",
        **extra,
    )


def anthropic_message(tool_input: object, *, stop_reason: str = "tool_use") -> JsonReply:
    content = (
        [{"type": "tool_use", "id": "toolu_1", "name": "record_insights", "input": tool_input}]
        if tool_input is not None
        else []
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
            "usage": {"input_tokens": 1000, "output_tokens": 200},
        },
    )


def openai_completion(content: str | None, *, refusal: str | None = None) -> JsonReply:
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
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 900, "completion_tokens": 150, "total_tokens": 1050},
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
                "promptTokenCount": 700,
                "candidatesTokenCount": 100,
                "totalTokenCount": 800,
            },
            "modelVersion": "gemini-2.5-flash",
        },
    )


def test_anthropic_answers_through_a_forced_tool_call(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(anthropic_message(ANSWER_JSON))
    analyst = build_analyst(settings_for("anthropic", llm_server))
    assert isinstance(analyst, ModelAnalyst) and analyst.provider == "anthropic"
    assert (analyst.name, analyst.statistical) == ("anthropic/claude-haiku-4-5", False)

    answer = analyst.analyze_video(CONTEXT)

    assert answer.insights == ANSWER
    assert (answer.model, answer.usage) == ("claude-haiku-4-5", TokenUsage(1000, 200))
    body = llm_server.requests[0].json
    assert body["tool_choice"] == {"type": "tool", "name": "record_insights"}
    assert body["tools"][0]["input_schema"]["additionalProperties"] is False
    prompt = body["messages"][0]["content"]
    assert "Ten-second smoothie" in prompt and "Views: 42000" in prompt


def test_anthropic_wrong_shape_is_asked_again_then_refused(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(anthropic_message({"strengths": "not a list"}))
    llm_server.enqueue(anthropic_message({"weaknesses": 3}))

    with pytest.raises(InsightsFailed) as raised:
        build_analyst(settings_for("anthropic", llm_server)).analyze_video(CONTEXT)

    assert raised.value.code == FailureCode.ANALYSIS_INVALID
    assert raised.value.usage == TokenUsage(2000, 400)
    assert len(llm_server.requests) == 2


def test_anthropic_refusal_is_content_blocked(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(anthropic_message(None, stop_reason="refusal"))

    with pytest.raises(InsightsFailed) as raised:
        build_analyst(settings_for("anthropic", llm_server)).analyze_video(CONTEXT)

    assert raised.value.code == FailureCode.CONTENT_BLOCKED
    assert raised.value.usage == TokenUsage(1000, 200)


def test_anthropic_overload_is_transient(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(anthropic_error(529, "overloaded_error"))

    with pytest.raises(ProviderTransientError):
        build_analyst(settings_for("anthropic", llm_server)).analyze_video(CONTEXT)


def test_openai_uses_a_strict_schema_and_retries_an_invalid_answer(
    llm_server: FakeLLMServer,
) -> None:
    llm_server.enqueue(openai_completion('{"strengths": ["cut'))
    llm_server.enqueue(openai_completion(json.dumps(ANSWER_JSON)))
    analyst = build_analyst(settings_for("openai", llm_server))
    assert isinstance(analyst, ModelAnalyst) and analyst.provider == "openai"

    answer = analyst.analyze_video(CONTEXT)

    assert answer.insights == ANSWER
    assert answer.usage == TokenUsage(1800, 300)
    response_format = llm_server.requests[0].json["response_format"]
    assert response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    assert schema["required"] == list(schema["properties"])


def test_openai_refusal_is_blocked_and_429_transient_with_retry_after(
    llm_server: FakeLLMServer,
) -> None:
    llm_server.enqueue(openai_completion(None, refusal="I can't help with that."))
    limited = openai_error(429, "rate_limit_error")
    llm_server.enqueue(JsonReply(429, limited.body, {"retry-after": "9"}))
    analyst = build_analyst(settings_for("openai", llm_server))

    with pytest.raises(DomainError) as blocked:
        analyst.analyze_video(CONTEXT)
    assert blocked.value.code == FailureCode.CONTENT_BLOCKED
    with pytest.raises(ProviderTransientError) as transient:
        analyst.analyze_video(CONTEXT)
    assert transient.value.retry_after_s == 9


def test_gemini_uses_a_response_json_schema_for_series_too(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(gemini_response(json.dumps(ANSWER_JSON)))
    analyst = build_analyst(settings_for("gemini", llm_server))
    assert isinstance(analyst, ModelAnalyst) and analyst.provider == "gemini"
    series = SeriesPerformance(
        collection_id=uuid.uuid4(),
        episodes=2,
        episodes_with_metrics=2,
        total_views=1_000,
        median_views=500,
        engagement_rate=None,
        episode_list=[episode("Pilot", 700, 1.4, ["pilot"])],
    )

    answer = analyst.analyze_series(SeriesInsightContext(name="Smoothies", performance=series))

    assert answer.insights == ANSWER
    assert answer.usage == TokenUsage(700, 100)
    sent = llm_server.requests[0]
    assert sent.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent.json["generationConfig"]["responseMimeType"] == "application/json"
    assert "Pilot" in json.dumps(sent.json["contents"])


def test_gemini_safety_stop_is_blocked_and_503_transient(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(gemini_response("", finish_reason="SAFETY"))
    llm_server.enqueue(gemini_error(503, "UNAVAILABLE"))
    analyst = build_analyst(settings_for("gemini", llm_server))

    with pytest.raises(InsightsFailed) as blocked:
        analyst.analyze_video(CONTEXT)
    assert blocked.value.code == FailureCode.CONTENT_BLOCKED
    with pytest.raises(ProviderTransientError):
        analyst.analyze_video(CONTEXT)


def test_build_analyst_defaults_and_needs_the_key(llm_server: FakeLLMServer) -> None:
    local = build_analyst(Settings())
    assert isinstance(local, StatisticalAnalyst)
    assert (local.name, local.statistical, local.provider) == ("statistical", True, "local")
    chosen = build_analyst(settings_for("openai", llm_server, insights_model="gpt-x"))
    assert chosen.name == "openai/gpt-x"
    with pytest.raises(SettingsError, match="GEMINI_API_KEY"):
        build_analyst(Settings(insights_provider="gemini"))


def test_no_provider_sdk_is_loaded_for_the_statistical_analyst() -> None:
    code = (
        "import sys\n"
        "import reelflow.improve.analysts, reelflow.improve.insights\n"
        "from reelflow.core.settings import Settings\n"
        "reelflow.improve.analysts.build_analyst(Settings())\n"
        "loaded = [m for m in ('anthropic', 'openai', 'google.genai') if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
