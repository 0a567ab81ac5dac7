"""Posts into the catalog: upserts by platform id, snapshots per scrape, one transaction.

A fresh database per module (migrated to head); each test gets its own tenant, project and
scrapes, so tests share the database without seeing each other's posts.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from reelflow.core.db import create_engine, session_factory
from reelflow.core.errors import DomainError
from reelflow.core.migrate import upgrade_database
from reelflow.core.tenants import create_tenant
from reelflow.discover.datasets import detect_format, iter_dataset
from reelflow.discover.posts import import_posts, upsert_posts
from schemas.discover import Platform, RejectedRow, ScrapedPost
from schemas.discover_tables import Post, PostSnapshot, Project, Scrape, WatchedAccount
from schemas.failures import FailureCode

FIXTURES = Path(__file__).parent / "fixtures"
T0 = datetime(2025, 11, 20, 12, 0, tzinfo=UTC)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    upgrade_database(database_url)
    engine = create_engine(database_url, pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


class World:
    """A tenant with one project; `scrape()` adds a scrape to it."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID):
        self.sessions = sessions
        self.tenant_id = tenant_id
        self.project_id = uuid.uuid4()

    async def scrape(self) -> uuid.UUID:
        scrape_id = uuid.uuid4()
        async with self.sessions.begin() as session:
            session.add(
                Scrape(
                    id=scrape_id,
                    tenant_id=self.tenant_id,
                    project_id=self.project_id,
                    source="dataset_file",
                    status="running",
                    stage="upserting",
                    posts_seen=0,
                    posts_new=0,
                    outliers=0,
                    processed=0,
                    errors=[],
                    apify_runs=[],
                    cost_usd=Decimal(0),
                )
            )
        return scrape_id

    async def posts(self) -> dict[str, Post]:
        async with self.sessions() as session:
            rows = await session.scalars(select(Post).where(Post.tenant_id == self.tenant_id))
            return {row.platform_post_id: row for row in rows}

    async def snapshots(self, scrape_id: uuid.UUID) -> list[PostSnapshot]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(PostSnapshot).where(PostSnapshot.scrape_id == scrape_id)
            )
            return list(rows)

    async def accounts(self) -> dict[str, WatchedAccount]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(WatchedAccount).where(WatchedAccount.tenant_id == self.tenant_id)
            )
            return {row.handle: row for row in rows}


@pytest_asyncio.fixture(loop_scope="session")
async def world(sessions: async_sessionmaker[AsyncSession]) -> World:
    async with sessions.begin() as session:
        tenant = await create_tenant(session, name=f"discover-{uuid.uuid4().hex[:6]}")
    created = World(sessions, tenant.tenant_id)
    async with sessions.begin() as session:
        session.add(Project(id=created.project_id, tenant_id=tenant.tenant_id, name="p"))
    return created


def tiktok(post_id: str, account: str = "editguru", **counts: int | None) -> ScrapedPost:
    return ScrapedPost(
        platform=Platform.TIKTOK,
        post_id=post_id,
        account=account,
        url=f"https://www.tiktok.com/@{account}/video/{post_id}",
        posted_at=T0 - timedelta(days=3),
        **counts,
    )


def rows_of(name: str) -> Iterator[ScrapedPost | RejectedRow]:
    path = FIXTURES / name
    with path.open("rb") as stream:
        yield from iter_dataset(stream, detect_format(path.name, path.read_bytes()[:4096]))


