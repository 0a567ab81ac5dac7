"""The billing workflow's activities as it calls them (see `schemas/contracts.py`)."""

from __future__ import annotations

from typing import Any

from schemas.billing import (
    ApplyBillingEventInput,
    BillingState,
    BillingWorkflowInput,
    ExpireGraceInput,
)
from schemas.contracts import (
    DATABASE_DEADLINE,
    DATABASE_RETRY,
    DATABASE_TIMEOUT,
    ActivityContract,
    Pool,
    WorkflowContract,
)

BILLING_WORKFLOW = WorkflowContract(
    name="BillingWorkflow",
    input=BillingWorkflowInput,
    output=BillingState,
    id_prefix="billing-",
    pipeline="billing",
)

APPLY_BILLING_EVENT = ActivityContract(
    name="apply_billing_event",
    input=ApplyBillingEventInput,
    output=BillingState,
    pool=Pool.PROVIDERS,
    start_to_close=DATABASE_TIMEOUT,
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)
"""One Stripe event into the tenant's billing rows, once (the event id is the key)."""

EXPIRE_GRACE = ActivityContract(
    name="expire_billing_grace",
    input=ExpireGraceInput,
    output=BillingState,
    pool=Pool.PROVIDERS,
    start_to_close=DATABASE_TIMEOUT,
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)
"""Move a tenant whose grace period ended with a payment still failed to Free."""

BILLING_ACTIVITIES: tuple[ActivityContract[Any, Any], ...] = (APPLY_BILLING_EVENT, EXPIRE_GRACE)
"""Every billing activity; the worker pools register each on its contract's pool."""
