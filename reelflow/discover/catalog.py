"""The discover catalog: brands, products, projects with their watched accounts and products,
posts, analyses and product fit.

Every function is scoped by tenant: another tenant's object is reported exactly like a
missing one (`NotFound`). Functions flush but never commit; the caller owns the transaction.

Deleting, decided once here:

* a brand that still has products is refused (`Conflict`): deleting it would silently take
  its products, their adaptations and their place in every project with it;
* a product is deleted with its adaptations and its place in projects (scripts keep their
  content and lose only the link);
* a project is deleted with its scrapes and its account and product links; watched accounts
  and their posts stay, since they are shared by the tenant's other projects.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from sqlalchemy import ColumnElement, Select, delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.billing.usage import admit_project
from reelflow.core.errors import DomainError
from reelflow.core.pagination import PageKey, newest_first, split_page
from schemas.api_discover import (
    AccountRef,
    AccountView,
    AdaptationView,
    BrandCreate,
    BrandUpdate,
    BrandView,
    PendingProduct,
    PostAnalysis,
    PostItem,
    ProductCreate,
    ProductFitReport,
    ProductUpdate,
    ProductView,
    ProjectCreate,
    ProjectProductView,
    ProjectUpdate,
    ProjectView,
    profile_url,
)
from schemas.discover import (
    OutlierSettings,
    OutlierTier,
    Platform,
    ProductBrief,
    ProductComparison,
    ProductFit,
    ScriptAdaptation,
    VideoAnalysis,
)
from schemas.discover_tables import (
    Adaptation,
    Analysis,
    Brand,
    Post,
    Product,
    Project,
    ProjectAccount,
    ProjectProduct,
    WatchedAccount,
)
from schemas.failures import FailureCode
from schemas.tables import Video

TIER_ORDER: tuple[OutlierTier, ...] = (OutlierTier.X3, OutlierTier.X5, OutlierTier.X10)
"""Tiers from the lowest; `min_tier` keeps a tier and every one after it."""

_TOP_REASONS = 2


# --- errors ---------------------------------------------------------------------------------


class CatalogError(Exception):
    """A request the catalog refuses, with a message a person can act on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(CatalogError):
    """The object does not exist for this tenant (missing, or another tenant's)."""

    def __init__(self, what: str, ident: object, message: str | None = None) -> None:
        super().__init__(message or f"no {what} with id {ident}")
        self.what = what
        self.ident = ident


class Conflict(CatalogError):
    """The change clashes with what exists: a duplicate name, a brand that has products."""


# --- pages ----------------------------------------------------------------------------------

Row = TypeVar("Row")


@dataclass(frozen=True)
class Listing(Generic[Row]):
    """One page of a list and where the next starts (None: this was the last page)."""

    items: list[Row]
    next_key: PageKey | None


async def _write_unique(
    session: AsyncSession, conflict_message: str, apply: Callable[[], object]
) -> None:
    """Apply a change and flush it in a savepoint, turning a unique violation into
    `Conflict`: the transaction stays usable, and two requests racing for one name cannot
    both win. (The change is applied inside, since opening a savepoint flushes.)"""
    await session.flush()
    try:
        async with session.begin_nested():
            apply()
            await session.flush()
    except IntegrityError as exc:
        if "unique" in str(exc.orig).lower() or "duplicate" in str(exc.orig).lower():
            raise Conflict(conflict_message) from None
        raise


# --- brands ---------------------------------------------------------------------------------


async def _product_counts(
    session: AsyncSession, tenant_id: uuid.UUID, brand_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, int]:
    if not brand_ids:
        return {}
    rows = await session.execute(
        select(Product.brand_id, func.count())
        .where(Product.tenant_id == tenant_id, Product.brand_id.in_(brand_ids))
        .group_by(Product.brand_id)
    )
    return {brand_id: int(count) for brand_id, count in rows}


def _brand_view(brand: Brand, product_count: int) -> BrandView:
    return BrandView(
        brand_id=brand.id,
        name=brand.name,
        description=brand.description,
        product_count=product_count,
        created_at=brand.created_at,
    )


