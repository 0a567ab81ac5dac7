"""Who explains a video's numbers: the `InsightAnalyst` protocol and `build_analyst`.

Four analysts write seed 000's insight JSON (`schemas.improve.Insights`):

* `StatisticalAnalyst` (the default, `INSIGHTS_PROVIDER=local`): every field derived from the
  metrics against the tenant's usual numbers (its median per platform, the same "x× your
  usual" the Discover pipeline's outliers use). No network, no tokens; it says it is
  statistical (`analyst="statistical"`).
* `AnthropicAnalyst`, `OpenAIAnalyst`, `GeminiAnalyst`: the chat providers with structured
  output (a forced tool call, a strict `json_schema` response format, a response JSON
  schema), asked seed 000's questions about the title, prompt or script, duration,
  platforms, hashtags and the metric history. Each SDK is imported only when its analyst is
  built; clients are built once with SDK retries off; an answer that does not fit the
  schema is asked for once more, then refused as `ANALYSIS_INVALID`; a refusal or safety
  stop is `CONTENT_BLOCKED`; 429/5xx are `ProviderTransientError` with Retry-After.

Analysts block (SDK calls): callers run them on a thread.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from reelflow.core.errors import DomainError
from reelflow.discover.analyzers import TokenUsage
from reelflow.discover.structured import json_schema_for, parse_structured, validate_structured
from schemas.failures import FailureCode
from schemas.improve import (
    Insights,
    PerformanceSnapshot,
    SeriesPerformance,
    VideoPerformanceSummary,
)

if TYPE_CHECKING:
    import anthropic
    import openai
    from anthropic.types import ToolParam
    from google import genai

    from reelflow.core.settings import Settings

logger = logging.getLogger(__name__)

STATISTICAL_ANALYST = "statistical"
DEFAULT_INSIGHT_MODELS: dict[str, str] = {
    "anthropic": "claude-haiku-4-5",
    "openai": "gpt-4o-mini",
    "gemini": "gemini-2.5-flash",
}
"""Per provider, when `INSIGHTS_MODEL` is empty: reading a short table of numbers needs no
large model, and these three have prices in the ledger's table."""

MAX_OUTPUT_TOKENS = 2048
INSIGHT_ATTEMPTS = 2
TEMPERATURE = 0.3
"""Mostly reading numbers: little variety wanted."""
MAX_HISTORY_LINES = 60
"""Snapshots shown to a model per video (the latest ones): enough to see a trend."""
MAX_EPISODES = 100
"""Episodes shown to a model per series (best and worst kept first)."""


# --- what an analyst reads ---------------------------------------------------------------------


@dataclass(frozen=True)
class PlatformUsual:
    """The tenant's usual numbers on one platform (medians over its videos' latest snapshots).

    None where the tenant has too little data to say.
    """

    views: float | None = None
    engagement_rate: float | None = None
    """(likes + comments + shares + saves) ÷ views, 0..1."""
    share_rate: float | None = None
    """shares ÷ views, 0..1."""
    completion_rate: float | None = None
    """Percent, 0..100."""


@dataclass(frozen=True)
class VideoInsightContext:
    """Everything an analyst is told about one video."""

    title: str
    summary: VideoPerformanceSummary
    history: Sequence[PerformanceSnapshot]
    """All snapshots, oldest first."""
    usual: Mapping[str, PlatformUsual] = field(default_factory=dict)
    """Per platform value (`tiktok`, …)."""
    prompt: str | None = None
    script: str | None = None
    duration_s: float | None = None
    hashtags: Sequence[str] = ()


@dataclass(frozen=True)
class SeriesInsightContext:
    """Everything an analyst is told about a series (a collection)."""

    name: str
    performance: SeriesPerformance
    """The series aggregates: episodes, best and worst, cadence, hashtag effects."""
    usual: Mapping[str, PlatformUsual] = field(default_factory=dict)
    traffic_breakdown: Mapping[str, float] = field(default_factory=dict)
    """Share of the episodes' snapshots per traffic source (0–1), when known."""


@dataclass(frozen=True)
class AnalystAnswer:
    """Insights, the model that wrote them and the tokens they cost (None: free)."""

    insights: Insights
    model: str
    usage: TokenUsage | None


