"""Two kinds of provider failure that callers (Temporal activities) can act on.

A provider call either failed in a way that may pass on a later attempt (rate limits, server
errors, timeouts, dropped connections) or in a way no retry can fix (bad request, bad key,
unknown model, file too large). The provider classes raise exactly one of these two types so
that the activity layer can decide on retrying without knowing any SDK's exception tree.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import google.genai.errors
    import openai

logger = logging.getLogger(__name__)

# Status codes the OpenAI SDK itself would retry (see `_should_retry` in its base client):
# request timeout, lock conflict, rate limit, and every server error.
TRANSIENT_STATUS = frozenset({408, 409, 429})


class ProviderError(Exception):
    """Base for classified provider failures.

    Attributes:
        provider: Short provider name, e.g. ``"openai"``.
        status_code: HTTP status of the failed response, if there was one.
        retry_after_s: Server-suggested delay before retrying, if it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status_code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status_code = status_code
        self.retry_after_s = retry_after_s


class ProviderTransientError(ProviderError):
    """The call may succeed if repeated later: 408/409/429, 5xx, timeout, connection error."""

    code = "provider_unavailable"


class ProviderPermanentError(ProviderError):
    """Repeating the same call will fail the same way: 400/401/403/404/413/422 and the like."""

    code = "provider_rejected"


def retry_after_seconds(response_headers: object) -> float | None:
    """Read a numeric ``Retry-After`` (or OpenAI's ``retry-after-ms``) header, if present."""
    get = getattr(response_headers, "get", None)
    if get is None:
        return None
    millis = get("retry-after-ms")
    if isinstance(millis, str):
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    seconds = get("retry-after")
    if isinstance(seconds, str):
        try:
            return max(0.0, float(seconds))
        except ValueError:
            # An HTTP-date form is allowed too; the caller's backoff is good enough then.
            return None
    return None


def _error_code(exc: openai.APIStatusError) -> str | None:
    """The ``error.code`` field of an OpenAI error body, e.g. ``"insufficient_quota"``."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else None


def classify_openai_error(exc: Exception) -> Exception:
    """Map an exception raised by the OpenAI SDK onto a ProviderError subclass.

    The returned exception should be raised ``from exc`` so the original stays in the chain.
    Exceptions that are not from the OpenAI SDK come back unchanged: they are bugs or local
    problems, not provider failures.

    Args:
        exc: The exception caught around an SDK call.

    Returns:
        A ProviderTransientError, a ProviderPermanentError, or ``exc`` itself.
    """
    # Imported here so that the error classes cost callers nothing: the SDK is loaded
    # already wherever an OpenAI call could have failed.
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return ProviderTransientError("OpenAI request timed out", provider="openai")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderTransientError("could not connect to OpenAI", provider="openai")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        code = _error_code(exc)
        # The SDK's message is the server's error text; OpenAI already masks keys in it.
        message = f"OpenAI returned HTTP {status}: {exc.message}"
        retry_after = retry_after_seconds(exc.response.headers)
        if status == 429 and code == "insufficient_quota":
            # Same status as a rate limit, but only a billing change helps, not waiting.
            return ProviderPermanentError(message, provider="openai", status_code=status)
        if status in TRANSIENT_STATUS or status >= 500:
            return ProviderTransientError(
                message, provider="openai", status_code=status, retry_after_s=retry_after
            )
        return ProviderPermanentError(message, provider="openai", status_code=status)
    if isinstance(exc, openai.OpenAIError):
        # A response that does not parse, or a client-side misuse: the same request would
        # produce the same result.
        return ProviderPermanentError(f"OpenAI client error: {exc}", provider="openai")
    return exc


def classify_gemini_error(exc: Exception) -> Exception:
    """Map an exception from the google-genai SDK onto a ProviderError subclass.

    ``APIError`` carries the HTTP status in ``code``, both for rejected requests and for
    error objects inside an accepted stream (``data: {"error": {"code": 503, ...}}``).
    A stream that breaks off surfaces as the HTTP library's own transport error.

    Args:
        exc: The exception caught around the SDK call or the stream's iteration.

    Returns:
        A ProviderTransientError, a ProviderPermanentError, or ``exc`` itself.
    """
    # Imported here so that the error classes cost callers nothing (see classify_openai_error).
    import httpx
    import httpx2
    from google.genai import errors

    provider = "gemini"
    if isinstance(exc, errors.APIError):
        status = int(exc.code) if isinstance(exc.code, int) else None
        message = f"Gemini returned {status} {exc.status or ''}: {exc.message or ''}".strip()
        if status is not None and (status in TRANSIENT_STATUS or status >= 500):
            return ProviderTransientError(
                message,
                provider=provider,
                status_code=status,
                retry_after_s=_gemini_retry_delay(exc),
            )
        return ProviderPermanentError(message, provider=provider, status_code=status)
    if isinstance(exc, (httpx.TimeoutException, httpx2.TimeoutException)):
        return ProviderTransientError("Gemini request timed out", provider=provider)
    if isinstance(exc, (httpx.TransportError, httpx2.TransportError)):
        return ProviderTransientError(
            f"connection to Gemini failed ({type(exc).__name__})", provider=provider
        )
    if isinstance(exc, errors.UnknownApiResponseError):
        return ProviderPermanentError(
            f"Gemini sent an unreadable response: {exc}", provider=provider
        )
    return exc


_RETRY_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _gemini_retry_delay(exc: google.genai.errors.APIError) -> float | None:
    """The wait Google suggests: a ``Retry-After`` header or a ``RetryInfo`` detail."""
    from_header = retry_after_seconds(getattr(exc.response, "headers", None))
    if from_header is not None:
        return from_header
    details = exc.details.get("error", exc.details) if isinstance(exc.details, dict) else None
    entries = details.get("details") if isinstance(details, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and str(entry.get("@type", "")).endswith("RetryInfo"):
            match = _RETRY_DELAY.match(str(entry.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None
