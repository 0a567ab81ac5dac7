"""The one OpenAI client factory: transcription, embeddings and Sora share its settings."""

from __future__ import annotations

import openai

from reelflow.core.settings import Settings, SettingsError

_OPENAI_TIMEOUT = openai.Timeout(180.0, connect=10.0)


def build_openai_client(settings: Settings) -> openai.OpenAI:
    """The one OpenAI client a worker process shares between its provider objects.

    SDK retries are off: a failed call surfaces at once as a classified ProviderError and
    Temporal's retry policy (visible in history, with backoff and limits) does the retrying.

    Raises:
        SettingsError: ``OPENAI_API_KEY`` is not set.
    """
    if settings.openai_api_key is None:
        raise SettingsError("OPENAI_API_KEY is required to use the OpenAI provider")
    return openai.OpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        max_retries=0,
        timeout=_OPENAI_TIMEOUT,
    )
