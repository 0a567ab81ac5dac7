"""Who explains a video's numbers: the `InsightAnalyst` protocol and `build_analyst`.

Four analysts write seed 000's insight JSON (`schemas.improve.Insights`):

* `StatisticalAnalyst` (the default, `INSIGHTS_PROVIDER=local`): every field derived from the
  metrics against the tenant's usual numbers (its median per platform, the same "x× your
  usual" the Discover pipeline's outliers use). No network, no tokens; it says it is
  statistical (`analyst="statistical"`).
* `ModelAnalyst`: a chat provider (Anthropic, OpenAI, Gemini) asked seed 000's questions
  about the title, prompt or script, duration, platforms, hashtags and the metric history,
  answering in the schema through `reelflow.chat.structured_llm` (only the chosen SDK is
  imported; an answer that does not fit is asked for once more, then refused as
  `ANALYSIS_INVALID`; a refusal or safety stop is `CONTENT_BLOCKED`; 429/5xx are
  `ProviderTransientError` with Retry-After).

Analysts block (SDK calls): callers run them on a thread.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from reelflow.chat.structured import TokenUsage
from reelflow.chat.structured_llm import (
    SMALL_MODELS,
    AnswerFormat,
    StructuredAnswerFailed,
    StructuredChat,
    build_structured_chat,
)
from schemas.improve import (
    Insights,
    PerformanceSnapshot,
    SeriesPerformance,
    VideoPerformanceSummary,
)

if TYPE_CHECKING:
    from reelflow.core.settings import Settings

STATISTICAL_ANALYST = "statistical"
DEFAULT_INSIGHT_MODELS: dict[str, str] = dict(SMALL_MODELS)
"""Per provider, when `INSIGHTS_MODEL` is empty: reading a short table of numbers needs no
large model, and these three have prices in the ledger's table."""

MAX_OUTPUT_TOKENS = 2048
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


InsightsFailed = StructuredAnswerFailed
"""A domain failure after tokens were billed: `usage` says how many, for the ledger."""


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


INSIGHTS_FORMAT = AnswerFormat(
    schema=Insights,
    name="record_insights",
    what="the insights",
    task="analyse this video",
    subject="these insights",
)


class ModelAnalyst:
    """A chat model answers seed 000's questions in the `Insights` schema (any provider)."""

    statistical = False

    def __init__(self, chat: StructuredChat) -> None:
        self._chat = chat
        self.provider = chat.provider
        self.model = chat.model

    @property
    def name(self) -> str:
        """See :attr:`InsightAnalyst.name`."""
        return f"{self.provider}/{self.model}"

    def analyze_video(self, context: VideoInsightContext) -> AnalystAnswer:
        """See :meth:`InsightAnalyst.analyze_video`."""
        return self._ask(SYSTEM_PROMPT, build_video_prompt(context))

    def analyze_series(self, context: SeriesInsightContext) -> AnalystAnswer:
        """See :meth:`InsightAnalyst.analyze_series`."""
        return self._ask(SERIES_SYSTEM_PROMPT, build_series_prompt(context))

    def _ask(self, system: str, prompt: str) -> AnalystAnswer:
        written = self._chat.ask(
            system, prompt, INSIGHTS_FORMAT, max_tokens=MAX_OUTPUT_TOKENS, temperature=TEMPERATURE
        )
        return AnalystAnswer(written.answer, written.model, written.usage)


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


def build_analyst(settings: Settings) -> InsightAnalyst:
    """The analyst `settings.insights_provider` names; build it once per process.

    The model is `INSIGHTS_MODEL`, or the provider's default (`DEFAULT_INSIGHT_MODELS`).
    Only the chosen provider's SDK is imported.

    Raises:
        SettingsError: a provider is chosen without its API key.
    """
    provider = settings.insights_provider
    if provider == "local":
        return StatisticalAnalyst()
    model = settings.insights_model or DEFAULT_INSIGHT_MODELS[provider]
    return ModelAnalyst(
        build_structured_chat(settings, provider, model, chosen_by="INSIGHTS_PROVIDER")
    )
