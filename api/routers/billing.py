"""Billing: the tenant's plan and usage, Stripe Checkout and portal, and Stripe's webhooks.

With billing off (no `STRIPE_API_KEY`, the embedded default) `GET /v1/billing` still shows
the plan and usage, while checkout, portal and webhooks are 404: plans are set by CLI.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter, Request, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.service import RPCError

from api.deps import CurrentTenant, Resources, ResourcesDep, SessionDep
from api.errors import ERROR_RESPONSES, ApiError, temporal_unavailable
from reelflow.billing import accounts
from reelflow.billing.config import billing_enabled
from reelflow.billing.plans import UnknownPlan, upgrade_path
from reelflow.billing.usage import (
    LimitUsage,
    Meter,
    QuotaExceeded,
    release,
    reserve,
    usage_summary,
    warning_header,
)
from reelflow.billing.webhooks import (
    MAX_WEBHOOK_BYTES,
    WebhookRejected,
    billing_event,
    deliver,
    verify,
)
from reelflow.core.settings import Settings
from schemas.api import ErrorResponse
from schemas.billing import (
    BillingView,
    CheckoutRequest,
    InvoiceView,
    LimitView,
    PeriodView,
    RedirectUrl,
)
from schemas.billing_tables import BillingInvoice
from schemas.queues import TaskQueues
from schemas.tables import Tenant

if TYPE_CHECKING:
    import stripe

    from reelflow.billing.stripe_client import StripeBilling

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/billing", tags=["billing"], responses=ERROR_RESPONSES)

INVOICES_SHOWN = 24
T = TypeVar("T")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


def _billing_off() -> ApiError:
    return ApiError(404, "not_found", "billing is off on this deployment; plans are set by CLI")


def _stripe(settings: Settings) -> StripeBilling:
    # Imported here: the Stripe SDK costs the API's cold start a third of a second, and
    # only the checkout, portal and webhook routes need it.
    from reelflow.billing.stripe_client import BillingOff, stripe_billing

    try:
        return stripe_billing(settings)
    except BillingOff:
        raise _billing_off() from None


def _stripe_failed(exc: stripe.StripeError) -> ApiError:
    # Stripe's own message may name our account's objects; the request id is enough to trace.
    logger.warning(
        "Stripe refused a billing call: %s (request %s)", type(exc).__name__, exc.request_id
    )
    import stripe

    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        return ApiError(503, "provider_unavailable", "Stripe did not answer; try again shortly")
    return ApiError(502, "provider_error", "Stripe refused the request; try again or contact us")


QUOTA_WARNING_HEADER = "Quota-Warning"
"""Set on responses to metered work once a limit is 80 % used; `GET /v1/billing` lists all."""


def quota_refused(exc: QuotaExceeded) -> ApiError:
    """402 `quota_exceeded`; the message names the limit and the plan to upgrade to."""
    return ApiError(402, "quota_exceeded", exc.message)


def warn(response: Response, warnings: list[str]) -> None:
    """Put limit warnings on a response to metered work."""
    value = warning_header(warnings)
    if value:
        response.headers[QUOTA_WARNING_HEADER] = value


@dataclass
class AiCreditHold:
    """Dollars held from a tenant's AI credits while one answer is being written."""

    resources: Resources
    tenant_id: uuid.UUID
    work_id: str
    warnings: list[str]
    _released: bool = False

    def headers(self) -> dict[str, str]:
        value = warning_header(self.warnings)
        return {QUOTA_WARNING_HEADER: value} if value else {}

    async def release(self) -> None:
        """Give the hold back (the ledger now holds what the answer cost); once."""
        if self._released:
            return
        self._released = True
        async with self.resources.sessions.begin() as session:
            await release(session, meter=Meter.AI_CREDITS_USD, work_id=self.work_id)

    async def released_after(self, events: AsyncIterator[T]) -> AsyncIterator[T]:
        """Pass a stream through, releasing the hold when it ends or is abandoned."""
        try:
            async for item in events:
                yield item
        finally:
            await self.release()


async def ai_credit_hold(resources: Resources, tenant_id: uuid.UUID) -> AiCreditHold:
    """Hold `AI_CREDIT_HOLD_USD` of the tenant's AI credits for one model call.

    Raises:
        ApiError: 402 when the period's AI credits are used up.
    """
    work_id = f"chat-{uuid.uuid4().hex}"
    amount = Decimal(str(resources.settings.ai_credit_hold_usd))
    try:
        async with resources.sessions.begin() as session:
            hold = await reserve(
                session,
                tenant_id=tenant_id,
                meter=Meter.AI_CREDITS_USD,
                amount=amount,
                work_id=work_id,
                now=datetime.now(UTC),
            )
    except QuotaExceeded as exc:
        raise quota_refused(exc) from None
    warning = hold.warning
    return AiCreditHold(resources, tenant_id, work_id, [] if warning is None else [warning])


def _limit_view(limit: LimitUsage) -> LimitView:
    return LimitView(
        name=limit.meter.value,
        unit=limit.unit,
        limit=None if limit.limit is None else float(limit.limit),
        used=float(limit.used),
        reserved=float(limit.reserved),
        fraction=round(limit.fraction, 4),
        warning=limit.warning(),
    )


