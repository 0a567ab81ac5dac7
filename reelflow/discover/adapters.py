"""Adapting a winning video's structure to a product: the `ScriptAdapter` protocol.

Four adapters write the same `ScriptAdaptation`:

* `OfflineTemplateAdapter` (the embedded default): a template that maps the original's
  scenes one-to-one onto the product's benefits, and an audience-fit score counted from
  measurable overlaps (words of the product's audience and benefits found in what the video
  says and shows). It says it is a template (`is_template=True`, `adapter="offline-template"`).
* `ModelAdapter`: a chat provider (Anthropic, OpenAI, Gemini) asked for the script in a
  schema through `reelflow.chat.structured_llm`, which imports the chosen SDK only, builds
  its client once with SDK retries off, asks again once for an answer that does not fit
  (then `ANALYSIS_INVALID`), and turns a refusal or safety stop into `CONTENT_BLOCKED`.
`adaptation.adapter` is `<provider>/<model>` for the providers (the ledger's provider is
the part before the slash) and `offline-template` for the template.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, Field

from reelflow.chat.structured import TokenUsage
from reelflow.chat.structured_llm import (
    SMALL_MODELS,
    AnswerFormat,
    StructuredAnswerFailed,
    StructuredChat,
    build_structured_chat,
)
from schemas.discover import (
    AdaptedScene,
    ProductBrief,
    Scene,
    Score,
    ScriptAdaptation,
    VideoAnalysis,
)

if TYPE_CHECKING:
    from reelflow.core.settings import Settings

OFFLINE_ADAPTER = "offline-template"
DEFAULT_ADAPTER_MODELS: dict[str, str] = dict(SMALL_MODELS)
"""Per provider, when `DISCOVER_ADAPTER_MODEL` is empty: small, cheap models are enough to
rewrite a storyboard (the analysis did the hard part)."""

MAX_OUTPUT_TOKENS = 4096
TEMPERATURE = 0.5
"""Some variety in the writing; the structure comes from the schema."""


@dataclass(frozen=True)
class AdaptationResult:
    """One adaptation, the model that wrote it and the tokens it cost (None: free)."""

    adaptation: ScriptAdaptation
    model: str
    usage: TokenUsage | None


class ScriptAdapter(Protocol):
    """Writes a script draft adapting a video's structure to one product."""

    def adapt(
        self, analysis: VideoAnalysis, product: ProductBrief, *, source_title: str | None
    ) -> AdaptationResult:
        """Adapt (blocking; call from an executor thread).

        Raises:
            DomainError: `ANALYSIS_INVALID` (the answer never fit the schema),
                `CONTENT_BLOCKED` (the provider refused).
            ProviderTransientError / ProviderPermanentError: classified provider failures.
        """
        ...


# --- what the providers are asked to write ---------------------------------------------------


class AdaptationAnswer(BaseModel):
    """The part of a `ScriptAdaptation` a model writes (we add who wrote it)."""

    title: str
    hook: str
    scenes: list[AdaptedScene] = Field(default_factory=list)
    call_to_action: str
    audience_fit: Score


SYSTEM_PROMPT = (
    "You are a short-form video scriptwriter. You get the analysis of a video that "
    "outperformed its account, and a product brief. Write a script that keeps what made the "
    "video work (hook technique, scene rhythm and timings, emotional triggers, patterns, call "
    "to action) and makes it about the product, for the product's audience and in its tone. "
    "Map every original scene to a scene of the new script with the same start_s and end_s. "
    "Score the audience fit from 0 to 10: how well the original video's audience and format "
    "match the product's audience and benefits, with concrete reasons. Never invent product "
    "claims beyond the brief. Answer only in the given schema."
)


def build_user_prompt(
    analysis: VideoAnalysis, product: ProductBrief, source_title: str | None
) -> str:
    """The analysis and the brief, as JSON the model reads (storage keys left out)."""
    video = analysis.model_dump(
        mode="json", exclude={"scenes": {"__all__": {"keyframe_key"}}}, exclude_none=True
    )
    brief = product.model_dump(mode="json", exclude={"product_id"}, exclude_none=True)
    parts = []
    if source_title:
        parts.append(f"Original video title: {source_title}")
    parts.append(f"Analysis of the original video:\n{json.dumps(video, ensure_ascii=False)}")
    parts.append(f"Product brief:\n{json.dumps(brief, ensure_ascii=False)}")
    parts.append("Write the adapted script.")
    return "\n\n".join(parts)