class InsightAnalyst(Protocol):
    """Explains what worked and what did not, in seed 000's insight JSON."""

    provider: str
    """The ledger's provider (`local` for the statistical analyst)."""

    @property
    def name(self) -> str:
        """`<provider>/<model>`, or `statistical`: part of the cache key, shown to people."""
        ...

    @property
    def statistical(self) -> bool:
        """True when the insights are derived from the numbers, not written by a model."""
        ...

    def analyze_video(self, context: VideoInsightContext) -> AnalystAnswer:
        """Insights for one video (blocking; call from a thread).

        Raises:
            InsightsFailed: `ANALYSIS_INVALID` (never fit the schema), `CONTENT_BLOCKED`.
            ProviderTransientError / ProviderPermanentError: classified provider failures.
        """
        ...

    def analyze_series(self, context: SeriesInsightContext) -> AnalystAnswer:
        """Insights for a series (blocking; call from a thread). Raises as `analyze_video`."""
        ...


class InsightsFailed(DomainError):
    """A domain failure after tokens were billed: `usage` says how many, for the ledger."""

    def __init__(self, code: FailureCode, message: str, *, usage: TokenUsage | None) -> None:
        super().__init__(code, message)
        self.usage = usage


# --- numbers both kinds of analyst use ---------------------------------------------------------


def _rate(part: int, views: int) -> float | None:
    return part / views if views > 0 else None


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def _platform_name(platform: str) -> str:
    return {"tiktok": "TikTok", "instagram": "Instagram", "youtube": "YouTube"}.get(
        platform, platform.capitalize()
    )


_SOURCE_NAMES = {
    "fyp": "the For You feed",
    "profile": "your profile",
    "hashtag": "hashtag pages",
    "share": "shares",
    "other": "other sources",
}


def _engagement_percent(snapshot: PerformanceSnapshot) -> str:
    engaged = snapshot.likes + snapshot.comments + snapshot.shares + snapshot.saves
    rate = _rate(engaged, snapshot.views)
    return _pct(rate) if rate is not None else "n/a"


# --- the prompt (seed 000) ---------------------------------------------------------------------

SYSTEM_PROMPT = (
    "You are a social media video performance analyst. You get one short video's data and "
    "its performance history, with the creator's usual numbers per platform. Explain what "
    "drove its performance and what held it back, using only the numbers and content given; "
    "never invent metrics. Answer: 1. which elements drove high performance (strengths); "
    "2. what could be improved (weaknesses); 3. which traffic sources work best and why "
    "(traffic_insights); 4. what patterns emerge from the data (patterns); 5. specific, "
    "actionable recommendations, and suggestions for the next video. Answer only in the "
    "given schema."
)

SERIES_SYSTEM_PROMPT = (
    "You are a social media video performance analyst. You get a series of short videos "
    "(episodes) with each one's numbers, the creator's usual numbers per platform, and the "
    "series aggregates. Explain which episodes and themes drive engagement, how posting "
    "cadence relates to performance, which hashtags work, and what the next episodes should "
    "do. Use only the numbers given; never invent metrics. Answer only in the given schema."
)


def _usual_lines(usual: Mapping[str, PlatformUsual]) -> list[str]:
    lines = []
    for platform, numbers in sorted(usual.items()):
        parts = []
        if numbers.views is not None:
            parts.append(f"views {numbers.views:,.0f}")
        if numbers.engagement_rate is not None:
            parts.append(f"engagement {_pct(numbers.engagement_rate)}")
        if numbers.share_rate is not None:
            parts.append(f"share rate {_pct(numbers.share_rate)}")
        if numbers.completion_rate is not None:
            parts.append(f"completion {numbers.completion_rate:.0f}%")
        if parts:
            lines.append(f"- {_platform_name(platform)}: {', '.join(parts)}")
    return lines


def build_video_prompt(context: VideoInsightContext) -> str:
    """Seed 000's analysis prompt: the video's data, then its metric history."""
    platforms = ", ".join(_platform_name(p.platform.value) for p in context.summary.platforms)
    lines = ["Video Data:", f"- Title: {context.title}"]
    if context.prompt:
        lines.append(f"- Prompt: {context.prompt}")
    if context.script:
        lines.append(f"- Script: {context.script}")
    if context.duration_s is not None:
        lines.append(f"- Duration: {context.duration_s:.0f}s")
    lines.append(f"- Platform: {platforms or 'unknown'}")
    lines.append(f"- Hashtags: {', '.join(context.hashtags) if context.hashtags else 'none'}")
    lines += ["", "Performance Metrics:"]
    for snapshot in list(context.history)[-MAX_HISTORY_LINES:]:
        lines += [
            f"  Date: {snapshot.recorded_at.isoformat()}",
            f"  Platform: {_platform_name(snapshot.platform.value)}",
            f"  Views: {snapshot.views}",
            f"  Likes: {snapshot.likes} ({_engagement_percent(snapshot)} engagement)",
            f"  Comments: {snapshot.comments}",
            f"  Shares: {snapshot.shares}",
            f"  Saves: {snapshot.saves}",
            "  Completion Rate: "
            + (f"{snapshot.completion_rate:g}%" if snapshot.completion_rate is not None else "n/a"),
            "  Traffic Source: "
            + (snapshot.traffic_source.value if snapshot.traffic_source else "n/a"),
            "",
        ]
    for latest in context.summary.platforms:
        if latest.times_usual is not None:
            lines.append(
                f"Latest views on {_platform_name(latest.platform.value)}: "
                f"{latest.times_usual:.1f}× the creator's usual."
            )
    usual = _usual_lines(context.usual)
    if usual:
        lines += ["", "The creator's usual numbers (median of their videos):", *usual]
    if context.summary.traffic_breakdown:
        breakdown = ", ".join(
            f"{source} {share * 100:.0f}%"
            for source, share in sorted(
                context.summary.traffic_breakdown.items(), key=lambda item: -item[1]
            )
        )
        lines.append(f"Traffic breakdown (share of snapshots): {breakdown}")
    lines += ["", "Analyze this video's performance."]
    return "\n".join(lines)


