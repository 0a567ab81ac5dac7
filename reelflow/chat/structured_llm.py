"""One structured answer from a chat provider: the `StructuredChat` protocol and its builders.

Discover's script adapters and Improve's analysts and prompt writers all ask a chat model
for one answer in a pydantic schema. This module is how that is asked, once per provider:

* Anthropic: one forced tool call whose `input_schema` is the schema (its input is the
  answer; a text answer is parsed as a fallback);
* OpenAI: chat completions with a strict `json_schema` response format;
* Gemini: `generateContent` with a response JSON schema.

Every implementation is built once with its client injected (SDK retries off: Temporal
retries), imports its SDK only when called, and behaves the same way:

* an answer that does not fit the schema (or that the caller's `usable` check rejects) is
  asked for once more, then refused as `ANALYSIS_INVALID`;
* a refusal or safety stop is `CONTENT_BLOCKED`;
* SDK errors are classified as chat classifies them (`ProviderTransientError` with
  Retry-After on 429/5xx/timeouts, `ProviderPermanentError` otherwise);
* a domain failure after tokens were billed is a `StructuredAnswerFailed` whose `usage`
  counts every attempt, so the ledger records what was spent.

It lives in `chat` (not `core`): it is the chat providers' knowledge (their SDKs, error
classifiers and wire formats), and `core` imports no domain.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from reelflow.chat.structured import (
    SchemaTarget,
    TokenUsage,
    json_schema_for,
    parse_structured,
    validate_structured,
)
from reelflow.core.errors import DomainError
from schemas.failures import FailureCode

if TYPE_CHECKING:
    # The clients are named in quoted base classes, which linters do not read.
    import anthropic  # noqa: F401
    import openai  # noqa: F401
    from anthropic.types import ToolParam
    from google import genai  # noqa: F401

    from reelflow.core.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

ChatProvider = SchemaTarget
"""`anthropic`, `openai`, `gemini`: each speaks its own dialect of JSON Schema."""
C = TypeVar("C")
"""A provider's SDK client."""

SMALL_MODELS: dict[str, str] = {
    "anthropic": "claude-haiku-4-5",
    "openai": "gpt-4o-mini",
    "gemini": "gemini-2.5-flash",
}
"""Per provider, a small, cheap model with a price in the ledger's table: the structured
answers asked here work from material already gathered, so no large model is needed."""

ANSWER_ATTEMPTS = 2
"""One retry: a second invalid answer from the same prompt rarely turns into a third valid one."""


@dataclass(frozen=True)
class AnswerFormat(Generic[T]):
    """What to ask for: the schema, and how the provider and our messages name it."""

    schema: type[T]
    name: str
    """The forced tool's name (Anthropic) and the `json_schema` name (OpenAI)."""
    what: str
    """How messages name the answer: "the script", "the insights"."""
    task: str
    """What a refusal declined: "write this script", "analyse this video"."""
    subject: str
    """What a safety filter refused: "this script", "these insights"."""
    usable: Callable[[T], str | None] | None = None
    """A check beyond the schema: why a valid answer is still unusable, or None."""


@dataclass(frozen=True)
class StructuredAnswer(Generic[T]):
    """A valid answer, the model that wrote it and the tokens all attempts cost."""

    answer: T
    model: str
    usage: TokenUsage | None


class StructuredAnswerFailed(DomainError):
    """A domain failure after tokens were billed: `usage` says how many, for the ledger."""

    def __init__(self, code: FailureCode, message: str, *, usage: TokenUsage | None) -> None:
        super().__init__(code, message)
        self.usage = usage


class StructuredChat(Protocol):
    """Asks one chat model for one answer in a pydantic schema."""

    @property
    def provider(self) -> str:
        """The ledger's provider: `anthropic`, `openai`, `gemini`."""
        ...

    @property
    def model(self) -> str:
        """The model asked."""
        ...

    def ask(
        self,
        system: str,
        prompt: str,
        answer: AnswerFormat[T],
        *,
        max_tokens: int,
        temperature: float,
    ) -> StructuredAnswer[T]:
        """Ask (blocking; call from a thread).

        Raises:
            StructuredAnswerFailed: `ANALYSIS_INVALID` (never fit the schema twice),
                `CONTENT_BLOCKED` (refused), with the billed `usage`.
            ProviderTransientError / ProviderPermanentError: classified provider failures.
        """
        ...


def add_usage(total: TokenUsage | None, more: TokenUsage | None) -> TokenUsage | None:
    """Two calls' billed tokens together (None: nothing billed)."""
    if more is None:
        return total
    if total is None:
        return more
    return TokenUsage(
        total.input_tokens + more.input_tokens, total.output_tokens + more.output_tokens
    )