ADAPTATION_FORMAT = AnswerFormat(
    schema=AdaptationAnswer,
    name="write_script",
    what="the script",
    task="write this script",
    subject="this script",
)

AdaptationFailed = StructuredAnswerFailed
"""A domain failure after tokens were billed: `usage` says how many, for the ledger."""


class ModelAdapter:
    """A chat model writes the adaptation in `AdaptationAnswer`'s schema (any provider)."""

    def __init__(self, chat: StructuredChat) -> None:
        self._chat = chat
        self.provider = chat.provider
        self.model = chat.model

    def adapt(
        self, analysis: VideoAnalysis, product: ProductBrief, *, source_title: str | None
    ) -> AdaptationResult:
        """See :meth:`ScriptAdapter.adapt`."""
        written = self._chat.ask(
            SYSTEM_PROMPT,
            build_user_prompt(analysis, product, source_title),
            ADAPTATION_FORMAT,
            max_tokens=MAX_OUTPUT_TOKENS,
            temperature=TEMPERATURE,
        )
        adaptation = ScriptAdaptation(
            **written.answer.model_dump(),
            adapter=f"{self.provider}/{self.model}",
            is_template=False,
        )
        return AdaptationResult(adaptation, written.model, written.usage)


# --- the offline template ----------------------------------------------------------------------

_STOPWORDS = frozenset(
    {
        "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have",
        "how", "i", "if", "in", "into", "is", "it", "its", "just", "me", "my", "no", "not",
        "of", "on", "or", "our", "so", "than", "that", "the", "their", "them", "then", "there",
        "these", "they", "this", "those", "to", "too", "up", "us", "was", "we", "were", "what",
        "when", "who", "why", "will", "with", "you", "your", "yours", "can", "get", "got",
        "all", "any", "each", "every", "out", "over", "under", "about", "after", "before",
        "again", "also", "one", "two", "new", "like", "make", "makes", "made", "want", "wants",
        "need", "needs", "people",
    }
)  # fmt: skip
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _stem(word: str) -> str:
    """A crude stem so "mornings"/"morning" and "crushes"/"crush" meet; enough for overlaps."""
    if len(word) > 4 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    for suffix in ("ing", "ed", "e"):
        if len(word) - len(suffix) >= 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_terms(text: str | None) -> dict[str, str]:
    """Content words of `text`: stem → the first spelling seen (for readable reasons)."""
    terms: dict[str, str] = {}
    for word in _TOKEN.findall((text or "").lower()):
        if len(word) < 3 or word in _STOPWORDS or word.isdigit():
            continue
        terms.setdefault(_stem(word), word)
    return terms


def _video_text(analysis: VideoAnalysis) -> Iterable[str | None]:
    yield analysis.hook.text
    yield analysis.hook.technique
    yield analysis.transcript_excerpt
    yield analysis.call_to_action
    yield from analysis.emotional_triggers
    yield from analysis.viral_patterns
    for scene in analysis.scenes:
        yield scene.description
        yield scene.on_screen_text
        yield scene.audio


