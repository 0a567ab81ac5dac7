"""Scripts as managed assets, at the service level, on a real PostgreSQL.

The world builders at the top are shared with the API and CLI tests of scripts.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from reelflow.core.db import SessionFactory, create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.tenants import create_tenant
from reelflow.discover import scripts
from reelflow.discover.scripts import (
    InvalidScript,
    ScriptObjectNotFound,
    ScriptTransitionRefused,
)
from schemas.discover import (
    SCRIPT_TRANSITIONS,
    AdaptedScene,
    Score,
    ScriptAdaptation,
    ScriptContent,
    ScriptStatus,
)
from schemas.discover_tables import (
    Adaptation,
    Analysis,
    Brand,
    Post,
    Product,
    Project,
    Script,
    WatchedAccount,
)
from schemas.tables import Video


@dataclass(frozen=True)
class World:
    """One tenant's objects around a script."""

    tenant_id: uuid.UUID
    api_key: str
    brand_id: uuid.UUID
    product_id: uuid.UUID
    project_id: uuid.UUID
    video_id: uuid.UUID
    analysis_id: uuid.UUID
    adaptation_id: uuid.UUID
    post_id: uuid.UUID


ADAPTED = ScriptAdaptation(
    title="Screen Time Standoff",
    hook="Your kid just said no to the iPad. Here's why. 📵",
    scenes=[
        AdaptedScene(
            start_s=0,
            end_s=3,
            original="Parent holds a tablet out of reach",
            direction="Close-up: parent slides the Core Deck across the table",
            voiceover="What if screen time ended without a fight?",
            on_screen_text="No more standoffs",
        ),
        AdaptedScene(
            start_s=3,
            end_s=9.5,
            direction="Kids laugh over a card; café table, warm light",
            voiceover="Thirty questions that get them talking | for real",
        ),
    ],
    call_to_action="Get the Core Deck — link in bio",
    audience_fit=Score(score=8.5, reasons=["parents of 6–12 year olds"]),
    adapter="offline-template",
    is_template=True,
)


def hand_written(hook: str = "Stop scrolling: this deck ends screen-time fights") -> ScriptContent:
    return ScriptContent(
        hook=hook,
        scenes=[
            AdaptedScene(start_s=0, end_s=2.5, direction="Hands shuffle the deck"),
            AdaptedScene(start_s=2.5, end_s=8, direction="Family at dinner", voiceover="Ask."),
        ],
        call_to_action="Shop now",
        notes_for_production="Shoot vertical, natural light.",
    )


async def make_world(session: AsyncSession, name: str, *, viral_score: float = 7.5) -> World:
    """Create everything and commit."""
    tenant = await create_tenant(session, name=name)
    tid = tenant.tenant_id
    brand = Brand(id=uuid.uuid4(), tenant_id=tid, name="Ungrind")
    product = Product(id=uuid.uuid4(), tenant_id=tid, brand_id=brand.id, name="Core Deck")
    project = Project(id=uuid.uuid4(), tenant_id=tid, name="Parenting wins")
    video = Video(
        id=uuid.uuid4(),
        tenant_id=tid,
        title="outlier",
        origin="scraped",
        source_key="k",
        status="completed",
        stage="done",
    )
    account = WatchedAccount(id=uuid.uuid4(), tenant_id=tid, platform="tiktok", handle="mom")
    post = Post(
        id=uuid.uuid4(),
        tenant_id=tid,
        account_id=account.id,
        platform="tiktok",
        platform_post_id=f"p-{uuid.uuid4().hex[:8]}",
    )
    analysis = Analysis(
        id=uuid.uuid4(),
        tenant_id=tid,
        video_id=video.id,
        analyzer="offline",
        model="offline",
        prompt_version="1",
        analysis={},
        viral_score=viral_score,
    )
    adaptation = Adaptation(
        id=uuid.uuid4(),
        tenant_id=tid,
        analysis_id=analysis.id,
        product_id=product.id,
        adapter="offline-template",
        adaptation=ADAPTED.model_dump(mode="json"),
        fit_score=8.5,
    )
    # Flushed in dependency order: the tables' foreign keys have no ORM relationships.
    for row in (brand, product, project, video, account, post, analysis, adaptation):
        session.add(row)
        await session.flush()
    await session.commit()
    return World(
        tenant_id=tid,
        api_key=tenant.api_key,
        brand_id=brand.id,
        product_id=product.id,
        project_id=project.id,
        video_id=video.id,
        analysis_id=analysis.id,
        adaptation_id=adaptation.id,
        post_id=post.id,
    )


