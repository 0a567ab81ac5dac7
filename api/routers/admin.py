"""Operator routes, behind the platform's admin key (`api/admin_auth.py`), never a tenant key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from api.admin_auth import AdminDep
from api.deps import SessionDep
from api.errors import ApiError
from reelflow.billing.admin import billing_report
from schemas.api import ErrorResponse, UtcTimestamp
from schemas.billing import AdminBillingReport

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    responses={status: {"model": ErrorResponse} for status in (401, 403, 422)},
)

DEFAULT_WINDOW = timedelta(days=30)


@router.get("/billing", response_model=AdminBillingReport)
async def admin_billing(
    _: AdminDep,
    session: SessionDep,
    since: Annotated[
        UtcTimestamp | None, Query(description="Start, inclusive; default 30 days ago.")
    ] = None,
    until: Annotated[UtcTimestamp | None, Query(description="End, exclusive; default now.")] = None,
    top: Annotated[int, Query(ge=1, le=100)] = 10,
) -> AdminBillingReport:
    """MRR, churn over [since, until), plan distribution, top tenants by usage, failed payments."""
    end = until or datetime.now(UTC)
    start = since or end - DEFAULT_WINDOW
    if start >= end:
        raise ApiError(422, "invalid_request", "since: must be before until")
    return await billing_report(session, since=start, until=end, top=top)