@dataclass(frozen=True)
class _Attempt(Generic[T]):
    """One provider call: the answer, or None and why it was not usable; billed tokens."""

    answer: T | None
    usage: TokenUsage | None
    why: str = ""


def _checked(
    answer: AnswerFormat[T], usage: TokenUsage | None, parse: Callable[[], T]
) -> _Attempt[T]:
    """An attempt from a parse: an `ANALYSIS_INVALID` answer is a reason to ask again."""
    try:
        value = parse()
    except DomainError as exc:
        if exc.code != FailureCode.ANALYSIS_INVALID:
            raise
        return _Attempt(None, usage, exc.message)
    why = answer.usable(value) if answer.usable is not None else None
    return _Attempt(None, usage, why) if why else _Attempt(value, usage)


@dataclass(frozen=True)
class _Question(Generic[T]):
    """One `ask`'s arguments, as a provider's attempt reads them."""

    system: str
    prompt: str
    answer: AnswerFormat[T]
    max_tokens: int
    temperature: float


class _ProviderChat(ABC, Generic[C]):
    """What the three providers share: the retry, the usage sums, the schema conversion.

    A provider supplies `_attempt`: one call, parsed, with refusals raised.
    """

    provider: ChatProvider

    def __init__(self, client: C, model: str) -> None:
        self._client = client
        self.model = model
        self._schemas: dict[type[BaseModel], dict[str, Any]] = {}

    def ask(
        self,
        system: str,
        prompt: str,
        answer: AnswerFormat[T],
        *,
        max_tokens: int,
        temperature: float,
    ) -> StructuredAnswer[T]:
        """See :meth:`StructuredChat.ask`."""
        attempt = self._attempt(_Question(system, prompt, answer, max_tokens, temperature))
        billed: TokenUsage | None = None
        why = ""
        for number in range(1, ANSWER_ATTEMPTS + 1):
            try:
                result = attempt()
            except StructuredAnswerFailed as exc:
                exc.usage = add_usage(billed, exc.usage)
                raise
            billed = add_usage(billed, result.usage)
            if result.answer is not None:
                return StructuredAnswer(result.answer, self.model, billed)
            why = result.why
            logger.warning(
                "%s attempt %d/%d for %s was not usable: %s",
                self.provider,
                number,
                ANSWER_ATTEMPTS,
                answer.what,
                why,
            )
        raise StructuredAnswerFailed(
            FailureCode.ANALYSIS_INVALID, f"{why} (asked {ANSWER_ATTEMPTS} times)", usage=billed
        )

    def _schema(self, schema: type[BaseModel]) -> dict[str, Any]:
        """Each answer schema converted once (the conversion walks the whole schema)."""
        if schema not in self._schemas:
            self._schemas[schema] = json_schema_for(schema, target=self.provider)
        return self._schemas[schema]

    @abstractmethod
    def _attempt(self, ask: _Question[T]) -> Callable[[], _Attempt[T]]:
        """One call to the provider for `ask`; each provider supplies its own."""


