"""Insights of a video and of a series (seed 000's JSON), cached and rate limited.

`GET /v1/videos/{id}/insights` and `GET /v1/collections/{id}/insights` answer from the cache
while the metrics are unchanged and younger than `INSIGHTS_CACHE_TTL_S` (`cached: true`);
otherwise, or with `?refresh=true`, the configured analyst makes fresh ones, at most
`INSIGHTS_FRESH_PER_HOUR` per tenant per hour: past that, 429 with `Retry-After`. A video
without metrics is a 200 whose `insights` is null and whose `message` says what to do.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from api.deps import CurrentTenant, ResourcesDep
from api.errors import ERROR_RESPONSES, ApiError, not_found
from reelflow.core.errors import DomainError
from reelflow.core.provider_errors import ProviderPermanentError, ProviderTransientError
from reelflow.improve.analysts import InsightAnalyst, build_analyst
from reelflow.improve.insights import InsightsRateLimited, series_insights, video_insights
from schemas.api import ErrorResponse
from schemas.failures import FailureCode
from schemas.improve import InsightsAnswer

router = APIRouter(prefix="/v1", tags=["insights"], responses=ERROR_RESPONSES)

_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (429, 502, 503)
}
_REFRESH = Query(
    description="Make fresh insights even when cached ones are valid (counts toward the "
    "hourly limit)."
)


def get_insight_analyst(request: Request, resources: ResourcesDep) -> InsightAnalyst:
    """The process's analyst, built on first use (its SDK client is kept for later requests)."""
    analyst: InsightAnalyst | None = getattr(request.app.state, "insight_analyst", None)
    if analyst is None:
        analyst = build_analyst(resources.settings)
        request.app.state.insight_analyst = analyst
    return analyst


AnalystDep = Annotated[InsightAnalyst, Depends(get_insight_analyst)]


def _path_id(raw: str, what: str) -> uuid.UUID:
    """A path id that is not a UUID cannot name anything: 404, like any unknown id."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise not_found(what, raw) from None


@contextmanager
def _insight_errors(what: str, ident: uuid.UUID) -> Iterator[None]:
    """The service's refusals and the analyst's failures as API errors."""
    try:
        yield
    except InsightsRateLimited as exc:
        raise ApiError(
            429,
            "rate_limited",
            exc.message,
            headers={"Retry-After": str(exc.retry_after_seconds)},
        ) from None
    except ProviderTransientError as exc:
        headers = {"Retry-After": str(math.ceil(exc.retry_after_s))} if exc.retry_after_s else None
        raise ApiError(
            503,
            "provider_unavailable",
            "the insights provider is busy or unreachable; try again shortly",
            headers=headers,
        ) from None
    except ProviderPermanentError:
        raise ApiError(
            502, "provider_rejected", "the insights provider refused the request"
        ) from None
    except DomainError as exc:
        if exc.code in (FailureCode.VIDEO_NOT_FOUND, FailureCode.COLLECTION_NOT_FOUND):
            raise not_found(what, ident) from None
        if exc.code == FailureCode.CONTENT_BLOCKED:
            raise ApiError(422, "content_blocked", exc.message) from None
        if exc.code == FailureCode.ANALYSIS_INVALID:
            raise ApiError(502, "analysis_invalid", exc.message) from None
        raise


@router.get("/videos/{video_id}/insights", response_model=InsightsAnswer, responses=_RESPONSES)
async def get_video_insights(
    video_id: str,
    tenant: CurrentTenant,
    resources: ResourcesDep,
    analyst: AnalystDep,
    refresh: Annotated[bool, _REFRESH] = False,
) -> InsightsAnswer:
    """What worked and what did not in a video's performance (strengths, weaknesses, traffic,
    patterns, recommendations, next-video suggestions)."""
    ident = _path_id(video_id, "video")
    with _insight_errors("video", ident):
        return await video_insights(
            resources.sessions,
            tenant_id=tenant.id,
            video_id=ident,
            refresh=refresh,
            analyst=analyst,
            settings=resources.settings,
        )


@router.get(
    "/collections/{collection_id}/insights", response_model=InsightsAnswer, responses=_RESPONSES
)
async def get_series_insights(
    collection_id: str,
    tenant: CurrentTenant,
    resources: ResourcesDep,
    analyst: AnalystDep,
    refresh: Annotated[bool, _REFRESH] = False,
) -> InsightsAnswer:
    """Insights for a series (the videos of a collection): best and worst episodes, cadence,
    hashtags, and what the next episodes should do."""
    ident = _path_id(collection_id, "collection")
    with _insight_errors("collection", ident):
        return await series_insights(
            resources.sessions,
            tenant_id=tenant.id,
            collection_id=ident,
            refresh=refresh,
            analyst=analyst,
            settings=resources.settings,
        )
