"""The cost ledger: one row per paid (or local) call, exactly once per idempotency key."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.core.pricing import PRICES_VERSION, cost_of, price_for
from schemas.tables import LedgerEntry

LEDGER_CHANNEL = "reelflow_ledger"
"""Postgres NOTIFY channel; `GET /v1/usage/stream` listens on it."""


@dataclass(frozen=True)
class Usage:
    """What one call consumed, before pricing."""

    idempotency_key: str
    tenant_id: uuid.UUID
    step: str
    provider: str
    operation: str
    model: str
    units: Decimal
    run_id: str | None = None
    video_id: uuid.UUID | None = None
    compute_seconds: float = 0.0


async def record_usage(session: AsyncSession, usage: Usage) -> Decimal:
    """Price `usage` and add it to the ledger inside the caller's transaction.

    The insert is a no-op when the key exists, so a retried activity that repeats the
    same call is counted once; the caller's data write and this row commit together.

    Returns:
        The dollars recorded under this key (the earlier row's when it already existed).
    """
    price = price_for(usage.provider, usage.operation, usage.model)
    cost = cost_of(price, usage.units)
    inserted = await session.execute(
        insert(LedgerEntry)
        .values(
            idempotency_key=usage.idempotency_key,
            tenant_id=usage.tenant_id,
            run_id=usage.run_id,
            step=usage.step,
            video_id=usage.video_id,
            provider=usage.provider,
            operation=usage.operation,
            model=usage.model,
            units=usage.units,
            unit=price.unit,
            unit_price_usd=price.unit_price_usd,
            price_version=PRICES_VERSION if usage.provider != "local" else "local",
            cost_usd=cost,
            compute_seconds=usage.compute_seconds,
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(LedgerEntry.id, LedgerEntry.created_at)
    )
    row = inserted.first()
    if row is None:
        existing = await session.scalar(
            select(LedgerEntry.cost_usd).where(LedgerEntry.idempotency_key == usage.idempotency_key)
        )
        return existing if existing is not None else cost
    event = {
        "id": row.id,
        "tenant_id": str(usage.tenant_id),
        "run_id": usage.run_id,
        "step": usage.step,
        "video_id": str(usage.video_id) if usage.video_id else None,
        "provider": usage.provider,
        "operation": usage.operation,
        "model": usage.model,
        "units": str(usage.units),
        "unit": price.unit,
        "cost_usd": str(cost),
        "compute_seconds": usage.compute_seconds,
        "created_at": row.created_at.isoformat(),
    }
    # Delivered on commit only, so listeners never see a row that was rolled back.
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": LEDGER_CHANNEL, "payload": json.dumps(event)},
    )
    return cost