def build_series_prompt(context: SeriesInsightContext) -> str:
    """The series, episode by episode, with its aggregates and the creator's usual numbers."""
    series = context.performance
    lines = [
        f"Series: {context.name}",
        f"Episodes: {series.episodes} ({series.episodes_with_metrics} with metrics), "
        f"total views {series.total_views:,}",
    ]
    if series.median_views is not None:
        lines.append(f"Median views per episode: {series.median_views:,.0f}")
    if series.engagement_rate is not None:
        lines.append(f"Engagement rate: {_pct(series.engagement_rate)}")
    lines += ["", "Episodes in publishing order:"]
    episodes = series.episode_list
    if len(episodes) > MAX_EPISODES:
        episodes = episodes[-MAX_EPISODES:]
    for episode in episodes:
        parts = [f"views {episode.views:,}"]
        if episode.engagement_rate is not None:
            parts.append(f"engagement {_pct(episode.engagement_rate)}")
        if episode.times_series_median is not None:
            parts.append(f"{episode.times_series_median:.1f}× the series median")
        if episode.published_at is not None:
            parts.append(f"published {episode.published_at.date().isoformat()}")
        if episode.gap_days is not None:
            parts.append(f"{episode.gap_days:.1f} days after the previous")
        if episode.hashtags:
            parts.append(f"hashtags {' '.join(episode.hashtags)}")
        lines.append(f"- {episode.title}: {', '.join(parts)}")
    if series.cadence:
        lines += ["", "Posting cadence (gap since the previous episode → median views):"]
        lines += [
            f"- {bucket.label}: {bucket.episodes} episode(s), median views "
            + (f"{bucket.median_views:,.0f}" if bucket.median_views is not None else "n/a")
            for bucket in series.cadence
        ]
    if series.cadence_correlation is not None:
        lines.append(f"Rank correlation of gap and views: {series.cadence_correlation:+.2f}")
    if series.hashtags:
        lines += ["", "Hashtags (median views, lift against the series median):"]
        lines += [
            f"- {effect.hashtag}: {effect.episodes} episode(s), {effect.median_views:,.0f}"
            + (f", lift {effect.lift:.2f}" if effect.lift is not None else "")
            for effect in series.hashtags
        ]
    if context.traffic_breakdown:
        breakdown = ", ".join(
            f"{source} {share * 100:.0f}%"
            for source, share in sorted(context.traffic_breakdown.items(), key=lambda i: -i[1])
        )
        lines.append(f"Traffic breakdown (share of snapshots): {breakdown}")
    usual_lines = _usual_lines(context.usual)
    if usual_lines:
        lines += ["", "The creator's usual numbers (median of their videos):", *usual_lines]
    lines += ["", "Analyze this series' performance."]
    return "\n".join(lines)


# --- providers -----------------------------------------------------------------------------------


def _add(total: TokenUsage | None, more: TokenUsage | None) -> TokenUsage | None:
    if more is None:
        return total
    if total is None:
        return more
    return TokenUsage(
        total.input_tokens + more.input_tokens, total.output_tokens + more.output_tokens
    )


Attempt = Callable[[], tuple[Insights | None, TokenUsage | None, str]]
"""One provider call: the insights, or None and why they did not validate; billed tokens."""


def _with_one_retry(provider: str, attempt: Attempt) -> tuple[Insights, TokenUsage | None]:
    billed: TokenUsage | None = None
    why = ""
    for number in range(1, INSIGHT_ATTEMPTS + 1):
        try:
            insights, usage, why = attempt()
        except InsightsFailed as exc:
            exc.usage = _add(billed, exc.usage)
            raise
        billed = _add(billed, usage)
        if insights is not None:
            return insights, billed
        logger.warning(
            "%s insights attempt %d/%d did not validate: %s",
            provider,
            number,
            INSIGHT_ATTEMPTS,
            why,
        )
    raise InsightsFailed(
        FailureCode.ANALYSIS_INVALID, f"{why} (asked {INSIGHT_ATTEMPTS} times)", usage=billed
    )


