"""Performance charts (SVG, PNG) of a video or a series, and one HTML report page for each.

Every route is scoped by the caller's tenant: another tenant's video or collection is a 404.
Charts and pages carry an ETag computed from the data they are drawn from, before anything
is drawn, so a client that sends it back in `If-None-Match` gets a 304 and no CPU is spent.
They are `private, no-cache`: a shared cache must not hand one tenant's numbers to another,
and a client revalidates (cheaply) instead of showing stale numbers.

Pages are self-contained (inline SVG and styles) and carry no script; the
Content-Security-Policy forbids scripts anyway, so a title that holds markup stays text.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Header
from fastapi.responses import Response

from api.deps import CurrentTenant, SessionDep, SettingsDep
from api.errors import ERROR_RESPONSES, ApiError
from reelflow.core.errors import DomainError
from reelflow.improve import charts, reports

router = APIRouter(tags=["reports"], responses=ERROR_RESPONSES)

CHART_CACHE_CONTROL = "private, no-cache"
CHART_CSP = "default-src 'none'; style-src 'unsafe-inline'"
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_CHART_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The chart",
        "content": {"image/svg+xml": {}, "image/png": {}},
    },
    304: {"description": "Unchanged since the ETag sent in If-None-Match"},
}
_PAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The report page", "content": {"text/html": {}}},
    304: {"description": "Unchanged since the ETag sent in If-None-Match"},
}


def _parse_filename(filename: str, known: dict[str, str]) -> tuple[str, charts.ChartFormat]:
    name, dot, extension = filename.rpartition(".")
    if not dot or extension not in charts.CONTENT_TYPES:
        raise ApiError(
            404,
            "not_found",
            f"no chart {filename[:60]!r}: ask for <name>.svg or <name>.png, "
            f"name one of {', '.join(known)}",
        )
    if name not in known:
        raise ApiError(
            404,
            "not_found",
            f"no chart named {name[:60]!r}; the charts are {', '.join(known)}",
        )
    return name, extension


def _domain(err: DomainError) -> ApiError:
    """The same mapping as the other routers: what does not exist (for this tenant) is a
    404 under its own code, anything else the reads refuse is a 422."""
    status = 404 if err.code.endswith("not_found") else 422
    return ApiError(status, err.code, err.message)


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether the client's validators include `etag` (weak comparison, as RFC 9110 says
    for If-None-Match)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def _headers(etag: str, csp: str) -> dict[str, str]:
    return {
        "ETag": etag,
        "Cache-Control": CHART_CACHE_CONTROL,
        "Vary": "Authorization",
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


async def _chart_response(
    plan: reports.ChartPlan, fmt: charts.ChartFormat, if_none_match: str | None
) -> Response:
    etag = f'"{plan.fingerprint}-{fmt}"'
    headers = _headers(etag, CHART_CSP)
    if _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    # Drawing is CPU work of tens of milliseconds: off the event loop.
    body = await anyio.to_thread.run_sync(plan.render, fmt)
    return Response(body, media_type=charts.CONTENT_TYPES[fmt], headers=headers)


async def _page_response(
    fingerprint: str, render: Callable[[], str], if_none_match: str | None
) -> Response:
    etag = f'"{fingerprint}-html"'
    headers = _headers(etag, PAGE_CSP)
    if _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    page = await anyio.to_thread.run_sync(render)
    return Response(page, media_type="text/html; charset=utf-8", headers=headers)


@router.get(
    "/v1/videos/{video_id}/performance/charts/{filename}",
    response_class=Response,
    responses=_CHART_RESPONSES,
    summary="A chart of a video's performance",
    description=(
        "`{name}.svg` or `{name}.png`, name one of: "
        + "; ".join(f"`{n}`: {d}" for n, d in reports.VIDEO_CHARTS.items())
        + ". A chart with no numbers yet says so in the image."
    ),
)
async def video_chart(
    video_id: uuid.UUID,
    filename: str,
    tenant: CurrentTenant,
    session: SessionDep,
    if_none_match: str | None = Header(default=None),
) -> Response:
    name, fmt = _parse_filename(filename, reports.VIDEO_CHARTS)
    try:
        plan = await reports.video_chart(session, tenant_id=tenant.id, video_id=video_id, name=name)
    except DomainError as err:
        raise _domain(err) from None
    return await _chart_response(plan, fmt, if_none_match)


@router.get(
    "/v1/collections/{collection_id}/performance/charts/{filename}",
    response_class=Response,
    responses=_CHART_RESPONSES,
    summary="A chart of a series' performance",
    description=(
        "`{name}.svg` or `{name}.png`, name one of: "
        + "; ".join(f"`{n}`: {d}" for n, d in reports.SERIES_CHARTS.items())
        + "."
    ),
)
async def series_chart(
    collection_id: uuid.UUID,
    filename: str,
    tenant: CurrentTenant,
    session: SessionDep,
    if_none_match: str | None = Header(default=None),
) -> Response:
    name, fmt = _parse_filename(filename, reports.SERIES_CHARTS)
    try:
        plan = await reports.series_chart(
            session, tenant_id=tenant.id, collection_id=collection_id, name=name
        )
    except DomainError as err:
        raise _domain(err) from None
    return await _chart_response(plan, fmt, if_none_match)


@router.get(
    "/v1/reports/videos/{video_id}",
    response_class=Response,
    responses=_PAGE_RESPONSES,
    summary="A video's performance report (HTML)",
    description=(
        "One self-contained page: summary numbers, every chart inline, and the cached "
        "insights (it never generates any, so opening it costs nothing)."
    ),
)
async def video_report(
    video_id: uuid.UUID,
    tenant: CurrentTenant,
    session: SessionDep,
    settings: SettingsDep,
    if_none_match: str | None = Header(default=None),
) -> Response:
    try:
        report = await reports.video_report(
            session,
            tenant_id=tenant.id,
            video_id=video_id,
            insights_ttl_s=settings.insights_cache_ttl_s,
        )
    except DomainError as err:
        raise _domain(err) from None
    return await _page_response(
        report.fingerprint, lambda: reports.render_video_page(report), if_none_match
    )


@router.get(
    "/v1/reports/collections/{collection_id}",
    response_class=Response,
    responses=_PAGE_RESPONSES,
    summary="A series' performance report (HTML)",
    description=(
        "One self-contained page: series numbers, best and worst episodes, cadence, "
        "hashtags, the charts inline and the cached series insights."
    ),
)
async def series_report(
    collection_id: uuid.UUID,
    tenant: CurrentTenant,
    session: SessionDep,
    settings: SettingsDep,
    if_none_match: str | None = Header(default=None),
) -> Response:
    try:
        report = await reports.series_report(
            session,
            tenant_id=tenant.id,
            collection_id=collection_id,
            insights_ttl_s=settings.insights_cache_ttl_s,
        )
    except DomainError as err:
        raise _domain(err) from None
    return await _page_response(
        report.fingerprint, lambda: reports.render_series_page(report), if_none_match
    )
