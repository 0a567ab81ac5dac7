"""`reelflow discover …`: brands, products, projects, posts and product comparison.

Talks to the database directly (`DATABASE_URL`), as the tenant given with `--tenant` or
`REELFLOW_TENANT_ID`. Brands, projects and products may be named by id or by name. Every
refusal is one readable line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Annotated, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.service import RPCError

from api.pagination import PageKey
from reelflow.billing.usage import QuotaExceeded
from reelflow.core.db import create_engine, session_factory
from reelflow.core.errors import DomainError
from reelflow.core.settings import Settings, SettingsError, load_settings
from reelflow.core.temporal_client import connect_temporal
from reelflow.discover import catalog, scrapes
from reelflow.discover.catalog import CatalogError, Listing, NotFound
from schemas.api_discover import (
    AccountRef,
    BrandCreate,
    PostItem,
    ProductCreate,
    ProductFitReport,
    ProductView,
    ProjectCreate,
    ProjectView,
    parse_account_option,
    parse_interval,
)
from schemas.discover import OutlierTier, Platform
from schemas.queues import TaskQueues
from schemas.tables import Tenant

app = typer.Typer(
    help="Discover: brands, products, projects, scraped posts and product fit.",
    no_args_is_help=True,
)
brand_app = typer.Typer(help="Brands you sell under.", no_args_is_help=True)
product_app = typer.Typer(help="Products scripts are adapted to.", no_args_is_help=True)
project_app = typer.Typer(
    help="Watched accounts and the products they inspire.", no_args_is_help=True
)
app.add_typer(brand_app, name="brand")
app.add_typer(product_app, name="product")
app.add_typer(project_app, name="project")

console = Console()
errors = Console(stderr=True)

Result = TypeVar("Result")
Item = TypeVar("Item")

TenantOption = Annotated[
    str,
    typer.Option(
        "--tenant",
        envvar="REELFLOW_TENANT_ID",
        help="The tenant to act as (its id).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

_PAGE = 200


class _Refused(Exception):
    """A refusal already worded for the person at the terminal."""


def _fail(message: str) -> typer.Exit:
    errors.print(Text.assemble(("error: ", "red"), message), soft_wrap=True)
    return typer.Exit(1)


def _row(table: Table, *cells: str) -> None:
    """A table row of plain text: names such as `[bold]` are shown, not interpreted."""
    table.add_row(*(Text(cell) for cell in cells))


def _describe_validation(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        loc = ".".join(str(p) for p in error.get("loc", ()))
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts)


def _run(tenant: str, work: Callable[[AsyncSession, uuid.UUID], Awaitable[Result]]) -> Result:
    """Run `work` in one transaction as `tenant`; any refusal exits 1 with its reason."""
    try:
        tenant_id = uuid.UUID(tenant.strip())
    except ValueError:
        raise _fail(f"--tenant must be a tenant id, got {tenant!r}") from None
    try:
        settings: Settings = load_settings()
    except SettingsError as exc:
        raise _fail(str(exc)) from None

    async def transaction() -> Result:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with session_factory(engine).begin() as session:
                if await session.scalar(select(Tenant.id).where(Tenant.id == tenant_id)) is None:
                    raise _Refused(f"no tenant with id {tenant_id}")
                return await work(session, tenant_id)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(transaction())
    except (CatalogError, _Refused, QuotaExceeded) as exc:
        raise _fail(str(exc)) from None
    except ValidationError as exc:
        raise _fail(_describe_validation(exc)) from None
    except (OperationalError, DBAPIError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise _fail(f"the database did not answer ({reason}); is DATABASE_URL right?") from None


def _validated(build: Callable[[], Result]) -> Result:
    """A request body built from options, or exit 1 naming what is wrong."""
    try:
        return build()
    except ValidationError as exc:
        raise _fail(_describe_validation(exc)) from None
    except ValueError as exc:
        raise _fail(str(exc)) from None


async def _all(fetch: Callable[[PageKey | None], Awaitable[Listing[Item]]]) -> list[Item]:
    items: list[Item] = []
    after: PageKey | None = None
    while True:
        listing = await fetch(after)
        items += listing.items
        if listing.next_key is None:
            return items
        after = listing.next_key


def _print_json(value: BaseModel | Sequence[BaseModel]) -> None:
    if not isinstance(value, BaseModel):
        console.print_json(data=[v.model_dump(mode="json") for v in value])
    else:
        console.print_json(value.model_dump_json())


def _count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


# --- brands ---------------------------------------------------------------------------------


@brand_app.command("create")
def brand_create(
    name: str,
    tenant: TenantOption,
    description: Annotated[str | None, typer.Option(help="What the brand stands for.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a brand."""
    body = _validated(lambda: BrandCreate(name=name, description=description))
    brand = _run(tenant, lambda s, t: catalog.create_brand(s, t, body))
    if as_json:
        _print_json(brand)
    else:
        console.print(f"created brand {escape(brand.name)}  [dim]{brand.brand_id}[/dim]")