def _validated(parse: Callable[[], Insights]) -> tuple[Insights | None, str]:
    try:
        return parse(), ""
    except DomainError as exc:
        if exc.code != FailureCode.ANALYSIS_INVALID:
            raise
        return None, exc.message


class _ProviderAnalyst:
    """The two questions (video, series) over one structured call per provider."""

    provider = ""
    statistical = False

    def __init__(self, model: str) -> None:
        self.model = model

    @property
    def name(self) -> str:
        """See :attr:`InsightAnalyst.name`."""
        return f"{self.provider}/{self.model}"

    def _ask(self, system: str, prompt: str) -> Attempt:
        raise NotImplementedError

    def analyze_video(self, context: VideoInsightContext) -> AnalystAnswer:
        """See :meth:`InsightAnalyst.analyze_video`."""
        attempt = self._ask(SYSTEM_PROMPT, build_video_prompt(context))
        insights, usage = _with_one_retry(self.provider, attempt)
        return AnalystAnswer(insights, self.model, usage)

    def analyze_series(self, context: SeriesInsightContext) -> AnalystAnswer:
        """See :meth:`InsightAnalyst.analyze_series`."""
        attempt = self._ask(SERIES_SYSTEM_PROMPT, build_series_prompt(context))
        insights, usage = _with_one_retry(self.provider, attempt)
        return AnalystAnswer(insights, self.model, usage)


_TOOL_NAME = "record_insights"


class AnthropicAnalyst(_ProviderAnalyst):
    """Claude, answering through one forced tool call whose input is the insights."""

    provider = "anthropic"

    def __init__(self, client: anthropic.Anthropic, model: str) -> None:
        super().__init__(model)
        self._client = client
        self._schema = json_schema_for(Insights, target="anthropic")

    def _ask(self, system: str, prompt: str) -> Attempt:
        import anthropic

        from reelflow.chat.providers import TRANSPORT_ERRORS
        from reelflow.chat.providers.claude import classify_anthropic_error

        tool: ToolParam = {
            "name": _TOOL_NAME,
            "description": "Record the performance insights.",
            "input_schema": self._schema,
        }

        def attempt() -> tuple[Insights | None, TokenUsage | None, str]:
            try:
                message = self._client.messages.create(
                    model=self.model,
                    max_tokens=MAX_OUTPUT_TOKENS,
                    system=system,
                    messages=[{"role": "user", "content": prompt}],
                    tools=[tool],
                    tool_choice={"type": "tool", "name": _TOOL_NAME},
                )
            except (anthropic.AnthropicError, *TRANSPORT_ERRORS) as exc:
                raise classify_anthropic_error(exc) from exc
            usage = TokenUsage(
                message.usage.input_tokens
                + (message.usage.cache_creation_input_tokens or 0)
                + (message.usage.cache_read_input_tokens or 0),
                message.usage.output_tokens,
            )
            if message.stop_reason == "refusal":
                raise InsightsFailed(
                    FailureCode.CONTENT_BLOCKED,
                    "Anthropic declined to analyse this video.",
                    usage=usage,
                )
            tool_input = next(
                (
                    block.input
                    for block in message.content
                    if block.type == "tool_use" and block.name == _TOOL_NAME
                ),
                None,
            )
            text = "".join(block.text for block in message.content if block.type == "text")
            insights, why = _validated(
                lambda: (
                    validate_structured(tool_input, Insights, what="the insights")
                    if tool_input is not None
                    else parse_structured(text, Insights, what="the insights")
                )
            )
            return insights, usage, why

        return attempt


