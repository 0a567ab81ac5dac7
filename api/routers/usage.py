"""What a tenant spent: ledger totals grouped by day, provider and operation, and a live feed."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from sqlalchemy import ColumnElement, func, select
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from api.deps import CurrentTenant, ResourcesDep, SessionDep
from api.errors import ERROR_RESPONSES, ApiError
from api.routers.billing import warn
from reelflow.billing.usage import usage_summary
from reelflow.core.ledger import LEDGER_CHANNEL
from schemas.api import UsageGroup, UsageGroupBy, UsageReport, UtcTimestamp
from schemas.tables import LedgerEntry

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/usage", tags=["usage"], responses=ERROR_RESPONSES)

DEFAULT_WINDOW = timedelta(days=30)


def parse_group_by(raw: str) -> list[UsageGroupBy]:
    """`day,provider` → the dimensions in request order, each once; 422 for unknown ones."""
    dimensions: list[UsageGroupBy] = []
    for part in raw.split(","):
        name = part.strip().lower()
        if not name:
            continue
        try:
            dimension = UsageGroupBy(name)
        except ValueError:
            allowed = ", ".join(d.value for d in UsageGroupBy)
            raise ApiError(
                422, "invalid_request", f"group_by: unknown dimension {name!r}; use {allowed}"
            ) from None
        if dimension not in dimensions:
            dimensions.append(dimension)
    if not dimensions:
        raise ApiError(422, "invalid_request", "group_by: name at least one dimension")
    return dimensions


@router.get("", response_model=UsageReport)
async def get_usage(
    response: Response,
    tenant: CurrentTenant,
    session: SessionDep,
    since: Annotated[
        UtcTimestamp | None, Query(description="Start, inclusive; without an offset, UTC.")
    ] = None,
    until: Annotated[
        UtcTimestamp | None, Query(description="End, exclusive; without an offset, UTC.")
    ] = None,
    group_by: Annotated[
        str,
        Query(
            max_length=100,
            description="Comma-separated dimensions: `day`, `provider`, `operation`.",
        ),
    ] = "day",
) -> UsageReport:
    """Sum the tenant's ledger over `[since, until)` (default: the last 30 days), grouped."""
    dimensions = parse_group_by(group_by)
    # Both are UTC and at least 1970 (`UtcTimestamp`), so the default window cannot overflow.
    end = until or datetime.now(UTC)
    start = since or end - DEFAULT_WINDOW
    if start > end:
        raise ApiError(422, "invalid_request", "since: must not be after until")

    columns: dict[UsageGroupBy, ColumnElement[Any]] = {
        UsageGroupBy.DAY: func.to_char(
            func.timezone("UTC", LedgerEntry.created_at), "YYYY-MM-DD"
        ).label("day"),
        UsageGroupBy.PROVIDER: LedgerEntry.provider.label("provider"),
        UsageGroupBy.OPERATION: LedgerEntry.operation.label("operation"),
    }
    keys = [columns[d] for d in dimensions]
    rows = await session.execute(
        select(
            *keys,
            func.coalesce(func.sum(LedgerEntry.units), 0).label("units"),
            func.coalesce(func.sum(LedgerEntry.cost_usd), 0).label("cost_usd"),
            func.count().label("calls"),
        )
        .where(
            LedgerEntry.tenant_id == tenant.id,
            LedgerEntry.created_at >= start,
            LedgerEntry.created_at < end,
        )
        .group_by(*keys)
        .order_by(*keys)
    )
    groups: list[UsageGroup] = []
    total = Decimal(0)
    for row in rows:
        mapping = row._mapping
        total += Decimal(mapping["cost_usd"])
        groups.append(
            UsageGroup(
                day=mapping["day"] if UsageGroupBy.DAY in dimensions else None,
                provider=mapping["provider"] if UsageGroupBy.PROVIDER in dimensions else None,
                operation=mapping["operation"] if UsageGroupBy.OPERATION in dimensions else None,
                units=float(mapping["units"]),
                cost_usd=float(mapping["cost_usd"]),
                calls=int(mapping["calls"]),
            )
        )
    warnings = (await usage_summary(session, tenant.id, datetime.now(UTC))).warnings()
    warn(response, warnings)
    return UsageReport(
        since=start,
        until=end,
        group_by=dimensions,
        total_usd=float(total),
        groups=groups,
        quota_warnings=warnings,
    )


_KEEPALIVE_S = 15


@router.get(
    "/stream",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_usage(tenant: CurrentTenant, resources: ResourcesDep) -> EventSourceResponse:
    """Stream the tenant's new ledger rows as server-sent `usage` events."""
    # psycopg directly: LISTEN needs one dedicated connection, outside the pool. Imported
    # here so the API's start-up does not pay for it before the first database use.
    import psycopg
    from psycopg import sql

    dsn = resources.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    tenant_id = str(tenant.id)
    # Connect before answering 200, so a database outage is a clear error, not a dead feed.
    try:
        connection = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    except psycopg.OperationalError:
        logger.warning("usage stream: cannot connect to the database", exc_info=True)
        raise ApiError(503, "service_unavailable", "the usage feed is unavailable") from None

    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(LEDGER_CHANNEL)))
            yield ServerSentEvent(event="ready", data=json.dumps({"tenant_id": tenant_id}))
            async for notice in connection.notifies():
                try:
                    event = json.loads(notice.payload)
                except json.JSONDecodeError:
                    continue
                # One channel carries every tenant's rows; only the caller's leave here.
                if event.get("tenant_id") == tenant_id:
                    yield ServerSentEvent(
                        event="usage", data=json.dumps(event), id=str(event.get("id"))
                    )
        finally:
            await connection.close()

    # The background task also closes the connection when the client leaves before the
    # generator ever ran (its `finally` would then never execute); closing twice is harmless.
    return EventSourceResponse(
        events(), ping=_KEEPALIVE_S, background=BackgroundTask(connection.close)
    )