@brand_app.command("list")
def brand_list(tenant: TenantOption, as_json: JsonOption = False) -> None:
    """List brands with their product counts."""
    brands = _run(
        tenant,
        lambda s, t: _all(lambda after: catalog.list_brands(s, t, limit=_PAGE, after=after)),
    )
    if as_json:
        _print_json(brands)
        return
    table = Table("id", "name", "products", "description", title="Brands")
    for b in brands:
        _row(table, str(b.brand_id), b.name, str(b.product_count), b.description or "")
    console.print(table)


# --- products -------------------------------------------------------------------------------


@product_app.command("create")
def product_create(
    name: str,
    tenant: TenantOption,
    brand: Annotated[str, typer.Option(help="The brand's id or name.", show_default=False)],
    description: Annotated[str | None, typer.Option()] = None,
    audience: Annotated[str | None, typer.Option(help="Who buys it.")] = None,
    benefit: Annotated[
        list[str] | None, typer.Option(help="A benefit (repeat for several).")
    ] = None,
    tone: Annotated[str | None, typer.Option(help="The voice scripts should use.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a product under a brand."""

    async def create(session: AsyncSession, tenant_id: uuid.UUID) -> ProductView:
        owner = await catalog.find_brand(session, tenant_id, brand)
        body = ProductCreate(
            brand_id=owner.brand_id,
            name=name,
            description=description,
            audience=audience,
            benefits=benefit or [],
            tone=tone,
        )
        return await catalog.create_product(session, tenant_id, body)

    product = _run(tenant, create)
    if as_json:
        _print_json(product)
    else:
        console.print(f"created product {escape(product.name)}  [dim]{product.product_id}[/dim]")


@product_app.command("list")
def product_list(
    tenant: TenantOption,
    brand: Annotated[str | None, typer.Option(help="Only this brand's (id or name).")] = None,
    as_json: JsonOption = False,
) -> None:
    """List products."""

    async def collect(session: AsyncSession, tenant_id: uuid.UUID) -> list[ProductView]:
        brand_id = None
        if brand is not None:
            brand_id = (await catalog.find_brand(session, tenant_id, brand)).brand_id
        return list(
            await _all(
                lambda after: catalog.list_products(
                    session, tenant_id, brand_id=brand_id, limit=_PAGE, after=after
                )
            )
        )

    products = _run(tenant, collect)
    if as_json:
        _print_json(products)
        return
    table = Table("id", "brand", "name", "audience", "benefits", "tone", title="Products")
    for p in products:
        _row(
            table,
            str(p.product_id),
            p.brand_name,
            p.name,
            p.audience or "",
            ", ".join(p.benefits),
            p.tone or "",
        )
    console.print(table)


# --- projects -------------------------------------------------------------------------------


def _print_project(project: ProjectView) -> None:
    console.print(f"[bold]{escape(project.name)}[/bold]  [dim]{project.project_id}[/dim]")
    if project.schedule_interval_s is None:
        schedule = "on request only"
    else:
        schedule = f"every {_duration(project.schedule_interval_s)}"
        if project.schedule_paused:
            schedule += " (paused)"
    console.print(f"scrapes: {schedule}", highlight=False)
    settings = project.outlier_settings
    console.print(
        f"outliers: ≥{settings.min_ratio:g}× the median of the last {settings.window_days} days, "
        f"{settings.min_posts}+ posts, older than {settings.min_age_hours:g} h",
        highlight=False,
    )
    accounts = Table("platform", "handle", "followers", "profile", title="Watched accounts")
    for a in project.accounts:
        _row(accounts, a.platform.value, "@" + a.handle, _count(a.followers), a.url)
    console.print(accounts)
    products = Table("id", "brand", "product", title="Products")
    for p in project.products:
        _row(products, str(p.product_id), p.brand_name, p.name)
    console.print(products)


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


async def _create_schedule(tenant_id: uuid.UUID, project_id: uuid.UUID, every_s: int) -> None:
    """The project's re-scrape Schedule on Temporal, as `reelflow discover schedule set`
    makes it."""
    settings = load_settings()
    if settings.apify_token is None:
        raise _Refused(
            "scheduled scrapes go through Apify: set APIFY_TOKEN, or create the project "
            "without --every and scrape it from dataset files"
        )
    try:
        client = await connect_temporal(settings)
    except Exception:  # the SDK raises a plain RuntimeError (with Rust internals) on connect
        raise _Refused(
            f"Temporal did not answer at {settings.temporal_address}; is it running "
            "(`reelflow dev up`), and is TEMPORAL_ADDRESS right?"
        ) from None
    try:
        await scrapes.set_schedule(
            client,
            tenant_id=tenant_id,
            project_id=project_id,
            every=timedelta(seconds=every_s),
            task_queue=TaskQueues.for_prefix(settings.task_queue_prefix).workflows,
        )
    except DomainError as exc:
        raise _Refused(exc.message) from None
    except RPCError as exc:
        raise _Refused(f"Temporal refused the schedule: {exc.message}") from None


@project_app.command("create")
def project_create(
    name: str,
    tenant: TenantOption,
    account: Annotated[
        list[str] | None,
        typer.Option(
            help="instagram:@handle, tiktok:@handle or a profile URL (repeat for several)."
        ),
    ] = None,
    product: Annotated[
        list[str] | None, typer.Option(help="A product id or name (repeat for several).")
    ] = None,
    every: Annotated[
        str | None, typer.Option(help="Re-scrape on a schedule, e.g. 24h or 7d.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a project watching accounts for products."""

    def accounts() -> list[AccountRef]:
        refs = []
        for raw in account or []:
            platform, handle = parse_account_option(raw)
            refs.append(AccountRef(platform=platform, handle=handle))
        return refs

    refs = _validated(accounts)
    interval = None if every is None else _validated(lambda: parse_interval(every))

    async def create(session: AsyncSession, tenant_id: uuid.UUID) -> ProjectView:
        product_ids = [
            (await catalog.find_product(session, tenant_id, ref)).product_id
            for ref in product or []
        ]
        body = ProjectCreate(
            name=name, accounts=refs, product_ids=product_ids, schedule_interval_s=interval
        )
        project = await catalog.create_project(session, tenant_id, body)
        if interval is not None:
            # Inside the transaction: when Temporal does not take the Schedule, the project
            # is not created either, and the command can simply be run again.
            await _create_schedule(tenant_id, project.project_id, interval)
        return project

    project = _run(tenant, create)
    if as_json:
        _print_json(project)
    else:
        _print_project(project)


@project_app.command("show")
def project_show(
    project: Annotated[str, typer.Argument(help="The project's id or name.")],
    tenant: TenantOption,
    as_json: JsonOption = False,
) -> None:
    """Show a project with its accounts, products and settings."""
    view = _run(tenant, lambda s, t: catalog.find_project(s, t, project))
    if as_json:
        _print_json(view)
    else:
        _print_project(view)


@project_app.command("list")
def project_list(tenant: TenantOption, as_json: JsonOption = False) -> None:
    """List projects."""
    projects = _run(
        tenant,
        lambda s, t: _all(lambda after: catalog.list_projects(s, t, limit=_PAGE, after=after)),
    )
    if as_json:
        _print_json(projects)
        return
    table = Table("id", "name", "accounts", "products", "schedule", title="Projects")
    for p in projects:
        schedule = "–" if p.schedule_interval_s is None else _duration(p.schedule_interval_s)
        _row(
            table,
            str(p.project_id),
            p.name,
            ", ".join(f"{a.platform.value}:@{a.handle}" for a in p.accounts),
            ", ".join(x.name for x in p.products),
            schedule + (" (paused)" if p.schedule_paused else ""),
        )
    console.print(table)


# --- posts and comparison -------------------------------------------------------------------


@app.command("posts")
def posts(
    tenant: TenantOption,
    project: Annotated[str | None, typer.Option(help="Only this project's accounts.")] = None,
    tier: Annotated[
        OutlierTier | None, typer.Option(help="Outliers of this tier or higher.")
    ] = None,
    platform: Annotated[Platform | None, typer.Option(help="Only this platform.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=_PAGE, help="How many, newest first.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List scraped posts with their counts and outlier scores, newest first."""

    async def collect(session: AsyncSession, tenant_id: uuid.UUID) -> list[PostItem]:
        project_id = None
        if project is not None:
            project_id = (await catalog.find_project(session, tenant_id, project)).project_id
        listing = await catalog.list_posts(
            session,
            tenant_id=tenant_id,
            project_id=project_id,
            platform=platform,
            min_tier=tier,
            limit=limit,
        )
        return listing.items

    items = _run(tenant, collect)
    if as_json:
        _print_json(items)
        return
    table = Table(
        "posted",
        "account",
        "views",
        "likes",
        "comments",
        "score",
        "tier",
        "post id",
        "url",
        title="Posts",
    )
    for p in items:
        score = (
            f"{p.outlier_score:.1f}×" if p.outlier_score is not None else (p.no_score_reason or "")
        )
        _row(
            table,
            p.posted_at.strftime("%Y-%m-%d") if p.posted_at else "–",
            f"{p.platform.value}:@{p.account}",
            _count(p.views),
            _count(p.likes),
            _count(p.comments),
            score,
            p.outlier_tier.value if p.outlier_tier else "",
            str(p.post_id),
            p.url or "",
        )
    console.print(table)
    if not items:
        console.print("no posts match")


@app.command("compare")
def compare(
    tenant: TenantOption,
    video: Annotated[
        str, typer.Option(help="The video's id (or the id of the post it came from).")
    ],
    project: Annotated[str, typer.Option(help="The project whose products to rank.")],
    as_json: JsonOption = False,
) -> None:
    """Rank a project's products by fit for a video, and recommend one."""
    try:
        video_ref = uuid.UUID(video.strip())
    except ValueError:
        raise _fail(f"--video must be a video or post id, got {video!r}") from None

    async def rank(session: AsyncSession, tenant_id: uuid.UUID) -> ProductFitReport:
        project_id = (await catalog.find_project(session, tenant_id, project)).project_id
        try:
            return await catalog.product_fit_report(
                session, tenant_id=tenant_id, video_id=video_ref, project_id=project_id
            )
        except NotFound as exc:
            if exc.what != "video":
                raise
        # Not a video: perhaps the post the video was downloaded from.
        try:
            post = await catalog.get_post(session, tenant_id=tenant_id, post_id=video_ref)
        except NotFound:
            raise NotFound("video", video_ref, f"no video or post with id {video_ref}") from None
        if post.video_id is None:
            raise _Refused(f"post {video_ref} has no downloaded video yet")
        return await catalog.product_fit_report(
            session, tenant_id=tenant_id, video_id=post.video_id, project_id=project_id
        )

    report = _run(tenant, rank)
    if as_json:
        _print_json(report)
        return
    console.print(f"Video: {report.video_id}\n", highlight=False)
    console.print("Product Fit Scores:", highlight=False)
    if not report.ranking:
        console.print("  (none yet)", highlight=False)
    for rank_no, fit in enumerate(report.ranking, start=1):
        reasons = f" ({', '.join(fit.reasons)})" if fit.reasons else ""
        console.print(
            f"{rank_no}. {fit.product_name} - {fit.score:g}/10{reasons}",
            highlight=False,
            markup=False,
        )
    if report.not_adapted:
        names = ", ".join(p.product_name for p in report.not_adapted)
        console.print(f"\nNot adapted yet: {names}", highlight=False, markup=False)
    console.print(
        f"\nRecommended: {report.recommended_product_name or 'none'}", highlight=False, markup=False
    )
    console.print(f"Reason: {report.why}", highlight=False, markup=False)