class OpenAIAnalyst(_ProviderAnalyst):
    """OpenAI chat completions with a strict `json_schema` response format."""

    provider = "openai"

    def __init__(self, client: openai.OpenAI, model: str) -> None:
        super().__init__(model)
        self._client = client
        self._schema = json_schema_for(Insights, target="openai")

    def _ask(self, system: str, prompt: str) -> Attempt:
        import openai

        from reelflow.core.provider_errors import classify_openai_error

        def attempt() -> tuple[Insights | None, TokenUsage | None, str]:
            try:
                completion = self._client.chat.completions.create(
                    model=self.model,
                    messages=[
                        {"role": "system", "content": system},
                        {"role": "user", "content": prompt},
                    ],
                    max_completion_tokens=MAX_OUTPUT_TOKENS,
                    temperature=TEMPERATURE,
                    response_format={
                        "type": "json_schema",
                        "json_schema": {
                            "name": "performance_insights",
                            "schema": self._schema,
                            "strict": True,
                        },
                    },
                )
            except openai.OpenAIError as exc:
                raise classify_openai_error(exc) from exc
            usage = (
                TokenUsage(completion.usage.prompt_tokens, completion.usage.completion_tokens)
                if completion.usage is not None
                else None
            )
            if not completion.choices:
                return None, usage, "OpenAI returned no choices"
            choice = completion.choices[0]
            if choice.message.refusal or choice.finish_reason == "content_filter":
                raise InsightsFailed(
                    FailureCode.CONTENT_BLOCKED,
                    "OpenAI declined to analyse this video"
                    + (f": {choice.message.refusal}" if choice.message.refusal else "."),
                    usage=usage,
                )
            insights, why = _validated(
                lambda: parse_structured(
                    choice.message.content or "", Insights, what="the insights"
                )
            )
            return insights, usage, why

        return attempt


class GeminiAnalyst(_ProviderAnalyst):
    """Gemini `generateContent` with a response JSON schema."""

    provider = "gemini"

    def __init__(self, client: genai.Client, model: str) -> None:
        super().__init__(model)
        self._client = client
        self._schema = json_schema_for(Insights, target="gemini")

    def _ask(self, system: str, prompt: str) -> Attempt:
        from google.genai import errors as genai_errors
        from google.genai import types as genai_types

        from reelflow.chat.providers import TRANSPORT_ERRORS
        from reelflow.core.provider_errors import classify_gemini_error
        from reelflow.discover.gemini_analyzer import (
            gemini_answer_text,
            gemini_usage,
            raise_if_gemini_blocked,
        )

        config = genai_types.GenerateContentConfig(
            system_instruction=system,
            temperature=TEMPERATURE,
            max_output_tokens=MAX_OUTPUT_TOKENS,
            response_mime_type="application/json",
            response_json_schema=self._schema,
            automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True),
        )

        def attempt() -> tuple[Insights | None, TokenUsage | None, str]:
            try:
                response = self._client.models.generate_content(
                    model=self.model, contents=prompt, config=config
                )
            except (
                genai_errors.APIError,
                genai_errors.UnknownApiResponseError,
                *TRANSPORT_ERRORS,
            ) as exc:
                raise classify_gemini_error(exc) from exc
            usage = gemini_usage(response)
            try:
                raise_if_gemini_blocked(response, usage, what="these insights")
            except DomainError as exc:
                raise InsightsFailed(exc.code, exc.message, usage=usage) from None
            insights, why = _validated(
                lambda: parse_structured(
                    gemini_answer_text(response), Insights, what="the insights"
                )
            )
            return insights, usage, why

        return attempt


# --- the statistical analyst -------------------------------------------------------------------

HIGH_TIMES_USUAL = 1.5
"""Views at least this many times the usual are a strength (and 1 ÷ this a weakness)."""
HIGH_RATE_RATIO = 1.25
"""A rate (engagement, shares) this much above the usual is a strength, below 1 ÷ this a
weakness: rates vary less between videos than views do."""
COMPLETION_POINTS = 10.0
"""Completion this many percentage points above or below the usual."""
COMPLETION_HIGH = 60.0
COMPLETION_LOW = 30.0
"""Absolute thresholds when the tenant has no usual completion yet."""
DECAY_RATIO = 0.5
GROWTH_RATIO = 1.5
"""Views per day in the latest interval against the first: below → decaying, above →
accelerating."""
CADENCE_CORRELATION = 0.3
"""A rank correlation of gap and views beyond ±this is reported as a cadence effect."""


@dataclass(frozen=True)
class _Finding:
    kind: str
    platform: str
    text: str


def _ratio(value: float | None, usual: float | None) -> float | None:
    if value is None or usual is None or usual <= 0:
        return None
    return value / usual


