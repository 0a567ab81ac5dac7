"""`improve`, `versions`, `compare` and `show`: improvement runs and versions from a terminal.

Against the database of `DATABASE_URL`, the Temporal of `TEMPORAL_*` and the tenant of
`--tenant` (or `REELFLOW_TENANT_ID`). Refusals (an unknown id, a video without metrics, an
improvement already running) print one readable line and exit with 1; a bad setting exits
with 2; `improve --wait` exits with 1 when the run does not complete.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import DBAPIError

from reelflow.core.db import SessionFactory
from reelflow.core.errors import DomainError
from reelflow.core.settings import Settings, SettingsError, get_settings
from reelflow.improve import improvements, versions
from schemas.failures import FailureCode
from schemas.improvement import (
    TERMINAL_IMPROVEMENT_STATUSES,
    ImprovementDetail,
    ImprovementStatus,
    VersionComparison,
    VersionHistory,
    VersionMetrics,
)
from schemas.queues import TaskQueues

T = TypeVar("T")

app = typer.Typer(
    help="Improvements: a new version of a video from its insights, and its versions.",
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)

TenantOption = Annotated[
    uuid.UUID,
    typer.Option(
        "--tenant", envvar="REELFLOW_TENANT_ID", help="The tenant's id.", show_default=False
    ),
]
WAIT_LIMIT_S = 3600.0
POLL_S = 1.0


def _fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def _run(work: Callable[[Settings, SessionFactory], Awaitable[T]]) -> T:
    """Run `work` with the configured settings and a session factory on its database."""
    from reelflow.core.db import create_engine, session_factory

    try:
        settings = get_settings()
    except SettingsError as err:
        _fail(str(err), code=2)

    async def main() -> T:
        engine = create_engine(settings.database_url, pool_size=2)
        try:
            return await work(settings, session_factory(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except DomainError as err:
        _fail(err.message)
    except improvements.ImprovementRefused as exc:
        _fail(exc.message)
    except versions.NotAVersion as exc:
        _fail(str(exc))
    except (DBAPIError, OSError) as exc:
        # The URL may carry a password: name the variable, not its value.
        _fail(f"cannot use the database of DATABASE_URL ({type(exc).__name__})")


async def _detail(
    sessions: SessionFactory, tenant: uuid.UUID, improvement_id: uuid.UUID
) -> ImprovementDetail | None:
    async with sessions() as session:
        row = await improvements.get_improvement(session, tenant, improvement_id)
        if row is None:
            return None
        return await improvements.load_detail(session, row)


def _print_detail(detail: ImprovementDetail) -> None:
    table = Table(show_header=False, box=None)
    table.add_row("improvement", str(detail.improvement_id))
    table.add_row("status", detail.status.value)
    table.add_row("video", str(detail.video_id))
    table.add_row("iteration", str(detail.iteration))
    if detail.writer:
        table.add_row("writer", detail.writer)
    if detail.generation_id:
        generation = detail.generation_status.value if detail.generation_status else "?"
        table.add_row("generation", f"{detail.generation_id} ({generation})")
    if detail.estimated_cost_usd is not None:
        table.add_row("estimate", f"${detail.estimated_cost_usd:.2f}")
    if detail.new_video_id:
        table.add_row("new video", str(detail.new_video_id))
    table.add_row("cost", f"${detail.cost_usd:.4f}")
    if detail.error:
        table.add_row("error", f"[red]{escape(detail.error.code)}: {escape(detail.error.message)}")
    console.print(table)
    if detail.improved_prompt:
        console.print(f"[bold]improved prompt[/bold] ({detail.source_kind or 'source'} based)")
        console.print(escape(detail.improved_prompt))
    for change in detail.changes:
        console.print(f"  {change.kind.value}: {escape(change.what)} ({escape(change.because)})")
    if detail.status == ImprovementStatus.AWAITING_APPROVAL:
        console.print(
            "[yellow]the generation waits for approval: "
            f"POST /v1/improvements/{detail.improvement_id}/approve[/yellow]"
        )


@app.command("start")
def improve(
    video_id: uuid.UUID,
    tenant: TenantOption,
    wait: Annotated[bool, typer.Option(help="Follow the run until it ends.")] = False,
    approve_over_budget: Annotated[
        bool, typer.Option(help="Approve the generation in advance if its estimate needs it.")
    ] = False,
    max_cost: Annotated[
        float | None, typer.Option(help="Above this estimate (USD) the generation waits.")
    ] = None,
    provider: Annotated[
        str | None, typer.Option(help='A provider or "auto"; default: the original\'s.')
    ] = None,
) -> None:
    """Make an improved version of a video from its insights."""
    if max_cost is not None and not 0 <= max_cost <= 999_999.99:
        _fail("--max-cost must be between 0 and 999999.99", code=2)

    async def begin(settings: Settings, sessions: SessionFactory) -> tuple[uuid.UUID, str]:
        from reelflow.core.temporal_client import connect_temporal

        async with sessions() as session:
            row = await improvements.request_improvement(
                session,
                tenant_id=tenant,
                video_id=video_id,
                provider=provider.strip() if provider else None,
                max_cost_usd=None if max_cost is None else Decimal(str(max_cost)),
                approve_over_budget=approve_over_budget,
            )
            await session.commit()
            try:
                client = await connect_temporal(settings)
                workflow_id = await improvements.start_improvement(
                    client,
                    tenant_id=tenant,
                    improvement=row,
                    task_queue=TaskQueues.for_prefix(settings.task_queue_prefix).workflows,
                )
            except Exception:
                await improvements.mark_start_failed(session, row)
                raise DomainError(
                    FailureCode.DEPENDENCY_UNAVAILABLE,
                    "the workflow engine did not accept the run; is Temporal running?",
                ) from None
            return row.id, workflow_id

    improvement_id, workflow_id = _run(begin)
    console.print(f"improvement {improvement_id} started ({workflow_id})")
    if wait:
        _follow(tenant, improvement_id)


def _follow(tenant: uuid.UUID, improvement_id: uuid.UUID) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_S
    detail: ImprovementDetail | None = None
    with console.status("improving…") as status:
        while time.monotonic() < deadline:
            detail = _load(tenant, improvement_id)
            status.update(detail.status.value.replace("_", " "))
            # Waiting for a person is an end for the terminal too: the hint says what to do.
            if detail.status in TERMINAL_IMPROVEMENT_STATUSES or (
                detail.status == ImprovementStatus.AWAITING_APPROVAL
            ):
                break
            time.sleep(POLL_S)
    assert detail is not None
    _print_detail(detail)
    if detail.status != ImprovementStatus.COMPLETED:
        raise typer.Exit(1)


def _load(tenant: uuid.UUID, improvement_id: uuid.UUID) -> ImprovementDetail:
    async def load(_settings: Settings, sessions: SessionFactory) -> ImprovementDetail | None:
        return await _detail(sessions, tenant, improvement_id)

    detail = _run(load)
    if detail is None:
        _fail(f"no improvement with id {improvement_id}")
    return detail


@app.command("show")
def show(improvement_id: uuid.UUID, tenant: TenantOption) -> None:
    """An improvement's status, prompt, what changed and its new video."""
    _print_detail(_load(tenant, improvement_id))