# --- fixtures ------------------------------------------------------------------------------

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def migrated_url(database_url: str) -> str:
    upgrade_database(database_url)
    return database_url


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_url, pool_size=4)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def sessions(engine: AsyncEngine) -> SessionFactory:
    return session_factory(engine)


@pytest_asyncio.fixture(loop_scope="session")
async def alice(sessions: SessionFactory) -> World:
    async with sessions() as session:
        return await make_world(session, f"alice-{uuid.uuid4().hex[:6]}")


@pytest_asyncio.fixture(loop_scope="session")
async def bob(sessions: SessionFactory) -> World:
    async with sessions() as session:
        return await make_world(session, f"bob-{uuid.uuid4().hex[:6]}")


async def _draft(sessions: SessionFactory, world: World, title: str = "Hand made") -> Script:
    async with sessions.begin() as session:
        return await scripts.create_script(
            session,
            tenant_id=world.tenant_id,
            title=title,
            content=hand_written(),
            project_id=world.project_id,
            product_id=world.product_id,
            by="rf_alice01",
            now=NOW,
        )


async def _move(
    sessions: SessionFactory, world: World, script_id: uuid.UUID, *path: ScriptStatus
) -> Script:
    script = None
    async with sessions.begin() as session:
        for i, status in enumerate(path):
            script = await scripts.change_status(
                session,
                tenant_id=world.tenant_id,
                script_id=script_id,
                to=status,
                by="rf_alice01",
                now=NOW + timedelta(minutes=i + 1),
            )
    assert script is not None
    return script


# --- creation ------------------------------------------------------------------------------


async def test_a_hand_written_script_is_a_draft_of_the_products_brand(
    sessions: SessionFactory, alice: World
) -> None:
    script = await _draft(sessions, alice)
    assert (script.version, script.status, script.parent_script_id) == (1, "draft", None)
    assert script.brand_id == alice.brand_id and script.product_id == alice.product_id
    assert ScriptContent.model_validate(script.content) == hand_written()
    assert script.status_history == [
        {"from": None, "to": "draft", "by": "rf_alice01", "at": NOW.isoformat()}
    ]


async def test_a_script_from_an_adaptation_carries_its_content_score_and_source(
    sessions: SessionFactory, alice: World
) -> None:
    async with sessions.begin() as session:
        script = await scripts.create_from_adaptation(
            session,
            tenant_id=alice.tenant_id,
            adaptation_id=alice.adaptation_id,
            project_id=alice.project_id,
            by="workflow",
        )
    assert script.title == ADAPTED.title
    content = ScriptContent.model_validate(script.content)
    assert content.hook == ADAPTED.hook and content.scenes == ADAPTED.scenes
    assert content.call_to_action == ADAPTED.call_to_action
    assert script.predicted_viral_score == 7.5
    assert script.source_video_id == alice.video_id
    assert (script.product_id, script.brand_id) == (alice.product_id, alice.brand_id)
    assert script.adaptation_id == alice.adaptation_id