class AnthropicStructuredChat(_ProviderChat["anthropic.Anthropic"]):
    """Claude, answering through one forced tool call whose input is the answer."""

    provider = "anthropic"

    def _attempt(self, ask: _Question[T]) -> Callable[[], _Attempt[T]]:
        system, prompt, answer = ask.system, ask.prompt, ask.answer
        import anthropic

        from reelflow.chat.providers import TRANSPORT_ERRORS
        from reelflow.chat.providers.claude import classify_anthropic_error

        tool: ToolParam = {
            "name": answer.name,
            "description": f"Record {answer.what}.",
            "input_schema": self._schema(answer.schema),
        }

        def attempt() -> _Attempt[T]:
            try:
                # No temperature: the current Messages API leaves sampling to the model.
                message = self._client.messages.create(
                    model=self.model,
                    max_tokens=ask.max_tokens,
                    system=system,
                    messages=[{"role": "user", "content": prompt}],
                    tools=[tool],
                    tool_choice={"type": "tool", "name": answer.name},
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
                raise StructuredAnswerFailed(
                    FailureCode.CONTENT_BLOCKED,
                    f"Anthropic declined to {answer.task}.",
                    usage=usage,
                )
            tool_input = next(
                (
                    block.input
                    for block in message.content
                    if block.type == "tool_use" and block.name == answer.name
                ),
                None,
            )
            text = "".join(block.text for block in message.content if block.type == "text")
            return _checked(
                answer,
                usage,
                lambda: (
                    validate_structured(tool_input, answer.schema, what=answer.what)
                    if tool_input is not None
                    else parse_structured(text, answer.schema, what=answer.what)
                ),
            )

        return attempt


class OpenAIStructuredChat(_ProviderChat["openai.OpenAI"]):
    """OpenAI chat completions with a strict `json_schema` response format."""

    provider = "openai"

    def _attempt(self, ask: _Question[T]) -> Callable[[], _Attempt[T]]:
        system, prompt, answer = ask.system, ask.prompt, ask.answer
        import openai

        from reelflow.core.provider_errors import classify_openai_error

        schema = self._schema(answer.schema)

        def attempt() -> _Attempt[T]:
            try:
                completion = self._client.chat.completions.create(
                    model=self.model,
                    messages=[
                        {"role": "system", "content": system},
                        {"role": "user", "content": prompt},
                    ],
                    max_completion_tokens=ask.max_tokens,
                    temperature=ask.temperature,
                    response_format={
                        "type": "json_schema",
                        "json_schema": {"name": answer.name, "schema": schema, "strict": True},
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
                return _Attempt(None, usage, "OpenAI returned no choices")
            choice = completion.choices[0]
            if choice.message.refusal or choice.finish_reason == "content_filter":
                raise StructuredAnswerFailed(
                    FailureCode.CONTENT_BLOCKED,
                    f"OpenAI declined to {answer.task}"
                    + (f": {choice.message.refusal}" if choice.message.refusal else "."),
                    usage=usage,
                )
            content = choice.message.content or ""
            return _checked(
                answer, usage, lambda: parse_structured(content, answer.schema, what=answer.what)
            )

        return attempt


class GeminiStructuredChat(_ProviderChat["genai.Client"]):
    """Gemini `generateContent` with a response JSON schema."""

    provider = "gemini"

    def _attempt(self, ask: _Question[T]) -> Callable[[], _Attempt[T]]:
        system, prompt, answer = ask.system, ask.prompt, ask.answer
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
            temperature=ask.temperature,
            max_output_tokens=ask.max_tokens,
            response_mime_type="application/json",
            response_json_schema=self._schema(answer.schema),
            automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True),
        )

        def attempt() -> _Attempt[T]:
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
                raise_if_gemini_blocked(response, usage, what=answer.subject)
            except DomainError as exc:
                raise StructuredAnswerFailed(exc.code, exc.message, usage=usage) from None
            text = gemini_answer_text(response)
            return _checked(
                answer, usage, lambda: parse_structured(text, answer.schema, what=answer.what)
            )

        return attempt


# --- building ------------------------------------------------------------------------------------


def provider_base_url(settings: Settings, provider: ChatProvider) -> str | None:
    """The endpoint of `provider`: CHAT_BASE_URL when chat uses the same provider (a proxy
    for it), else the provider's own setting (OPENAI_BASE_URL, GEMINI_BASE_URL)."""
    if settings.chat_provider == provider and settings.chat_base_url:
        return settings.chat_base_url
    if provider == "openai":
        return settings.openai_base_url
    if provider == "gemini":
        return settings.gemini_base_url
    return None


def build_structured_chat(
    settings: Settings, provider: ChatProvider, model: str, *, chosen_by: str
) -> StructuredChat:
    """The `provider`'s structured chat on `model`; build it once per process.

    Only that provider's SDK is imported. `chosen_by` names the setting that chose the
    provider, for the error message.

    Raises:
        SettingsError: the provider's API key is not set.
    """
    from reelflow.core.settings import SettingsError

    keys: dict[str, tuple[str, Any]] = {
        "anthropic": ("ANTHROPIC_API_KEY", settings.anthropic_api_key),
        "openai": ("OPENAI_API_KEY", settings.openai_api_key),
        "gemini": ("GEMINI_API_KEY", settings.gemini_api_key),
    }
    variable, secret = keys[provider]
    if secret is None:
        raise SettingsError(f"{variable} is required when {chosen_by} is '{provider}'")
    api_key: str = secret.get_secret_value()
    base_url = provider_base_url(settings, provider)
    if provider == "anthropic":
        from reelflow.chat.providers.claude import build_anthropic_client

        return AnthropicStructuredChat(build_anthropic_client(api_key, base_url), model)
    if provider == "openai":
        from reelflow.chat.providers.gpt import build_openai_chat_client

        return OpenAIStructuredChat(build_openai_chat_client(api_key, base_url), model)
    from reelflow.discover.gemini_analyzer import build_gemini_analysis_client

    return GeminiStructuredChat(build_gemini_analysis_client(api_key, base_url), model)
