"""The discover catalog against a real PostgreSQL: brands, products, projects, posts,
analyses and product fit, each scoped by tenant."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from api.pagination import PageKey
from reelflow.core.db import SessionFactory, create_engine, session_factory
from reelflow.core.errors import DomainError
from reelflow.core.migrate import upgrade_database
from reelflow.core.tenants import create_tenant
from reelflow.discover import catalog
from reelflow.discover.catalog import Conflict, NotFound, rank_fits
from schemas.api_discover import (
    AccountRef,
    BrandCreate,
    BrandUpdate,
    ProductCreate,
    ProjectCreate,
    ProjectUpdate,
    parse_account,
    parse_account_option,
    parse_interval,
)
from schemas.discover import (
    Hook,
    OutlierSettings,
    OutlierTier,
    Platform,
    ProductFit,
    Score,
    ScriptAdaptation,
    VideoAnalysis,
)
from schemas.discover_tables import Adaptation, Analysis, Post, WatchedAccount
from schemas.failures import FailureCode
from schemas.tables import Video

# --- seeding rows the pipeline would write ----------------------------------------------------


async def seed_video(session: AsyncSession, tenant_id: uuid.UUID) -> uuid.UUID:
    video = Video(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        title="scraped",
        origin="scraped",
        source_key=f"videos/{uuid.uuid4()}",
        status="completed",
        stage="done",
    )
    session.add(video)
    await session.flush()
    return video.id


async def seed_post(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    platform: Platform,
    handle: str,
    views: int = 1000,
    tier: OutlierTier | None = None,
    video_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """A post of `handle` (the watched account is created when new)."""
    account_id = await session.scalar(
        select(WatchedAccount.id).where(
            WatchedAccount.tenant_id == tenant_id,
            WatchedAccount.platform == platform.value,
            WatchedAccount.handle == handle,
        )
    )
    if account_id is None:
        account_id = uuid.uuid4()
        session.add(
            WatchedAccount(id=account_id, tenant_id=tenant_id, platform=platform, handle=handle)
        )
        await session.flush()
    post = Post(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        account_id=account_id,
        platform=platform.value,
        platform_post_id=uuid.uuid4().hex,
        url=f"https://example.test/{handle}",
        posted_at=datetime.now(UTC) - timedelta(days=3),
        views=views,
        likes=views // 10,
        outlier_score=None if tier is None else float(tier.value.rstrip("x")),
        outlier_tier=None if tier is None else tier.value,
        no_score_reason=None if tier is not None else "too_few_posts",
        video_id=video_id,
    )
    session.add(post)
    await session.flush()
    return post.id


def an_analysis() -> VideoAnalysis:
    return VideoAnalysis(
        hook=Hook(text="Stop scrolling"),
        viral_score=Score(score=8, reasons=["fast hook"]),
    )


def an_adaptation(product: str, score: float, reasons: list[str]) -> ScriptAdaptation:
    return ScriptAdaptation(
        title=f"For {product}",
        hook="Stop scrolling",
        call_to_action="Buy it",
        audience_fit=Score(score=score, reasons=reasons),
        adapter="offline-template",
        is_template=True,
    )


async def seed_analysis(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    video_id: uuid.UUID,
    post_id: uuid.UUID | None,
    fits: dict[uuid.UUID, tuple[str, float, list[str]]],
) -> uuid.UUID:
    """An analysis of `video_id` with one adaptation per product: id → (name, score, why)."""
    analysis = Analysis(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        video_id=video_id,
        post_id=post_id,
        analyzer="offline",
        model="offline-measure",
        prompt_version="v1",
        analysis=an_analysis().model_dump(mode="json"),
        viral_score=8.0,
    )
    session.add(analysis)
    await session.flush()
    for product_id, (name, score, reasons) in fits.items():
        session.add(
            Adaptation(
                id=uuid.uuid4(),
                tenant_id=tenant_id,
                analysis_id=analysis.id,
                product_id=product_id,
                adapter="offline-template",
                adaptation=an_adaptation(name, score, reasons).model_dump(mode="json"),
                fit_score=score,
            )
        )
    await session.flush()
    return analysis.id


# --- fixtures ---------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    upgrade_database(database_url)
    engine = create_engine(database_url, pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def sessions(engine: AsyncEngine) -> SessionFactory:
    return session_factory(engine)


@pytest_asyncio.fixture
async def session(sessions: SessionFactory) -> AsyncIterator[AsyncSession]:
    async with sessions() as session:
        yield session
        await session.rollback()


async def new_tenant(session: AsyncSession, name: str) -> uuid.UUID:
    created = await create_tenant(session, name=name)
    return created.tenant_id


async def all_pages_of_posts(
    session: AsyncSession, tenant_id: uuid.UUID, limit: int, **filters: object
) -> list[list[uuid.UUID]]:
    pages: list[list[uuid.UUID]] = []
    after: PageKey | None = None
    while True:
        listing = await catalog.list_posts(
            session,
            tenant_id=tenant_id,
            limit=limit,
            after=after,
            **filters,  # type: ignore[arg-type]
        )
        pages.append([p.post_id for p in listing.items])
        if listing.next_key is None:
            return pages
        after = listing.next_key


# --- accounts as people type them -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "platform", "expected"),
    [
        ("@Nursery.Makeover", Platform.INSTAGRAM, (Platform.INSTAGRAM, "nursery.makeover")),
        ("plain_name", Platform.TIKTOK, (Platform.TIKTOK, "plain_name")),
        (" https://www.instagram.com/Some.One/ ", None, (Platform.INSTAGRAM, "some.one")),
        ("https://instagram.com/some_one?igsh=abc", None, (Platform.INSTAGRAM, "some_one")),
        ("https://www.tiktok.com/@Dancer?lang=en", Platform.TIKTOK, (Platform.TIKTOK, "dancer")),
        ("https://www.tiktok.com/@dancer/video/7301", None, (Platform.TIKTOK, "dancer")),
        ("www.tiktok.com/@dancer", None, (Platform.TIKTOK, "dancer")),
    ],
)
def test_accounts_are_normalised_from_handles_and_profile_urls(
    raw: str, platform: Platform | None, expected: tuple[Platform, str]
) -> None:
    assert parse_account(raw, platform) == expected


@pytest.mark.parametrize(
    ("raw", "platform", "says"),
    [
        ("", Platform.INSTAGRAM, "must not be empty"),
        ("two words", Platform.INSTAGRAM, "not a valid handle"),
        ("@" + "a" * 31, Platform.INSTAGRAM, "1–30"),
        ("a", Platform.TIKTOK, "2–24"),
        ("https://www.instagram.com/p/Cx1/", None, "not a profile"),
        ("https://www.instagram.com/", None, "names no account"),
        ("https://www.tiktok.com/dancer", None, "not a TikTok profile URL"),
        ("https://evil.example/@dancer", None, "not an Instagram or TikTok profile URL"),
        ("ftp://www.instagram.com/x", None, "not an Instagram or TikTok profile URL"),
        (
            "https://www.tiktok.com/@dancer",
            Platform.INSTAGRAM,
            "tiktok URL, but the platform given is instagram",
        ),
        ("dancer", None, "say which platform"),
    ],
)
def test_bad_accounts_are_refused_with_a_reason(
    raw: str, platform: Platform | None, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        parse_account(raw, platform)


def test_cli_account_options_take_a_platform_prefix_or_a_url() -> None:
    assert parse_account_option("instagram:@Foo") == (Platform.INSTAGRAM, "foo")
    assert parse_account_option("tiktok:https://www.tiktok.com/@bar") == (Platform.TIKTOK, "bar")
    assert parse_account_option("https://www.instagram.com/baz/") == (Platform.INSTAGRAM, "baz")
    with pytest.raises(ValueError, match="instagram:@handle"):
        parse_account_option("youtube:@foo")


def test_schedules_read_as_durations() -> None:
    assert parse_interval("24h") == 86400
    assert parse_interval("1d12h") == 129600
    assert parse_interval("7200") == 7200
    with pytest.raises(ValueError, match="not a duration"):
        parse_interval("soon")
    with pytest.raises(ValueError, match="between 1h and 30d"):
        parse_interval("5m")


def test_request_bodies_refuse_empty_names_and_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="must not be empty"):
        BrandCreate(name="   ")
    with pytest.raises(ValidationError, match="Extra inputs"):
        BrandCreate.model_validate({"name": "x", "colour": "red"})
    with pytest.raises(ValidationError):
        ProjectCreate.model_validate(
            {"name": "p", "accounts": [{"platform": "youtube", "handle": "x"}]}
        )


# --- brands and products ----------------------------------------------------------------------


async def test_brand_names_are_unique_per_tenant_only(session: AsyncSession) -> None:
    alice = await new_tenant(session, "alice")
    bob = await new_tenant(session, "bob")
    brand = await catalog.create_brand(session, alice, BrandCreate(name="  Acme "))
    assert brand.name == "Acme" and brand.product_count == 0
    with pytest.raises(Conflict, match="'Acme' already exists"):
        await catalog.create_brand(session, alice, BrandCreate(name="Acme"))
    # The failed insert left the transaction usable, and another tenant may use the name.
    await catalog.create_brand(session, bob, BrandCreate(name="Acme"))
    other = await catalog.create_brand(session, alice, BrandCreate(name="Other"))
    with pytest.raises(Conflict):
        await catalog.update_brand(session, alice, other.brand_id, BrandUpdate(name="Acme"))


async def test_another_tenants_brand_and_product_are_not_found(session: AsyncSession) -> None:
    alice = await new_tenant(session, "alice")
    bob = await new_tenant(session, "bob")
    brand = await catalog.create_brand(session, alice, BrandCreate(name="Acme"))
    product = await catalog.create_product(
        session, alice, ProductCreate(brand_id=brand.brand_id, name="Deck")
    )
    with pytest.raises(NotFound):
        await catalog.get_brand(session, bob, brand.brand_id)
    with pytest.raises(NotFound):
        await catalog.get_product(session, bob, product.product_id)
    with pytest.raises(NotFound):
        await catalog.create_product(session, bob, ProductCreate(brand_id=brand.brand_id, name="X"))
    with pytest.raises(NotFound):
        await catalog.delete_brand(session, bob, brand.brand_id)
    assert (await catalog.list_brands(session, bob, limit=10)).items == []
    assert (await catalog.list_products(session, bob, limit=10)).items == []


async def test_products_belong_to_a_brand_and_block_its_deletion(session: AsyncSession) -> None:
    tenant = await new_tenant(session, "t")
    brand = await catalog.create_brand(session, tenant, BrandCreate(name="Acme"))
    other = await catalog.create_brand(session, tenant, BrandCreate(name="Other"))
    body = ProductCreate(
        brand_id=brand.brand_id,
        name="Core Deck",
        description="A card game",
        audience="parents of toddlers",
        benefits=[" less screen time ", "family fun"],
        tone="warm",
    )
    product = await catalog.create_product(session, tenant, body)
    assert product.brand_name == "Acme" and product.benefits == ["less screen time", "family fun"]
    with pytest.raises(Conflict, match="already has a product named 'Core Deck'"):
        await catalog.create_product(session, tenant, body)
    # The same product name under another brand is another product.
    await catalog.create_product(
        session, tenant, ProductCreate(brand_id=other.brand_id, name="Core Deck")
    )
    listed = await catalog.list_products(session, tenant, brand_id=brand.brand_id, limit=10)
    assert [p.product_id for p in listed.items] == [product.product_id]
    assert (await catalog.get_brand(session, tenant, brand.brand_id)).product_count == 1

    with pytest.raises(Conflict, match="still has 1 product"):
        await catalog.delete_brand(session, tenant, brand.brand_id)
    await catalog.delete_product(session, tenant, product.product_id)
    await catalog.delete_brand(session, tenant, brand.brand_id)
    with pytest.raises(NotFound):
        await catalog.get_brand(session, tenant, brand.brand_id)


# --- projects ---------------------------------------------------------------------------------


async def test_a_project_watches_accounts_once_however_they_are_typed(
    session: AsyncSession,
) -> None:
    tenant = await new_tenant(session, "t")
    brand = await catalog.create_brand(session, tenant, BrandCreate(name="Acme"))
    deck = await catalog.create_product(
        session, tenant, ProductCreate(brand_id=brand.brand_id, name="Deck")
    )
    project = await catalog.create_project(
        session,
        tenant,
        ProjectCreate.model_validate(
            {
                "name": "Toddlers",
                "accounts": [
                    {"platform": "instagram", "handle": "@Nursery"},
                    {"handle": "https://www.instagram.com/nursery/"},
                    {"platform": "tiktok", "handle": "https://www.tiktok.com/@Nursery"},
                ],
                "product_ids": [str(deck.product_id)],
                "schedule": "24h",
                "outlier_settings": {"min_posts": 5},
            }
        ),
    )
    assert [(a.platform, a.handle) for a in project.accounts] == [
        (Platform.INSTAGRAM, "nursery"),
        (Platform.TIKTOK, "nursery"),
    ]
    assert project.accounts[0].url == "https://www.instagram.com/nursery/"
    assert [p.name for p in project.products] == ["Deck"]
    assert project.schedule_interval_s == 86400
    assert project.outlier_settings == OutlierSettings(min_posts=5)

    # A second project shares the watched account rather than duplicating it.
    second = await catalog.create_project(
        session,
        tenant,
        ProjectCreate(name="Second", accounts=[AccountRef(platform="instagram", handle="NURSERY")]),
    )
    assert second.accounts[0].account_id == project.accounts[0].account_id
    assert second.outlier_settings == OutlierSettings()
    with pytest.raises(Conflict, match="'Toddlers' already exists"):
        await catalog.create_project(session, tenant, ProjectCreate(name="Toddlers"))

    briefs = await catalog.project_products_briefs(session, tenant, project.project_id)
    assert [(b.name, b.brand) for b in briefs] == [("Deck", "Acme")]
    account_ids = await catalog.project_account_ids(session, tenant, project.project_id)
    assert set(account_ids) == {a.account_id for a in project.accounts}


async def test_project_updates_add_and_remove_accounts_products_and_settings(
    session: AsyncSession,
) -> None:
    tenant = await new_tenant(session, "t")
    brand = await catalog.create_brand(session, tenant, BrandCreate(name="Acme"))
    deck = await catalog.create_product(
        session, tenant, ProductCreate(brand_id=brand.brand_id, name="Deck")
    )
    travel = await catalog.create_product(
        session, tenant, ProductCreate(brand_id=brand.brand_id, name="Travel")
    )
    project = await catalog.create_project(
        session,
        tenant,
        ProjectCreate.model_validate(
            {
                "name": "P",
                "accounts": [{"platform": "instagram", "handle": "a"}],
                "product_ids": [str(deck.product_id)],
                "schedule_interval_s": 7200,
            }
        ),
    )
    updated = await catalog.update_project(
        session,
        tenant,
        project.project_id,
        ProjectUpdate.model_validate(
            {
                "name": "Renamed",
                "add_accounts": [{"handle": "https://www.tiktok.com/@bee"}],
                "remove_accounts": [{"platform": "instagram", "handle": "@A"}],
                "add_product_ids": [str(travel.product_id)],
                "remove_product_ids": [str(deck.product_id)],
                "outlier_settings": {"window_days": 14},
            }
        ),
    )
    assert updated.name == "Renamed"
    assert [(a.platform, a.handle) for a in updated.accounts] == [(Platform.TIKTOK, "bee")]
    assert [p.name for p in updated.products] == ["Travel"]
    assert updated.outlier_settings.window_days == 14
    # The schedule has its own routes, which keep the Temporal Schedule in step.
    assert updated.schedule_interval_s == 7200
    for field, value in (("schedule_interval_s", None), ("schedule", "1d")):
        with pytest.raises(ValidationError, match=r"PUT /v1/projects/\{id\}/schedule"):
            ProjectUpdate.model_validate({field: value})

    # Fields not sent stay as they are.
    unchanged = await catalog.update_project(
        session, tenant, project.project_id, ProjectUpdate.model_validate({})
    )
    assert unchanged == updated


async def test_projects_refuse_products_of_another_tenant(session: AsyncSession) -> None:
    alice = await new_tenant(session, "alice")
    bob = await new_tenant(session, "bob")
    brand = await catalog.create_brand(session, alice, BrandCreate(name="Acme"))
    deck = await catalog.create_product(
        session, alice, ProductCreate(brand_id=brand.brand_id, name="Deck")
    )
    with pytest.raises(NotFound, match=str(deck.product_id)):
        await catalog.create_project(
            session, bob, ProjectCreate(name="P", product_ids=[deck.product_id])
        )
    project = await catalog.create_project(session, alice, ProjectCreate(name="P"))
    with pytest.raises(NotFound):
        await catalog.get_project(session, bob, project.project_id)
    with pytest.raises(NotFound):
        await catalog.update_project(session, bob, project.project_id, ProjectUpdate())
    with pytest.raises(DomainError) as raised:
        await catalog.project_products_briefs(session, bob, project.project_id)
    assert raised.value.code is FailureCode.PROJECT_NOT_FOUND
    await catalog.delete_project(session, alice, project.project_id)
    with pytest.raises(DomainError):
        await catalog.project_account_ids(session, alice, project.project_id)


async def test_projects_page_through_newest_first(session: AsyncSession) -> None:
    tenant = await new_tenant(session, "t")
    created = [
        (await catalog.create_project(session, tenant, ProjectCreate(name=f"P{i}"))).project_id
        for i in range(5)
    ]
    seen: list[uuid.UUID] = []
    after: PageKey | None = None
    while True:
        listing = await catalog.list_projects(session, tenant, limit=2, after=after)
        seen += [p.project_id for p in listing.items]
        if listing.next_key is None:
            break
        after = listing.next_key
    assert sorted(seen) == sorted(created) and len(seen) == len(set(seen))


# --- posts ------------------------------------------------------------------------------------


async def test_posts_page_without_repeats_or_gaps_and_filter_by_project_and_tier(
    session: AsyncSession,
) -> None:
    tenant = await new_tenant(session, "t")
    other = await new_tenant(session, "other")
    project = await catalog.create_project(
        session,
        tenant,
        ProjectCreate.model_validate(
            {"name": "P", "accounts": [{"platform": "instagram", "handle": "watched"}]}
        ),
    )
    tiers = [None, OutlierTier.X3, OutlierTier.X5, OutlierTier.X10]
    # All rows of one transaction share `now()`: the id alone keeps the order stable.
    watched = [
        await seed_post(
            session, tenant, platform=Platform.INSTAGRAM, handle="watched", tier=tiers[i % 4]
        )
        for i in range(11)
    ]
    unwatched = [
        await seed_post(session, tenant, platform=Platform.TIKTOK, handle="elsewhere")
        for _ in range(3)
    ]
    await seed_post(session, other, platform=Platform.INSTAGRAM, handle="watched")

    pages = await all_pages_of_posts(session, tenant, 4)
    flat = [p for page in pages for p in page]
    assert [len(page) for page in pages] == [4, 4, 4, 2]
    assert sorted(flat) == sorted(watched + unwatched) and len(flat) == len(set(flat))

    by_project = await all_pages_of_posts(session, tenant, 5, project_id=project.project_id)
    assert sorted(p for page in by_project for p in page) == sorted(watched)

    tiktok = await all_pages_of_posts(session, tenant, 50, platform=Platform.TIKTOK)
    assert sorted(tiktok[0]) == sorted(unwatched)

    exact = await catalog.list_posts(
        session, tenant_id=tenant, outlier_tier=OutlierTier.X5, limit=50
    )
    assert {p.outlier_tier for p in exact.items} == {OutlierTier.X5}
    at_least = await catalog.list_posts(
        session, tenant_id=tenant, min_tier=OutlierTier.X5, limit=50
    )
    assert {p.outlier_tier for p in at_least.items} == {OutlierTier.X5, OutlierTier.X10}
    assert len(at_least.items) == 5

    item = (await catalog.list_posts(session, tenant_id=tenant, limit=1)).items[0]
    assert item.account in {"watched", "elsewhere"} and item.platform_post_id

    with pytest.raises(NotFound):
        await catalog.list_posts(session, tenant_id=other, project_id=project.project_id, limit=5)
    with pytest.raises(NotFound):
        await catalog.get_post(session, tenant_id=other, post_id=watched[0])


async def test_a_posts_analysis_is_its_latest_with_adaptations(session: AsyncSession) -> None:
    tenant = await new_tenant(session, "t")
    other = await new_tenant(session, "other")
    brand = await catalog.create_brand(session, tenant, BrandCreate(name="Acme"))
    deck = await catalog.create_product(
        session, tenant, ProductCreate(brand_id=brand.brand_id, name="Deck")
    )
    video_id = await seed_video(session, tenant)
    post_id = await seed_post(
        session, tenant, platform=Platform.INSTAGRAM, handle="a", video_id=video_id
    )
    bare_post = await seed_post(session, tenant, platform=Platform.INSTAGRAM, handle="a")
    with pytest.raises(NotFound, match="not been analyzed"):
        await catalog.get_post_analysis(session, tenant_id=tenant, post_id=bare_post)

    analysis_id = await seed_analysis(
        session,
        tenant,
        video_id=video_id,
        post_id=post_id,
        fits={deck.product_id: ("Deck", 7.5, ["age fit"])},
    )
    read = await catalog.get_post_analysis(session, tenant_id=tenant, post_id=post_id)
    assert read.analysis_id == analysis_id and read.analysis.hook.text == "Stop scrolling"
    assert [(a.product_name, a.fit_score) for a in read.adaptations] == [("Deck", 7.5)]
    with pytest.raises(NotFound):
        await catalog.get_post_analysis(session, tenant_id=other, post_id=post_id)


# --- product fit ------------------------------------------------------------------------------


def _fit(name: str, score: float, *reasons: str) -> ProductFit:
    return ProductFit(product_id=uuid.uuid4(), product_name=name, score=score, reasons=[*reasons])


def test_rank_fits_puts_the_best_first_and_says_why() -> None:
    video = uuid.uuid4()
    travel = _fit("Travel Edition", 6, "Age fit", "location mismatch")
    core = _fit("Core Deck", 9, "Perfect age fit", "strong emotional alignment", "third")
    expansion = _fit("Expansion Pack", 7, "Good fit")
    ranked = rank_fits(video, [travel, core, expansion])
    assert [f.product_name for f in ranked.ranking] == [
        "Core Deck",
        "Expansion Pack",
        "Travel Edition",
    ]
    assert ranked.recommended_product_id == core.product_id
    assert ranked.why == "Perfect age fit; strong emotional alignment"


def test_rank_fits_breaks_ties_by_name_and_explains_an_empty_comparison() -> None:
    video = uuid.uuid4()
    zeta, alpha = _fit("zeta", 8), _fit("Alpha", 8)
    ranked = rank_fits(video, [zeta, alpha])
    assert [f.product_name for f in ranked.ranking] == ["Alpha", "zeta"]
    assert ranked.recommended_product_id == alpha.product_id
    assert "highest fit score (8/10)" in ranked.why and "tied on score with zeta" in ranked.why

    empty = rank_fits(video, [])
    assert empty.ranking == [] and empty.recommended_product_id is None
    assert "no products to compare" in empty.why


async def test_product_fit_ranks_adapted_products_and_lists_the_rest(
    session: AsyncSession,
) -> None:
    tenant = await new_tenant(session, "t")
    other = await new_tenant(session, "other")
    brand = await catalog.create_brand(session, tenant, BrandCreate(name="Acme"))
    products = {
        name: await catalog.create_product(
            session, tenant, ProductCreate(brand_id=brand.brand_id, name=name)
        )
        for name in ("Core Deck", "Expansion Pack", "Travel Edition", "Outside")
    }
    project = await catalog.create_project(
        session,
        tenant,
        ProjectCreate(
            name="P",
            product_ids=[
                products[n].product_id for n in ("Core Deck", "Expansion Pack", "Travel Edition")
            ],
        ),
    )
    video_id = await seed_video(session, tenant)

    before = await catalog.product_fit_report(
        session, tenant_id=tenant, video_id=video_id, project_id=project.project_id
    )
    assert before.ranking == [] and before.analysis_id is None
    assert "not been analyzed" in before.why and len(before.not_adapted) == 3

    await seed_analysis(
        session,
        tenant,
        video_id=video_id,
        post_id=None,
        fits={
            products["Core Deck"].product_id: ("Core Deck", 9, ["Perfect age fit"]),
            products["Expansion Pack"].product_id: ("Expansion Pack", 7, ["Good fit"]),
            # Adapted, but not one of the project's products: left out.
            products["Outside"].product_id: ("Outside", 10, ["not in project"]),
        },
    )
    report = await catalog.product_fit_report(
        session, tenant_id=tenant, video_id=video_id, project_id=project.project_id
    )
    assert [f.product_name for f in report.ranking] == ["Core Deck", "Expansion Pack"]
    assert report.recommended_product_name == "Core Deck" and report.why == "Perfect age fit"
    assert [p.product_name for p in report.not_adapted] == ["Travel Edition"]

    comparison = await catalog.product_fit(
        session, tenant_id=tenant, video_id=video_id, project_id=project.project_id
    )
    assert comparison.recommended_product_id == products["Core Deck"].product_id

    with pytest.raises(NotFound):
        await catalog.product_fit(
            session, tenant_id=other, video_id=video_id, project_id=project.project_id
        )
    other_project = await catalog.create_project(session, other, ProjectCreate(name="P"))
    with pytest.raises(NotFound, match="video"):
        await catalog.product_fit(
            session, tenant_id=other, video_id=video_id, project_id=other_project.project_id
        )
