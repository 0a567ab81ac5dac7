"""`reelflow insights VIDEO_ID [--refresh]` and `reelflow insights --series COLLECTION_ID`.

Talks to the database directly (`DATABASE_URL`) as the tenant given with `--tenant` or
`REELFLOW_TENANT_ID`, with the analyst `INSIGHTS_PROVIDER` names; the cache and the hourly
limit are the API's own (they live in Postgres). Every refusal is one readable line on
stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.panel import Panel
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError

from reelflow.core.db import create_engine, session_factory
from reelflow.core.errors import DomainError
from reelflow.core.provider_errors import ProviderError
from reelflow.core.settings import Settings, SettingsError, load_settings
from reelflow.improve.analysts import build_analyst
from reelflow.improve.insights import series_insights, video_insights
from schemas.improve import InsightsAnswer
from schemas.tables import Tenant

app = typer.Typer(
    help="What worked and what did not: insights for a video or a series.",
    no_args_is_help=True,
    # One command with no subcommands: options may follow VIDEO_ID.
    context_settings={"allow_interspersed_args": True},
)

console = Console()
errors = Console(stderr=True)


class _NoTenant(Exception):
    """The --tenant id names no tenant."""


def _fail(message: str) -> typer.Exit:
    errors.print(Text.assemble(("error: ", "red"), message), soft_wrap=True)
    return typer.Exit(1)


def _uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise _fail(f"{what} must be an id, got {raw!r}") from None


async def _answer(
    settings: Settings,
    tenant_id: uuid.UUID,
    *,
    video_id: uuid.UUID | None,
    collection_id: uuid.UUID | None,
    refresh: bool,
) -> InsightsAnswer:
    analyst = build_analyst(settings)
    engine = create_engine(settings.database_url, pool_size=2)
    try:
        sessions = session_factory(engine)
        async with sessions() as session:
            if await session.scalar(select(Tenant.id).where(Tenant.id == tenant_id)) is None:
                raise _NoTenant(f"no tenant with id {tenant_id}")
        if collection_id is not None:
            return await series_insights(
                sessions,
                tenant_id=tenant_id,
                collection_id=collection_id,
                refresh=refresh,
                analyst=analyst,
                settings=settings,
            )
        assert video_id is not None
        return await video_insights(
            sessions,
            tenant_id=tenant_id,
            video_id=video_id,
            refresh=refresh,
            analyst=analyst,
            settings=settings,
        )
    finally:
        await engine.dispose()


def _bullets(title: str, items: list[str], style: str) -> Group:
    lines = [Text(title, style=f"bold {style}")]
    lines += [Text.assemble(("  • ", style), item) for item in items] or [
        Text("  (none)", style="dim")
    ]
    return Group(*lines)


def render(answer: InsightsAnswer, subject: str) -> Panel:
    """The answer as a panel: what worked, what did not, and what to do next."""
    if answer.insights is None:
        return Panel(Text(answer.message or "no insights"), title=subject, border_style="yellow")
    insights = answer.insights
    origin = "cached" if answer.cached else "fresh"
    made = answer.generated_at.isoformat(timespec="seconds") if answer.generated_at else "–"
    parts: list[Group | Text] = [
        Text(f"{answer.analyst} · {origin} · generated {made}", style="dim"),
        _bullets("Strengths", insights.strengths, "green"),
        _bullets("Weaknesses", insights.weaknesses, "red"),
        Group(Text("Traffic", style="bold cyan"), Text(f"  {insights.traffic_insights}")),
        Group(Text("Patterns", style="bold cyan"), Text(f"  {insights.patterns}")),
        _bullets("Recommendations", insights.recommendations, "magenta"),
        _bullets("Next video", insights.next_video_suggestions, "blue"),
    ]
    if answer.message:
        parts.append(Text(answer.message, style="dim italic"))
    return Panel(Group(*parts), title=subject, border_style="cyan")


@app.callback(invoke_without_command=True)
def insights(
    tenant: Annotated[
        str,
        typer.Option(
            "--tenant",
            envvar="REELFLOW_TENANT_ID",
            help="The tenant to act as (its id).",
            show_default=False,
        ),
    ],
    video_id: Annotated[
        str | None, typer.Argument(help="The video to explain.", show_default=False)
    ] = None,
    series: Annotated[
        str | None,
        typer.Option("--series", help="Explain a series instead: its collection id."),
    ] = None,
    refresh: Annotated[
        bool,
        typer.Option("--refresh", help="Make fresh insights even when cached ones are valid."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a panel.")] = False,
) -> None:
    """Insights for a video (VIDEO_ID) or a series (--series COLLECTION_ID): cached for 24 h
    while the metrics are unchanged; fresh ones are limited per tenant per hour."""
    if (video_id is None) == (series is None):
        raise _fail("give either a VIDEO_ID or --series COLLECTION_ID")
    tenant_id = _uuid(tenant, "--tenant")
    video = _uuid(video_id, "VIDEO_ID") if video_id is not None else None
    collection = _uuid(series, "--series") if series is not None else None
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise _fail(str(exc)) from None
    try:
        answer = asyncio.run(
            _answer(settings, tenant_id, video_id=video, collection_id=collection, refresh=refresh)
        )
    except (DomainError, _NoTenant, SettingsError) as exc:
        raise _fail(str(exc)) from None
    except ProviderError as exc:
        raise _fail(f"the insights provider failed: {exc}") from None
    except (OperationalError, DBAPIError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise _fail(f"the database did not answer ({reason}); is DATABASE_URL right?") from None
    if as_json:
        console.print_json(answer.model_dump_json())
        return
    subject = f"series {collection}" if collection is not None else f"video {video}"
    console.print(render(answer, subject))
