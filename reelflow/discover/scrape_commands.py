"""`reelflow discover scrape …` and `reelflow discover schedule …`: start, follow and cancel
scrapes, and manage each project's re-scrape Schedule, from the command line.

A dataset file is read from a path (`--file`), stored, and scraped by the same run an
upload through the API starts. Tenant: `--tenant` or `REELFLOW_TENANT_ID`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from reelflow.core.errors import DomainError
from reelflow.core.settings import Settings, SettingsError, get_settings
from reelflow.discover import scrapes
from schemas.discover import ScrapeSource, ScrapeStatus
from schemas.queues import TaskQueues

T = TypeVar("T")

app = typer.Typer(help="Scrapes of a project's watched accounts.", no_args_is_help=True)
schedule_app = typer.Typer(help="A project's re-scrape Schedule.", no_args_is_help=True)
console = Console()

TenantOption = Annotated[
    uuid.UUID, typer.Option("--tenant", envvar="REELFLOW_TENANT_ID", help="Tenant id.")
]
_FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
_WAIT_LIMIT_S = 3600.0


def _settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]{message}[/red]")
    return typer.Exit(1)


def _run(work: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    settings = _settings()
    try:
        return asyncio.run(work(settings))
    except DomainError as err:
        raise _fail(err.message) from None


async def _with_db(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    from reelflow.core.db import create_engine, session_factory

    engine = create_engine(settings.database_url, pool_size=2)
    try:
        return await work(session_factory(engine))
    finally:
        await engine.dispose()


def _print_scrape(view: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for name in (
        "scrape_id",
        "status",
        "stage",
        "posts_seen",
        "posts_new",
        "outliers",
        "processed",
        "cost_usd",
        "workflow_id",
    ):
        table.add_row(name, str(view[name]))
    if view["error_message"]:
        table.add_row("error", f"[red]{view['error_code']}: {view['error_message']}[/red]")
    console.print(table)
    for error in view["errors"][:10]:
        where = f"line {error['line']}" if "line" in error else f"post {error.get('post_id')}"
        console.print(f"  [yellow]{where}[/yellow]: {error.get('reason')}")
    if len(view["errors"]) > 10:
        console.print(f"  … and {len(view['errors']) - 10} more")


@app.command("start")
def start(
    project_id: uuid.UUID,
    tenant: TenantOption,
    file: Annotated[
        Path | None, typer.Option(help="An Apify dataset export (.json, .jsonl, .csv).")
    ] = None,
    url: Annotated[str | None, typer.Option(help="A single post URL.")] = None,
    apify: Annotated[bool, typer.Option(help="Scrape the accounts through Apify.")] = False,
    wait: Annotated[bool, typer.Option(help="Follow the scrape until it ends.")] = True,
) -> None:
    """Scrape a project: from a dataset file, a post URL, or through Apify."""
    if sum((file is not None, url is not None, apify)) != 1:
        raise _fail("give exactly one of --file, --url or --apify")
    if file is not None and (not file.is_file() or file.suffix.lower() not in _FORMATS):
        raise _fail(f"{file} is not an Apify export (.json, .jsonl or .csv)")

    async def begin(settings: Settings) -> str:
        from reelflow.core.storage import build_storage
        from reelflow.core.temporal_client import connect_temporal

        scrape_id = uuid.uuid4()
        key: str | None = None
        if file is not None:
            key = f"tenants/{tenant}/scrapes/{scrape_id}/dataset.{_FORMATS[file.suffix.lower()]}"
            storage = build_storage(settings)
            await asyncio.to_thread(storage.put_file, key, file)
        source = (
            ScrapeSource.DATASET_FILE
            if file is not None
            else ScrapeSource.POST_URL
            if url is not None
            else ScrapeSource.APIFY
        )

        async def create(sessions: Any) -> Any:
            async with sessions.begin() as session:
                return await scrapes.create_scrape(
                    session,
                    tenant_id=tenant,
                    project_id=project_id,
                    source=source,
                    dataset_key=key,
                    dataset_format=_FORMATS[file.suffix.lower()] if file else None,
                    post_url=url,
                    scrape_id=scrape_id,
                )

        scrape = await _with_db(settings, create)
        client = await connect_temporal(settings)
        workflow_id = await scrapes.start_scrape_run(
            client,
            scrape=scrape,
            task_queue=TaskQueues.for_prefix(settings.task_queue_prefix).workflows,
        )
        console.print(f"Scrape {scrape_id} started (run {workflow_id})")
        return str(scrape_id)

    scrape_id = _run(begin)
    if wait:
        _follow(tenant, uuid.UUID(scrape_id))


def _follow(tenant: uuid.UUID, scrape_id: uuid.UUID) -> None:
    deadline = time.monotonic() + _WAIT_LIMIT_S
    last = ""
    with console.status("scraping…") as status:
        while True:
            view = _load(tenant, scrape_id)
            line = f"{view['stage']}: {view['posts_seen']} posts, {view['outliers']} outliers, "
            line += f"{view['processed']} processed"
            if line != last:
                status.update(line)
                last = line
            if view["status"] in {s.value for s in scrapes.TERMINAL} or (
                time.monotonic() > deadline
            ):
                break
            time.sleep(1.0)
    _print_scrape(view)
    if view["status"] != ScrapeStatus.COMPLETED.value:
        raise typer.Exit(1)


def _load(tenant: uuid.UUID, scrape_id: uuid.UUID) -> dict[str, Any]:
    async def load(settings: Settings) -> dict[str, Any]:
        async def read(sessions: Any) -> dict[str, Any] | None:
            async with sessions() as session:
                scrape = await scrapes.get_scrape(session, tenant, scrape_id)
                return scrapes.scrape_view(scrape) if scrape else None

        return await _with_db(settings, read) or {}

    view = _run(load)
    if not view:
        raise _fail(f"no scrape with id {scrape_id}")
    return view


@app.command("show")
def show(scrape_id: uuid.UUID, tenant: TenantOption) -> None:
    """A scrape's status, counts, errors and cost."""
    _print_scrape(_load(tenant, scrape_id))


