"""`reelflow script …`: the script library from a terminal.

`create`, `list`, `show`, `version`, `status`, `link` and `export`, against the database of
`DATABASE_URL` and the tenant of `--tenant` (or `REELFLOW_TENANT_ID`). Moves are recorded as
made by `cli`. Refusals (an unknown id, a move the status workflow does not allow, a bad
content file) print one readable line and exit with 1; a bad option exits with 2.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.core.settings import SettingsError, load_settings
from reelflow.discover import export, scripts
from reelflow.discover.scripts import InvalidScript, ScriptObjectNotFound, ScriptTransitionRefused
from schemas.discover import AdaptedScene, ScriptContent, ScriptStatus
from schemas.discover_tables import Script
from schemas.tables import Tenant

app = typer.Typer(
    help="Scripts: create, version, move through review, export.", no_args_is_help=True
)

console = Console()
errors = Console(stderr=True)

CLI_ACTOR = "cli"
"""Who a move made here is recorded as (`status_history[].by`)."""

T = TypeVar("T")

TenantOption = Annotated[
    uuid.UUID,
    typer.Option(
        "--tenant", envvar="REELFLOW_TENANT_ID", help="The tenant's id.", show_default=False
    ),
]


class ExportFormat(StrEnum):
    MD = "md"
    PDF = "pdf"
    JSON = "json"


class CommandRefused(Exception):
    """A refusal to print as one line, exit code 1."""


def _fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def _run(tenant_id: uuid.UUID, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one session of the configured database, for an existing tenant."""
    from reelflow.core.db import create_engine, session_factory

    try:
        settings = load_settings()
    except SettingsError as err:
        _fail(str(err), code=2)

    async def main() -> T:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with session_factory(engine)() as session:
                if await session.scalar(select(Tenant.id).where(Tenant.id == tenant_id)) is None:
                    raise CommandRefused(f"no tenant with id {tenant_id}")
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except ScriptTransitionRefused as exc:
        _fail(exc.message)
    except (ScriptObjectNotFound, InvalidScript, CommandRefused) as exc:
        _fail(str(exc))
    except (DBAPIError, OSError) as exc:
        # The URL may carry a password: name the variable, not its value.
        _fail(f"cannot use the database of DATABASE_URL ({type(exc).__name__})")


def _read_content(path: Path) -> ScriptContent:
    try:
        return ScriptContent.model_validate_json(path.read_bytes())
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror or exc}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "content"
        _fail(f"{path} is not a script content file ({where}: {first['msg']})")


def _parse_scene(spec: str) -> AdaptedScene:
    """`START-END|direction|voiceover|on-screen text`; the last two may be left out."""
    parts = spec.split("|")
    if len(parts) < 2 or len(parts) > 4:
        raise typer.BadParameter(f"{spec!r}: use START-END|direction[|voiceover[|on-screen text]]")
    times = parts[0].split("-")
    try:
        start_s, end_s = float(times[0]), float(times[1])
        if len(times) != 2:
            raise ValueError
    except (ValueError, IndexError):
        raise typer.BadParameter(
            f"{parts[0]!r}: times are START-END in seconds, e.g. 0-3.5"
        ) from None
    try:
        return AdaptedScene(
            start_s=start_s,
            end_s=end_s,
            direction=parts[1],
            voiceover=parts[2] if len(parts) > 2 and parts[2] else None,
            on_screen_text=parts[3] if len(parts) > 3 and parts[3] else None,
        )
    except ValidationError as exc:
        raise typer.BadParameter(f"{spec!r}: {exc.errors()[0]['msg']}") from None


def _status_text(status: str) -> str:
    colours = {"draft": "yellow", "review": "cyan", "approved": "green", "published": "magenta"}
    return f"[{colours.get(status, 'white')}]{status}[/]"


def _short(value: uuid.UUID | None) -> str:
    return "—" if value is None else str(value)


# --- commands ------------------------------------------------------------------------------