async def test_a_second_scrape_updates_counts_and_keeps_what_it_does_not_report(
    world: World,
) -> None:
    first = await world.scrape()
    async with world.sessions.begin() as session:
        result = await upsert_posts(
            session,
            tenant_id=world.tenant_id,
            scrape_id=first,
            posts=[
                tiktok("1", views=100, likes=10, shares=1, followers=5000),
                tiktok("2", views=50, likes=5),
            ],
            recorded_at=T0,
        )
    assert (result.seen, result.new, result.updated) == (2, 2, 0)
    assert len(result.new_post_ids) == 2

    second = await world.scrape()
    async with world.sessions.begin() as session:
        result = await upsert_posts(
            session,
            tenant_id=world.tenant_id,
            scrape_id=second,
            # Post 1 now has more views but its likes were unreadable this time.
            posts=[tiktok("1", views=400, likes=None, shares=2), tiktok("3", views=7)],
            recorded_at=T0 + timedelta(hours=6),
        )
    assert (result.seen, result.new, result.updated) == (2, 1, 1)

    posts = await world.posts()
    assert set(posts) == {"1", "2", "3"}
    assert (posts["1"].views, posts["1"].likes, posts["1"].shares) == (400, 10, 2)
    assert posts["1"].first_scrape_id == first
    assert posts["3"].first_scrape_id == second
    assert result.new_post_ids == [posts["3"].id]

    first_snapshots = {s.post_id: s for s in await world.snapshots(first)}
    second_snapshots = {s.post_id: s for s in await world.snapshots(second)}
    assert first_snapshots[posts["1"].id].views == 100
    assert first_snapshots[posts["1"].id].followers == 5000
    assert second_snapshots[posts["1"].id].views == 400
    assert second_snapshots[posts["1"].id].likes is None
    assert posts["2"].id not in second_snapshots

    accounts = await world.accounts()
    assert list(accounts) == ["editguru"]
    # Followers reported by the first scrape only are not erased by the second.
    assert accounts["editguru"].followers == 5000
    assert accounts["editguru"].last_scraped_at == T0 + timedelta(hours=6)
    assert {p.account_id for p in posts.values()} == {accounts["editguru"].id}

    third = await world.scrape()
    async with world.sessions.begin() as session:
        await upsert_posts(
            session,
            tenant_id=world.tenant_id,
            scrape_id=third,
            posts=[tiktok("2", views=60, followers=7000)],
            recorded_at=T0 + timedelta(days=1),
        )
    accounts = await world.accounts()
    assert accounts["editguru"].followers == 7000
    assert accounts["editguru"].last_scraped_at == T0 + timedelta(days=1)


async def test_one_post_id_twice_in_a_batch_is_one_post_with_the_most_views(world: World) -> None:
    scrape = await world.scrape()
    async with world.sessions.begin() as session:
        result = await upsert_posts(
            session,
            tenant_id=world.tenant_id,
            scrape_id=scrape,
            posts=[tiktok("9", views=10), tiktok("9", views=900), tiktok("9", views=None)],
            recorded_at=T0,
        )
    assert (result.seen, result.new, result.updated) == (1, 1, 0)
    assert (await world.posts())["9"].views == 900


async def test_same_post_id_on_two_platforms_or_two_tenants_are_different_posts(
    world: World, sessions: async_sessionmaker[AsyncSession]
) -> None:
    scrape = await world.scrape()
    instagram = ScrapedPost(platform=Platform.INSTAGRAM, post_id="42", account="editguru")
    async with sessions.begin() as session:
        result = await upsert_posts(
            session,
            tenant_id=world.tenant_id,
            scrape_id=scrape,
            posts=[tiktok("42", views=1), instagram],
            recorded_at=T0,
        )
    assert result.new == 2
    async with sessions() as session:
        accounts = await session.scalar(
            select(func.count())
            .select_from(WatchedAccount)
            .where(WatchedAccount.tenant_id == world.tenant_id)
        )
    assert accounts == 2  # editguru on TikTok and on Instagram

    async with sessions.begin() as session:
        other_tenant = (await create_tenant(session, name="other")).tenant_id
    other = World(sessions, other_tenant)
    async with sessions.begin() as session:
        session.add(Project(id=other.project_id, tenant_id=other_tenant, name="p"))
    other_scrape = await other.scrape()
    async with sessions.begin() as session:
        result = await upsert_posts(
            session,
            tenant_id=other.tenant_id,
            scrape_id=other_scrape,
            posts=[tiktok("42", views=5)],
            recorded_at=T0,
        )
    assert result.new == 1
    assert (await other.posts())["42"].views == 5
    async with sessions() as session:
        mine = await session.scalars(
            select(Post).where(Post.tenant_id == world.tenant_id, Post.platform_post_id == "42")
        )
        assert {(p.platform, p.views) for p in mine} == {("tiktok", 1), ("instagram", None)}


