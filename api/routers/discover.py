"""The discover catalog over HTTP: brands, products, projects, posts, analyses and product fit.

Every route is scoped by the caller's tenant: another tenant's brand, product, project, post
or video is a 404, exactly like a missing one, and so is one named inside a body (a
`brand_id` or `product_ids`). Duplicate names are a 409; a brand that still has products
cannot be deleted (409). Lists are `{items, next_cursor}`, newest first; a cursor is bound
to the tenant, the list and its filters, so one from another list is a 400.

A project's re-scrape Schedule lives on Temporal: creating a project with `schedule`
creates it and deleting the project deletes it, each before the database commits, so a
Temporal that does not answer (503) leaves neither half. Changing it later goes through
`/v1/projects/{id}/schedule` (`api/routers/scrapes.py`), never through PATCH.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from temporalio.service import RPCError

from api.deps import CurrentTenant, ResourcesDep, SessionDep, SettingsDep, TenantContext
from api.errors import ERROR_RESPONSES, ApiError, echo, temporal_unavailable
from api.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageKey, decode_cursor, encode_cursor
from api.routers.billing import quota_refused
from api.routers.videos import workflow_queue
from reelflow.billing.usage import QuotaExceeded
from reelflow.core.errors import DomainError
from reelflow.core.settings import Settings
from reelflow.discover import catalog, scrapes
from reelflow.discover.catalog import CatalogError, Conflict, Listing, NotFound
from schemas.api import ErrorResponse
from schemas.api_discover import (
    BrandCreate,
    BrandUpdate,
    BrandView,
    Page,
    PostAnalysis,
    PostItem,
    ProductCreate,
    ProductFitReport,
    ProductUpdate,
    ProductView,
    ProjectCreate,
    ProjectUpdate,
    ProjectView,
)
from schemas.discover import OutlierTier, Platform

router = APIRouter(prefix="/v1", tags=["discover"], responses=ERROR_RESPONSES)

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


@contextmanager
def _catalog_errors() -> Iterator[None]:
    """The catalog's refusals as API errors."""
    try:
        yield
    except NotFound as exc:
        code = "not_analyzed" if exc.what == "analysis" else "not_found"
        raise ApiError(404, code, exc.message) from None
    except Conflict as exc:
        raise ApiError(409, "conflict", exc.message) from None
    except CatalogError as exc:
        raise ApiError(422, "invalid_request", exc.message) from None
    except QuotaExceeded as exc:
        raise quota_refused(exc) from None


def _path_id(what: str, raw: str) -> uuid.UUID:
    """A path id that is not a UUID cannot name anything: 404, like any unknown id."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, "not_found", f"no {what} with id {echo(raw)}") from None


class _Paging:
    """Decodes the request's cursor and encodes the next one, for one list and its filters."""

    def __init__(
        self, settings: Settings, tenant: TenantContext, list_name: str, cursor: str | None
    ) -> None:
        self._settings = settings
        self._tenant = tenant
        self._list_name = list_name
        self.after: PageKey | None = decode_cursor(
            settings.secret_key, tenant.id, list_name, cursor
        )

    def page(self, listing: Listing[Any]) -> dict[str, Any]:
        next_cursor = (
            None
            if listing.next_key is None
            else encode_cursor(
                self._settings.secret_key, self._tenant.id, self._list_name, listing.next_key
            )
        )
        return {"items": listing.items, "next_cursor": next_cursor}


# --- brands ---------------------------------------------------------------------------------


@router.post("/brands", status_code=201, response_model=BrandView, responses=_errors(409))
async def create_brand(body: BrandCreate, tenant: CurrentTenant, session: SessionDep) -> BrandView:
    """Create a brand; its name is unique for the tenant (409 otherwise)."""
    with _catalog_errors():
        brand = await catalog.create_brand(session, tenant.id, body)
    await session.commit()
    return brand