@app.command("create")
def create(
    tenant: TenantOption,
    adaptation: Annotated[
        uuid.UUID | None, typer.Option(help="Create from this adaptation (once per adaptation).")
    ] = None,
    title: Annotated[str | None, typer.Option(help="The title (by hand: required).")] = None,
    hook: Annotated[str | None, typer.Option(help="The hook (by hand).")] = None,
    scene: Annotated[
        list[str] | None,
        typer.Option(help="A scene, repeatable: START-END|direction|voiceover|on-screen text."),
    ] = None,
    cta: Annotated[str | None, typer.Option(help="The call to action.")] = None,
    content_file: Annotated[
        Path | None, typer.Option(help="The whole body as JSON (hook, scenes, call_to_action…).")
    ] = None,
    project: Annotated[uuid.UUID | None, typer.Option(help="The project.")] = None,
    product: Annotated[uuid.UUID | None, typer.Option(help="The product (by hand).")] = None,
    notes: Annotated[str | None, typer.Option(help="Notes on this first version.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the script as JSON.")] = False,
) -> None:
    """Create a script: `--adaptation ID`, or by hand with `--title` and `--hook` (or
    `--content-file`)."""
    if adaptation is not None:
        if any(v is not None for v in (hook, scene, cta, content_file, product)):
            _fail("--adaptation takes its content and product from the adaptation; drop the rest")
    elif title is None or (hook is None and content_file is None):
        _fail("give --adaptation ID, or --title with --hook or --content-file")

    content: ScriptContent | None = None
    if adaptation is None:
        if content_file is not None:
            content = _read_content(content_file)
            if hook is not None:
                content.hook = hook
        else:
            assert hook is not None
            content = ScriptContent(
                hook=hook, scenes=[_parse_scene(s) for s in scene or []], call_to_action=cta
            )

    async def work(session: AsyncSession) -> Script:
        if adaptation is not None:
            made = await scripts.create_from_adaptation(
                session,
                tenant_id=tenant,
                adaptation_id=adaptation,
                project_id=project,
                title=title,
                by=CLI_ACTOR,
            )
        else:
            assert title is not None and content is not None
            made = await scripts.create_script(
                session,
                tenant_id=tenant,
                title=title,
                content=content,
                project_id=project,
                product_id=product,
                notes=notes,
                by=CLI_ACTOR,
            )
        await session.commit()
        return made

    script = _run(tenant, work)
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "script_id": str(script.id),
                    "version": script.version,
                    "status": script.status,
                    "title": script.title,
                }
            )
        )
    else:
        console.print(
            f"created script [bold]{script.id}[/bold]  v{script.version}  "
            f"{_status_text(script.status)}  {escape(script.title)}"
        )


@app.command("list")
def list_(
    tenant: TenantOption,
    project: Annotated[uuid.UUID | None, typer.Option(help="Only this project's.")] = None,
    product: Annotated[uuid.UUID | None, typer.Option(help="Only this product's.")] = None,
    brand: Annotated[uuid.UUID | None, typer.Option(help="Only this brand's.")] = None,
    status: Annotated[ScriptStatus | None, typer.Option(help="Only in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most to show.")] = 50,
) -> None:
    """List script versions, newest first."""

    async def work(session: AsyncSession) -> scripts.ScriptPage:
        return await scripts.list_scripts(
            session,
            tenant_id=tenant,
            project_id=project,
            product_id=product,
            brand_id=brand,
            status=status,
            limit=limit,
        )

    page = _run(tenant, work)
    table = Table(title="Scripts", title_justify="left")
    for column in ("id", "v", "status", "title", "viral", "created"):
        table.add_column(column, no_wrap=column in ("id", "created"))
    for script in page.items:
        table.add_row(
            str(script.id),
            str(script.version),
            _status_text(script.status),
            escape(script.title),
            "—" if script.predicted_viral_score is None else f"{script.predicted_viral_score:.1f}",
            f"{script.created_at:%Y-%m-%d %H:%M}",
        )
    if page.items:
        console.print(table)
    else:
        console.print("no scripts match")
    if page.has_more:
        console.print(f"[dim]showing the newest {limit}; narrow the filters or raise --limit[/dim]")