async def test_importing_fixture_files_stores_valid_posts_and_reports_bad_rows(
    world: World,
) -> None:
    scrape = await world.scrape()
    report = await import_posts(
        world.sessions,
        tenant_id=world.tenant_id,
        scrape_id=scrape,
        rows=rows_of("dataset_tiktok-scraper_2025-09-21_13-33-25-969.jsonl"),
        recorded_at=T0,
        batch_size=1,
    )
    assert (report.seen, report.new, report.updated) == (2, 2, 0)
    assert report.rejected_count == 4
    assert [r.line for r in report.rejected] == [2, 4, 6, 7]

    posts = await world.posts()
    assert posts["7412345678901234567"].views == 1_200_000
    assert posts["7412345678901234999"].is_video is False
    assert (await world.accounts())["editguru"].followers == 1_200_000
    assert len(await world.snapshots(scrape)) == 2


async def test_a_repeat_with_more_views_in_a_later_batch_supersedes_and_counts_once(
    world: World,
) -> None:
    scrape = await world.scrape()
    rows: list[ScrapedPost | RejectedRow] = [
        tiktok("a", views=10, likes=3),
        tiktok("b", views=1),
        RejectedRow(line=1, reason="Post a is repeated at line 3 with more views."),
        tiktok("a", views=30),
    ]
    report = await import_posts(
        world.sessions,
        tenant_id=world.tenant_id,
        scrape_id=scrape,
        rows=rows,
        recorded_at=T0,
        batch_size=2,
    )
    assert (report.seen, report.new, report.updated, report.rejected_count) == (2, 2, 0, 1)
    posts = await world.posts()
    assert (posts["a"].views, posts["a"].likes) == (30, 3)
    snapshots = {s.post_id: s for s in await world.snapshots(scrape)}
    assert (snapshots[posts["a"].id].views, snapshots[posts["a"].id].likes) == (30, 3)


async def test_rejections_are_counted_all_but_reported_up_to_the_cap(world: World) -> None:
    scrape = await world.scrape()
    rows = [RejectedRow(line=i, reason="bad") for i in range(1, 251)]
    report = await import_posts(
        world.sessions,
        tenant_id=world.tenant_id,
        scrape_id=scrape,
        rows=[*rows, tiktok("z", views=1)],
        recorded_at=T0,
        max_reported_rejections=100,
    )
    assert report.rejected_count == 250
    assert [r.line for r in report.rejected] == list(range(1, 101))
    assert report.new == 1


async def test_a_failure_midway_leaves_no_post_of_the_import(world: World) -> None:
    scrape = await world.scrape()

    def rows() -> Iterator[ScrapedPost | RejectedRow]:
        for i in range(25):
            yield tiktok(f"m{i}", account=f"acct{i % 3}", views=i)
        raise DomainError(FailureCode.INVALID_DATASET, "The file broke at record 26.")

    with pytest.raises(DomainError) as caught:
        await import_posts(
            world.sessions,
            tenant_id=world.tenant_id,
            scrape_id=scrape,
            rows=rows(),
            recorded_at=T0,
            batch_size=10,  # two batches are written before the failure
        )
    assert caught.value.code is FailureCode.INVALID_DATASET
    assert await world.posts() == {}
    assert await world.snapshots(scrape) == []
    assert await world.accounts() == {}


async def test_a_truncated_json_file_imports_nothing(world: World, tmp_path: Path) -> None:
    source = (FIXTURES / "dataset_instagram-scraper_2025-11-15_00-31-39-764.json").read_bytes()
    broken = tmp_path / "dataset.json"
    broken.write_bytes(source[: source.index(b'"type": "Image"')])
    scrape = await world.scrape()
    with pytest.raises(DomainError) as caught, broken.open("rb") as stream:
        await import_posts(
            world.sessions,
            tenant_id=world.tenant_id,
            scrape_id=scrape,
            rows=iter_dataset(stream, "json"),
            recorded_at=T0,
            batch_size=1,
        )
    assert caught.value.code is FailureCode.INVALID_DATASET
    assert "record 3" in caught.value.message
    assert await world.posts() == {}


async def test_text_postgres_cannot_hold_is_cleaned_not_a_failed_batch(world: World) -> None:
    scrape = await world.scrape()
    # Both arrive as JSON escapes ("\u0000", a lone "\ud800") in real exports.
    post = tiktok("nul", views=1).model_copy(update={"caption": "a\x00b\ud800c é"})
    async with world.sessions.begin() as session:
        result = await upsert_posts(
            session,
            tenant_id=world.tenant_id,
            scrape_id=scrape,
            posts=[post, tiktok("plain", views=2)],
            recorded_at=T0,
        )
    assert result.new == 2
    assert (await world.posts())["nul"].caption == "ab?c é"
