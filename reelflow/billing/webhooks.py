"""Stripe webhooks: verify the signature, then reduce the event to what billing needs.

The signature is checked by the SDK (`stripe.WebhookSignature.verify_header`: HMAC-SHA256 of
``"{t}.{body}"`` with the endpoint's secret, timestamps older than 300 s refused). Only
then is the body read, as plain JSON: the SDK's objects are not dicts since v13, and the
fields billing needs are few.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from reelflow.billing.plans import UnknownPlan, canonical_plan_name
from schemas.billing import (
    STRIPE_EVENT_SIGNAL,
    BillingEvent,
    BillingWorkflowInput,
    StripeEventType,
    billing_workflow_id,
)
from schemas.billing_activities import BILLING_WORKFLOW

SIGNATURE_TOLERANCE_S = 300
MAX_WEBHOOK_BYTES = 1024 * 1024
"""Stripe's events are a few kilobytes; a megabyte is far past any real one."""


class WebhookRejected(ValueError):
    """The delivery is not a genuine, recent Stripe event (HTTP 400)."""


@dataclass(frozen=True)
class ReceivedEvent:
    """A verified event, before its tenant is known.

    Attributes:
        tenant_hint: The tenant id the event carries itself (checkout's client reference or
            our metadata), if any; otherwise the customer id finds it.
    """

    event_id: str
    type: str
    created: datetime
    data: Mapping[str, Any]
    tenant_hint: str | None
    customer_id: str | None

    @property
    def handled(self) -> bool:
        return self.type in {t.value for t in StripeEventType}


def verify(payload: bytes, signature: str | None, secret: str) -> ReceivedEvent:
    """Check the `Stripe-Signature` of `payload` and read the event.

    Raises:
        WebhookRejected: No or a wrong signature, a timestamp older than the tolerance, or
            a body that is not a Stripe event.
    """
    # Imported here: the SDK costs the API's cold start a third of a second.
    import stripe

    try:
        stripe.WebhookSignature.verify_header(
            payload, signature or "", secret, tolerance=SIGNATURE_TOLERANCE_S
        )
        body = json.loads(payload)
    except stripe.SignatureVerificationError as exc:
        raise WebhookRejected(f"bad Stripe-Signature: {exc.user_message or exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected("the body is not a Stripe event") from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise WebhookRejected("the body is not a Stripe event")
    obj = body["data"].get("object")
    event_id, kind, created = body.get("id"), body.get("type"), body.get("created")
    if (
        not isinstance(obj, dict)
        or not isinstance(event_id, str)
        or not event_id
        or not isinstance(kind, str)
        or not isinstance(created, int)
    ):
        raise WebhookRejected("the body is not a Stripe event (id, type, created, data.object)")
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    hint = obj.get("client_reference_id") or (metadata or {}).get("tenant_id")
    customer = obj.get("customer")
    if kind.startswith("customer.") and not kind.startswith("customer.subscription."):
        customer = obj.get("id")
    return ReceivedEvent(
        event_id=event_id[:255],
        type=kind,
        created=datetime.fromtimestamp(created, UTC),
        data=obj,
        tenant_hint=hint if isinstance(hint, str) else None,
        customer_id=customer if isinstance(customer, str) else None,
    )


def _timestamp(value: object) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _plan_from_metadata(obj: Mapping[str, Any]) -> str | None:
    metadata = obj.get("metadata")
    raw = metadata.get("plan") if isinstance(metadata, dict) else None
    try:
        return canonical_plan_name(raw) if isinstance(raw, str) else None
    except UnknownPlan:
        return None


def _first_item(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    items = obj.get("items")
    data = items.get("data") if isinstance(items, dict) else None
    first = data[0] if isinstance(data, list) and data else None
    return first if isinstance(first, dict) else {}


def billing_event(
    received: ReceivedEvent, tenant_id: str, plan_for_price: Callable[[str | None], str | None]
) -> BillingEvent:
    """The event as the billing workflow applies it.

    Raises:
        ValueError: The event is not of a handled type.
    """
    kind = StripeEventType(received.type)
    obj = received.data
    event = BillingEvent(
        event_id=received.event_id,
        type=kind,
        created=received.created,
        tenant_id=tenant_id,
        customer_id=received.customer_id,
    )
    if kind is StripeEventType.CHECKOUT_COMPLETED:
        return event.model_copy(
            update={
                "subscription_id": _str(obj.get("subscription")),
                "plan": _plan_from_metadata(obj),
            }
        )
    if kind in (StripeEventType.INVOICE_PAID, StripeEventType.INVOICE_PAYMENT_FAILED):
        amount = obj.get("amount_paid") if kind is StripeEventType.INVOICE_PAID else None
        if not isinstance(amount, int):
            amount = obj.get("amount_due")
        return event.model_copy(
            update={
                "invoice_id": _str(obj.get("id")),
                "invoice_amount_cents": amount if isinstance(amount, int) else 0,
                "invoice_currency": (_str(obj.get("currency")) or "usd")[:3],
                "invoice_url": _str(obj.get("hosted_invoice_url")),
            }
        )
    item = _first_item(obj)
    price = item.get("price")
    price_id = _str(price.get("id")) if isinstance(price, dict) else None
    anchor = _timestamp(obj.get("billing_cycle_anchor"))
    # Since API version 2025-03-31 the period lives on the subscription's items.
    period_end = _timestamp(item.get("current_period_end")) or _timestamp(
        obj.get("current_period_end")
    )
    return event.model_copy(
        update={
            "subscription_id": _str(obj.get("id")),
            "subscription_status": _str(obj.get("status")),
            "plan": plan_for_price(price_id) or _plan_from_metadata(obj),
            "anchor_day": anchor.day if anchor is not None else None,
            "current_period_end": period_end,
        }
    )


async def deliver(client: Client, event: BillingEvent, *, task_queue: str) -> str:
    """Hand the event to its tenant's billing workflow, starting one if none runs.

    Returns:
        The workflow id, ``billing-<tenant id>``.
    """
    workflow_id = billing_workflow_id(event.tenant_id)
    await client.start_workflow(
        BILLING_WORKFLOW.name,
        BillingWorkflowInput(tenant_id=event.tenant_id),
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        start_signal=STRIPE_EVENT_SIGNAL,
        start_signal_args=[event],
    )
    return workflow_id
