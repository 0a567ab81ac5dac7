"""Billing activities: apply a Stripe event, end a grace period (database only)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

from temporalio import activity

from reelflow.billing import accounts
from reelflow.core.db import SessionFactory
from reelflow.core.settings import Settings
from schemas.billing import (
    ApplyBillingEventInput,
    BillingEventOutcome,
    BillingState,
    ExpireGraceInput,
)
from schemas.billing_activities import APPLY_BILLING_EVENT, EXPIRE_GRACE

logger = logging.getLogger(__name__)


def _asked_at() -> datetime:
    """When the workflow asked for this step, by the Temporal server's clock.

    The grace period's end is the workflow's timer; judging it by the same clock means
    the step that timer schedules always sees the grace period as over.
    """
    scheduled = activity.info().current_attempt_scheduled_time
    return max(scheduled, datetime.now(UTC)) if scheduled.tzinfo else datetime.now(UTC)


class BillingActivities:
    """Built once per worker; the providers pool runs them (short database transactions)."""

    def __init__(self, *, sessions: SessionFactory, settings: Settings) -> None:
        self._sessions = sessions
        self._grace = timedelta(days=settings.billing_grace_days)

    @activity.defn(name=APPLY_BILLING_EVENT.name)
    async def apply_billing_event(self, input: ApplyBillingEventInput) -> BillingState:
        """Apply the event once; a tenant deleted since the event is acknowledged and skipped."""
        try:
            async with self._sessions.begin() as session:
                return await accounts.apply_event(
                    session, input.event, now=_asked_at(), grace=self._grace
                )
        except accounts.TenantNotFound:
            logger.warning(
                "billing event %s names tenant %s, which no longer exists",
                input.event.event_id,
                input.event.tenant_id,
            )
            return BillingState(outcome=BillingEventOutcome.STALE, plan="free")

    @activity.defn(name=EXPIRE_GRACE.name)
    async def expire_billing_grace(self, input: ExpireGraceInput) -> BillingState:
        """Move the tenant to Free if its grace period ended with the payment still failed."""
        try:
            async with self._sessions.begin() as session:
                return await accounts.expire_grace(
                    session, uuid.UUID(input.tenant_id), now=_asked_at()
                )
        except accounts.TenantNotFound:
            return BillingState(outcome=BillingEventOutcome.STALE, plan="free")
