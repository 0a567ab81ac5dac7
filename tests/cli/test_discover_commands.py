"""`reelflow discover …` as a person types it, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

from reelflow.core.db import create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.tenants import create_tenant
from reelflow.discover import scrapes
from reelflow.discover.commands import app
from schemas.discover import OutlierTier, Platform
from tests.discover.test_catalog import seed_analysis, seed_post, seed_video


@pytest.fixture(scope="module")
def migrated_url(database_url: str) -> str:
    upgrade_database(database_url)
    return database_url


def _run_db(database_url: str, work: Any) -> Any:
    async def go() -> Any:
        engine = create_engine(database_url, pool_size=1)
        try:
            async with session_factory(engine).begin() as session:
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(go())


@pytest.fixture
def tenant(migrated_url: str) -> uuid.UUID:
    async def make(session: Any) -> uuid.UUID:
        return (await create_tenant(session, name="cli")).tenant_id

    tenant_id: uuid.UUID = _run_db(migrated_url, make)
    return tenant_id


@pytest.fixture
def discover(migrated_url: str, tenant: uuid.UUID) -> Any:
    runner = CliRunner()
    env = {"DATABASE_URL": migrated_url, "REELFLOW_TENANT_ID": str(tenant), "COLUMNS": "250"}

    def invoke(*args: str, **extra_env: str) -> Result:
        return runner.invoke(app, list(args), env={**env, **extra_env})

    return invoke


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def test_brands_products_and_a_scheduled_project_from_the_command_line(
    discover: Any, local_env: WorkflowEnvironment
) -> None:
    temporal = local_env.client
    on_temporal = {
        "TEMPORAL_ADDRESS": temporal.service_client.config.target_host,
        "TASK_QUEUE_PREFIX": f"clitest-{uuid.uuid4().hex[:12]}",
        "APIFY_TOKEN": "apify-test-token",
    }

    async def run(*args: str) -> Result:
        # In a thread: the command runs its own event loop, as it does from a shell.
        result: Result = await asyncio.to_thread(lambda: discover(*args, **on_temporal))
        return result

    brand = _json(await run("brand", "create", "Acme", "--description", "Games", "--json"))
    deck = _json(
        await run(
            "product",
            "create",
            "Core Deck",
            "--brand",
            "Acme",
            "--audience",
            "parents of toddlers",
            "--benefit",
            "less screen time",
            "--benefit",
            "family fun",
            "--json",
        )
    )
    assert deck["brand_id"] == brand["brand_id"]
    assert deck["benefits"] == ["less screen time", "family fun"]

    created = await run(
        "project",
        "create",
        "Toddlers",
        "--account",
        "instagram:@Nursery.Makeover",
        "--account",
        "tiktok:https://www.tiktok.com/@tiny_chef",
        "--product",
        deck["product_id"],
        "--every",
        "24h",
    )
    assert created.exit_code == 0, created.output
    assert "@nursery.makeover" in created.stdout and "@tiny_chef" in created.stdout
    assert "every 1d" in created.stdout and "Core Deck" in created.stdout

    shown = _json(await run("project", "show", "Toddlers", "--json"))
    assert [a["handle"] for a in shown["accounts"]] == ["nursery.makeover", "tiny_chef"]
    assert shown["schedule_interval_s"] == 86400

    listing = await run("project", "list")
    assert listing.exit_code == 0 and "Toddlers" in listing.stdout
    brands = await run("brand", "list")
    assert "Acme" in brands.stdout and "Games" in brands.stdout
    products = await run("product", "list", "--brand", brand["brand_id"])
    assert "Core Deck" in products.stdout and "less screen time" in products.stdout

    schedule = await scrapes.describe_schedule(temporal, uuid.UUID(shown["project_id"]))
    assert schedule is not None and schedule.every_s == 86400
    await scrapes.delete_schedule(temporal, uuid.UUID(shown["project_id"]))


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("brand", "create", "   "), "name: must not be empty"),
        (("product", "create", "X", "--brand", "Nope"), "no brand with id or name 'Nope'"),
        (
            ("project", "create", "P", "--account", "youtube:@x"),
            "write the account as instagram:@handle",
        ),
        (
            ("project", "create", "P", "--account", "https://www.instagram.com/p/Cx1/"),
            "not a profile",
        ),
        (("project", "create", "P", "--every", "soon"), "not a duration"),
        (("project", "create", "P", "--product", "Missing"), "no product with id or name"),
        (("project", "show", str(uuid.uuid4())), "no project with id"),
        (
            ("compare", "--video", "not-an-id", "--project", "P"),
            "--video must be a video or post id",
        ),
    ],
)
def test_refusals_are_one_readable_line_and_exit_1(
    discover: Any, args: tuple[str, ...], says: str
) -> None:
    result = discover(*args)
    assert result.exit_code == 1, result.output
    assert says in result.stderr
    assert "Traceback" not in result.output


def test_a_schedule_needs_apify_and_then_nothing_is_created(discover: Any) -> None:
    refused = discover("project", "create", "P", "--every", "24h", APIFY_TOKEN="")
    assert refused.exit_code == 1 and "set APIFY_TOKEN" in refused.stderr
    assert discover("project", "create", "P").exit_code == 0


def test_duplicates_and_unknown_tenants_are_refused(discover: Any) -> None:
    assert discover("brand", "create", "Acme").exit_code == 0
    again = discover("brand", "create", "Acme")
    assert again.exit_code == 1 and "'Acme' already exists" in again.stderr
    stranger = discover("brand", "list", REELFLOW_TENANT_ID=str(uuid.uuid4()))
    assert stranger.exit_code == 1 and "no tenant with id" in stranger.stderr
    garbage = discover("brand", "list", "--tenant", "acme")
    assert garbage.exit_code == 1 and "--tenant must be a tenant id" in garbage.stderr


def test_posts_and_the_comparison_view(discover: Any, migrated_url: str, tenant: uuid.UUID) -> None:
    brand = _json(discover("brand", "create", "Acme", "--json"))
    ids = {
        name: _json(discover("product", "create", name, "--brand", brand["brand_id"], "--json"))[
            "product_id"
        ]
        for name in ("Core Deck", "Expansion Pack", "Travel Edition")
    }
    project_args = ["project", "create", "P", "--account", "instagram:@watched"]
    for product_id in ids.values():
        project_args += ["--product", product_id]
    assert discover(*project_args).exit_code == 0

    async def seed(session: Any) -> tuple[uuid.UUID, uuid.UUID]:
        video_id = await seed_video(session, tenant)
        post_id = await seed_post(
            session,
            tenant,
            platform=Platform.INSTAGRAM,
            handle="watched",
            views=125_000,
            tier=OutlierTier.X10,
            video_id=video_id,
        )
        await seed_post(session, tenant, platform=Platform.INSTAGRAM, handle="watched")
        await seed_analysis(
            session,
            tenant,
            video_id=video_id,
            post_id=post_id,
            fits={
                uuid.UUID(ids["Core Deck"]): (
                    "Core Deck",
                    9,
                    ["Perfect age fit", "strong emotional alignment"],
                ),
                uuid.UUID(ids["Expansion Pack"]): ("Expansion Pack", 7, ["Good fit"]),
            },
        )
        return video_id, post_id

    video_id, post_id = _run_db(migrated_url, seed)

    outliers = discover("posts", "--project", "P", "--tier", "5x")
    assert outliers.exit_code == 0, outliers.output
    assert "125,000" in outliers.stdout and "10x" in outliers.stdout
    assert "too_few_posts" not in outliers.stdout and str(post_id) in outliers.stdout
    everything = _json(discover("posts", "--project", "P", "--json"))
    assert len(everything) == 2

    compared = discover("compare", "--video", str(video_id), "--project", "P")
    assert compared.exit_code == 0, compared.output
    lines = compared.stdout.splitlines()
    assert "1. Core Deck - 9/10 (Perfect age fit, strong emotional alignment)" in lines
    assert "2. Expansion Pack - 7/10 (Good fit)" in lines
    assert "Not adapted yet: Travel Edition" in lines
    assert "Recommended: Core Deck" in lines
    assert "Reason: Perfect age fit; strong emotional alignment" in lines

    # The post the video came from names it as well.
    by_post = _json(discover("compare", "--video", str(post_id), "--project", "P", "--json"))
    assert by_post["recommended_product_id"] == ids["Core Deck"]


def test_a_schedule_temporal_does_not_take_leaves_no_project(discover: Any) -> None:
    unreachable = discover(
        "project",
        "create",
        "P",
        "--every",
        "24h",
        APIFY_TOKEN="apify-test-token",
        TEMPORAL_ADDRESS="127.0.0.1:1",
    )
    assert unreachable.exit_code == 1, unreachable.output
    assert "Temporal did not answer at 127.0.0.1:1" in unreachable.stderr
    assert "Traceback" not in unreachable.output
    assert discover("project", "create", "P").exit_code == 0
