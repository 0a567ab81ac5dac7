"""Gemini answers, streamed through the official `google-genai` SDK."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from typing import Protocol

from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from reelflow.chat.answerers import (
    DEFAULT_GEMINI_MODEL,
    READ_TIMEOUT_S,
    AnswerRequest,
    AnswerStream,
    StreamProgress,
    build_prompt,
    raise_failure,
)
from reelflow.chat.providers import TRANSPORT_ERRORS
from reelflow.core.provider_errors import (
    classify_gemini_error,
)

logger = logging.getLogger(__name__)

# --- Gemini ------------------------------------------------------------------------------------


class _Closable(Protocol):
    def close(self) -> None: ...


# The HTTP responses opened while a Gemini stream is being advanced. The sync google-genai
# stream never closes its response itself (the async one does), so a stream the caller
# abandons would keep its connection open until garbage collection. Clients made by
# `build_gemini_client` report each response here through an httpx event hook, and the
# answerer closes them in `finally`. The variable is set only around `next()`, which runs
# entirely on the caller's current thread, so concurrent streams never see each other's.
_gemini_responses: contextvars.ContextVar[list[_Closable] | None] = contextvars.ContextVar(
    "reelflow_gemini_responses", default=None
)


def _track_gemini_response(response: _Closable) -> None:
    opened = _gemini_responses.get()
    if opened is not None:
        opened.append(response)


class GeminiAnswerer:
    """Gemini through ``client.models.generate_content_stream`` (SSE).

    Build the client with :func:`build_gemini_client`: besides turning retries off, it lets
    the answerer close the HTTP response as soon as the caller stops iterating. With any
    other client the stream is still closed, but only when garbage collection gets to it.
    """

    provider = "gemini"

    def __init__(self, client: genai.Client, model: str = DEFAULT_GEMINI_MODEL) -> None:
        """Wrap a shared client.

        Args:
            client: From :func:`build_gemini_client`.
            model: A Gemini model id.
        """
        self._client = client
        self.model = model

    def stream(self, request: AnswerRequest) -> AnswerStream:
        """See :meth:`Answerer.stream`."""
        prompt = build_prompt(request)
        progress = StreamProgress(self.provider, prompt)
        contents = [
            genai_types.Content(
                role="model" if m.role == "assistant" else "user",
                parts=[genai_types.Part(text=m.content)],
            )
            for m in prompt.messages
        ]
        config = genai_types.GenerateContentConfig(
            system_instruction=prompt.system,
            max_output_tokens=request.max_output_tokens,
            # No tools, so no function-calling loop; and no automatic continuation, which
            # would send follow-up requests of its own: one stream is one request.
            automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True),
            automatic_continuation=False,
        )
        opened: list[_Closable] = []
        chunks: Iterator[genai_types.GenerateContentResponse] | None = None
        try:
            chunks = self._client.models.generate_content_stream(
                model=self.model, contents=contents, config=config
            )
            while True:
                token = _gemini_responses.set(opened)
                try:
                    chunk = next(chunks, None)
                finally:
                    _gemini_responses.reset(token)
                if chunk is None:
                    break
                for piece in self._read_chunk(chunk, progress):
                    yield progress.text(piece)
                if chunk.usage_metadata is not None:
                    # Each chunk's usage is the running total of the request so far.
                    usage = chunk.usage_metadata
                    if usage.prompt_token_count is not None:
                        progress.input_tokens = usage.prompt_token_count
                    progress.output_tokens = (usage.candidates_token_count or 0) + (
                        usage.thoughts_token_count or 0
                    )
                    progress.output_covers_text = True
        except (
            genai_errors.APIError,
            genai_errors.UnknownApiResponseError,
            *TRANSPORT_ERRORS,
        ) as exc:
            raise_failure(progress, classify_gemini_error(exc), exc)
        finally:
            close = getattr(chunks, "close", None)
            if callable(close):
                close()
            for response in opened:
                response.close()
        if not progress.completed:
            raise progress.ended_early("a finish reason")
        yield progress.finished()

    @staticmethod
    def _read_chunk(
        chunk: genai_types.GenerateContentResponse, progress: StreamProgress
    ) -> list[str]:
        """Text pieces of one chunk; records its finish or block reason."""
        pieces: list[str] = []
        if chunk.prompt_feedback is not None and chunk.prompt_feedback.block_reason is not None:
            # The prompt itself was refused: no candidates will follow.
            progress.stop_reason = (
                f"prompt_blocked:{_enum_text(chunk.prompt_feedback.block_reason)}"
            )
            progress.completed = True
        if not chunk.candidates:
            return pieces
        candidate = chunk.candidates[0]
        if candidate.content is not None and candidate.content.parts:
            # Thought summaries (thinking models) are not part of the answer.
            pieces.extend(p.text for p in candidate.content.parts if p.text and not p.thought)
        if candidate.finish_reason is not None:
            progress.stop_reason = _enum_text(candidate.finish_reason)
            progress.completed = True
        return pieces


def _enum_text(value: object) -> str:
    return str(getattr(value, "value", value))


def build_gemini_client(api_key: str, base_url: str | None = None) -> genai.Client:
    """A Gemini Developer API client with SDK retries off and streams that close promptly.

    google-genai retries through tenacity as configured by ``HttpOptions.retry_options``:
    ``attempts`` counts the first try, so ``HttpRetryOptions(attempts=1)`` means no retry
    (``_api_client.retry_args``; 0 is treated as 1). The SDK does not retry when
    ``retry_options`` is unset either, but stating it keeps a future default from adding
    retries behind Temporal's back. ``vertexai=False`` stops ``GOOGLE_GENAI_USE_VERTEXAI``
    in the environment from switching the endpoint.

    Args:
        api_key: A Gemini API key (sent as ``x-goog-api-key``).
        base_url: Another endpoint than ``https://generativelanguage.googleapis.com/``.
    """
    return genai.Client(
        vertexai=False,
        api_key=api_key,
        http_options=genai_types.HttpOptions(
            base_url=base_url,
            # Milliseconds. The SDK applies it to each phase of the HTTP exchange, like the
            # other clients' read timeout, and sends it as X-Server-Timeout as well.
            timeout=int(READ_TIMEOUT_S * 1000),
            retry_options=genai_types.HttpRetryOptions(attempts=1),
            client_args={"event_hooks": {"request": [], "response": [_track_gemini_response]}},
        ),
    )