@router.get("/brands", response_model=Page[BrandView], responses=_errors(400))
async def list_brands(
    tenant: CurrentTenant,
    session: SessionDep,
    settings: SettingsDep,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The tenant's brands, newest first."""
    paging = _Paging(settings, tenant, "brands", cursor)
    return paging.page(
        await catalog.list_brands(session, tenant.id, limit=limit, after=paging.after)
    )


@router.get("/brands/{brand_id}", response_model=BrandView)
async def get_brand(brand_id: str, tenant: CurrentTenant, session: SessionDep) -> BrandView:
    with _catalog_errors():
        return await catalog.get_brand(session, tenant.id, _path_id("brand", brand_id))


@router.patch("/brands/{brand_id}", response_model=BrandView, responses=_errors(409))
async def update_brand(
    brand_id: str, body: BrandUpdate, tenant: CurrentTenant, session: SessionDep
) -> BrandView:
    """Rename a brand or change its description; only the fields sent change."""
    with _catalog_errors():
        brand = await catalog.update_brand(session, tenant.id, _path_id("brand", brand_id), body)
    await session.commit()
    return brand


@router.delete("/brands/{brand_id}", status_code=204, responses=_errors(409))
async def delete_brand(brand_id: str, tenant: CurrentTenant, session: SessionDep) -> Response:
    """Delete a brand that has no products (409 naming how many it still has)."""
    with _catalog_errors():
        await catalog.delete_brand(session, tenant.id, _path_id("brand", brand_id))
    await session.commit()
    return Response(status_code=204)


# --- products -------------------------------------------------------------------------------


@router.post("/products", status_code=201, response_model=ProductView, responses=_errors(409))
async def create_product(
    body: ProductCreate, tenant: CurrentTenant, session: SessionDep
) -> ProductView:
    """Create a product under one of the tenant's brands (404 for any other `brand_id`)."""
    with _catalog_errors():
        product = await catalog.create_product(session, tenant.id, body)
    await session.commit()
    return product


@router.get("/products", response_model=Page[ProductView], responses=_errors(400))
async def list_products(
    tenant: CurrentTenant,
    session: SessionDep,
    settings: SettingsDep,
    brand_id: uuid.UUID | None = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The tenant's products, newest first, optionally of one brand."""
    paging = _Paging(settings, tenant, f"products?brand={brand_id or ''}", cursor)
    with _catalog_errors():
        listing = await catalog.list_products(
            session, tenant.id, brand_id=brand_id, limit=limit, after=paging.after
        )
    return paging.page(listing)


@router.get("/products/{product_id}", response_model=ProductView)
async def get_product(product_id: str, tenant: CurrentTenant, session: SessionDep) -> ProductView:
    with _catalog_errors():
        return await catalog.get_product(session, tenant.id, _path_id("product", product_id))


@router.patch("/products/{product_id}", response_model=ProductView, responses=_errors(409))
async def update_product(
    product_id: str, body: ProductUpdate, tenant: CurrentTenant, session: SessionDep
) -> ProductView:
    """Change a product; only the fields sent change."""
    with _catalog_errors():
        product = await catalog.update_product(
            session, tenant.id, _path_id("product", product_id), body
        )
    await session.commit()
    return product


@router.delete("/products/{product_id}", status_code=204)
async def delete_product(product_id: str, tenant: CurrentTenant, session: SessionDep) -> Response:
    """Delete a product with its adaptations; it leaves every project it was in."""
    with _catalog_errors():
        await catalog.delete_product(session, tenant.id, _path_id("product", product_id))
    await session.commit()
    return Response(status_code=204)


# --- projects -------------------------------------------------------------------------------


@router.post("/projects", status_code=201, response_model=ProjectView, responses=_errors(409, 503))
async def create_project(
    body: ProjectCreate, tenant: CurrentTenant, session: SessionDep, resources: ResourcesDep
) -> ProjectView:
    """Create a project watching accounts (handles, `@handles` or profile URLs) for products
    of the tenant (404 for any other product id). With `schedule` (or
    `schedule_interval_s`) its re-scrape Schedule is created too; change it later through
    `/v1/projects/{id}/schedule`."""
    if body.schedule_interval_s is not None and resources.settings.apify_token is None:
        raise ApiError(
            422,
            "provider_unavailable_here",
            "scheduled scrapes go through Apify; set APIFY_TOKEN on this deployment",
        )
    with _catalog_errors():
        project = await catalog.create_project(session, tenant.id, body)
    if body.schedule_interval_s is not None:
        # Before the commit: when Temporal does not take the Schedule, no project is left
        # claiming one.
        try:
            await scrapes.set_schedule(
                resources.temporal,
                tenant_id=tenant.id,
                project_id=project.project_id,
                every=timedelta(seconds=body.schedule_interval_s),
                task_queue=workflow_queue(resources.settings),
            )
        except DomainError as exc:
            raise ApiError(422, str(exc.code), exc.message) from None
        except RPCError:
            raise temporal_unavailable() from None
    await session.commit()
    return project


@router.get("/projects", response_model=Page[ProjectView], responses=_errors(400))
async def list_projects(
    tenant: CurrentTenant,
    session: SessionDep,
    settings: SettingsDep,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The tenant's projects with their accounts and products, newest first."""
    paging = _Paging(settings, tenant, "projects", cursor)
    return paging.page(
        await catalog.list_projects(session, tenant.id, limit=limit, after=paging.after)
    )


@router.get("/projects/{project_id}", response_model=ProjectView)
async def get_project(project_id: str, tenant: CurrentTenant, session: SessionDep) -> ProjectView:
    with _catalog_errors():
        return await catalog.get_project(session, tenant.id, _path_id("project", project_id))


@router.patch("/projects/{project_id}", response_model=ProjectView, responses=_errors(409))
async def update_project(
    project_id: str, body: ProjectUpdate, tenant: CurrentTenant, session: SessionDep
) -> ProjectView:
    """Rename, add or remove accounts and products, or change outlier settings (the schedule
    has its own routes under `/v1/projects/{id}/schedule`)."""
    with _catalog_errors():
        project = await catalog.update_project(
            session, tenant.id, _path_id("project", project_id), body
        )
    await session.commit()
    return project


@router.delete("/projects/{project_id}", status_code=204, responses=_errors(503))
async def delete_project(
    project_id: str, tenant: CurrentTenant, session: SessionDep, resources: ResourcesDep
) -> Response:
    """Delete a project with its scrapes and its re-scrape Schedule; its watched accounts
    and their posts stay."""
    project = _path_id("project", project_id)
    with _catalog_errors():
        await catalog.delete_project(session, tenant.id, project)
    try:
        # Before the commit: a Schedule left behind would keep scraping for nobody.
        await scrapes.delete_schedule(resources.temporal, project)
    except RPCError:
        raise temporal_unavailable() from None
    await session.commit()
    return Response(status_code=204)


# --- posts, analyses and product fit --------------------------------------------------------


@router.get("/posts", response_model=Page[PostItem], responses=_errors(400))
async def list_posts(
    tenant: CurrentTenant,
    session: SessionDep,
    settings: SettingsDep,
    project_id: uuid.UUID | None = None,
    platform: Platform | None = None,
    outlier_tier: Annotated[OutlierTier | None, Query(description="Exactly this tier.")] = None,
    min_tier: Annotated[OutlierTier | None, Query(description="This tier or higher.")] = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Scraped posts, newest first: of one project's accounts, one platform, one tier."""
    filters = "&".join(
        f"{name}={value or ''}"
        for name, value in (
            ("project", project_id),
            ("platform", platform),
            ("tier", outlier_tier),
            ("min", min_tier),
        )
    )
    paging = _Paging(settings, tenant, f"posts?{filters}", cursor)
    with _catalog_errors():
        listing = await catalog.list_posts(
            session,
            tenant_id=tenant.id,
            project_id=project_id,
            platform=platform,
            outlier_tier=outlier_tier,
            min_tier=min_tier,
            limit=limit,
            after=paging.after,
        )
    return paging.page(listing)


@router.get("/posts/{post_id}", response_model=PostItem)
async def get_post(post_id: str, tenant: CurrentTenant, session: SessionDep) -> PostItem:
    with _catalog_errors():
        return await catalog.get_post(
            session, tenant_id=tenant.id, post_id=_path_id("post", post_id)
        )


@router.get("/posts/{post_id}/analysis", response_model=PostAnalysis)
async def get_post_analysis(
    post_id: str, tenant: CurrentTenant, session: SessionDep
) -> PostAnalysis:
    """The latest analysis of the post's video with its adaptations; 404 `not_analyzed`
    while there is none."""
    with _catalog_errors():
        return await catalog.get_post_analysis(
            session, tenant_id=tenant.id, post_id=_path_id("post", post_id)
        )


@router.get("/videos/{video_id}/product-fit", response_model=ProductFitReport)
async def get_product_fit(
    video_id: str, project_id: uuid.UUID, tenant: CurrentTenant, session: SessionDep
) -> ProductFitReport:
    """The project's products ranked by fit for the video (best first, with the recommended
    one and why); products not adapted yet are listed in `not_adapted`."""
    with _catalog_errors():
        return await catalog.product_fit_report(
            session,
            tenant_id=tenant.id,
            video_id=_path_id("video", video_id),
            project_id=project_id,
        )
