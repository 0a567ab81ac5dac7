"""Adapting a winning video's structure to a product: the `ScriptAdapter` protocol.

Four adapters write the same `ScriptAdaptation`:

* `OfflineTemplateAdapter` (the embedded default): a template that maps the original's
  scenes one-to-one onto the product's benefits, and an audience-fit score counted from
  measurable overlaps (words of the product's audience and benefits found in what the video
  says and shows). It says it is a template (`is_template=True`, `adapter="offline-template"`).
* `AnthropicAdapter`, `OpenAIAdapter`, `GeminiAdapter`: the chat providers with structured
  output (a forced tool call, a strict `json_schema` response format, a response JSON
  schema). Each SDK is imported only when its adapter is built; clients are built once, with
  SDK retries off (Temporal retries), and errors are classified as the chat answerers do.

An answer that does not fit the schema is asked for once more, then refused as
`ANALYSIS_INVALID`; a provider's refusal or safety stop is `CONTENT_BLOCKED`.
`adaptation.adapter` is `<provider>/<model>` for the providers (the ledger's provider is
the part before the slash) and `offline-template` for the template.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, Field

from reelflow.core.errors import DomainError
from reelflow.discover.analyzers import TokenUsage
from reelflow.discover.structured import json_schema_for, parse_structured, validate_structured
from schemas.discover import (
    AdaptedScene,
    ProductBrief,
    Scene,
    Score,
    ScriptAdaptation,
    VideoAnalysis,
)
from schemas.failures import FailureCode

if TYPE_CHECKING:
    import anthropic
    import openai
    from anthropic.types import ToolParam
    from google import genai

    from reelflow.core.settings import Settings

logger = logging.getLogger(__name__)

OFFLINE_ADAPTER = "offline-template"
DEFAULT_ADAPTER_MODELS: dict[str, str] = {
    "anthropic": "claude-haiku-4-5",
    "openai": "gpt-4o-mini",
    "gemini": "gemini-2.5-flash",
}
"""Per provider, when `DISCOVER_ADAPTER_MODEL` is empty: small, cheap models are enough to
rewrite a storyboard (the analysis did the hard part)."""

MAX_OUTPUT_TOKENS = 4096
ADAPTATION_ATTEMPTS = 2
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


def _adaptation(answer: AdaptationAnswer, adapter: str) -> ScriptAdaptation:
    return ScriptAdaptation(**answer.model_dump(), adapter=adapter, is_template=False)


def _add(total: TokenUsage | None, more: TokenUsage | None) -> TokenUsage | None:
    if more is None:
        return total
    if total is None:
        return more
    return TokenUsage(
        total.input_tokens + more.input_tokens, total.output_tokens + more.output_tokens
    )


class AdaptationFailed(DomainError):
    """A domain failure after tokens were billed: `usage` says how many, for the ledger."""

    def __init__(self, code: FailureCode, message: str, *, usage: TokenUsage | None) -> None:
        super().__init__(code, message)
        self.usage = usage


def _with_one_retry(
    provider: str, attempt: Callable[[], tuple[AdaptationAnswer | None, TokenUsage | None, str]]
) -> tuple[AdaptationAnswer, TokenUsage | None]:
    """Run `attempt` until it returns an answer, at most `ADAPTATION_ATTEMPTS` times.

    `attempt` returns (answer, usage, why-not): an answer, or None and the reason it did not
    validate. Blocks and provider errors are raised by `attempt` and end the loop.
    """
    billed: TokenUsage | None = None
    why = ""
    for number in range(1, ADAPTATION_ATTEMPTS + 1):
        try:
            answer, usage, why = attempt()
        except AdaptationFailed as exc:
            exc.usage = _add(billed, exc.usage)
            raise
        billed = _add(billed, usage)
        if answer is not None:
            return answer, billed
        logger.warning(
            "%s adaptation attempt %d/%d did not validate: %s",
            provider,
            number,
            ADAPTATION_ATTEMPTS,
            why,
        )
    raise AdaptationFailed(
        FailureCode.ANALYSIS_INVALID, f"{why} (asked {ADAPTATION_ATTEMPTS} times)", usage=billed
    )


def _validated(parse: Callable[[], AdaptationAnswer]) -> tuple[AdaptationAnswer | None, str]:
    try:
        return parse(), ""
    except DomainError as exc:
        if exc.code != FailureCode.ANALYSIS_INVALID:
            raise
        return None, exc.message


# --- providers ---------------------------------------------------------------------------------

_TOOL_NAME = "write_script"


class AnthropicAdapter:
    """Claude, answering through one forced tool call whose input is the script."""

    provider = "anthropic"

    def __init__(self, client: anthropic.Anthropic, model: str) -> None:
        self._client = client
        self.model = model
        self._schema = json_schema_for(AdaptationAnswer, target="anthropic")

    def adapt(
        self, analysis: VideoAnalysis, product: ProductBrief, *, source_title: str | None
    ) -> AdaptationResult:
        """See :meth:`ScriptAdapter.adapt`."""
        import anthropic

        from reelflow.chat.providers import TRANSPORT_ERRORS
        from reelflow.chat.providers.claude import classify_anthropic_error

        prompt = build_user_prompt(analysis, product, source_title)
        tool: ToolParam = {
            "name": _TOOL_NAME,
            "description": "Record the adapted script.",
            "input_schema": self._schema,
        }

        def attempt() -> tuple[AdaptationAnswer | None, TokenUsage | None, str]:
            try:
                # No temperature: the current Messages API leaves sampling to the model.
                message = self._client.messages.create(
                    model=self.model,
                    max_tokens=MAX_OUTPUT_TOKENS,
                    system=SYSTEM_PROMPT,
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
                raise AdaptationFailed(
                    FailureCode.CONTENT_BLOCKED,
                    "Anthropic declined to write this script.",
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
            answer, why = _validated(
                lambda: (
                    validate_structured(tool_input, AdaptationAnswer, what="the script")
                    if tool_input is not None
                    else parse_structured(text, AdaptationAnswer, what="the script")
                )
            )
            return answer, usage, why

        answer, usage = _with_one_retry(self.provider, attempt)
        return AdaptationResult(
            _adaptation(answer, f"{self.provider}/{self.model}"), self.model, usage
        )


class OpenAIAdapter:
    """OpenAI chat completions with a strict `json_schema` response format."""

    provider = "openai"

    def __init__(self, client: openai.OpenAI, model: str) -> None:
        self._client = client
        self.model = model
        self._schema = json_schema_for(AdaptationAnswer, target="openai")

    def adapt(
        self, analysis: VideoAnalysis, product: ProductBrief, *, source_title: str | None
    ) -> AdaptationResult:
        """See :meth:`ScriptAdapter.adapt`."""
        import openai

        from reelflow.core.provider_errors import classify_openai_error

        prompt = build_user_prompt(analysis, product, source_title)

        def attempt() -> tuple[AdaptationAnswer | None, TokenUsage | None, str]:
            try:
                completion = self._client.chat.completions.create(
                    model=self.model,
                    messages=[
                        {"role": "system", "content": SYSTEM_PROMPT},
                        {"role": "user", "content": prompt},
                    ],
                    max_completion_tokens=MAX_OUTPUT_TOKENS,
                    temperature=TEMPERATURE,
                    response_format={
                        "type": "json_schema",
                        "json_schema": {
                            "name": "script_adaptation",
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
                raise AdaptationFailed(
                    FailureCode.CONTENT_BLOCKED,
                    "OpenAI declined to write this script"
                    + (f": {choice.message.refusal}" if choice.message.refusal else "."),
                    usage=usage,
                )
            answer, why = _validated(
                lambda: parse_structured(
                    choice.message.content or "", AdaptationAnswer, what="the script"
                )
            )
            return answer, usage, why

        answer, usage = _with_one_retry(self.provider, attempt)
        return AdaptationResult(
            _adaptation(answer, f"{self.provider}/{self.model}"), self.model, usage
        )


class GeminiAdapter:
    """Gemini `generateContent` with a response JSON schema."""

    provider = "gemini"

    def __init__(self, client: genai.Client, model: str) -> None:
        self._client = client
        self.model = model
        self._schema = json_schema_for(AdaptationAnswer, target="gemini")

    def adapt(
        self, analysis: VideoAnalysis, product: ProductBrief, *, source_title: str | None
    ) -> AdaptationResult:
        """See :meth:`ScriptAdapter.adapt`."""
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
            system_instruction=SYSTEM_PROMPT,
            temperature=TEMPERATURE,
            max_output_tokens=MAX_OUTPUT_TOKENS,
            response_mime_type="application/json",
            response_json_schema=self._schema,
            automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True),
        )
        prompt = build_user_prompt(analysis, product, source_title)

        def attempt() -> tuple[AdaptationAnswer | None, TokenUsage | None, str]:
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
                raise_if_gemini_blocked(response, usage, what="this script")
            except DomainError as exc:
                raise AdaptationFailed(exc.code, exc.message, usage=usage) from None
            answer, why = _validated(
                lambda: parse_structured(
                    gemini_answer_text(response), AdaptationAnswer, what="the script"
                )
            )
            return answer, usage, why

        answer, usage = _with_one_retry(self.provider, attempt)
        return AdaptationResult(
            _adaptation(answer, f"{self.provider}/{self.model}"), self.model, usage
        )


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


def _base_url(settings: Settings, provider: str) -> str | None:
    """The endpoint of `provider`: CHAT_BASE_URL when chat uses the same provider (a proxy
    for it), else the provider's own setting (OPENAI_BASE_URL, GEMINI_BASE_URL)."""
    if settings.chat_provider == provider and settings.chat_base_url:
        return settings.chat_base_url
    if provider == "openai":
        return settings.openai_base_url
    if provider == "gemini":
        return settings.gemini_base_url
    return None


