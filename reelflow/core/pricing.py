"""The one price table. Every ledger row records the version it was priced with.

Change a price by adding a new version: rows already written keep the version they used,
so history is never re-priced silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

PRICES_VERSION = "2026-11-01"


@dataclass(frozen=True)
class Price:
    """Price of one unit of a provider operation."""

    provider: str
    operation: str
    model: str
    unit: str
    unit_price_usd: Decimal


_PRICES: tuple[Price, ...] = (
    # seed 004: Whisper $0.006 / minute
    Price("openai", "transcription", "whisper-1", "minute", Decimal("0.006")),
    # seed 004: text-embedding-3-small $0.02 / 1M tokens
    Price("openai", "embedding", "text-embedding-3-small", "token", Decimal("0.00000002")),
    Price("openai", "embedding", "text-embedding-3-large", "token", Decimal("0.00000013")),
    # seed 004: Claude Haiku $1 / $5 per 1M tokens (the current Haiku; 3.5 is retired)
    Price("anthropic", "chat_input", "claude-haiku-4-5", "token", Decimal("0.000001")),
    Price("anthropic", "chat_output", "claude-haiku-4-5", "token", Decimal("0.000005")),
    # OpenAI's list price for gpt-4o-mini: $0.15 / $0.60 per 1M tokens (the adapter default).
    Price("openai", "chat_input", "gpt-4o-mini", "token", Decimal("0.00000015")),
    Price("openai", "chat_output", "gpt-4o-mini", "token", Decimal("0.0000006")),
    # Gemini 2.5 Flash: $0.30 per 1M input tokens (text, image, video; audio not verified)
    # and $2.50 per 1M output tokens, thinking tokens included (research notes, section 4).
    # Video analysis bills the uploaded video's tokens as input.
    Price("gemini", "analysis_input", "gemini-2.5-flash", "token", Decimal("0.0000003")),
    Price("gemini", "analysis_output", "gemini-2.5-flash", "token", Decimal("0.0000025")),
    # The same model adapting scripts (the discover adapter records chat_* operations).
    Price("gemini", "chat_input", "gemini-2.5-flash", "token", Decimal("0.0000003")),
    Price("gemini", "chat_output", "gemini-2.5-flash", "token", Decimal("0.0000025")),
    # Video generation, per generated second; the model column is `<model>-<resolution>`
    # (`generation_price_model`). Mirrors the capability table in
    # `reelflow.generation.capabilities`, which estimates with the same numbers (a test
    # keeps the two equal); see its docstring for how seeds 001 and 003 give them.
    Price("sora", "generation", "sora-2-720p", "second", Decimal("0.10")),
    Price("sora", "generation", "sora-2-pro-720p", "second", Decimal("0.30")),
    Price("sora", "generation", "sora-2-pro-1080p", "second", Decimal("0.50")),
    Price("veo", "generation", "veo-3.0-generate-001-720p", "second", Decimal("0.05")),
    Price("veo", "generation", "veo-3.0-generate-001-1080p", "second", Decimal("0.10")),
    Price("runway", "generation", "gen4_turbo-720p", "second", Decimal("0.05")),
    Price("runway", "generation", "gen4_turbo-1080p", "second", Decimal("0.30")),
    # Apify actor runs are billed by Apify (per result for these actors, compute units
    # otherwise); the run reports what it cost as `usageTotalUsd`, so the unit is a dollar.
    Price("apify", "actor_run", "apify/instagram-scraper", "usd", Decimal("1")),
    Price("apify", "actor_run", "clockworks/tiktok-scraper", "usd", Decimal("1")),
)

_UNITS = {
    "transcription": "minute",
    "embedding": "token",
    "chat_input": "token",
    "chat_output": "token",
    "analysis_input": "token",
    "analysis_output": "token",
    "generation": "second",
    "actor_run": "usd",
}

_BY_KEY = {(p.provider, p.operation, p.model): p for p in _PRICES}


def priced_model(model_name: str) -> str:
    """The name prices use for a model: `openai/text-embedding-3-small` → `text-embedding-3-small`.

    Our model names carry the provider (`local/…`, `openai/…`) so stored vectors say where
    they came from; the price table names the provider in its own column.
    """
    return model_name.split("/", 1)[-1]


class UnknownPrice(LookupError):
    """A paid call has no price: refuse rather than record it as free."""

    code = "price_unknown"


def price_for(provider: str, operation: str, model: str) -> Price:
    """The price of a provider call; local providers are free by definition.

    Raises:
        UnknownPrice: a non-local provider/operation/model with no price in the table.
    """
    if provider == "local":
        return Price("local", operation, model, _UNITS.get(operation, "unit"), Decimal(0))
    try:
        return _BY_KEY[(provider, operation, model)]
    except KeyError:
        raise UnknownPrice(f"no price for {provider}/{operation}/{model}") from None


def generation_price_model(model: str, resolution: str) -> str:
    """The price table's model key of a generation: ``("sora-2", "720p")`` → ``"sora-2-720p"``."""
    return f"{model}-{resolution}"


def cost_of(price: Price, units: Decimal) -> Decimal:
    """Dollars for `units` of `price`, rounded to 8 decimals like the ledger column."""
    return (price.unit_price_usd * units).quantize(Decimal("0.00000001"))
