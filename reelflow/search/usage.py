"""The ledger row of a search's query embedding, priced like chat's."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.core.ledger import Usage, record_usage
from reelflow.core.pricing import priced_model
from reelflow.search.embedding import Embedder


def search_ledger_key(request_id: uuid.UUID) -> str:
    """The idempotency key of one search request's query embedding."""
    return f"search/{request_id}/embedding"


async def record_search_embedding(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    request_id: uuid.UUID,
    embedder: Embedder,
    tokens: int,
    compute_seconds: float,
) -> Decimal:
    """Add the query embedding of one search to the ledger, inside the caller's transaction.

    Local models cost $0 and record the compute seconds; a provider's tokens are priced from
    `reelflow.core.pricing`. Returns the dollars recorded.
    """
    return await record_usage(
        session,
        Usage(
            idempotency_key=search_ledger_key(request_id),
            tenant_id=tenant_id,
            step="search.embedding",
            provider=embedder.provider,
            operation="embedding",
            model=priced_model(embedder.model_name),
            units=Decimal(tokens),
            compute_seconds=round(compute_seconds, 4) if embedder.provider == "local" else 0.0,
        ),
    )