@router.get("", response_model=BillingView)
async def get_billing(
    tenant: CurrentTenant, session: SessionDep, resources: ResourcesDep, response: Response
) -> BillingView:
    """The plan, the current period, usage against every limit, and recent invoices."""
    summary = await usage_summary(session, tenant.id, datetime.now(UTC))
    warn(response, summary.warnings())
    account = await accounts.account_of(session, tenant.id)
    invoices = (
        await session.scalars(
            select(BillingInvoice)
            .where(BillingInvoice.tenant_id == tenant.id)
            .order_by(BillingInvoice.stripe_created_at.desc(), BillingInvoice.id)
            .limit(INVOICES_SHOWN)
        )
    ).all()
    return BillingView(
        plan=summary.plan.name,
        price_usd_month=float(summary.plan.price_usd_month),
        billing_enabled=billing_enabled(resources.settings),
        subscription_status=account.subscription_status if account else None,
        grace_until=account.grace_until if account else None,
        upgrade_to=upgrade_path(summary.plan.name),
        period=PeriodView(
            name=summary.period.name, start=summary.period.start, end=summary.period.end
        ),
        limits=[_limit_view(limit) for limit in summary.limits],
        warnings=summary.warnings(),
        invoices=[
            InvoiceView(
                id=invoice.id,
                status=invoice.status,
                amount=float(Decimal(invoice.amount_cents) / 100),
                currency=invoice.currency,
                created_at=invoice.stripe_created_at,
                url=invoice.hosted_invoice_url,
            )
            for invoice in invoices
        ],
    )


@router.post("/checkout", response_model=RedirectUrl, responses=_errors(502, 503))
async def create_checkout(
    body: CheckoutRequest, tenant: CurrentTenant, session: SessionDep, resources: ResourcesDep
) -> RedirectUrl:
    """A Stripe Checkout page for a subscription to `plan`; the plan changes once Stripe
    reports the payment (webhook), not when the page is opened."""
    billing = _stripe(resources.settings)
    import stripe

    from reelflow.billing.stripe_client import PlanNotSold

    try:
        billing.price_for(body.plan)
    except UnknownPlan as exc:
        raise ApiError(422, "plan_unknown", str(exc)) from None
    except PlanNotSold as exc:
        raise ApiError(422, "plan_not_sold", str(exc)) from None
    account = await accounts.account_of(session, tenant.id)
    customer_id = account.stripe_customer_id if account else None
    try:
        if customer_id is None:
            customer_id = await billing.create_customer(tenant_id=tenant.id, name=tenant.name)
            await accounts.link_customer(session, tenant.id, customer_id)
            await session.commit()
        url = await billing.checkout_url(
            tenant_id=tenant.id,
            customer_id=customer_id,
            plan=body.plan,
            request_key=uuid.uuid4().hex,
        )
    except stripe.StripeError as exc:
        raise _stripe_failed(exc) from None
    return RedirectUrl(url=url)


@router.post("/portal", response_model=RedirectUrl, responses=_errors(409, 502, 503))
async def create_portal(
    tenant: CurrentTenant, session: SessionDep, resources: ResourcesDep
) -> RedirectUrl:
    """Stripe's customer portal: change plan or card, see invoices, cancel."""
    billing = _stripe(resources.settings)
    import stripe

    account = await accounts.account_of(session, tenant.id)
    if account is None or account.stripe_customer_id is None:
        raise ApiError(
            409,
            "no_billing_account",
            "this tenant has no Stripe customer yet; subscribe with POST /v1/billing/checkout",
        )
    try:
        return RedirectUrl(url=await billing.portal_url(customer_id=account.stripe_customer_id))
    except stripe.StripeError as exc:
        raise _stripe_failed(exc) from None


async def _read_capped(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
        raise _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_WEBHOOK_BYTES:
            raise _too_large()
    return bytes(body)


def _too_large() -> ApiError:
    return ApiError(
        413, "payload_too_large", f"a webhook body is at most {MAX_WEBHOOK_BYTES} bytes"
    )


async def _tenant_of(
    session: AsyncSession, hint: str | None, customer_id: str | None
) -> uuid.UUID | None:
    if hint is not None:
        try:
            tenant_id = uuid.UUID(hint)
        except ValueError:
            tenant_id = None
        if tenant_id is not None and await session.get(Tenant, tenant_id) is not None:
            return tenant_id
    if customer_id is not None:
        found: uuid.UUID | None = await accounts.tenant_for_customer(session, customer_id)
        return found
    return None


@router.post(
    "/webhooks",
    responses=_errors(400, 413, 503),
    summary="Stripe's webhook endpoint (signed by Stripe, no API key)",
)
async def stripe_webhook(request: Request, resources: ResourcesDep) -> dict[str, Any]:
    """Verify `Stripe-Signature`, then hand the event to the tenant's billing workflow.

    400 for a missing or wrong signature or a timestamp older than 300 s; 413 past 1 MB;
    200 with `ignored` for event types billing does not use or customers it does not know
    (Stripe would otherwise retry them for days).
    """
    settings = resources.settings
    secret = settings.stripe_webhook_secret
    if not billing_enabled(settings) or secret is None or not secret.get_secret_value():
        raise _billing_off()
    payload = await _read_capped(request)
    try:
        received = verify(
            payload, request.headers.get("stripe-signature"), secret.get_secret_value()
        )
    except WebhookRejected as exc:
        raise ApiError(400, "invalid_signature", str(exc)) from None
    if not received.handled:
        return {"received": True, "ignored": f"event type {received.type} is not used"}
    async with resources.sessions() as session:
        tenant_id = await _tenant_of(session, received.tenant_hint, received.customer_id)
    if tenant_id is None:
        logger.warning("Stripe event %s names no tenant of ours; ignored", received.event_id)
        return {"received": True, "ignored": "no tenant has this customer"}
    event = billing_event(received, str(tenant_id), _stripe(settings).plan_for_price)
    try:
        await deliver(
            resources.temporal,
            event,
            task_queue=TaskQueues.for_prefix(settings.task_queue_prefix).workflows,
        )
    except RPCError:
        # Stripe retries a non-2xx delivery, and applying is idempotent: nothing is lost.
        raise temporal_unavailable() from None
    return {"received": True}
