"""`reelflow performance …`: record, import and read videos' performance numbers.

Talks to the database directly (`DATABASE_URL`), as the tenant given with `--tenant` or
`REELFLOW_TENANT_ID`. Every refusal is one readable line on stderr and exit status 1, never a
traceback.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.core.db import create_engine, session_factory
from reelflow.core.errors import DomainError
from reelflow.core.settings import SettingsError, load_settings
from reelflow.improve import aggregates, performance
from reelflow.improve.performance_import import import_snapshots
from schemas.discover import Platform
from schemas.improve import PerformanceIn, TrafficSource
from schemas.tables import Tenant

app = typer.Typer(
    help="Performance: record, import and read videos' numbers.", no_args_is_help=True
)

console = Console()
errors = Console(stderr=True)

Result = TypeVar("Result")

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


class _Refused(Exception):
    """A refusal already worded for the person at the terminal."""


def _fail(message: str) -> typer.Exit:
    errors.print(Text.assemble(("error: ", "red"), message), soft_wrap=True)
    return typer.Exit(1)


def _describe_validation(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        loc = ".".join(str(p) for p in error.get("loc", ()))
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts)


def _id(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise _fail(f"{what} must be an id, got {raw!r}") from None


def _run(tenant: str, work: Callable[[AsyncSession, uuid.UUID], Awaitable[Result]]) -> Result:
    """Run `work` in one transaction as `tenant`; any refusal exits 1 with its reason."""
    tenant_id = _id(tenant, "--tenant")
    try:
        settings = load_settings()
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
    except (DomainError, _Refused) as exc:
        raise _fail(str(exc)) from None
    except ValidationError as exc:
        raise _fail(_describe_validation(exc)) from None
    except (OperationalError, DBAPIError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise _fail(f"the database did not answer ({reason}); is DATABASE_URL right?") from None


def _print_json(model: BaseModel) -> None:
    console.print_json(model.model_dump_json())


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


@app.command("add")
def add(
    video_id: Annotated[str, typer.Argument(help="The video's id.")],
    platform: Annotated[Platform, typer.Option(help="Where the numbers come from.")],
    views: Annotated[int, typer.Option(help="Views (plays) so far.")],
    tenant: TenantOption,
    likes: Annotated[int, typer.Option()] = 0,
    comments: Annotated[int, typer.Option()] = 0,
    shares: Annotated[int, typer.Option()] = 0,
    saves: Annotated[int, typer.Option()] = 0,
    watch_time: Annotated[float | None, typer.Option(help="Watch time, seconds.")] = None,
    completion_rate: Annotated[float | None, typer.Option(help="Percent, 0-100.")] = None,
    traffic_source: Annotated[TrafficSource | None, typer.Option()] = None,
    recorded_at: Annotated[
        datetime | None, typer.Option(help="When the numbers were read (default: now, UTC).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Record one snapshot of a video's numbers."""
    video = _id(video_id, "VIDEO_ID")
    now = datetime.now(UTC)
    try:
        snapshot = PerformanceIn(
            platform=platform,
            views=views,
            likes=likes,
            comments=comments,
            shares=shares,
            saves=saves,
            watch_time_seconds=watch_time,
            completion_rate=completion_rate,
            traffic_source=traffic_source,
            recorded_at=recorded_at or now,
        )
    except ValidationError as exc:
        raise _fail(_describe_validation(exc)) from None

    async def work(session: AsyncSession, tenant_id: uuid.UUID) -> BaseModel:
        return await performance.add_snapshot(
            session, tenant_id=tenant_id, video_id=video, snapshot=snapshot, now=now
        )

    stored = _run(tenant, work)
    if as_json:
        _print_json(stored)
    else:
        console.print(f"recorded snapshot {stored.model_dump()['id']}")


@app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(help="A CSV, JSON or JSONL file.")],
    tenant: TenantOption,
    as_json: JsonOption = False,
) -> None:
    """Import snapshots from a file; every rejected line is listed with its reason."""
    if not file.is_file():
        raise _fail(f"{file} is not a file")

    async def work(session: AsyncSession, tenant_id: uuid.UUID) -> BaseModel:
        with file.open("rb") as stream:
            return await import_snapshots(
                session,
                tenant_id=tenant_id,
                stream=stream,
                filename=file.name,
                now=datetime.now(UTC),
            )

    report = _run(tenant, work)
    if as_json:
        _print_json(report)
        return
    body = report.model_dump()
    console.print(
        f"{body['format']}: {body['lines']} lines, {body['inserted']} new, "
        f"{body['unchanged']} already stored, {body['rejected']} rejected"
    )
    if body["rejections"]:
        table = Table("line", "reason")
        for rejection in body["rejections"]:
            table.add_row(str(rejection["line"]), Text(rejection["reason"]))
        console.print(table)
        if body["rejections_truncated"]:
            console.print("(only the first rejected lines are listed)")