async def test_creating_from_an_adaptation_twice_returns_the_first_script(
    sessions: SessionFactory, alice: World
) -> None:
    async def create(title: str | None) -> uuid.UUID:
        async with sessions.begin() as session:
            script = await scripts.create_from_adaptation(
                session,
                tenant_id=alice.tenant_id,
                adaptation_id=alice.adaptation_id,
                project_id=alice.project_id,
                title=title,
                by="workflow",
            )
            return script.id

    # Concurrent retries of the same activity: the adaptation's lock lets one create.
    ids = await asyncio.gather(create(None), create("Other title"), create(None))
    assert len(set(ids)) == 1
    async with sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Script)
            .where(Script.adaptation_id == alice.adaptation_id)
        )
    assert count == 1


async def test_another_tenants_product_project_or_adaptation_is_not_found(
    sessions: SessionFactory, alice: World, bob: World
) -> None:
    async with sessions() as session:
        with pytest.raises(ScriptObjectNotFound) as product:
            await scripts.create_script(
                session,
                tenant_id=alice.tenant_id,
                title="x",
                content=hand_written(),
                product_id=bob.product_id,
                by="a",
            )
        assert product.value.what == "product"
        with pytest.raises(ScriptObjectNotFound) as project:
            await scripts.create_script(
                session,
                tenant_id=alice.tenant_id,
                title="x",
                content=hand_written(),
                project_id=bob.project_id,
                by="a",
            )
        assert project.value.what == "project"
        with pytest.raises(ScriptObjectNotFound) as adaptation:
            await scripts.create_from_adaptation(
                session,
                tenant_id=alice.tenant_id,
                adaptation_id=bob.adaptation_id,
                project_id=None,
                by="a",
            )
        assert adaptation.value.what == "adaptation"


async def test_an_empty_title_is_refused(sessions: SessionFactory, alice: World) -> None:
    async with sessions() as session:
        with pytest.raises(InvalidScript):
            await scripts.create_script(
                session, tenant_id=alice.tenant_id, title="   ", content=hand_written(), by="a"
            )


# --- versions ------------------------------------------------------------------------------


async def test_versions_chain_to_their_parent_and_number_across_the_chain(
    sessions: SessionFactory, alice: World
) -> None:
    v1 = await _draft(sessions, alice, "Chain")
    await _move(sessions, alice, v1.id, ScriptStatus.REVIEW)
    async with sessions.begin() as session:
        v2 = await scripts.new_version(
            session,
            tenant_id=alice.tenant_id,
            script_id=v1.id,
            content=hand_written("A sharper hook"),
            title=None,
            notes="Sharper hook",
            by="rf_alice01",
        )
    assert (v2.version, v2.parent_script_id, v2.status, v2.title) == (2, v1.id, "draft", "Chain")
    assert v2.notes == "Sharper hook" and v2.product_id == alice.product_id
    # Branching from v1 again (a revert): parent v1, number after the chain's highest.
    async with sessions.begin() as session:
        v3 = await scripts.new_version(
            session,
            tenant_id=alice.tenant_id,
            script_id=v1.id,
            content=None,
            title="Chain, back to the original",
            notes="Back to v1's hook",
            by="rf_alice01",
        )
    assert (v3.version, v3.parent_script_id) == (3, v1.id)
    assert ScriptContent.model_validate(v3.content).hook == hand_written().hook
    async with sessions() as session:
        for member in (v1, v2, v3):
            history = await scripts.version_history(
                session, tenant_id=alice.tenant_id, script_id=member.id
            )
            assert [s.version for s in history] == [1, 2, 3]
            assert [s.id for s in history] == [v1.id, v2.id, v3.id]
    # The version the new one was made from keeps its own status.
    async with sessions() as session:
        original = await scripts.get_script(session, tenant_id=alice.tenant_id, script_id=v1.id)
    assert original.status == "review"


async def test_versions_made_at_once_get_distinct_numbers(
    sessions: SessionFactory, alice: World
) -> None:
    v1 = await _draft(sessions, alice, "Busy")

    async def version(i: int) -> int:
        async with sessions.begin() as session:
            script = await scripts.new_version(
                session,
                tenant_id=alice.tenant_id,
                script_id=v1.id,
                content=None,
                title=None,
                notes=f"edit {i}",
                by="a",
            )
            return script.version

    numbers = await asyncio.gather(*(version(i) for i in range(3)))
    assert sorted(numbers) == [2, 3, 4]