def _findings(context: VideoInsightContext) -> tuple[list[_Finding], list[_Finding]]:
    strengths: list[_Finding] = []
    weaknesses: list[_Finding] = []
    for latest in context.summary.platforms:
        platform = latest.platform.value
        name = _platform_name(platform)
        usual = context.usual.get(platform, PlatformUsual(views=latest.baseline_views))
        times = latest.times_usual
        if times is None:
            times = _ratio(float(latest.views), usual.views)
        if times is not None:
            if times >= HIGH_TIMES_USUAL:
                strengths.append(
                    _Finding("views", platform, f"views {times:.1f}× your usual on {name}")
                )
            elif times <= 1 / HIGH_TIMES_USUAL:
                weaknesses.append(
                    _Finding("views", platform, f"views only {times:.1f}× your usual on {name}")
                )
        engagement = latest.engagement_rate
        if engagement is None:
            engagement = _rate(
                latest.likes + latest.comments + latest.shares + latest.saves, latest.views
            )
        ratio = _ratio(engagement, usual.engagement_rate)
        if ratio is not None and engagement is not None and usual.engagement_rate is not None:
            said = (
                f"engagement rate {_pct(engagement)} on {name} against your usual "
                f"{_pct(usual.engagement_rate)}"
            )
            if ratio >= HIGH_RATE_RATIO:
                strengths.append(_Finding("engagement", platform, said))
            elif ratio <= 1 / HIGH_RATE_RATIO:
                weaknesses.append(_Finding("engagement", platform, said))
        share_rate = _rate(latest.shares, latest.views)
        ratio = _ratio(share_rate, usual.share_rate)
        if ratio is not None and share_rate is not None and usual.share_rate is not None:
            said = (
                f"share rate {_pct(share_rate)} on {name} against your usual "
                f"{_pct(usual.share_rate)}"
            )
            if ratio >= HIGH_RATE_RATIO:
                strengths.append(_Finding("shares", platform, said + ": people pass it on"))
            elif ratio <= 1 / HIGH_RATE_RATIO:
                weaknesses.append(_Finding("shares", platform, said))
        completion = latest.completion_rate
        if completion is not None:
            if usual.completion_rate is not None:
                said = (
                    f"completion {completion:.0f}% on {name} against your usual "
                    f"{usual.completion_rate:.0f}%"
                )
                if completion - usual.completion_rate >= COMPLETION_POINTS:
                    strengths.append(_Finding("completion", platform, said))
                elif usual.completion_rate - completion >= COMPLETION_POINTS:
                    weaknesses.append(_Finding("completion", platform, said))
            elif completion >= COMPLETION_HIGH:
                strengths.append(
                    _Finding(
                        "completion", platform, f"high completion: {completion:.0f}% on {name}"
                    )
                )
            elif completion <= COMPLETION_LOW:
                weaknesses.append(
                    _Finding("completion", platform, f"low completion: {completion:.0f}% on {name}")
                )
    return strengths, weaknesses


def _traffic_insights(breakdown: Mapping[str, float]) -> str:
    if not breakdown:
        return (
            "No traffic source was recorded with these snapshots, so where the views came from "
            "is unknown; record it to see whether the feed, hashtags or shares carry the video."
        )
    ranked = sorted(breakdown.items(), key=lambda item: -item[1])
    top, share = ranked[0]
    said = f"{share * 100:.0f}% of the snapshots that name a source came from "
    said += f"{_SOURCE_NAMES.get(top, top)}"
    if len(ranked) > 1:
        rest = ", ".join(f"{_SOURCE_NAMES.get(s, s)} {v * 100:.0f}%" for s, v in ranked[1:])
        said += f" (then {rest})"
    said += ". "
    said += {
        "fyp": "The algorithm is distributing it beyond your followers.",
        "profile": "It is watched mostly by people who already know you; it travels little.",
        "hashtag": "Its hashtags are doing the work of finding viewers.",
        "share": "Viewers pass it on to others: the strongest signal of resonance.",
    }.get(top, "The main source is not one of the platform's named channels.")
    return said


def _growth_patterns(history: Sequence[PerformanceSnapshot]) -> list[str]:
    by_platform: dict[str, list[PerformanceSnapshot]] = {}
    for snapshot in history:
        by_platform.setdefault(snapshot.platform.value, []).append(snapshot)
    patterns = []
    for platform, snapshots in sorted(by_platform.items()):
        name = _platform_name(platform)
        snapshots.sort(key=lambda s: s.recorded_at)
        if len(snapshots) < 3:
            patterns.append(
                f"{name}: {len(snapshots)} snapshot(s), too few to tell growth from decay."
            )
            continue
        daily = []
        for before, after in itertools.pairwise(snapshots):
            days = (after.recorded_at - before.recorded_at).total_seconds() / 86400
            if days > 0:
                daily.append((after.views - before.views) / days)
        if len(daily) < 2:
            continue
        first, last = daily[0], daily[-1]
        if first > 0 and last <= first * DECAY_RATIO:
            patterns.append(
                f"{name}: decaying — views per day fell from {first:,.0f} to {last:,.0f}; most "
                "of its reach came early."
            )
        elif last >= max(first, 1.0) * GROWTH_RATIO:
            patterns.append(
                f"{name}: accelerating — views per day rose from {first:,.0f} to {last:,.0f}; "
                "it is still finding viewers."
            )
        else:
            patterns.append(
                f"{name}: steady — about {last:,.0f} views per day in the latest interval."
            )
    return patterns