def build_adapter(settings: Settings) -> ScriptAdapter:
    """The adapter `settings.discover_adapter` names; build it once per worker process.

    The model is `DISCOVER_ADAPTER_MODEL`, or the provider's default
    (`DEFAULT_ADAPTER_MODELS`). Only the chosen provider's SDK is imported.

    Raises:
        SettingsError: a provider is chosen without its API key.
    """
    from reelflow.core.settings import SettingsError

    provider = settings.discover_adapter
    if provider == "offline":
        return OfflineTemplateAdapter()
    model = settings.discover_adapter_model or DEFAULT_ADAPTER_MODELS[provider]
    keys: dict[str, tuple[str, Any]] = {
        "anthropic": ("ANTHROPIC_API_KEY", settings.anthropic_api_key),
        "openai": ("OPENAI_API_KEY", settings.openai_api_key),
        "gemini": ("GEMINI_API_KEY", settings.gemini_api_key),
    }
    variable, secret = keys[provider]
    if secret is None:
        raise SettingsError(f"{variable} is required when DISCOVER_ADAPTER is '{provider}'")
    api_key: str = secret.get_secret_value()
    base_url = _base_url(settings, provider)
    if provider == "anthropic":
        from reelflow.chat.providers.claude import build_anthropic_client

        return AnthropicAdapter(build_anthropic_client(api_key, base_url), model)
    if provider == "openai":
        from reelflow.chat.providers.gpt import build_openai_chat_client

        return OpenAIAdapter(build_openai_chat_client(api_key, base_url), model)
    from reelflow.discover.gemini_analyzer import build_gemini_analysis_client

    return GeminiAdapter(build_gemini_analysis_client(api_key, base_url), model)
