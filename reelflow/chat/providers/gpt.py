"""OpenAI chat answers, streamed through the official `openai` SDK."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reelflow.chat.answerers import DEFAULT_OPENAI_MODEL, AnswerStream
from reelflow.core.provider_errors import classify_openai_error

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

import logging

import openai

from reelflow.chat.answerers import (
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    AnswerRequest,
    StreamProgress,
    build_prompt,
    raise_failure,
)
from reelflow.core.provider_errors import (
    ProviderPermanentError,
    ProviderTransientError,
)

logger = logging.getLogger(__name__)

# --- OpenAI ------------------------------------------------------------------------------------

# `error.type` / `error.code` values about the request or the account. As with Anthropic,
# an error object inside an accepted stream is transient unless it is one of these.
_OPENAI_PERMANENT_STREAM_ERRORS = frozenset(
    {
        "invalid_request_error",
        "invalid_api_key",
        "authentication_error",
        "permission_error",
        "insufficient_quota",
        "model_not_found",
        "context_length_exceeded",
    }
)


def classify_openai_stream_error(exc: Exception) -> Exception:
    """Like :func:`classify_openai_error`, plus errors sent inside an accepted stream.

    The SDK raises a plain ``openai.APIError`` when a chunk of a 200 stream is an error
    object (``data: {"error": {...}}``); its ``type`` and ``code`` decide, and it carries
    no ``status_code``.
    """
    if isinstance(exc, openai.APIError) and not isinstance(
        exc, (openai.APIStatusError, openai.APIConnectionError, openai.APIResponseValidationError)
    ):
        message = f"OpenAI stream failed with {exc.type or exc.code or 'an error'}: {exc.message}"
        if {exc.type, exc.code} & _OPENAI_PERMANENT_STREAM_ERRORS:
            return ProviderPermanentError(message, provider="openai")
        return ProviderTransientError(message, provider="openai")
    return classify_openai_error(exc)


class OpenAIAnswerer:
    """OpenAI chat completions, streamed with a final usage chunk."""

    provider = "openai"

    def __init__(self, client: openai.OpenAI, model: str = DEFAULT_OPENAI_MODEL) -> None:
        """Wrap a shared client.

        Args:
            client: Built with ``max_retries=0``, e.g. by :func:`build_openai_chat_client`.
            model: A chat completions model id.
        """
        self._client = client
        self.model = model

    def stream(self, request: AnswerRequest) -> AnswerStream:
        """See :meth:`Answerer.stream`."""
        prompt = build_prompt(request)
        progress = StreamProgress(self.provider, prompt)
        messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": prompt.system}]
        for m in prompt.messages:
            if m.role == "user":
                messages.append({"role": "user", "content": m.content})
            else:
                messages.append({"role": "assistant", "content": m.content})
        try:
            chunks = self._client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_completion_tokens=request.max_output_tokens,
                stream=True,
                # Without it the stream carries no token counts at all.
                stream_options={"include_usage": True},
            )
            with chunks:
                for chunk in chunks:
                    if chunk.usage is not None:
                        # Sent once, after the last choice chunk: the whole request's usage.
                        progress.input_tokens = chunk.usage.prompt_tokens
                        progress.output_tokens = chunk.usage.completion_tokens
                        progress.output_covers_text = True
                    for choice in chunk.choices:
                        if choice.index != 0:
                            continue
                        # A refusal is the model's answer too; the user should see it.
                        piece = choice.delta.content or choice.delta.refusal
                        if piece:
                            yield progress.text(piece)
                        if choice.finish_reason is not None:
                            progress.stop_reason = choice.finish_reason
                            progress.completed = True
        except openai.OpenAIError as exc:
            if not progress.completed:
                raise_failure(progress, classify_openai_stream_error(exc), exc)
            # Only the usage chunk after the finish_reason was lost: the answer is whole,
            # so it is delivered, with estimated usage.
            logger.warning(
                "openai stream failed after its finish_reason (%s); usage is estimated",
                type(exc).__name__,
            )
        if not progress.completed:
            raise progress.ended_early("a finish_reason")
        yield progress.finished()


def build_openai_chat_client(api_key: str, base_url: str | None = None) -> openai.OpenAI:
    """A client with SDK retries off (Temporal retries) and explicit timeouts."""
    return openai.OpenAI(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        timeout=openai.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
    )
