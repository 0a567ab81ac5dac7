"""`reelflow script …` as a user runs it, against a real PostgreSQL (the typer app itself,
through `typer.testing.CliRunner`)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Protocol

import pytest
from typer.testing import CliRunner, Result

from reelflow.core.db import create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.discover.script_commands import app
from tests.discover.test_scripts import ADAPTED, World, hand_written, make_world

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def migrated_url(database_url: str) -> str:
    upgrade_database(database_url)
    return database_url


async def _world(url: str, name: str) -> World:
    engine = create_engine(url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            return await make_world(session, name)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def alice(migrated_url: str) -> World:
    return asyncio.run(_world(migrated_url, "alice"))


@pytest.fixture(scope="module")
def bob(migrated_url: str) -> World:
    return asyncio.run(_world(migrated_url, "bob"))


class Invoke(Protocol):
    """Runs `reelflow script …` with the module's database, as `tenant` (None: no tenant)."""

    def __call__(self, *args: str, tenant: World | None = ...) -> Result: ...


@pytest.fixture
def run(migrated_url: str, alice: World) -> Invoke:
    runner = CliRunner()

    def invoke(*args: str, tenant: World | None = alice) -> Result:
        env = {"DATABASE_URL": migrated_url, "COLUMNS": "200"}
        if tenant is not None:
            env["REELFLOW_TENANT_ID"] = str(tenant.tenant_id)
        return runner.invoke(app, list(args), env=env)

    return invoke


def _created_id(result: Result) -> str:
    assert result.exit_code == 0, result.output
    match = UUID.search(result.stdout)
    assert match is not None, result.stdout
    return match.group(0)