@app.command("show")
def show(
    tenant: TenantOption,
    script_id: Annotated[uuid.UUID, typer.Argument(help="The script version's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON export.")] = False,
) -> None:
    """Show a script version: facts, body, versions and status history."""

    async def work(
        session: AsyncSession,
    ) -> tuple[Script, list[Script], tuple[str | None, str | None]]:
        script = await scripts.get_script(session, tenant_id=tenant, script_id=script_id)
        chain = await scripts.version_history(session, tenant_id=tenant, script_id=script_id)
        return script, chain, await scripts.export_names(session, script)

    script, chain, (product_name, brand_name) = _run(tenant, work)
    if as_json:
        sys.stdout.write(
            export.to_json(script, product_name=product_name, brand_name=brand_name).decode()
        )
        return
    doc = export.script_document(script, product_name=product_name, brand_name=brand_name)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("status", _status_text(doc.status.value))
    allowed = scripts.allowed_next(doc.status)
    facts.add_row("may move to", ", ".join(s.value for s in allowed) or "— (final)")
    facts.add_row("product", escape(product_name or _short(script.product_id)))
    facts.add_row("brand", escape(brand_name or _short(script.brand_id)))
    facts.add_row("project", _short(script.project_id))
    facts.add_row(
        "predicted viral",
        "—" if doc.predicted_viral_score is None else f"{doc.predicted_viral_score:.1f} / 10",
    )
    facts.add_row("produced video", _short(script.produced_video_id))
    facts.add_row("published post", _short(script.published_post_id))
    if doc.notes:
        facts.add_row("notes", escape(doc.notes))
    console.print(Panel(facts, title=f"[bold]{escape(doc.title)}[/bold]  v{doc.version}"))

    scenes = Table(expand=True)
    for column in ("#", "time", "direction", "voiceover", "on-screen text"):
        scenes.add_column(column, no_wrap=column in ("#", "time"))
    for number, scene in enumerate(doc.content.scenes, 1):
        scenes.add_row(
            str(number),
            f"{export.clock(scene.start_s)}–{export.clock(scene.end_s)}",
            escape(scene.direction),
            escape(scene.voiceover or ""),
            escape(scene.on_screen_text or ""),
        )
    body: list[RenderableType] = [f"[bold]Hook[/bold]  {escape(doc.content.hook)}"]
    if doc.content.scenes:
        body.append(scenes)
    body.append(f"[bold]Call to action[/bold]  {escape(doc.content.call_to_action or '—')}")
    if doc.content.notes_for_production:
        body.append(f"[bold]For production[/bold]  {escape(doc.content.notes_for_production)}")
    console.print(Panel(Group(*body), title="Script"))

    versions = Table.grid(padding=(0, 2))
    for version in chain:
        marker = "▶" if version.id == script.id else " "
        versions.add_row(
            marker,
            f"v{version.version}",
            str(version.id),
            _status_text(version.status),
            f"{version.created_at:%Y-%m-%d %H:%M}",
            escape(version.notes or ""),
        )
    console.print(Panel(versions, title="Versions"))

    history = Table.grid(padding=(0, 2))
    for change in doc.status_history:
        history.add_row(
            f"{change.at:%Y-%m-%d %H:%M:%S}",
            f"{change.from_.value if change.from_ else '(created)'} → {change.to.value}",
            escape(change.by),
        )
    console.print(Panel(history, title="Status history"))


