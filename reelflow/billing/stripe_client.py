"""Stripe through its official SDK: customers, Checkout Sessions and portal sessions.

Every POST carries an idempotency key of our own (Stripe stores the first answer per key
for 24 h), so a retried request creates one customer, not two.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import stripe

from reelflow.billing.config import billing_enabled
from reelflow.billing.plans import PAID_PLANS, UnknownPlan, canonical_plan_name
from reelflow.core.settings import Settings

logger = logging.getLogger(__name__)


class BillingOff(RuntimeError):
    """Billing is not configured here (no Stripe key): plans are assigned with the CLI."""


class PlanNotSold(ValueError):
    """The plan exists but cannot be bought through Checkout (Free, or no price configured)."""


@dataclass(frozen=True)
class StripeBilling:
    """The calls billing makes to Stripe, with the deployment's prices and return URLs."""

    client: stripe.StripeClient
    prices: Mapping[str, str]
    success_url: str
    return_url: str

    def price_for(self, plan: str) -> str:
        """The Stripe Price of a paid plan.

        Raises:
            UnknownPlan: Not a plan.
            PlanNotSold: Free, or a plan without a configured price.
        """
        name = canonical_plan_name(plan)
        price = self.prices.get(name)
        if name not in PAID_PLANS or not price:
            sold = ", ".join(p for p in PAID_PLANS if self.prices.get(p)) or "none"
            raise PlanNotSold(f"plan {name!r} cannot be bought here; plans on sale: {sold}")
        return price

    def plan_for_price(self, price_id: str | None) -> str | None:
        """The plan a Stripe Price is for, if it is one of ours."""
        for plan, price in self.prices.items():
            if price == price_id:
                return plan
        return None

    async def create_customer(self, *, tenant_id: uuid.UUID, name: str) -> str:
        """A Stripe customer for the tenant; the same tenant gets the same one for 24 h."""
        customer = await self.client.v1.customers.create_async(
            params={"name": name, "metadata": {"tenant_id": str(tenant_id)}},
            options={"idempotency_key": f"reelflow-customer-{tenant_id}"},
        )
        return str(customer.id)

    async def checkout_url(
        self, *, tenant_id: uuid.UUID, customer_id: str, plan: str, request_key: str
    ) -> str:
        """A Checkout Session for a subscription to `plan`; the customer pays on Stripe's page."""
        name = canonical_plan_name(plan)
        metadata = {"tenant_id": str(tenant_id), "plan": name}
        session = await self.client.v1.checkout.sessions.create_async(
            params={
                "mode": "subscription",
                "customer": customer_id,
                "client_reference_id": str(tenant_id),
                "line_items": [{"price": self.price_for(name), "quantity": 1}],
                "success_url": self.success_url,
                "cancel_url": self.return_url,
                "metadata": metadata,
                "subscription_data": {"metadata": metadata},
            },
            options={"idempotency_key": f"reelflow-checkout-{request_key}"},
        )
        if not session.url:
            raise stripe.APIError("Stripe returned a Checkout Session without a URL")
        return str(session.url)

    async def portal_url(self, *, customer_id: str) -> str:
        """A customer portal session: change plan, card or cancel on Stripe's page."""
        portal = await self.client.v1.billing_portal.sessions.create_async(
            params={"customer": customer_id, "return_url": self.return_url}
        )
        return str(portal.url)


def _prices(configured: Mapping[str, str]) -> dict[str, str]:
    """Prices by plan; a name that is no plan is left out (and logged), not fatal."""
    prices: dict[str, str] = {}
    for name, price in configured.items():
        try:
            prices[canonical_plan_name(name)] = price
        except UnknownPlan:
            logger.warning("STRIPE_PRICES names %r, which is not a plan; ignored", name)
    return prices


def stripe_billing(settings: Settings) -> StripeBilling:
    """The deployment's Stripe client.

    Raises:
        BillingOff: No Stripe key is configured.
    """
    if not billing_enabled(settings) or settings.stripe_api_key is None:
        raise BillingOff("billing is off on this deployment; plans are set with the CLI")
    base = settings.stripe_api_base.rstrip("/") or None
    client = stripe.StripeClient(
        settings.stripe_api_key.get_secret_value(),
        base_addresses={"api": base} if base else None,
        max_network_retries=2,
    )
    site = settings.api_base_url.rstrip("/")
    return StripeBilling(
        client=client,
        prices=_prices(settings.stripe_prices),
        success_url=settings.billing_success_url or f"{site}/billing/done",
        return_url=settings.billing_return_url or site,
    )