async def _load_brand(
    session: AsyncSession, tenant_id: uuid.UUID, brand_id: uuid.UUID, *, lock: bool = False
) -> Brand:
    query = select(Brand).where(Brand.tenant_id == tenant_id, Brand.id == brand_id)
    brand = await session.scalar(query.with_for_update() if lock else query)
    if brand is None:
        raise NotFound("brand", brand_id)
    return brand


async def create_brand(session: AsyncSession, tenant_id: uuid.UUID, body: BrandCreate) -> BrandView:
    """A new brand; `Conflict` when the tenant already has one by that name."""
    brand = Brand(
        id=uuid.uuid4(), tenant_id=tenant_id, name=body.name, description=body.description
    )
    await _write_unique(
        session, f"a brand named {body.name!r} already exists", lambda: session.add(brand)
    )
    await session.refresh(brand)
    return _brand_view(brand, 0)


async def get_brand(session: AsyncSession, tenant_id: uuid.UUID, brand_id: uuid.UUID) -> BrandView:
    brand = await _load_brand(session, tenant_id, brand_id)
    counts = await _product_counts(session, tenant_id, [brand.id])
    return _brand_view(brand, counts.get(brand.id, 0))


async def list_brands(
    session: AsyncSession, tenant_id: uuid.UUID, *, limit: int, after: PageKey | None = None
) -> Listing[BrandView]:
    query = select(Brand).where(Brand.tenant_id == tenant_id)
    query = newest_first(query, Brand.created_at, Brand.id, after=after, limit=limit)
    rows = (await session.scalars(query)).all()
    page, next_key = split_page(rows, limit, lambda b: PageKey(b.created_at, b.id))
    counts = await _product_counts(session, tenant_id, [b.id for b in page])
    return Listing([_brand_view(b, counts.get(b.id, 0)) for b in page], next_key)


async def update_brand(
    session: AsyncSession, tenant_id: uuid.UUID, brand_id: uuid.UUID, body: BrandUpdate
) -> BrandView:
    brand = await _load_brand(session, tenant_id, brand_id)
    sent = body.model_fields_set

    def apply() -> None:
        if "name" in sent and body.name is not None:
            brand.name = body.name
        if "description" in sent:
            brand.description = body.description

    await _write_unique(session, f"a brand named {body.name!r} already exists", apply)
    return await get_brand(session, tenant_id, brand_id)


async def delete_brand(session: AsyncSession, tenant_id: uuid.UUID, brand_id: uuid.UUID) -> None:
    """Delete a brand that has no products; `Conflict` naming how many it still has."""
    # Locked: a product being added to the brand right now either commits first (and is
    # counted) or waits and then fails, instead of being deleted with the brand unseen.
    brand = await _load_brand(session, tenant_id, brand_id, lock=True)
    count = (await _product_counts(session, tenant_id, [brand.id])).get(brand.id, 0)
    if count:
        raise Conflict(
            f"brand {brand.name!r} still has {count} product{'s' if count != 1 else ''}: "
            "delete them first"
        )
    await session.delete(brand)
    await session.flush()


async def find_brand(session: AsyncSession, tenant_id: uuid.UUID, ref: str) -> BrandView:
    """A brand by id or by exact name (the CLI lets people type either)."""
    brand_id = _as_uuid(ref)
    if brand_id is not None:
        return await get_brand(session, tenant_id, brand_id)
    found = await session.scalar(
        select(Brand.id).where(Brand.tenant_id == tenant_id, Brand.name == ref.strip())
    )
    if found is None:
        raise NotFound("brand", ref, f"no brand with id or name {ref!r}")
    return await get_brand(session, tenant_id, found)


