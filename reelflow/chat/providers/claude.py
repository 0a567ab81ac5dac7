"""Anthropic (Claude) answers, streamed through the official `anthropic` SDK."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reelflow.chat.answerers import DEFAULT_ANTHROPIC_MODEL, AnswerStream
from reelflow.chat.providers import TRANSPORT_ERRORS

if TYPE_CHECKING:
    from anthropic.types import MessageParam

import logging

import anthropic
import httpx
import httpx2

from reelflow.chat.answerers import (
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    AnswerRequest,
    StreamProgress,
    build_prompt,
    raise_failure,
)
from reelflow.core.provider_errors import (
    TRANSIENT_STATUS,
    ProviderPermanentError,
    ProviderTransientError,
    retry_after_seconds,
)

logger = logging.getLogger(__name__)

# --- Anthropic ---------------------------------------------------------------------------------

# `error.type` values that waiting may fix, whatever the HTTP status says.
_ANTHROPIC_TRANSIENT_TYPES = frozenset(
    {"rate_limit_error", "overloaded_error", "api_error", "timeout_error"}
)
# `error.type` values about the request or the account. Inside an accepted (200) stream
# only these are permanent: the request was valid enough to start, so anything else that
# breaks it midway is the service's trouble.
_ANTHROPIC_PERMANENT_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
    }
)


def classify_anthropic_error(exc: Exception) -> Exception:
    """Map an exception from the Anthropic SDK onto a ProviderError subclass.

    Errors inside an accepted stream (``event: error`` with ``overloaded_error`` and the
    like) come from the SDK as an ``APIStatusError`` whose status is the stream's 200, so
    the error type in the body decides: transient unless it is about the request or the
    account. They carry no ``status_code``. Exceptions that are not from the SDK or its
    HTTP stack come back unchanged.

    Args:
        exc: The exception caught around the SDK call or the stream's iteration.

    Returns:
        A ProviderTransientError, a ProviderPermanentError, or ``exc`` itself.
    """
    provider = "anthropic"
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderTransientError("Anthropic request timed out", provider=provider)
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderTransientError("could not connect to Anthropic", provider=provider)
    if isinstance(exc, anthropic.APIStatusError):
        error_type = exc.type
        detail = exc.api_message or exc.message
        if exc.status_code < 400:
            message = f"Anthropic stream failed with {error_type or 'an error'}: {detail}"
            if error_type in _ANTHROPIC_PERMANENT_TYPES:
                return ProviderPermanentError(message, provider=provider)
            return ProviderTransientError(message, provider=provider)
        status = exc.status_code
        message = f"Anthropic returned HTTP {status} ({error_type or 'error'}): {detail}"
        if status in TRANSIENT_STATUS or status >= 500 or error_type in _ANTHROPIC_TRANSIENT_TYPES:
            return ProviderTransientError(
                message,
                provider=provider,
                status_code=status,
                retry_after_s=retry_after_seconds(exc.response.headers),
            )
        return ProviderPermanentError(message, provider=provider, status_code=status)
    if isinstance(exc, (httpx.TimeoutException, httpx2.TimeoutException)):
        return ProviderTransientError("Anthropic stream timed out", provider=provider)
    if isinstance(exc, TRANSPORT_ERRORS):
        return ProviderTransientError(
            f"connection to Anthropic broke off ({type(exc).__name__})", provider=provider
        )
    if isinstance(exc, anthropic.AnthropicError):
        return ProviderPermanentError(f"Anthropic client error: {exc}", provider=provider)
    return exc


class AnthropicAnswerer:
    """Claude through the Messages API's streaming helper (``client.messages.stream``)."""

    provider = "anthropic"

    def __init__(self, client: anthropic.Anthropic, model: str = DEFAULT_ANTHROPIC_MODEL) -> None:
        """Wrap a shared client.

        Args:
            client: Built with ``max_retries=0``, e.g. by :func:`build_anthropic_client`.
            model: A Messages API model id.
        """
        self._client = client
        self.model = model

    def stream(self, request: AnswerRequest) -> AnswerStream:
        """See :meth:`Answerer.stream`."""
        prompt = build_prompt(request)
        progress = StreamProgress(self.provider, prompt)
        messages: list[MessageParam] = []
        for m in prompt.messages:
            if m.role == "user":
                messages.append({"role": "user", "content": m.content})
            else:
                messages.append({"role": "assistant", "content": m.content})
        try:
            # The context manager closes the HTTP response on every exit, including the
            # GeneratorExit raised at `yield` when the caller stops iterating.
            with self._client.messages.stream(
                model=self.model,
                max_tokens=request.max_output_tokens,
                system=prompt.system,
                messages=messages,
            ) as events:
                for event in events:
                    if event.type == "message_start":
                        usage = event.message.usage
                        progress.input_tokens = (
                            usage.input_tokens
                            + (usage.cache_creation_input_tokens or 0)
                            + (usage.cache_read_input_tokens or 0)
                        )
                        progress.output_tokens = usage.output_tokens
                    elif event.type == "content_block_delta":
                        if event.delta.type == "text_delta" and event.delta.text:
                            yield progress.text(event.delta.text)
                    elif event.type == "message_delta":
                        # Counts in message_delta are cumulative for the whole message.
                        progress.output_tokens = event.usage.output_tokens
                        progress.output_covers_text = True
                        if event.usage.input_tokens is not None:
                            progress.input_tokens = (
                                event.usage.input_tokens
                                + (event.usage.cache_creation_input_tokens or 0)
                                + (event.usage.cache_read_input_tokens or 0)
                            )
                        progress.stop_reason = event.delta.stop_reason
                    elif event.type == "message_stop":
                        progress.completed = True
        except (anthropic.AnthropicError, *TRANSPORT_ERRORS) as exc:
            raise_failure(progress, classify_anthropic_error(exc), exc)
        if not progress.completed:
            raise progress.ended_early("message_stop")
        yield progress.finished()


def build_anthropic_client(api_key: str, base_url: str | None = None) -> anthropic.Anthropic:
    """A client with SDK retries off (Temporal retries) and explicit timeouts."""
    return anthropic.Anthropic(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        timeout=anthropic.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
    )