def audience_fit(analysis: VideoAnalysis, product: ProductBrief) -> Score:
    """How much of the product's audience and benefits the video already speaks to.

    Measured, not judged: the share of the audience's content words found in what the video
    says and shows (transcript, hook, scenes, patterns, triggers), and the share of benefits
    with at least one word found there; the score is 10 × the mean of the shares available.
    """
    video = content_terms(" ".join(t for t in _video_text(analysis) if t))
    audience = content_terms(product.audience)
    benefits = [(benefit, content_terms(benefit)) for benefit in product.benefits]
    benefits = [(text, terms) for text, terms in benefits if terms]
    reasons: list[str] = []
    shares: list[float] = []
    if not video:
        return Score(
            score=0.0,
            reasons=["the analysis has no words (no transcript, text or descriptions) to compare"],
        )
    if audience:
        found = [spelling for stem, spelling in audience.items() if stem in video]
        shares.append(len(found) / len(audience))
        if found:
            reasons.append(
                f"audience words in the video: {', '.join(found)} ({len(found)} of {len(audience)})"
            )
        else:
            reasons.append(
                f"no word of the audience ({', '.join(audience.values())}) appears in the video"
            )
    else:
        reasons.append("the product names no audience, so only its benefits are compared")
    if benefits:
        touched = [
            (text, [spelling for stem, spelling in terms.items() if stem in video])
            for text, terms in benefits
        ]
        hits = [(text, words) for text, words in touched if words]
        shares.append(len(hits) / len(benefits))
        for text, words in hits:
            reasons.append(f'the video already speaks to "{text}" ({", ".join(words)})')
        missing = [text for text, words in touched if not words]
        if missing:
            reasons.append(
                "benefits the video does not touch: " + "; ".join(f'"{m}"' for m in missing)
            )
    else:
        reasons.append("the product lists no benefits to compare")
    score = round(10 * sum(shares) / len(shares), 1) if shares else 0.0
    return Score(score=score, reasons=reasons)


class OfflineTemplateAdapter:
    """A template adaptation with no model: it says so (`is_template=True`)."""

    provider = "offline"
    model = OFFLINE_ADAPTER

    def adapt(
        self, analysis: VideoAnalysis, product: ProductBrief, *, source_title: str | None
    ) -> AdaptationResult:
        """See :meth:`ScriptAdapter.adapt`; never fails and costs nothing."""
        benefits = [b.strip().rstrip(".") for b in product.benefits if b.strip()]
        lead = benefits[0] if benefits else (product.description or "").strip().rstrip(".")
        hook = f"{product.name}: {lead}." if lead else f"You need to see {product.name}."
        scenes = analysis.scenes or [
            Scene(start_s=0.0, end_s=max(analysis.hook.end_s, 3.0), description="the whole video")
        ]
        adapted = [
            self._scene(index, scene, product, benefits[index] if index < len(benefits) else None)
            for index, scene in enumerate(scenes)
        ]
        cta = f"Try {product.name}: link in bio."
        if analysis.call_to_action:
            cta = f"{cta} (the original asked: “{analysis.call_to_action}”)"
        title = f"{product.name} × {source_title}" if source_title else f"{product.name}: template"
        adaptation = ScriptAdaptation(
            title=title,
            hook=hook,
            scenes=adapted,
            call_to_action=cta,
            audience_fit=audience_fit(analysis, product),
            adapter=OFFLINE_ADAPTER,
            is_template=True,
        )
        return AdaptationResult(adaptation=adaptation, model=OFFLINE_ADAPTER, usage=None)

    @staticmethod
    def _scene(
        index: int, scene: Scene, product: ProductBrief, benefit: str | None
    ) -> AdaptedScene:
        original = scene.description or scene.audio or scene.on_screen_text
        beat = f"the original's beat ({original})" if original else "the original's beat"
        if benefit is not None:
            direction = f"Same timing as {beat}: show {product.name} — {benefit.lower()}."
        elif index == 0:
            direction = f"Same timing as {beat}: open on {product.name}."
        else:
            direction = f"Same timing as {beat}: show {product.name} in use."
        return AdaptedScene(
            start_s=scene.start_s,
            end_s=scene.end_s,
            original=original,
            direction=direction,
            voiceover=f"{benefit}." if benefit else None,
            on_screen_text=benefit,
        )


# --- building ------------------------------------------------------------------------------------


def build_adapter(settings: Settings) -> ScriptAdapter:
    """The adapter `settings.discover_adapter` names; build it once per worker process.

    The model is `DISCOVER_ADAPTER_MODEL`, or the provider's default
    (`DEFAULT_ADAPTER_MODELS`). Only the chosen provider's SDK is imported.

    Raises:
        SettingsError: a provider is chosen without its API key.
    """
    provider = settings.discover_adapter
    if provider == "offline":
        return OfflineTemplateAdapter()
    model = settings.discover_adapter_model or DEFAULT_ADAPTER_MODELS[provider]
    return ModelAdapter(
        build_structured_chat(settings, provider, model, chosen_by="DISCOVER_ADAPTER")
    )
