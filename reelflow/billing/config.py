"""Whether billing runs through Stripe here; free of the SDK, so the API can ask cheaply."""

from __future__ import annotations

from reelflow.core.settings import Settings


def billing_enabled(settings: Settings) -> bool:
    """Stripe billing is on exactly when a Stripe secret key is configured."""
    key = settings.stripe_api_key
    return key is not None and bool(key.get_secret_value())