@app.command("show")
def show(
    video_id: Annotated[str, typer.Argument(help="The video's id.")],
    tenant: TenantOption,
    as_json: JsonOption = False,
) -> None:
    """A video's snapshots and its summary against your usual."""
    video = _id(video_id, "VIDEO_ID")

    async def work(
        session: AsyncSession, tenant_id: uuid.UUID
    ) -> tuple[list[BaseModel], BaseModel]:
        history = await performance.list_snapshots(session, tenant_id=tenant_id, video_id=video)
        summary = await aggregates.video_summary(session, tenant_id=tenant_id, video_id=video)
        return list(history), summary

    history, summary = _run(tenant, work)
    if as_json:
        _print_json(summary)
        return
    table = Table(
        "recorded at",
        "platform",
        "views",
        "likes",
        "comments",
        "shares",
        "saves",
        "source",
        title="snapshots",
    )
    for item in history:
        row = item.model_dump()
        table.add_row(
            row["recorded_at"].isoformat(timespec="minutes"),
            row["platform"],
            f"{row['views']:,}",
            f"{row['likes']:,}",
            f"{row['comments']:,}",
            f"{row['shares']:,}",
            f"{row['saves']:,}",
            row["traffic_source"] or "-",
        )
    console.print(table)
    data = summary.model_dump()
    if not data["snapshots"]:
        console.print("no numbers yet: add some with `reelflow performance add`")
        return
    platforms = Table(
        "platform",
        "views",
        "engagement",
        "views/day",
        "usual",
        "x usual",
        title="latest per platform",
    )
    for item in data["platforms"]:
        platforms.add_row(
            item["platform"],
            f"{item['views']:,}",
            _number(item["engagement_rate"] and item["engagement_rate"] * 100, 1) + " %",
            _number(item["views_per_day"], 0),
            _number(item["baseline_views"], 0),
            _number(item["times_usual"], 2),
        )
    console.print(platforms)
    console.print(
        f"total views {data['totals']['views']:,} | engagement "
        f"{_number(data['engagement_rate'] and data['engagement_rate'] * 100, 1)} % | best "
        f"platform {data['best_platform']} | traffic "
        + (", ".join(f"{k} {v:.0%}" for k, v in data["traffic_breakdown"].items()) or "-")
    )


@app.command("series")
def series(
    collection_id: Annotated[str, typer.Argument(help="The collection's id.")],
    tenant: TenantOption,
    as_json: JsonOption = False,
) -> None:
    """A series' best and worst episodes, cadence against views and hashtag lift."""
    collection = _id(collection_id, "COLLECTION_ID")

    async def work(session: AsyncSession, tenant_id: uuid.UUID) -> BaseModel:
        return await aggregates.series_performance(
            session, tenant_id=tenant_id, collection_id=collection
        )

    result = _run(tenant, work)
    if as_json:
        _print_json(result)
        return
    data = result.model_dump()
    console.print(
        f"{data['episodes']} episodes ({data['episodes_with_metrics']} with numbers), "
        f"{data['total_views']:,} views, median {_number(data['median_views'], 0)}"
    )
    for title, key in (("best episodes", "best_episodes"), ("worst episodes", "worst_episodes")):
        table = Table("title", "views", "x series median", "published", title=title)
        for episode in data[key]:
            table.add_row(
                Text(episode["title"]),
                f"{episode['views']:,}",
                _number(episode["times_series_median"]),
                episode["published_at"].date().isoformat() if episode["published_at"] else "-",
            )
        console.print(table)
    cadence = Table("gap since previous", "episodes", "median views", title="cadence")
    for bucket in data["cadence"]:
        cadence.add_row(
            bucket["label"], str(bucket["episodes"]), _number(bucket["median_views"], 0)
        )
    console.print(cadence)
    hashtags = Table("hashtag", "episodes", "median views", "lift", title="hashtags")
    for tag in data["hashtags"]:
        hashtags.add_row(
            Text("#" + tag["hashtag"]),
            str(tag["episodes"]),
            _number(tag["median_views"], 0),
            _number(tag["lift"]),
        )
    console.print(hashtags)
    console.print(f"hashtags read from {data['hashtag_sources']}")