_KEEP = {
    "views": "Keep the hook and format that put {platform} views above your usual.",
    "engagement": "Keep what invites reactions on {platform}: the same tone and a direct question.",
    "shares": "Keep the shareable moment that made {platform} viewers pass it on.",
    "completion": "Keep the length and pacing that held {platform} viewers to the end.",
}
_FIX = {
    "views": "Rework the first two seconds for {platform}: a stronger hook and a clearer "
    "title card, so the feed keeps showing it.",
    "engagement": "Ask viewers something specific on {platform} and answer the first comments "
    "to lift engagement.",
    "shares": "Add one moment worth sending to a friend (a surprising fact, a relatable "
    "line) to raise the share rate on {platform}.",
    "completion": "Cut the slow middle and move the payoff earlier so more {platform} viewers "
    "stay to the end.",
}
_NEXT = {
    "views": "Make a follow-up in the same format for {platform}, where this one beat your usual.",
    "engagement": "Turn the comments on {platform} into the next video's topic.",
    "shares": "Build the next video around the shareable moment, for {platform}.",
    "completion": "Keep the next video at this length for {platform}.",
}


def _fill(template: str, platform: str) -> str:
    return template.format(platform=_platform_name(platform))


class StatisticalAnalyst:
    """Insights derived from the numbers alone; says so (`statistical=True`)."""

    provider = "local"
    model = STATISTICAL_ANALYST
    statistical = True

    @property
    def name(self) -> str:
        """See :attr:`InsightAnalyst.name`."""
        return STATISTICAL_ANALYST

    def analyze_video(self, context: VideoInsightContext) -> AnalystAnswer:
        """See :meth:`InsightAnalyst.analyze_video`."""
        strengths, weaknesses = _findings(context)
        patterns = _growth_patterns(context.history)
        recommendations = [_fill(_KEEP[f.kind], f.platform) for f in strengths]
        recommendations += [_fill(_FIX[f.kind], f.platform) for f in weaknesses]
        suggestions = [_fill(_NEXT[f.kind], f.platform) for f in strengths]
        best = context.summary.best_platform
        if best is not None and len(context.summary.platforms) > 1:
            suggestions.append(
                f"Post the next video on {_platform_name(best.value)} first: it performs best "
                "there."
            )
        top_source = max(
            context.summary.traffic_breakdown.items(), key=lambda item: item[1], default=None
        )
        if top_source is not None and top_source[0] == "hashtag" and context.hashtags:
            suggestions.append(
                f"Reuse the hashtags that found viewers: {' '.join(context.hashtags)}."
            )
        if not strengths and not weaknesses:
            patterns.append(
                "Every measured number is close to your usual: nothing stands out either way."
            )
            recommendations.append(
                "Change one thing at a time (the hook, the length or the posting time) in the "
                "next video, so its numbers show what that change does."
            )
        if not suggestions:
            suggestions.append(
                "Try a variation of this video that fixes its weakest number, then compare the "
                "two versions' metrics."
            )
        insights = Insights(
            strengths=[f.text for f in strengths],
            weaknesses=[f.text for f in weaknesses],
            traffic_insights=_traffic_insights(context.summary.traffic_breakdown),
            patterns=" ".join(patterns),
            recommendations=recommendations,
            next_video_suggestions=suggestions,
        )
        return AnalystAnswer(insights, STATISTICAL_ANALYST, None)

    def analyze_series(self, context: SeriesInsightContext) -> AnalystAnswer:
        """See :meth:`InsightAnalyst.analyze_series`."""
        series = context.performance
        strengths: list[str] = []
        weaknesses: list[str] = []
        recommendations: list[str] = []
        suggestions: list[str] = []
        patterns: list[str] = []
        for episode in series.best_episodes:
            times = episode.times_series_median
            if times is not None and times >= HIGH_TIMES_USUAL:
                strengths.append(
                    f'"{episode.title}" drew {times:.1f}× the series\' median views '
                    f"({episode.views:,})"
                )
        for episode in series.worst_episodes:
            times = episode.times_series_median
            if times is not None and times <= 1 / HIGH_TIMES_USUAL:
                weaknesses.append(
                    f'"{episode.title}" drew only {times:.1f}× the series\' median views '
                    f"({episode.views:,})"
                )
        best = series.best_episodes[0] if series.best_episodes else None
        worst = series.worst_episodes[0] if series.worst_episodes else None
        if best is not None and worst is not None and best.video_id != worst.video_id:
            recommendations.append(
                f'Make the next episodes more like "{best.title}" than "{worst.title}": '
                "compare their hooks, topics and lengths."
            )
            suggestions.append(f'A follow-up to "{best.title}", the series\' best episode.')
        lifted = [e for e in series.hashtags if e.lift is not None and e.episodes >= 2]
        for effect in lifted:
            lift = effect.lift or 0.0
            if lift >= HIGH_RATE_RATIO:
                strengths.append(
                    f"episodes tagged {effect.hashtag} get {lift:.1f}× the series' median views"
                )
                suggestions.append(f"Keep {effect.hashtag} on the next episodes.")
            elif lift <= 1 / HIGH_RATE_RATIO:
                weaknesses.append(
                    f"episodes tagged {effect.hashtag} get only {lift:.1f}× the series' "
                    "median views"
                )
                recommendations.append(f"Drop or replace {effect.hashtag}.")
        correlation = series.cadence_correlation
        if correlation is not None:
            if correlation <= -CADENCE_CORRELATION:
                patterns.append(
                    f"Episodes posted soon after the previous one do better (gap against "
                    f"views: {correlation:+.2f}): a steady, frequent cadence pays."
                )
                recommendations.append("Post episodes closer together.")
            elif correlation >= CADENCE_CORRELATION:
                patterns.append(
                    f"Episodes posted after a longer break do better (gap against views: "
                    f"{correlation:+.2f}): the audience rewards waiting for an episode."
                )
                recommendations.append("Space episodes further apart.")
            else:
                patterns.append(
                    f"Posting cadence shows no clear effect on views ({correlation:+.2f})."
                )
        rated = [b for b in series.cadence if b.median_views is not None and b.episodes > 0]
        if len(rated) > 1:
            top = max(rated, key=lambda b: b.median_views or 0.0)
            patterns.append(
                f"The best cadence so far: {top.label} ({top.episodes} episode(s), median "
                f"{top.median_views or 0:,.0f} views)."
            )
        if series.episodes_with_metrics == 0:
            patterns.append("No episode has metrics yet.")
        elif series.episodes_with_metrics < 3:
            patterns.append(
                f"Only {series.episodes_with_metrics} episode(s) have metrics: too few to "
                "tell patterns from chance."
            )
        if not suggestions:
            suggestions.append(
                "Change one thing per episode (hook, length, posting day) and record metrics, "
                "so the series shows what works."
            )
        insights = Insights(
            strengths=strengths,
            weaknesses=weaknesses,
            traffic_insights=_traffic_insights(dict(context.traffic_breakdown)),
            patterns=" ".join(patterns),
            recommendations=recommendations,
            next_video_suggestions=suggestions,
        )
        return AnalystAnswer(insights, STATISTICAL_ANALYST, None)