async def test_a_version_needs_notes(sessions: SessionFactory, alice: World) -> None:
    v1 = await _draft(sessions, alice)
    async with sessions() as session:
        with pytest.raises(InvalidScript):
            await scripts.new_version(
                session,
                tenant_id=alice.tenant_id,
                script_id=v1.id,
                content=None,
                title=None,
                notes=" ",
                by="a",
            )


# --- status --------------------------------------------------------------------------------


async def test_the_whole_way_to_published_is_recorded(
    sessions: SessionFactory, alice: World
) -> None:
    script = await _draft(sessions, alice)
    path = [
        ScriptStatus.REVIEW,
        ScriptStatus.DRAFT,
        ScriptStatus.REVIEW,
        ScriptStatus.APPROVED,
        ScriptStatus.IN_PRODUCTION,
        ScriptStatus.PRODUCED,
        ScriptStatus.PUBLISHED,
    ]
    done = await _move(sessions, alice, script.id, *path)
    assert done.status == "published"
    moves = [(entry["from"], entry["to"]) for entry in done.status_history]
    expected = zip(["draft", *[s.value for s in path[:-1]]], [s.value for s in path], strict=True)
    assert moves == [(None, "draft"), *expected]
    assert all(entry["by"] == "rf_alice01" for entry in done.status_history)
    assert done.status_history[-1]["at"] == (NOW + timedelta(minutes=len(path))).isoformat()


ALL_MOVES = [(a, b) for a in ScriptStatus for b in ScriptStatus]
ILLEGAL_MOVES = [(a, b) for a, b in ALL_MOVES if b not in SCRIPT_TRANSITIONS[a]]
PATH_TO = {
    ScriptStatus.DRAFT: [],
    ScriptStatus.REVIEW: [ScriptStatus.REVIEW],
    ScriptStatus.APPROVED: [ScriptStatus.REVIEW, ScriptStatus.APPROVED],
    ScriptStatus.IN_PRODUCTION: [
        ScriptStatus.REVIEW,
        ScriptStatus.APPROVED,
        ScriptStatus.IN_PRODUCTION,
    ],
    ScriptStatus.PRODUCED: [
        ScriptStatus.REVIEW,
        ScriptStatus.APPROVED,
        ScriptStatus.IN_PRODUCTION,
        ScriptStatus.PRODUCED,
    ],
    ScriptStatus.PUBLISHED: [
        ScriptStatus.REVIEW,
        ScriptStatus.APPROVED,
        ScriptStatus.IN_PRODUCTION,
        ScriptStatus.PRODUCED,
        ScriptStatus.PUBLISHED,
    ],
}


@pytest.mark.parametrize(("current", "requested"), ILLEGAL_MOVES, ids=lambda s: str(s))
async def test_every_illegal_move_is_refused_naming_the_allowed_ones(
    sessions: SessionFactory, alice: World, current: ScriptStatus, requested: ScriptStatus
) -> None:
    script = await _draft(sessions, alice)
    if PATH_TO[current]:
        await _move(sessions, alice, script.id, *PATH_TO[current])
    async with sessions() as session:
        with pytest.raises(ScriptTransitionRefused) as refused:
            await scripts.change_status(
                session,
                tenant_id=alice.tenant_id,
                script_id=script.id,
                to=requested,
                by="a",
                now=NOW,
            )
    assert refused.value.current == current and refused.value.requested == requested
    assert refused.value.allowed == SCRIPT_TRANSITIONS[current]
    for allowed in SCRIPT_TRANSITIONS[current]:
        assert allowed.value in str(refused.value)
    async with sessions() as session:
        unchanged = await scripts.get_script(
            session, tenant_id=alice.tenant_id, script_id=script.id
        )
    assert unchanged.status == current.value
    assert len(unchanged.status_history) == 1 + len(PATH_TO[current])