def _as_uuid(ref: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(ref.strip())
    except ValueError:
        return None


# --- products -------------------------------------------------------------------------------


def _product_select(tenant_id: uuid.UUID) -> Select[Product, str]:
    return (
        select(Product, Brand.name)
        .join(Brand, Brand.id == Product.brand_id)
        .where(Product.tenant_id == tenant_id)
    )


def _product_view(product: Product, brand_name: str) -> ProductView:
    return ProductView(
        product_id=product.id,
        brand_id=product.brand_id,
        brand_name=brand_name,
        name=product.name,
        description=product.description,
        audience=product.audience,
        benefits=list(product.benefits or []),
        tone=product.tone,
        created_at=product.created_at,
    )


async def _load_product(
    session: AsyncSession, tenant_id: uuid.UUID, product_id: uuid.UUID
) -> tuple[Product, str]:
    row = (
        await session.execute(_product_select(tenant_id).where(Product.id == product_id))
    ).first()
    if row is None:
        raise NotFound("product", product_id)
    return row[0], row[1]


async def create_product(
    session: AsyncSession, tenant_id: uuid.UUID, body: ProductCreate
) -> ProductView:
    """A new product under one of the tenant's brands; `NotFound` for a foreign brand,
    `Conflict` when the brand already has a product by that name."""
    brand = await _load_brand(session, tenant_id, body.brand_id)
    product = Product(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        brand_id=brand.id,
        name=body.name,
        description=body.description,
        audience=body.audience,
        benefits=list(body.benefits),
        tone=body.tone,
    )
    await _write_unique(
        session,
        f"brand {brand.name!r} already has a product named {body.name!r}",
        lambda: session.add(product),
    )
    await session.refresh(product)
    return _product_view(product, brand.name)


async def get_product(
    session: AsyncSession, tenant_id: uuid.UUID, product_id: uuid.UUID
) -> ProductView:
    product, brand_name = await _load_product(session, tenant_id, product_id)
    return _product_view(product, brand_name)


async def list_products(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    brand_id: uuid.UUID | None = None,
    limit: int,
    after: PageKey | None = None,
) -> Listing[ProductView]:
    """The tenant's products, newest first; a foreign or unknown `brand_id` is `NotFound`."""
    query = _product_select(tenant_id)
    if brand_id is not None:
        await _load_brand(session, tenant_id, brand_id)
        query = query.where(Product.brand_id == brand_id)
    query = newest_first(query, Product.created_at, Product.id, after=after, limit=limit)
    rows = (await session.execute(query)).all()
    page, next_key = split_page(
        [(row[0], row[1]) for row in rows], limit, lambda r: PageKey(r[0].created_at, r[0].id)
    )
    return Listing([_product_view(p, name) for p, name in page], next_key)


async def update_product(
    session: AsyncSession, tenant_id: uuid.UUID, product_id: uuid.UUID, body: ProductUpdate
) -> ProductView:
    product, brand_name = await _load_product(session, tenant_id, product_id)
    sent = body.model_fields_set

    def apply() -> None:
        if "name" in sent and body.name is not None:
            product.name = body.name
        if "description" in sent:
            product.description = body.description
        if "audience" in sent:
            product.audience = body.audience
        if "benefits" in sent:
            product.benefits = list(body.benefits or [])
        if "tone" in sent:
            product.tone = body.tone

    conflict = f"brand {brand_name!r} already has a product named {body.name!r}"
    await _write_unique(session, conflict, apply)
    return _product_view(product, brand_name)


async def find_product(session: AsyncSession, tenant_id: uuid.UUID, ref: str) -> ProductView:
    """A product by id, or by name when exactly one of the tenant's products has it
    (`Conflict` when several brands have a product by that name)."""
    product_id = _as_uuid(ref)
    if product_id is None:
        found = (
            await session.scalars(
                select(Product.id).where(
                    Product.tenant_id == tenant_id, Product.name == ref.strip()
                )
            )
        ).all()
        if not found:
            raise NotFound("product", ref, f"no product with id or name {ref!r}")
        if len(found) > 1:
            raise Conflict(f"{len(found)} products are named {ref!r}: give the product id")
        product_id = found[0]
    return await get_product(session, tenant_id, product_id)


async def delete_product(
    session: AsyncSession, tenant_id: uuid.UUID, product_id: uuid.UUID
) -> None:
    """Delete a product, its adaptations and its place in projects (see the module doc)."""
    product, _ = await _load_product(session, tenant_id, product_id)
    await session.delete(product)
    await session.flush()


# --- projects -------------------------------------------------------------------------------


async def _load_project(
    session: AsyncSession, tenant_id: uuid.UUID, project_id: uuid.UUID
) -> Project:
    project = await session.scalar(
        select(Project).where(Project.tenant_id == tenant_id, Project.id == project_id)
    )
    if project is None:
        raise NotFound("project", project_id)
    return project


async def _check_products(
    session: AsyncSession, tenant_id: uuid.UUID, product_ids: Sequence[uuid.UUID]
) -> None:
    """`NotFound` naming the first id that is not one of the tenant's products."""
    if not product_ids:
        return
    known = set(
        (
            await session.scalars(
                select(Product.id).where(
                    Product.tenant_id == tenant_id, Product.id.in_(set(product_ids))
                )
            )
        ).all()
    )
    for product_id in product_ids:
        if product_id not in known:
            raise NotFound("product", product_id)


async def _watched_account_ids(
    session: AsyncSession, tenant_id: uuid.UUID, accounts: Sequence[AccountRef]
) -> list[uuid.UUID]:
    """The tenant's watched accounts for `accounts`, created when new.

    `ON CONFLICT DO NOTHING`: two projects created at once naming one account share it.
    """
    keys = list(dict.fromkeys(a.key for a in accounts))
    if not keys:
        return []
    await session.execute(
        insert(WatchedAccount)
        .values(
            [
                {"id": uuid.uuid4(), "tenant_id": tenant_id, "platform": p.value, "handle": h}
                for p, h in keys
            ]
        )
        .on_conflict_do_nothing(constraint="uq_accounts_platform_handle")
    )
    rows = await session.execute(
        select(WatchedAccount.platform, WatchedAccount.handle, WatchedAccount.id).where(
            WatchedAccount.tenant_id == tenant_id,
            tuple_(WatchedAccount.platform, WatchedAccount.handle).in_(
                [(p.value, h) for p, h in keys]
            ),
        )
    )
    by_key = {(platform, handle): ident for platform, handle, ident in rows}
    return [by_key[(p.value, h)] for p, h in keys]


async def _link_accounts(
    session: AsyncSession, project_id: uuid.UUID, account_ids: Sequence[uuid.UUID]
) -> None:
    if account_ids:
        await session.execute(
            insert(ProjectAccount)
            .values([{"project_id": project_id, "account_id": a} for a in account_ids])
            .on_conflict_do_nothing()
        )


async def _link_products(
    session: AsyncSession, project_id: uuid.UUID, product_ids: Sequence[uuid.UUID]
) -> None:
    if product_ids:
        await session.execute(
            insert(ProjectProduct)
            .values([{"project_id": project_id, "product_id": p} for p in set(product_ids)])
            .on_conflict_do_nothing()
        )


async def create_project(
    session: AsyncSession, tenant_id: uuid.UUID, body: ProjectCreate
) -> ProjectView:
    """A new project watching `body.accounts` (shared with the tenant's other projects) for
    `body.product_ids`; `NotFound` for a product that is not the tenant's, `Conflict` for a
    duplicate name. The plan's project limit is checked in the same transaction
    (`QuotaExceeded`, a 402 in the API)."""
    await _check_products(session, tenant_id, body.product_ids)
    await admit_project(session, tenant_id=tenant_id, now=datetime.now(UTC))
    project = Project(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        name=body.name,
        outlier_settings=(
            body.outlier_settings.model_dump(mode="json") if body.outlier_settings else {}
        ),
        schedule_interval_s=body.schedule_interval_s,
        schedule_paused=False,
    )
    await _write_unique(
        session, f"a project named {body.name!r} already exists", lambda: session.add(project)
    )
    await _link_accounts(
        session, project.id, await _watched_account_ids(session, tenant_id, body.accounts)
    )
    await _link_products(session, project.id, body.product_ids)
    return await get_project(session, tenant_id, project.id)


async def _project_views(
    session: AsyncSession, tenant_id: uuid.UUID, projects: Sequence[Project]
) -> list[ProjectView]:
    """Views of `projects` with their accounts and products, in two queries for the page."""
    ids = [p.id for p in projects]
    accounts: dict[uuid.UUID, list[AccountView]] = defaultdict(list)
    products: dict[uuid.UUID, list[ProjectProductView]] = defaultdict(list)
    if ids:
        account_rows = await session.execute(
            select(ProjectAccount.project_id, WatchedAccount)
            .join(WatchedAccount, WatchedAccount.id == ProjectAccount.account_id)
            .where(ProjectAccount.project_id.in_(ids), WatchedAccount.tenant_id == tenant_id)
            .order_by(WatchedAccount.platform, WatchedAccount.handle)
        )
        for project_id, account in account_rows:
            accounts[project_id].append(_account_view(account))
        product_rows = await session.execute(
            select(ProjectProduct.project_id, Product.id, Product.name, Brand.id, Brand.name)
            .join(Product, Product.id == ProjectProduct.product_id)
            .join(Brand, Brand.id == Product.brand_id)
            .where(ProjectProduct.project_id.in_(ids), Product.tenant_id == tenant_id)
            .order_by(Brand.name, Product.name)
        )
        for project_id, product_id, name, brand_id, brand_name in product_rows:
            products[project_id].append(
                ProjectProductView(
                    product_id=product_id, name=name, brand_id=brand_id, brand_name=brand_name
                )
            )
    return [
        ProjectView(
            project_id=p.id,
            name=p.name,
            accounts=accounts[p.id],
            products=products[p.id],
            outlier_settings=OutlierSettings.model_validate(p.outlier_settings or {}),
            schedule_interval_s=p.schedule_interval_s,
            schedule_paused=p.schedule_paused,
            created_at=p.created_at,
        )
        for p in projects
    ]


def _account_view(account: WatchedAccount) -> AccountView:
    platform = Platform(account.platform)
    return AccountView(
        account_id=account.id,
        platform=platform,
        handle=account.handle,
        url=profile_url(platform, account.handle),
        followers=account.followers,
        last_scraped_at=account.last_scraped_at,
    )


async def get_project(
    session: AsyncSession, tenant_id: uuid.UUID, project_id: uuid.UUID
) -> ProjectView:
    project = await _load_project(session, tenant_id, project_id)
    await session.refresh(project)
    return (await _project_views(session, tenant_id, [project]))[0]


async def find_project(session: AsyncSession, tenant_id: uuid.UUID, ref: str) -> ProjectView:
    """A project by id or by exact name (the CLI lets people type either)."""
    project_id = _as_uuid(ref)
    if project_id is None:
        project_id = await session.scalar(
            select(Project.id).where(Project.tenant_id == tenant_id, Project.name == ref.strip())
        )
        if project_id is None:
            raise NotFound("project", ref, f"no project with id or name {ref!r}")
    return await get_project(session, tenant_id, project_id)


async def list_projects(
    session: AsyncSession, tenant_id: uuid.UUID, *, limit: int, after: PageKey | None = None
) -> Listing[ProjectView]:
    query = select(Project).where(Project.tenant_id == tenant_id)
    query = newest_first(query, Project.created_at, Project.id, after=after, limit=limit)
    rows = (await session.scalars(query)).all()
    page, next_key = split_page(rows, limit, lambda p: PageKey(p.created_at, p.id))
    return Listing(await _project_views(session, tenant_id, page), next_key)


async def update_project(
    session: AsyncSession, tenant_id: uuid.UUID, project_id: uuid.UUID, body: ProjectUpdate
) -> ProjectView:
    """Rename, add or remove accounts and products, change outlier settings.

    Removing an account or product the project does not have is not an error (the result is
    what was asked for); adding a product that is not the tenant's is `NotFound`.
    """
    project = await _load_project(session, tenant_id, project_id)
    await _check_products(session, tenant_id, body.add_product_ids)
    sent = body.model_fields_set

    def apply() -> None:
        if "name" in sent and body.name is not None:
            project.name = body.name
        if "outlier_settings" in sent:
            project.outlier_settings = (
                body.outlier_settings.model_dump(mode="json") if body.outlier_settings else {}
            )

    await _write_unique(session, f"a project named {body.name!r} already exists", apply)
    if body.remove_accounts:
        keys = [(p.value, h) for p, h in (a.key for a in body.remove_accounts)]
        removed = select(WatchedAccount.id).where(
            WatchedAccount.tenant_id == tenant_id,
            tuple_(WatchedAccount.platform, WatchedAccount.handle).in_(keys),
        )
        await session.execute(
            delete(ProjectAccount).where(
                ProjectAccount.project_id == project.id, ProjectAccount.account_id.in_(removed)
            )
        )
    if body.remove_product_ids:
        await session.execute(
            delete(ProjectProduct).where(
                ProjectProduct.project_id == project.id,
                ProjectProduct.product_id.in_(body.remove_product_ids),
            )
        )
    await _link_accounts(
        session, project.id, await _watched_account_ids(session, tenant_id, body.add_accounts)
    )
    await _link_products(session, project.id, body.add_product_ids)
    await session.flush()
    return await get_project(session, tenant_id, project.id)


async def delete_project(
    session: AsyncSession, tenant_id: uuid.UUID, project_id: uuid.UUID
) -> None:
    """Delete a project with its scrapes and links; accounts and posts stay."""
    project = await _load_project(session, tenant_id, project_id)
    await session.delete(project)
    await session.flush()


async def project_products_briefs(
    session: AsyncSession, tenant_id: uuid.UUID, project_id: uuid.UUID
) -> list[ProductBrief]:
    """What the adapters need to know about each of a project's products, brand included.

    Raises:
        DomainError: `project_not_found` when the project is gone (deleted mid-run).
    """
    await _require_project(session, tenant_id, project_id)
    rows = await session.execute(
        select(Product, Brand.name)
        .join(ProjectProduct, ProjectProduct.product_id == Product.id)
        .join(Brand, Brand.id == Product.brand_id)
        .where(ProjectProduct.project_id == project_id, Product.tenant_id == tenant_id)
        .order_by(Product.name, Product.id)
    )
    return [
        ProductBrief(
            product_id=product.id,
            name=product.name,
            brand=brand_name,
            description=product.description,
            audience=product.audience,
            benefits=list(product.benefits or []),
            tone=product.tone,
        )
        for product, brand_name in rows
    ]


async def project_account_ids(
    session: AsyncSession, tenant_id: uuid.UUID, project_id: uuid.UUID
) -> list[uuid.UUID]:
    """The watched accounts a project scrapes.

    Raises:
        DomainError: `project_not_found` when the project is gone (deleted mid-run).
    """
    await _require_project(session, tenant_id, project_id)
    rows = await session.scalars(
        select(ProjectAccount.account_id)
        .join(WatchedAccount, WatchedAccount.id == ProjectAccount.account_id)
        .where(ProjectAccount.project_id == project_id, WatchedAccount.tenant_id == tenant_id)
        .order_by(ProjectAccount.account_id)
    )
    return list(rows.all())


async def _require_project(
    session: AsyncSession, tenant_id: uuid.UUID, project_id: uuid.UUID
) -> None:
    exists = await session.scalar(
        select(Project.id).where(Project.tenant_id == tenant_id, Project.id == project_id)
    )
    if exists is None:
        raise DomainError(FailureCode.PROJECT_NOT_FOUND, f"project {project_id} no longer exists")


# --- posts ----------------------------------------------------------------------------------


def _post_item(post: Post, handle: str) -> PostItem:
    return PostItem(
        post_id=post.id,
        platform=Platform(post.platform),
        platform_post_id=post.platform_post_id,
        account=handle,
        account_id=post.account_id,
        url=post.url,
        caption=post.caption,
        posted_at=post.posted_at,
        views=post.views,
        likes=post.likes,
        comments=post.comments,
        shares=post.shares,
        saves=post.saves,
        outlier_score=post.outlier_score,
        outlier_z=post.outlier_z,
        outlier_tier=OutlierTier(post.outlier_tier) if post.outlier_tier else None,
        no_score_reason=post.no_score_reason,
        video_id=post.video_id,
        created_at=post.created_at,
    )


def tiers_from(min_tier: OutlierTier) -> list[str]:
    """`min_tier` and every higher tier."""
    return [t.value for t in TIER_ORDER[TIER_ORDER.index(min_tier) :]]


async def list_posts(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    project_id: uuid.UUID | None = None,
    platform: Platform | None = None,
    outlier_tier: OutlierTier | None = None,
    min_tier: OutlierTier | None = None,
    limit: int,
    after: PageKey | None = None,
) -> Listing[PostItem]:
    """The tenant's posts, newest first, optionally of one project's accounts, one platform,
    exactly one tier (`outlier_tier`) or a tier and above (`min_tier`).

    Raises:
        NotFound: `project_id` is not one of the tenant's projects.
    """
    query = (
        select(Post, WatchedAccount.handle)
        .join(WatchedAccount, WatchedAccount.id == Post.account_id)
        .where(Post.tenant_id == tenant_id)
    )
    if project_id is not None:
        await _load_project(session, tenant_id, project_id)
        query = query.where(
            Post.account_id.in_(
                select(ProjectAccount.account_id).where(ProjectAccount.project_id == project_id)
            )
        )
    if platform is not None:
        query = query.where(Post.platform == platform.value)
    if outlier_tier is not None:
        query = query.where(Post.outlier_tier == outlier_tier.value)
    if min_tier is not None:
        query = query.where(Post.outlier_tier.in_(tiers_from(min_tier)))
    query = newest_first(query, Post.created_at, Post.id, after=after, limit=limit)
    rows = [(post, handle) for post, handle in (await session.execute(query))]
    page, next_key = split_page(rows, limit, lambda r: PageKey(r[0].created_at, r[0].id))
    return Listing([_post_item(p, h) for p, h in page], next_key)


async def get_post(session: AsyncSession, *, tenant_id: uuid.UUID, post_id: uuid.UUID) -> PostItem:
    row = (
        await session.execute(
            select(Post, WatchedAccount.handle)
            .join(WatchedAccount, WatchedAccount.id == Post.account_id)
            .where(Post.tenant_id == tenant_id, Post.id == post_id)
        )
    ).first()
    if row is None:
        raise NotFound("post", post_id)
    return _post_item(row[0], row[1])


async def _latest_analysis(
    session: AsyncSession, tenant_id: uuid.UUID, *conditions: ColumnElement[bool]
) -> Analysis | None:
    return await session.scalar(
        select(Analysis)
        .where(Analysis.tenant_id == tenant_id, *conditions)
        .order_by(Analysis.created_at.desc(), Analysis.id.desc())
        .limit(1)
    )


async def _adaptation_views(
    session: AsyncSession, tenant_id: uuid.UUID, analysis_id: uuid.UUID
) -> list[AdaptationView]:
    rows = await session.execute(
        select(Adaptation, Product.name)
        .join(Product, Product.id == Adaptation.product_id)
        .where(Adaptation.tenant_id == tenant_id, Adaptation.analysis_id == analysis_id)
        .order_by(Adaptation.fit_score.desc(), Product.name)
    )
    return [
        AdaptationView(
            adaptation_id=adaptation.id,
            product_id=adaptation.product_id,
            product_name=name,
            adapter=adaptation.adapter,
            fit_score=adaptation.fit_score,
            adaptation=ScriptAdaptation.model_validate(adaptation.adaptation),
            created_at=adaptation.created_at,
        )
        for adaptation, name in rows
    ]


async def get_post_analysis(
    session: AsyncSession, *, tenant_id: uuid.UUID, post_id: uuid.UUID
) -> PostAnalysis:
    """The latest analysis of the post's video (or of the post itself), with its adaptations.

    Raises:
        NotFound: no such post for the tenant (`what == "post"`), or the post has not been
            analyzed yet (`what == "analysis"`).
    """
    post = await get_post(session, tenant_id=tenant_id, post_id=post_id)
    matches = Analysis.post_id == post.post_id
    if post.video_id is not None:
        matches = matches | (Analysis.video_id == post.video_id)
    analysis = await _latest_analysis(session, tenant_id, matches)
    if analysis is None:
        raise NotFound("analysis", post_id, f"post {post_id} has not been analyzed yet")
    return PostAnalysis(
        analysis_id=analysis.id,
        post_id=analysis.post_id,
        video_id=analysis.video_id,
        analyzer=analysis.analyzer,
        model=analysis.model,
        prompt_version=analysis.prompt_version,
        viral_score=analysis.viral_score,
        analysis=VideoAnalysis.model_validate(analysis.analysis),
        adaptations=await _adaptation_views(session, tenant_id, analysis.id),
        created_at=analysis.created_at,
    )


# --- product fit ----------------------------------------------------------------------------


def rank_fits(video_id: uuid.UUID, fits: Sequence[ProductFit]) -> ProductComparison:
    """Products best first (ties by name, then id, so the order never flickers), and the
    best one recommended with its top reasons as the why."""
    ranking = sorted(fits, key=lambda f: (-f.score, f.product_name.casefold(), str(f.product_id)))
    if not ranking:
        return ProductComparison(
            video_id=video_id,
            ranking=[],
            recommended_product_id=None,
            why="no products to compare: add products to the project and adapt the video to them",
        )
    best = ranking[0]
    reasons = [r.strip() for r in best.reasons if r.strip()][:_TOP_REASONS]
    why = "; ".join(reasons) if reasons else f"the highest fit score ({best.score:g}/10)"
    tied = [f.product_name for f in ranking[1:] if f.score == best.score]
    if tied:
        why += f" (tied on score with {', '.join(tied)}; chosen by name)"
    return ProductComparison(
        video_id=video_id, ranking=ranking, recommended_product_id=best.product_id, why=why
    )


async def product_fit_report(
    session: AsyncSession, *, tenant_id: uuid.UUID, video_id: uuid.UUID, project_id: uuid.UUID
) -> ProductFitReport:
    """The project's products ranked for a video from the adaptations of the video's latest
    analysis; products not adapted yet are listed apart in `not_adapted`.

    Raises:
        NotFound: the video or the project is not the tenant's.
    """
    video = await session.scalar(
        select(Video.id).where(Video.tenant_id == tenant_id, Video.id == video_id)
    )
    if video is None:
        raise NotFound("video", video_id)
    briefs = await _project_products(session, tenant_id, project_id)
    analysis = await _latest_analysis(session, tenant_id, Analysis.video_id == video_id)
    fits: list[ProductFit] = []
    adapted: set[uuid.UUID] = set()
    if analysis is not None and briefs:
        for view in await _adaptation_views(session, tenant_id, analysis.id):
            if view.product_id in briefs:
                adapted.add(view.product_id)
                fits.append(
                    ProductFit(
                        product_id=view.product_id,
                        product_name=view.product_name,
                        score=view.fit_score,
                        reasons=list(view.adaptation.audience_fit.reasons),
                    )
                )
    comparison = rank_fits(video_id, fits)
    pending = [
        PendingProduct(product_id=pid, product_name=name)
        for pid, name in briefs.items()
        if pid not in adapted
    ]
    why = comparison.why
    if analysis is None:
        why = "the video has not been analyzed yet, so no product has a fit score"
    elif not fits and pending:
        why = "the video has not been adapted to any of the project's products yet"
    recommended_name = next(
        (
            f.product_name
            for f in comparison.ranking
            if f.product_id == comparison.recommended_product_id
        ),
        None,
    )
    return ProductFitReport(
        video_id=video_id,
        project_id=project_id,
        analysis_id=analysis.id if analysis else None,
        ranking=comparison.ranking,
        recommended_product_id=comparison.recommended_product_id,
        recommended_product_name=recommended_name,
        why=why,
        not_adapted=pending,
    )


async def product_fit(
    session: AsyncSession, *, tenant_id: uuid.UUID, video_id: uuid.UUID, project_id: uuid.UUID
) -> ProductComparison:
    """`product_fit_report` as a plain comparison (the products not adapted yet left out)."""
    report = await product_fit_report(
        session, tenant_id=tenant_id, video_id=video_id, project_id=project_id
    )
    return ProductComparison(
        video_id=report.video_id,
        ranking=report.ranking,
        recommended_product_id=report.recommended_product_id,
        why=report.why,
    )


async def _project_products(
    session: AsyncSession, tenant_id: uuid.UUID, project_id: uuid.UUID
) -> dict[uuid.UUID, str]:
    """The project's products (id → name, by name); `NotFound` for a foreign project."""
    await _load_project(session, tenant_id, project_id)
    rows = await session.execute(
        select(Product.id, Product.name)
        .join(ProjectProduct, ProjectProduct.product_id == Product.id)
        .where(ProjectProduct.project_id == project_id, Product.tenant_id == tenant_id)
        .order_by(Product.name, Product.id)
    )
    return dict(rows.all())