# --- building ------------------------------------------------------------------------------------


def _base_url(settings: Settings, provider: str) -> str | None:
    """CHAT_BASE_URL when chat uses the same provider (a proxy for it), else the provider's
    own setting (OPENAI_BASE_URL, GEMINI_BASE_URL)."""
    if settings.chat_provider == provider and settings.chat_base_url:
        return settings.chat_base_url
    if provider == "openai":
        return settings.openai_base_url
    if provider == "gemini":
        return settings.gemini_base_url
    return None


def build_analyst(settings: Settings) -> InsightAnalyst:
    """The analyst `settings.insights_provider` names; build it once per process.

    The model is `INSIGHTS_MODEL`, or the provider's default (`DEFAULT_INSIGHT_MODELS`).
    Only the chosen provider's SDK is imported.

    Raises:
        SettingsError: a provider is chosen without its API key.
    """
    from reelflow.core.settings import SettingsError

    provider = settings.insights_provider
    if provider == "local":
        return StatisticalAnalyst()
    model = settings.insights_model or DEFAULT_INSIGHT_MODELS[provider]
    keys: dict[str, tuple[str, Any]] = {
        "anthropic": ("ANTHROPIC_API_KEY", settings.anthropic_api_key),
        "openai": ("OPENAI_API_KEY", settings.openai_api_key),
        "gemini": ("GEMINI_API_KEY", settings.gemini_api_key),
    }
    variable, secret = keys[provider]
    if secret is None:
        raise SettingsError(f"{variable} is required when INSIGHTS_PROVIDER is '{provider}'")
    api_key: str = secret.get_secret_value()
    base_url = _base_url(settings, provider)
    if provider == "anthropic":
        from reelflow.chat.providers.claude import build_anthropic_client

        return AnthropicAnalyst(build_anthropic_client(api_key, base_url), model)
    if provider == "openai":
        from reelflow.chat.providers.gpt import build_openai_chat_client

        return OpenAIAnalyst(build_openai_chat_client(api_key, base_url), model)
    from reelflow.discover.gemini_analyzer import build_gemini_analysis_client

    return GeminiAnalyst(build_gemini_analysis_client(api_key, base_url), model)