async def test_of_two_racing_moves_exactly_one_wins(sessions: SessionFactory, alice: World) -> None:
    script = await _draft(sessions, alice)
    first_locked = asyncio.Event()

    async def move(by: str, hold: bool) -> str:
        async with sessions.begin() as session:
            try:
                await scripts.change_status(
                    session,
                    tenant_id=alice.tenant_id,
                    script_id=script.id,
                    to=ScriptStatus.REVIEW,
                    by=by,
                    now=NOW,
                )
            except ScriptTransitionRefused:
                return "refused"
            if hold:
                # Keep the lock (uncommitted) while the other move starts and waits on it.
                first_locked.set()
                await asyncio.sleep(0.2)
            return "moved"

    async def second() -> str:
        await first_locked.wait()
        return await move("second", hold=False)

    results = await asyncio.gather(move("first", hold=True), second())
    assert sorted(results) == ["moved", "refused"]
    async with sessions() as session:
        final = await scripts.get_script(session, tenant_id=alice.tenant_id, script_id=script.id)
    assert final.status == "review"
    assert [e["to"] for e in final.status_history] == ["draft", "review"]
    assert final.status_history[-1]["by"] == "first"


async def test_another_tenants_script_is_not_found(
    sessions: SessionFactory, alice: World, bob: World
) -> None:
    script = await _draft(sessions, alice)
    async with sessions() as session:
        for call in (
            scripts.get_script(session, tenant_id=bob.tenant_id, script_id=script.id),
            scripts.version_history(session, tenant_id=bob.tenant_id, script_id=script.id),
            scripts.change_status(
                session,
                tenant_id=bob.tenant_id,
                script_id=script.id,
                to=ScriptStatus.REVIEW,
                by="b",
                now=NOW,
            ),
            scripts.new_version(
                session,
                tenant_id=bob.tenant_id,
                script_id=script.id,
                content=None,
                title=None,
                notes="n",
                by="b",
            ),
            scripts.link_production(
                session, tenant_id=bob.tenant_id, script_id=script.id, produced_video_id=None
            ),
        ):
            with pytest.raises(ScriptObjectNotFound):
                await call


# --- production links ----------------------------------------------------------------------


async def test_links_accept_only_the_tenants_video_and_post(
    sessions: SessionFactory, alice: World, bob: World
) -> None:
    script = await _draft(sessions, alice)
    async with sessions() as session:
        with pytest.raises(ScriptObjectNotFound) as video:
            await scripts.link_production(
                session,
                tenant_id=alice.tenant_id,
                script_id=script.id,
                produced_video_id=bob.video_id,
            )
        assert video.value.what == "video"
        with pytest.raises(ScriptObjectNotFound) as post:
            await scripts.link_production(
                session,
                tenant_id=alice.tenant_id,
                script_id=script.id,
                published_post_id=bob.post_id,
            )
        assert post.value.what == "post"
    async with sessions.begin() as session:
        await scripts.link_production(
            session,
            tenant_id=alice.tenant_id,
            script_id=script.id,
            produced_video_id=alice.video_id,
        )
    async with sessions.begin() as session:
        linked = await scripts.link_production(
            session, tenant_id=alice.tenant_id, script_id=script.id, published_post_id=alice.post_id
        )
    assert (linked.produced_video_id, linked.published_post_id) == (alice.video_id, alice.post_id)


# --- lists ---------------------------------------------------------------------------------