def _number(value: float | None, pattern: str = "{:,.0f}") -> str:
    return "—" if value is None else pattern.format(value)


def _metric_cells(metrics: VersionMetrics) -> list[str]:
    return [
        _number(metrics.views),
        _number(metrics.engagement_rate, "{:.1%}"),
        _number(metrics.completion_rate, "{:.0f}%"),
        _number(metrics.times_usual, "{:.2f}×"),
    ]


@app.command("versions")
def show_versions(video_id: uuid.UUID, tenant: TenantOption) -> None:
    """The chain of versions a video belongs to, each with its latest metrics."""

    async def load(_settings: Settings, sessions: SessionFactory) -> VersionHistory:
        async with sessions() as session:
            return await versions.version_history(session, tenant_id=tenant, video_id=video_id)

    history = _run(load)
    table = Table("v", "video", "title", "views", "engagement", "completion", "× usual")
    for version in history.versions:
        marker = " ←" if version.video_id == video_id else ""
        table.add_row(
            str(version.version),
            f"{version.video_id}{marker}",
            escape(version.title),
            *_metric_cells(version.metrics),
        )
    console.print(table)
    if history.branches:
        console.print(f"also improved into: {', '.join(str(b) for b in history.branches)}")


@app.command("compare")
def compare(video_a: uuid.UUID, video_b: uuid.UUID, tenant: TenantOption) -> None:
    """Two versions of a video side by side, with the change from A to B."""

    async def load(_settings: Settings, sessions: SessionFactory) -> VersionComparison:
        async with sessions() as session:
            return await versions.compare_versions(
                session, tenant_id=tenant, video_id=video_a, other_id=video_b
            )

    comparison = _run(load)
    base, other = comparison.base, comparison.other
    table = Table("metric", f"v{base.version}", f"v{other.version}", "change")
    for metric in comparison.metrics:
        percent = "views" not in metric.name
        pattern = "{:.2f}×" if metric.name == "times_usual" else "{:.1%}" if percent else "{:,.0f}"
        if metric.name == "completion_rate":
            pattern = "{:.0f}%"
        change = "—" if metric.change is None else f"{metric.change:+.0%}"
        table.add_row(
            metric.name.replace("_", " "),
            _number(metric.base, pattern),
            _number(metric.other, pattern),
            change,
        )
    console.print(table)
    if comparison.message:
        console.print(f"[yellow]{escape(comparison.message)}[/yellow]")
