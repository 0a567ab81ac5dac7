"""Liveness of the API and the services it cannot work without."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import ResourcesDep
from schemas.api import Health

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

_TIMEOUT_S = 3.0


async def _database_ok(resources: ResourcesDep) -> bool:
    try:
        async with asyncio.timeout(_TIMEOUT_S), resources.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:  # any failure means "not answering"; the reason goes to the log
        logger.warning("health: database check failed", exc_info=True)
        return False
    return True


async def _temporal_ok(resources: ResourcesDep) -> bool:
    try:
        async with asyncio.timeout(_TIMEOUT_S):
            return await resources.temporal.service_client.check_health(
                timeout=timedelta(seconds=_TIMEOUT_S)
            )
    except Exception:  # any failure means "not answering"; the reason goes to the log
        logger.warning("health: temporal check failed", exc_info=True)
        return False


def _word(ok: bool) -> Literal["ok", "error"]:
    return "ok" if ok else "error"


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(resources: ResourcesDep) -> JSONResponse:
    """Report whether the database and Temporal answer (503 when either does not)."""
    database, temporal = await asyncio.gather(_database_ok(resources), _temporal_ok(resources))
    health = Health(
        status="ok" if database and temporal else "degraded",
        database=_word(database),
        temporal=_word(temporal),
    )
    return JSONResponse(health.model_dump(), status_code=200 if health.status == "ok" else 503)