@app.command("cancel")
def cancel(scrape_id: uuid.UUID, tenant: TenantOption) -> None:
    """Stop a scrape: its Apify runs are aborted, outliers in flight canceled."""

    async def stop(settings: Settings) -> None:
        from reelflow.core.temporal_client import connect_temporal

        async def read(sessions: Any) -> Any:
            async with sessions() as session:
                return await scrapes.get_scrape(session, tenant, scrape_id)

        scrape = await _with_db(settings, read)
        if scrape is None:
            raise _fail(f"no scrape with id {scrape_id}")
        try:
            await scrapes.cancel_scrape(await connect_temporal(settings), scrape)
        except scrapes.ScrapeNotCancelable as err:
            raise _fail(str(err)) from None

    _run(stop)
    console.print(f"Scrape {scrape_id}: cancel requested")


# --- schedule ----------------------------------------------------------------------------


def _parse_every(text: str) -> timedelta:
    units = {"h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:].lower()
    try:
        return timedelta(seconds=float(number) * units[unit])
    except (KeyError, ValueError):
        raise _fail(f"--every takes hours or days, like 12h or 1d (got {text!r})") from None


async def _owned(settings: Settings, tenant: uuid.UUID, project_id: uuid.UUID) -> None:
    async def check(sessions: Any) -> None:
        async with sessions() as session:
            await scrapes.get_project(session, tenant, project_id)

    await _with_db(settings, check)


async def _record_schedule(
    settings: Settings, tenant: uuid.UUID, project_id: uuid.UUID, **values: Any
) -> None:
    """Keep the project row in step with its Schedule, as `project show` reads the row."""

    async def write(sessions: Any) -> None:
        async with sessions.begin() as session:
            project = await scrapes.get_project(session, tenant, project_id)
            for name, value in values.items():
                setattr(project, name, value)

    await _with_db(settings, write)


@schedule_app.command("set")
def schedule_set(
    project_id: uuid.UUID,
    tenant: TenantOption,
    every: Annotated[str, typer.Option(help="Cadence, e.g. 12h or 1d.")] = "1d",
) -> None:
    """Re-scrape the project on a cadence (through Apify)."""
    cadence = _parse_every(every)

    async def apply(settings: Settings) -> None:
        from reelflow.core.temporal_client import connect_temporal

        if settings.apify_token is None:
            raise _fail("scheduled scrapes go through Apify; set APIFY_TOKEN")
        await _owned(settings, tenant, project_id)
        await scrapes.set_schedule(
            await connect_temporal(settings),
            tenant_id=tenant,
            project_id=project_id,
            every=cadence,
            task_queue=TaskQueues.for_prefix(settings.task_queue_prefix).workflows,
        )
        await _record_schedule(
            settings,
            tenant,
            project_id,
            schedule_interval_s=int(cadence.total_seconds()),
            schedule_paused=False,
        )

    _run(apply)
    console.print(f"Project {project_id} is re-scraped every {cadence}")


def _schedule_action(project_id: uuid.UUID, tenant: uuid.UUID, action: str) -> None:
    async def apply(settings: Settings) -> None:
        from reelflow.core.temporal_client import connect_temporal

        await _owned(settings, tenant, project_id)
        client = await connect_temporal(settings)
        if await scrapes.describe_schedule(client, project_id) is None:
            raise _fail("the project has no schedule; set one with `schedule set`")
        if action == "trigger":
            await scrapes.trigger_schedule(client, project_id)
        else:
            paused = action == "pause"
            await scrapes.pause_schedule(client, project_id, paused=paused)
            await _record_schedule(settings, tenant, project_id, schedule_paused=paused)

    _run(apply)
    done = {"pause": "paused", "resume": "resumed", "trigger": "triggered"}[action]
    console.print(f"Project {project_id}: schedule {done}")


@schedule_app.command("pause")
def schedule_pause(project_id: uuid.UUID, tenant: TenantOption) -> None:
    """Stop re-scraping until resumed."""
    _schedule_action(project_id, tenant, "pause")


@schedule_app.command("resume")
def schedule_resume(project_id: uuid.UUID, tenant: TenantOption) -> None:
    """Re-scrape on the cadence again."""
    _schedule_action(project_id, tenant, "resume")


@schedule_app.command("now")
def schedule_now(project_id: uuid.UUID, tenant: TenantOption) -> None:
    """Run the scheduled scrape now."""
    _schedule_action(project_id, tenant, "trigger")