def _refused(result: Result, *fragments: str) -> str:
    """Exit code 1, one readable line on stderr, no traceback."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    message = " ".join(result.stderr.split())
    assert message.startswith("error:") and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_create_by_hand_and_show_it(run: Invoke) -> None:
    created = run(
        "create",
        "--title",
        "Screen time standoff",
        "--hook",
        "Your kid just said no to the iPad",
        "--scene",
        "0-3|Close-up of the deck|What if screen time ended without a fight?|No more standoffs",
        "--scene",
        "3-8.5|Family at dinner",
        "--cta",
        "Link in bio",
    )
    script_id = _created_id(created)
    assert "draft" in created.stdout
    shown = run("show", script_id)
    assert shown.exit_code == 0, shown.output
    for text in (
        "Screen time standoff",
        "Your kid just said no to the iPad",
        "0:00–0:03",
        "Close-up of the deck",
        "No more standoffs",
        "0:03–0:08.5",
        "Link in bio",
        "may move to",
        "review",
        "Versions",
        "Status history",
        "(created) → draft",
        "cli",
    ):
        assert text in shown.stdout, text


def test_create_from_an_adaptation_twice_is_one_script(run: Invoke, alice: World) -> None:
    first = run("create", "--adaptation", str(alice.adaptation_id), "--json")
    again = run("create", "--adaptation", str(alice.adaptation_id), "--json")
    assert first.exit_code == again.exit_code == 0, first.output
    assert json.loads(first.stdout) == json.loads(again.stdout)
    assert json.loads(first.stdout)["title"] == ADAPTED.title
    shown = json.loads(run("show", json.loads(first.stdout)["script_id"], "--json").stdout)
    assert shown["predicted_viral_score"] == 7.5 and shown["brand"]["name"] == "Ungrind"


def test_versions_statuses_and_list_filters(run: Invoke, alice: World, tmp_path: Path) -> None:
    script_id = _created_id(
        run("create", "--title", "Versioned", "--hook", "h", "--product", str(alice.product_id))
    )
    content_file = tmp_path / "content.json"
    content_file.write_text(hand_written("A sharper hook").model_dump_json())
    made = run("version", script_id, "--notes", "Sharper hook", "--content-file", str(content_file))
    assert made.exit_code == 0, made.output
    assert "v2" in made.stdout
    v2 = UUID.findall(made.stdout)[0]

    moved = run("status", v2, "review")
    assert moved.exit_code == 0, moved.output
    assert "draft → review" in moved.stdout

    listed = run("list", "--status", "review", "--product", str(alice.product_id))
    assert listed.exit_code == 0, listed.output
    assert v2 in listed.stdout and script_id not in listed.stdout
    shown = run("show", v2)
    assert "Sharper hook" in shown.stdout and "A sharper hook" in shown.stdout
    assert "v1" in shown.stdout and "v2" in shown.stdout
    nothing = run("list", "--brand", str(uuid.uuid4()))
    assert nothing.exit_code == 0 and "no scripts match" in nothing.stdout


def test_an_illegal_move_names_the_allowed_states(run: Invoke) -> None:
    script_id = _created_id(run("create", "--title", "t", "--hook", "h"))
    _refused(run("status", script_id, "approved"), "draft", "approved", "allowed next: review")
    _refused(run("status", script_id, "draft"), "allowed next: review")
    for step in ("review", "approved", "in_production", "produced", "published"):
        assert run("status", script_id, step).exit_code == 0
    _refused(run("status", script_id, "produced"), "published is final")


def test_another_tenants_script_is_not_found(run: Invoke, bob: World) -> None:
    script_id = _created_id(run("create", "--title", "mine", "--hook", "h"))
    for args in (
        ("show", script_id),
        ("status", script_id, "review"),
        ("version", script_id, "--notes", "n"),
        ("export", script_id, "--format", "json", "--out", "-"),
        ("link", script_id, "--video", str(bob.video_id)),
    ):
        _refused(run(*args, tenant=bob), f"no script with id {script_id}")


def test_links_take_only_the_tenants_objects(run: Invoke, alice: World, bob: World) -> None:
    script_id = _created_id(run("create", "--title", "t", "--hook", "h"))
    _refused(run("link", script_id, "--video", str(bob.video_id)), "no video with id")
    linked = run("link", script_id, "--video", str(alice.video_id), "--post", str(alice.post_id))
    assert linked.exit_code == 0, linked.output
    assert str(alice.video_id) in linked.stdout and str(alice.post_id) in linked.stdout


def test_exports_to_files_and_stdout(
    run: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script_id = _created_id(run("create", "--title", "Café night 😀", "--hook", "Crème brûlée"))
    monkeypatch.chdir(tmp_path)
    pdf = run("export", script_id, "--format", "pdf")
    assert pdf.exit_code == 0, pdf.output
    assert (tmp_path / "cafe-night-v1.pdf").read_bytes().startswith(b"%PDF-")
    md_path = tmp_path / "out" / "script.md"
    md_path.parent.mkdir()
    md = run("export", script_id, "--out", str(md_path))
    assert md.exit_code == 0, md.output
    assert md_path.read_text().startswith("# Café night 😀")
    as_json = run("export", script_id, "--format", "json", "--out", "-")
    assert json.loads(as_json.stdout)["content"]["hook"] == "Crème brûlée"
    unknown = run("export", script_id, "--format", "docx")
    assert unknown.exit_code == 2
    _refused(run("export", script_id, "--out", str(tmp_path / "missing" / "x.md")), "cannot write")


def test_bad_input_is_refused_readably(run: Invoke, tmp_path: Path) -> None:
    _refused(run("create", "--title", "t"), "--adaptation ID, or --title")
    bad = tmp_path / "bad.json"
    bad.write_text('{"scenes": []}')
    _refused(run("create", "--title", "t", "--content-file", str(bad)), "not a script content file")
    _refused(
        run("create", "--title", "t", "--content-file", str(tmp_path / "none.json")),
        "cannot read",
    )
    _refused(run("create", "--title", "t", "--hook", "nul \x00 byte"), "NUL")
    assert run("create", "--title", "t", "--hook", "h", "--scene", "3|x").exit_code == 2
    assert run("status", str(uuid.uuid4()), "shipped").exit_code == 2
    assert run("list", tenant=None).exit_code == 2  # no tenant given
    _refused(run("list", "--tenant", str(uuid.uuid4()), tenant=None), "no tenant with id")
    _refused(run("show", str(uuid.uuid4())), "no script with id")