async def test_lists_filter_and_page_without_gaps_or_repeats(
    sessions: SessionFactory,
) -> None:
    async with sessions() as session:
        carol = await make_world(session, f"carol-{uuid.uuid4().hex[:6]}")
    # Created in one transaction: equal created_at, so the id must break the ties.
    async with sessions.begin() as session:
        made = [
            await scripts.create_script(
                session,
                tenant_id=carol.tenant_id,
                title=f"s{i}",
                content=hand_written(),
                product_id=carol.product_id if i % 2 else None,
                project_id=carol.project_id,
                by="c",
            )
            for i in range(7)
        ]
    await _move(sessions, carol, made[0].id, ScriptStatus.REVIEW)

    seen: list[uuid.UUID] = []
    after: Script | None = None
    async with sessions() as session:
        while True:
            page = await scripts.list_scripts(
                session, tenant_id=carol.tenant_id, limit=3, after=after
            )
            seen += [s.id for s in page.items]
            if not page.has_more:
                break
            after = page.items[-1]
        assert sorted(seen) == sorted(s.id for s in made) and len(seen) == 7
        keys = [
            (s.created_at, s.id)
            for s in (
                await scripts.list_scripts(session, tenant_id=carol.tenant_id, limit=50)
            ).items
        ]
        assert keys == sorted(keys, reverse=True)

        with_product = await scripts.list_scripts(
            session, tenant_id=carol.tenant_id, product_id=carol.product_id, limit=50
        )
        assert {s.title for s in with_product.items} == {"s1", "s3", "s5"}
        by_brand = await scripts.list_scripts(
            session, tenant_id=carol.tenant_id, brand_id=carol.brand_id, limit=50
        )
        assert {s.title for s in by_brand.items} == {"s1", "s3", "s5"}
        in_review = await scripts.list_scripts(
            session, tenant_id=carol.tenant_id, status=ScriptStatus.REVIEW, limit=50
        )
        assert [s.title for s in in_review.items] == ["s0"]
        in_project = await scripts.list_scripts(
            session, tenant_id=carol.tenant_id, project_id=carol.project_id, limit=50
        )
        assert len(in_project.items) == 7
        others = await scripts.list_scripts(session, tenant_id=uuid.uuid4(), limit=50)
        assert others.items == [] and not others.has_more


async def test_export_names_are_the_products_and_brands(
    sessions: SessionFactory, alice: World
) -> None:
    script = await _draft(sessions, alice)
    async with sessions() as session:
        assert await scripts.export_names(session, script) == ("Core Deck", "Ungrind")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (ScriptContent(hook=" "), "hook: must not be empty"),
        (ScriptContent(hook="nul \x00"), "hook: must not contain the NUL"),
        (ScriptContent(hook="h", call_to_action="x" * 2_001), "call_to_action: at most 2000"),
        (
            ScriptContent(hook="h", scenes=[AdaptedScene(start_s=4, end_s=1, direction="d")]),
            "scenes.0: end_s must not be before start_s",
        ),
        (
            ScriptContent(
                hook="h", scenes=[AdaptedScene(start_s=0, end_s=float("inf"), direction="d")]
            ),
            "scenes.0: start_s and end_s must be finite",
        ),
        (
            ScriptContent(hook="h", scenes=[AdaptedScene(start_s=0, end_s=1, direction="\ud800")]),
            "scenes.0.direction: must be valid Unicode",
        ),
        (
            ScriptContent(hook="h", scenes=[AdaptedScene(start_s=0, end_s=1, direction="d")] * 51),
            "scenes: at most 50",
        ),
    ],
)
async def test_a_body_the_database_cannot_store_is_refused_before_it_is_written(
    sessions: SessionFactory, alice: World, content: ScriptContent, problem: str
) -> None:
    v1 = await _draft(sessions, alice)
    async with sessions() as session:
        with pytest.raises(InvalidScript, match=re.escape(f"content.{problem}")):
            await scripts.create_script(
                session, tenant_id=alice.tenant_id, title="t", content=content, by="a"
            )
        with pytest.raises(InvalidScript, match=re.escape(f"content.{problem}")):
            await scripts.new_version(
                session,
                tenant_id=alice.tenant_id,
                script_id=v1.id,
                content=content,
                title=None,
                notes="n",
                by="a",
            )