@app.command("version")
def version(
    tenant: TenantOption,
    script_id: Annotated[uuid.UUID, typer.Argument(help="The version to start from.")],
    notes: Annotated[str, typer.Option(help="What this version changes.")],
    content_file: Annotated[
        Path | None, typer.Option(help="The new body as JSON; by default the parent's.")
    ] = None,
    title: Annotated[str | None, typer.Option(help="A new title; by default the parent's.")] = None,
) -> None:
    """Make a new draft version from a script version."""
    content = None if content_file is None else _read_content(content_file)

    async def work(session: AsyncSession) -> Script:
        made = await scripts.new_version(
            session,
            tenant_id=tenant,
            script_id=script_id,
            content=content,
            title=title,
            notes=notes,
            by=CLI_ACTOR,
        )
        await session.commit()
        return made

    script = _run(tenant, work)
    console.print(
        f"created version [bold]v{script.version}[/bold]  {script.id}  "
        f"(from {script.parent_script_id})  {_status_text(script.status)}"
    )


@app.command("status")
def status(
    tenant: TenantOption,
    script_id: Annotated[uuid.UUID, typer.Argument(help="The script version.")],
    new_status: Annotated[ScriptStatus, typer.Argument(help="The status to move to.")],
) -> None:
    """Move a script version to a new status (only along the allowed moves)."""

    async def work(session: AsyncSession) -> tuple[str, Script]:
        before = await scripts.get_script(session, tenant_id=tenant, script_id=script_id)
        previous = before.status
        moved = await scripts.change_status(
            session,
            tenant_id=tenant,
            script_id=script_id,
            to=new_status,
            by=CLI_ACTOR,
            now=datetime.now(UTC),
        )
        await session.commit()
        return previous, moved

    previous, script = _run(tenant, work)
    console.print(f"{script.id}  {_status_text(previous)} → {_status_text(script.status)}")


@app.command("link")
def link(
    tenant: TenantOption,
    script_id: Annotated[uuid.UUID, typer.Argument(help="The script version.")],
    video: Annotated[uuid.UUID | None, typer.Option(help="The video produced from it.")] = None,
    post: Annotated[uuid.UUID | None, typer.Option(help="The post that published it.")] = None,
) -> None:
    """Link a script version to its produced video and its published post."""
    if video is None and post is None:
        _fail("give --video, --post or both")

    async def work(session: AsyncSession) -> Script:
        linked = await scripts.link_production(
            session,
            tenant_id=tenant,
            script_id=script_id,
            produced_video_id=video,
            published_post_id=post,
        )
        await session.commit()
        return linked

    script = _run(tenant, work)
    console.print(
        f"{script.id}  video {_short(script.produced_video_id)}  "
        f"post {_short(script.published_post_id)}"
    )


@app.command("export")
def export_(
    tenant: TenantOption,
    script_id: Annotated[uuid.UUID, typer.Argument(help="The script version.")],
    format: Annotated[ExportFormat, typer.Option("--format", help="md, pdf or json.")] = (
        ExportFormat.MD
    ),
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where to write; `-` for standard output. Default: a file named "
            "after the title and version, here."
        ),
    ] = None,
) -> None:
    """Export a script version for the production team."""

    async def work(session: AsyncSession) -> tuple[Script, tuple[str | None, str | None]]:
        script = await scripts.get_script(session, tenant_id=tenant, script_id=script_id)
        return script, await scripts.export_names(session, script)

    script, (product_name, brand_name) = _run(tenant, work)
    names = {"product_name": product_name, "brand_name": brand_name}
    if format is ExportFormat.MD:
        data = export.to_markdown(script, **names).encode()
    elif format is ExportFormat.JSON:
        data = export.to_json(script, **names)
    else:
        data = export.to_pdf(script, product_name=product_name, brand_name=brand_name)
    if out is not None and str(out) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    target = out or Path(export.export_filename(script, format.value))
    try:
        target.write_bytes(data)
    except OSError as exc:
        _fail(f"cannot write {target}: {exc.strerror or exc}")
    console.print(f"wrote {escape(str(target))} ({len(data):,} bytes)")
