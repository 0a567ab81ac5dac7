"""`reelflow keys …`: a tenant's API keys from a terminal (operators, and a locked-out tenant).

`create`, `list`, `rotate` and `revoke` against the database of `DATABASE_URL` and the
tenant of `--tenant` (or `REELFLOW_TENANT_ID`). A new key is printed once and never again.
Refusals (an unknown tenant or key, a key that cannot be rotated, the last admin key) print
one readable line and exit with 1; a bad option exits with 2.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.core import tenants
from reelflow.core.settings import SettingsError, load_settings
from schemas.tables import ApiKey, Tenant

app = typer.Typer(help="API keys: create, list, rotate, revoke.", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants.", no_args_is_help=True)
"""`list`; mount its commands next to `reelflow tenants create`."""
console = Console()
errors = Console(stderr=True)

T = TypeVar("T")

TenantOption = Annotated[
    uuid.UUID,
    typer.Option(
        "--tenant", envvar="REELFLOW_TENANT_ID", help="The tenant's id.", show_default=False
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


class CommandRefused(Exception):
    """A refusal to print as one line, exit code 1."""


def _fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def _run(tenant_id: uuid.UUID, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one transaction of the configured database, for an existing tenant."""
    from reelflow.core.db import create_engine, session_factory

    try:
        settings = load_settings()
    except SettingsError as err:
        _fail(str(err), code=2)

    async def run() -> T:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with session_factory(engine).begin() as session:
                if await session.get(Tenant, tenant_id) is None:
                    raise CommandRefused(f"no tenant with id {tenant_id}")
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except CommandRefused as err:
        _fail(str(err))
    except (tenants.KeyNotFound, tenants.KeyNotActive, tenants.LastAdminKey) as err:
        _fail(str(err) if not isinstance(err, tenants.KeyNotFound) else f"no key with id {err}")
    except ValueError as err:
        _fail(str(err), code=2)


def _key_json(info: tenants.KeyInfo) -> dict[str, object]:
    def stamp(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "key_id": str(info.id),
        "name": info.name,
        "scopes": list(info.scopes),
        "prefix": info.prefix,
        "status": info.status_at(datetime.now(UTC)),
        "created_at": stamp(info.created_at),
        "last_used_at": stamp(info.last_used_at),
        "expires_at": stamp(info.expires_at),
        "replaced_by": str(info.replaced_by_id) if info.replaced_by_id else None,
        "revoked_at": stamp(info.revoked_at),
    }


def _print_new(created: tenants.NewKey, as_json: bool) -> None:
    if as_json:
        body = {**_key_json(created.info), "api_key": created.api_key}
        if created.previous is not None:
            body["previous"] = _key_json(created.previous)
        typer.echo(json.dumps(body))
        return
    console.print(f"key_id   {created.info.id}\napi_key  {created.api_key}")
    console.print("[dim]The key is shown this once; only its hash is stored.[/dim]")
    if created.previous is not None and created.previous.expires_at is not None:
        console.print(f"The old key works until {created.previous.expires_at.isoformat()}.")


@app.command("create")
def create(
    tenant: TenantOption,
    name: Annotated[str, typer.Option(help="A name to recognise the key by.")] = "default",
    scope: Annotated[
        list[str] | None,
        typer.Option(help="read, write or admin; repeat for several (default read, write)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key for the tenant and print it (shown only once)."""
    scopes = scope or ["read", "write"]

    async def work(session: AsyncSession) -> tenants.NewKey:
        return await tenants.create_api_key(session, tenant_id=tenant, name=name, scopes=scopes)

    _print_new(_run(tenant, work), as_json)


@app.command("list")
def list_keys(tenant: TenantOption, as_json: JsonOption = False) -> None:
    """The tenant's keys, newest first: prefixes, scopes, status and last use; never the keys."""

    async def work(session: AsyncSession) -> list[tenants.KeyInfo]:
        return await tenants.list_api_keys(session, tenant)

    keys = _run(tenant, work)
    if as_json:
        typer.echo(json.dumps([_key_json(info) for info in keys]))
        return
    table = Table("key_id", "name", "prefix", "scopes", "status", "last used", "expires")
    now = datetime.now(UTC)
    for info in keys:
        table.add_row(
            str(info.id),
            escape(info.name),
            info.prefix,
            ",".join(info.scopes),
            info.status_at(now),
            info.last_used_at.isoformat(timespec="seconds") if info.last_used_at else "never",
            info.expires_at.isoformat(timespec="seconds") if info.expires_at else "",
        )
    console.print(table)


@app.command("rotate")
def rotate(
    tenant: TenantOption,
    key_id: uuid.UUID,
    grace: Annotated[
        int | None,
        typer.Option(
            "--grace", help="Seconds the old key keeps working (default API_KEY_ROTATION_GRACE_S)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Replace a key with a new one; the old one works until its grace period ends."""
    try:
        default_grace = load_settings().api_key_rotation_grace_s
    except SettingsError as err:
        _fail(str(err), code=2)
    seconds = default_grace if grace is None else grace

    async def work(session: AsyncSession) -> tenants.NewKey:
        return await tenants.rotate_api_key(
            session, tenant_id=tenant, key_id=key_id, grace=timedelta(seconds=seconds)
        )

    _print_new(_run(tenant, work), as_json)


@app.command("revoke")
def revoke(tenant: TenantOption, key_id: uuid.UUID, as_json: JsonOption = False) -> None:
    """Revoke a key: every API process refuses it from its next request on."""

    async def work(session: AsyncSession) -> tenants.KeyInfo:
        return await tenants.revoke_api_key(session, tenant_id=tenant, key_id=key_id)

    info = _run(tenant, work)
    if as_json:
        typer.echo(json.dumps(_key_json(info)))
    else:
        console.print(f"revoked {info.id} ({escape(info.name)})")


@tenants_app.callback()
def _tenants() -> None:
    """Tenants."""  # a group even with one command, so `tenants list` reads the same mounted


@tenants_app.command("list")
def tenants_list(as_json: JsonOption = False) -> None:
    """Every tenant: id, name, plan and how many keys it can use now."""
    from reelflow.core.db import create_engine, session_factory

    try:
        settings = load_settings()
    except SettingsError as err:
        _fail(str(err), code=2)

    async def run() -> list[tuple[uuid.UUID, str, str, int]]:
        engine = create_engine(settings.database_url, pool_size=1)
        usable = func.count(ApiKey.id).filter(
            ApiKey.revoked_at.is_(None),
            (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > func.now()),
        )
        try:
            async with session_factory(engine)() as session:
                rows = await session.execute(
                    select(Tenant.id, Tenant.name, Tenant.plan, usable)
                    .outerjoin(ApiKey, ApiKey.tenant_id == Tenant.id)
                    .group_by(Tenant.id)
                    .order_by(Tenant.created_at, Tenant.id)
                )
                return [(row[0], row[1], row[2], int(row[3])) for row in rows]
        finally:
            await engine.dispose()

    rows = asyncio.run(run())
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {"tenant_id": str(tid), "name": name, "plan": plan, "active_keys": keys}
                    for tid, name, plan, keys in rows
                ]
            )
        )
        return
    table = Table("tenant_id", "name", "plan", "active keys")
    for tid, name, plan, keys in rows:
        table.add_row(str(tid), escape(name), plan, str(keys))
    console.print(table)
