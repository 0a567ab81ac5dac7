"""`reelflow`: the embedded stack, workers, the API, tenants, runs and the demo."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from reelflow.billing import commands as billing_commands
from reelflow.core import key_commands
from reelflow.core.settings import Settings, SettingsError, get_settings
from reelflow.discover import commands as discover_commands
from reelflow.discover import scrape_commands, script_commands
from reelflow.improve import improve_commands, insights_commands, performance_commands

app = typer.Typer(help="Durable pipelines for an AI short-video business.", no_args_is_help=True)
dev_app = typer.Typer(help="The embedded stack on this machine.", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants and API keys.", no_args_is_help=True)
runs_app = typer.Typer(help="Pipeline runs (operators).", no_args_is_help=True)
app.add_typer(dev_app, name="dev")
app.add_typer(tenants_app, name="tenants")
app.add_typer(runs_app, name="runs")
# The discover pipeline's commands mirror the seed's `vt` commands; scrapes and schedules
# hang under `discover` next to brands, products and projects.
discover_commands.app.add_typer(scrape_commands.app, name="scrape")
discover_commands.app.add_typer(scrape_commands.schedule_app, name="schedule")
app.add_typer(discover_commands.app, name="discover")
app.add_typer(script_commands.app, name="script")
app.add_typer(insights_commands.app, name="insights")
app.add_typer(improve_commands.app, name="improve")
app.add_typer(performance_commands.app, name="performance")
app.add_typer(billing_commands.app, name="billing")
app.add_typer(billing_commands.admin_app, name="admin")
app.add_typer(key_commands.app, name="keys")
tenants_app.command("list")(key_commands.tenants_list)

console = Console()
DEV_TENANT_NAME = "dev"
DEMO_SENTENCES = (
    "Welcome to the reelflow demo, a short video about durable pipelines.",
    "Every upload is checked with ffprobe before anything else happens.",
    "Then the audio track is extracted and a thumbnail is saved.",
    "Temporal keeps every step of the pipeline safe across crashes and restarts.",
    "If a worker dies in the middle of a step, another worker picks it up.",
    "Nothing is counted twice in the cost ledger, even when a step is retried.",
    "Now for something completely different: the weather in the mountains.",
    "Tomorrow brings heavy snow above two thousand metres and strong winds.",
    "Hikers should stay in the valley and wait for the storm to pass.",
    "Back to the pipeline: the speech is transcribed on this very machine.",
    "The transcript is cut into chunks that remember when they were spoken.",
    "Finally, every chunk is embedded and indexed for semantic search.",
)
DEMO_QUESTION = "what is the weather forecast for the mountains?"
DEMO_PRODUCTS = (
    (
        "Calm Serum",
        "A serum that takes the redness out of tired skin.",
        "women 25-40 with sensitive skin and a morning routine",
        ["less redness", "makeup sits better", "one drop a day"],
    ),
    (
        "Posture Cushion",
        "A seat cushion for people who sit at a desk all day.",
        "desk workers with back pain",
        ["straighter back", "no pain after meetings"],
    ),
)


def _settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None


def _configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# --- dev stack ----------------------------------------------------------------------------


def _child_env(settings: Settings, database_url: str) -> dict[str, str]:
    """Children read the same settings; make the resolved addresses explicit for them."""
    return {
        "REELFLOW_HOME": str(settings.reelflow_home),
        "DATABASE_URL": database_url,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{settings.temporal_port}",
        "API_PORT": str(settings.api_port),
        "PYTHONUNBUFFERED": "1",
    }


def _dev_api_key(settings: Settings, database_url: str) -> str:
    """The dev tenant's key: created once, kept in `<home>/dev-api-key` (mode 0600)."""
    from reelflow.core.db import create_engine, session_factory
    from reelflow.core.tenants import create_tenant, tenant_for_api_key

    key_file = settings.reelflow_home / "dev-api-key"

    async def ensure() -> str:
        engine = create_engine(database_url, pool_size=1)
        sessions = session_factory(engine)
        try:
            async with sessions.begin() as session:
                if key_file.exists():
                    existing = key_file.read_text().strip()
                    if await tenant_for_api_key(session, existing) is not None:
                        return existing
                created = await create_tenant(session, name=DEV_TENANT_NAME, plan="pro")
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_text(created.api_key + "\n")
            key_file.chmod(0o600)
            return created.api_key
        finally:
            await engine.dispose()

    return asyncio.run(ensure())


def _start_stack(settings: Settings, extra_env: dict[str, str] | None = None) -> tuple[object, str]:
    """Start Postgres, Temporal, migrations, a worker and the API; returns (stack, key)."""
    from reelflow.core.migrate import upgrade_database
    from reelflow.dev.stack import EmbeddedStack, wait_for_http

    stack = EmbeddedStack(settings)
    stack.start_infrastructure()
    try:
        upgrade_database(stack.database_url)
        api_key = _dev_api_key(settings, stack.database_url)
        env = {**_child_env(settings, stack.database_url), **(extra_env or {})}
        python = sys.executable
        stack.processes.spawn("worker", [python, "-m", "reelflow.cli", "worker"], env=env)
        api = stack.processes.spawn("api", [python, "-m", "reelflow.cli", "api"], env=env)
        wait_for_http(f"{settings.api_base_url}/healthz", timeout=120, process=api)
    except BaseException:
        stack.stop()
        raise
    return stack, api_key


@dev_app.command("up")
def dev_up() -> None:
    """Run the whole embedded stack in the foreground until Ctrl-C."""
    from reelflow.dev.stack import ChildExitedError, EmbeddedStack

    _configure_logging()
    settings = _settings()
    stack, api_key = _start_stack(settings)
    assert isinstance(stack, EmbeddedStack)
    console.print(f"Temporal UI   {stack.temporal_ui_url}")
    console.print(f"Temporal      {stack.temporal_target}")
    console.print(f"API           {settings.api_base_url}  (docs: {settings.api_base_url}/docs)")
    console.print(f"Postgres      {stack.database_url}")
    console.print(f"Logs          {stack.logs_dir}")
    console.print(f"Dev API key   {api_key}")
    console.print("ready")
    try:
        stack.processes.supervise()
    except ChildExitedError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    finally:
        stack.stop()


# --- processes ----------------------------------------------------------------------------


@app.command()
def worker(
    queues: Annotated[
        str,
        typer.Option(
            help="Comma-separated pools to run: workflows, media, providers (default: all)."
        ),
    ] = "",
) -> None:
    """Run worker pools; SIGTERM finishes or hands back in-flight work."""
    # The media pool already runs one model call per core; BLAS threads on top of that
    # oversubscribe the CPU and made the local embedder ~4x slower under load.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from schemas.queues import POOLS
    from workers.pools import run_workers

    _configure_logging()
    settings = _settings()
    selected = [q.strip() for q in queues.split(",") if q.strip()] or list(POOLS)
    try:
        asyncio.run(run_workers(settings, selected))
    except ValueError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Serve the HTTP API."""
    # Query embedding runs on request threads; multi-threaded BLAS made its p95 spike to
    # hundreds of ms whenever anything else used the CPU (tests/benchmarks/chat_benchmark.py).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import uvicorn

    _configure_logging()
    settings = _settings()
    uvicorn.run(
        "api.app:app_factory",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level="info",
        access_log=False,
    )


# --- tenants ------------------------------------------------------------------------------


@tenants_app.command("create")
def tenants_create(
    name: str,
    plan: Annotated[
        str, typer.Option(help="free, premium, starter, pro or agency (see `billing plans`).")
    ] = "free",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a tenant and print its API key (shown only once)."""
    from reelflow.billing.plans import canonical_plan_name
    from reelflow.core.db import create_engine, session_factory
    from reelflow.core.tenants import create_tenant

    settings = _settings()
    try:
        plan = canonical_plan_name(plan)
    except ValueError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None

    async def create() -> tuple[str, str]:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with session_factory(engine).begin() as session:
                created = await create_tenant(session, name=name, plan=plan)
            return str(created.tenant_id), created.api_key
        finally:
            await engine.dispose()

    try:
        tenant_id, api_key = asyncio.run(create())
    except ValueError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps({"tenant_id": tenant_id, "api_key": api_key, "plan": plan}))
    else:
        console.print(f"tenant_id  {tenant_id}\napi_key    {api_key}")


# --- runs ---------------------------------------------------------------------------------


@runs_app.command("list")
def runs_list(
    query: Annotated[
        str, typer.Option(help="Visibility query, e.g. \"Pipeline='ingest' AND Stage='failed'\".")
    ] = "",
    limit: Annotated[int, typer.Option(help="Most runs to show.")] = 20,
) -> None:
    """List recent runs with tenant, video, pipeline and stage."""
    from schemas import search_attributes as sa

    settings = _settings()

    async def collect() -> list[list[str]]:
        from reelflow.core.temporal_client import connect_temporal

        client = await connect_temporal(settings)
        rows = []
        async for execution in client.list_workflows(query or None, limit=limit):
            attributes = execution.typed_search_attributes
            rows.append(
                [
                    execution.id,
                    execution.status.name.lower() if execution.status else "?",
                    attributes.get(sa.PIPELINE) or "",
                    attributes.get(sa.STAGE) or "",
                    attributes.get(sa.TENANT_ID) or "",
                    f"{attributes.get(sa.COST_USD) or 0:.6f}",
                ]
            )
        return rows

    for row in asyncio.run(collect()):
        print("  ".join(row))


def _run_tenant(settings: Settings, workflow_id: str) -> str:
    """Operators act on any tenant's run: read the tenant from the run itself."""
    from schemas import search_attributes as sa

    async def tenant() -> str:
        from reelflow.core.temporal_client import connect_temporal

        client = await connect_temporal(settings)
        description = await client.get_workflow_handle(workflow_id).describe()
        return description.typed_search_attributes.get(sa.TENANT_ID) or ""

    return asyncio.run(tenant())


@runs_app.command("show")
def runs_show(workflow_id: str) -> None:
    """Show a run's status, stage, progress and cost."""
    from reelflow.core.runs import describe_run
    from reelflow.core.temporal_client import connect_temporal

    settings = _settings()
    tenant_id = _run_tenant(settings, workflow_id)

    async def show() -> str:
        client = await connect_temporal(settings)
        view = await describe_run(
            client,
            workflow_id=workflow_id,
            tenant_id=tenant_id,
            ui_base_url=settings.temporal_ui_url,
            namespace=settings.temporal_namespace,
        )
        return view.model_dump_json(indent=2)

    print(asyncio.run(show()))


@runs_app.command("retry")
def runs_retry(workflow_id: str) -> None:
    """Retry a failed run from the step that failed."""
    from reelflow.core.runs import RunNotRetryable, retry_run
    from reelflow.core.temporal_client import connect_temporal

    settings = _settings()
    tenant_id = _run_tenant(settings, workflow_id)

    async def retry() -> str:
        client = await connect_temporal(settings)
        return await retry_run(client, workflow_id=workflow_id, tenant_id=tenant_id)

    try:
        print(f"retried {workflow_id}: run {asyncio.run(retry())}")
    except RunNotRetryable as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None


@runs_app.command("cancel")
def runs_cancel(workflow_id: str) -> None:
    """Cancel a running run."""
    from reelflow.core.runs import RunNotCancelable, cancel_run
    from reelflow.core.temporal_client import connect_temporal

    settings = _settings()
    tenant_id = _run_tenant(settings, workflow_id)

    async def cancel() -> None:
        client = await connect_temporal(settings)
        await cancel_run(client, workflow_id=workflow_id, tenant_id=tenant_id)

    try:
        asyncio.run(cancel())
    except RunNotCancelable as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    print(f"cancel requested for {workflow_id}")


# --- demo ---------------------------------------------------------------------------------


def _format_timestamp(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@app.command()
def demo() -> None:
    """Ingest a speech video end to end and search it, then generate a clip locally."""
    from reelflow.dev.samples import make_speech_video
    from reelflow.dev.stack import EmbeddedStack, is_port_open

    _configure_logging()
    logging.getLogger().setLevel(logging.WARNING)
    settings = _settings()
    stack: EmbeddedStack | None = None
    if is_port_open(settings.api_host, settings.api_port):
        api_key = _dev_api_key(settings, settings.database_url)
        console.print(f"Using the running stack at {settings.api_base_url}")
    else:
        console.print("Starting the embedded stack (Postgres, Temporal, worker, API)…")
        # The discover step serves its sample posts' videos from this machine; only the
        # stack the demo starts may import from 127.0.0.1 (never a production setting).
        started, api_key = _start_stack(
            settings, {"IMPORT_TEST_ALLOWED_HOSTS": json.dumps(["127.0.0.1"])}
        )
        assert isinstance(started, EmbeddedStack)
        stack = started
    try:
        with tempfile.TemporaryDirectory(prefix="reelflow-demo-") as workdir:
            video = make_speech_video(Path(workdir) / "demo.mp4", DEMO_SENTENCES)
            console.print(f"Made a {video.duration_s:.1f} s speech video: {video.path.name}")
            uploaded_id = _demo_ingest(settings, api_key, video.path)
        generated_id = _demo_generate(settings, api_key)
        with tempfile.TemporaryDirectory(prefix="reelflow-demo-discover-") as workdir:
            _demo_discover(settings, api_key, Path(workdir))
        _demo_improve(settings, api_key, generated_id, uploaded_id)
    finally:
        if stack is not None:
            stack.stop()


def _demo_ingest(settings: Settings, api_key: str, path: Path) -> str:
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=settings.api_base_url, headers=headers, timeout=60) as http:
        with path.open("rb") as file:
            response = http.post(
                "/v1/videos",
                files={"file": (path.name, file, "video/mp4")},
                data={"title": "reelflow demo"},
            )
        response.raise_for_status()
        created = response.json()
        video_id, workflow_id = created["video_id"], created["workflow_id"]
        with Progress(
            TextColumn("{task.description:<14}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("pending", total=1.0)
            deadline = time.monotonic() + 600
            while True:
                state = http.get(f"/v1/videos/{video_id}").json()
                progress.update(task, completed=state["progress"], description=state["stage"])
                if state["status"] in ("completed", "failed") or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        if state["status"] != "completed":
            console.print(f"[red]ingest ended as {state['status']}: {state.get('error')}[/red]")
            raise typer.Exit(1)
        console.print(
            f"Indexed {state['chunk_count']} chunk(s) from {state['duration_s']:.1f} s of video "
            f"for ${float(state['cost_usd']):.6f}"
        )
        hits = http.get("/v1/search", params={"q": DEMO_QUESTION, "k": 3}).json()["results"]
        if not hits:
            console.print("[red]search found nothing[/red]")
            raise typer.Exit(1)
        best = hits[0]
        console.print(f"Search: {DEMO_QUESTION!r}")
        # The match span is the sentences that carry the answer; the passage is the chunk.
        match = (best.get("match_start_s", best["start_s"]), best.get("match_end_s", best["end_s"]))
        console.print(
            f"Best hit at {_format_timestamp(match[0])}–{_format_timestamp(match[1])}"
            f" (in the passage {_format_timestamp(best['start_s'])}–"
            f"{_format_timestamp(best['end_s'])}, score {best['score']:.3f}): {best['text']}"
        )
        console.print(
            f"Run in the Temporal UI: {settings.temporal_ui_url}/namespaces/"
            f"{settings.temporal_namespace}/workflows/{workflow_id}"
        )
    return str(video_id)


DEMO_PROMPT = "A paper boat sails down a rain-soaked street at dusk"


def _demo_discover(settings: Settings, api_key: str, workdir: Path) -> None:
    """Scrape the bundled sample export, then show its outliers, analyses and scripts."""
    from reelflow.dev.discover_sample import (
        INSTAGRAM_ACCOUNT,
        OUTLIERS,
        TIKTOK_ACCOUNT,
        sample_export,
        serve_directory,
    )
    from reelflow.dev.samples import make_speech_video

    for outlier in OUTLIERS:
        make_speech_video(workdir / f"{outlier.clip}.mp4", outlier.sentences, width=480, height=270)
    run = os.urandom(2).hex()
    headers = {"Authorization": f"Bearer {api_key}"}
    with (
        serve_directory(workdir) as video_base,
        httpx.Client(base_url=settings.api_base_url, headers=headers, timeout=60) as http,
    ):
        export = workdir / "apify-dataset.jsonl"
        export.write_text(sample_export(video_base, datetime.now(UTC)))

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            response = http.post(path, json=body)
            if response.status_code >= 300:
                console.print(f"[red]{path} refused: {response.text}[/red]")
                raise typer.Exit(1)
            answer: dict[str, Any] = response.json()
            return answer

        brand = post("/v1/brands", {"name": f"Demo brand {run}"})
        products = [
            post(
                "/v1/products",
                {
                    "brand_id": brand["brand_id"],
                    "name": name,
                    "description": description,
                    "audience": audience,
                    "benefits": benefits,
                },
            )
            for name, description, audience, benefits in DEMO_PRODUCTS
        ]
        project = post(
            "/v1/projects",
            {
                "name": f"Winning formats {run}",
                "accounts": [
                    {"platform": "instagram", "handle": INSTAGRAM_ACCOUNT},
                    {"platform": "tiktok", "handle": TIKTOK_ACCOUNT},
                ],
                "product_ids": [product["product_id"] for product in products],
            },
        )
        project_id = project["project_id"]
        with export.open("rb") as file:
            response = http.post(
                f"/v1/projects/{project_id}/scrapes",
                files={"file": (export.name, file, "application/x-ndjson")},
            )
        if response.status_code != 202:
            console.print(f"[red]scrape refused: {response.text}[/red]")
            raise typer.Exit(1)
        scrape_id = response.json()["scrape_id"]
        console.print(
            f"Scraping the sample Apify export: @{INSTAGRAM_ACCOUNT} (Instagram) and "
            f"@{TIKTOK_ACCOUNT} (TikTok)"
        )
        deadline = time.monotonic() + 900
        with console.status("scraping") as status:
            while True:
                scrape = http.get(f"/v1/scrapes/{scrape_id}").json()
                status.update(
                    f"{scrape['stage']}: {scrape['posts_seen']} posts, "
                    f"{scrape['outliers']} outliers, {scrape['processed']} processed"
                )
                if scrape["status"] in ("completed", "failed", "canceled"):
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(1.0)
        if scrape["status"] != "completed":
            console.print(f"[red]scrape ended {scrape['status']}: {scrape['error_message']}[/red]")
            raise typer.Exit(1)
        console.print(
            f"Scrape {scrape['status']}: {scrape['posts_seen']} posts ({scrape['posts_new']} new), "
            f"{len(scrape['errors'])} row(s) set aside, {scrape['outliers']} outlier(s), "
            f"${scrape['cost_usd']:.4f}"
        )
        for error in scrape["errors"]:
            where = f"line {error['line']}" if "line" in error else f"post {error.get('post_id')}"
            console.print(f"  [yellow]{where}[/yellow]: {error.get('reason')}")
        posts = http.get(
            "/v1/posts", params={"project_id": project_id, "min_tier": "3x", "limit": 10}
        ).json()["items"]
        for item in posts:
            console.print(
                f"Outlier @{item['account']} ({item['platform']}): {item['views']:,} views, "
                f"{item['outlier_score']:.1f}x the account's usual → tier {item['outlier_tier']}"
            )
            analysis = http.get(f"/v1/posts/{item['post_id']}/analysis")
            if analysis.status_code != 200:
                console.print(f"  [red]no analysis: {analysis.text}[/red]")
                raise typer.Exit(1)
            found = analysis.json()
            body = found["analysis"]
            pacing = body["pacing"]
            console.print(
                f"  Analysis ({found['analyzer']}): hook {body['hook']['text']!r}; "
                f"{len(body['scenes'])} scene(s), {pacing.get('words_per_minute') or 0:.0f} "
                f"words/min; {len(body['unfilled'])} field(s) it could not measure"
            )
            fit = http.get(
                f"/v1/videos/{item['video_id']}/product-fit", params={"project_id": project_id}
            ).json()
            for rank in fit["ranking"]:
                console.print(f"    fit {rank['score']:.1f}/10 {rank['product_name']}")
            console.print(f"  Recommended: {fit['recommended_product_name']}: {fit['why']}")
        scripts = http.get("/v1/scripts", params={"project_id": project_id}).json()["items"]
        console.print(f"{len(scripts)} draft script(s) written, one per outlier and product")
        if scripts:
            exported = http.get(
                f"/v1/scripts/{scripts[0]['script_id']}/export", params={"format": "md"}
            )
            console.print("First script, as the production team gets it:")
            for line in exported.text.splitlines()[:12]:
                console.print(f"  {line}")


def _demo_generate(settings: Settings, api_key: str) -> str:
    """Generate a short clip with the local renderer and print its validation report."""
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=settings.api_base_url, headers=headers, timeout=60) as http:
        response = http.post(
            "/v1/generations",
            json={
                "prompt": DEMO_PROMPT,
                "provider": "local",
                "duration_s": 4,
                "aspect_ratio": "16:9",
                "resolution": "480p",
            },
        )
        if response.status_code != 202:
            console.print(f"[red]generation refused: {response.text}[/red]")
            raise typer.Exit(1)
        accepted = response.json()
        generation_id = accepted["generation_id"]
        console.print(
            f"Generating {DEMO_PROMPT!r} with the local renderer "
            f"(estimate ${accepted['estimated_cost_usd']:.2f})"
        )
        if accepted.get("quota_warning"):
            console.print(f"[yellow]{accepted['quota_warning']}[/yellow]")
        deadline = time.monotonic() + 300
        with console.status("generating") as status:
            while True:
                state = http.get(f"/v1/generations/{generation_id}").json()
                status.update(state["status"])
                finished = state["status"] in ("completed", "failed", "canceled")
                if finished or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        for attempt in state["attempts"]:
            console.print(
                f"Attempt {attempt['attempt']} ({attempt['provider']}/{attempt['model']}, "
                f"job {attempt['provider_job_id']}): {attempt['outcome']}"
            )
        report = state.get("validation") or {"checks": []}
        for check in report["checks"]:
            mark = "[green]pass[/green]" if check["passed"] else "[red]FAIL[/red]"
            console.print(f"  {mark}  {check['name']:<13} {check['actual']}")
        if state["status"] != "completed":
            error = (state.get("error") or {}).get("message", state["status"])
            console.print(f"[red]generation ended as {state['status']}: {error}[/red]")
            raise typer.Exit(1)
        video_id = state["video_id"]
        console.print(
            f"Stored as video {video_id} (${state['cost_usd']:.2f}): "
            f"{settings.api_base_url}/v1/videos/{video_id}/content and /thumbnail"
        )
        console.print(
            f"Run in the Temporal UI: {settings.temporal_ui_url}/namespaces/"
            f"{settings.temporal_namespace}/workflows/{state['workflow_id']}"
        )
    return str(video_id)


def _demo_improve(settings: Settings, api_key: str, video_id: str, other_id: str) -> None:
    """Import sample metrics, read the insights, and improve the generated clip."""
    from reelflow.dev.improve_sample import sample_metrics_csv

    headers = {"Authorization": f"Bearer {api_key}"}
    metrics = sample_metrics_csv(uuid.UUID(video_id), uuid.UUID(other_id), datetime.now(UTC))
    with httpx.Client(base_url=settings.api_base_url, headers=headers, timeout=60) as http:
        imported = http.post(
            "/v1/performance/import", files={"file": ("metrics.csv", metrics, "text/csv")}
        )
        if imported.status_code != 200:
            console.print(f"[red]metrics import refused: {imported.text}[/red]")
            raise typer.Exit(1)
        report = imported.json()
        console.print(
            f"Imported sample metrics: {report['accepted']} of {report['lines']} line(s) "
            f"accepted, {report['rejected']} rejected"
        )
        summary = http.get(f"/v1/videos/{video_id}/performance/summary").json()
        for platform in summary["platforms"]:
            console.print(
                f"  {platform['platform']}: {platform['views']:,} views, engagement "
                f"{(platform['engagement_rate'] or 0) * 100:.1f} %, "
                f"{platform['times_usual'] or 0:.1f}x your usual"
            )
        answer = http.get(f"/v1/videos/{video_id}/insights").json()
        insights = answer.get("insights") or {}
        console.print(f"Insights ({answer['analyst']}):")
        for strength in insights.get("strengths", [])[:2]:
            console.print(f"  [green]+[/green] {strength}")
        for weakness in insights.get("weaknesses", [])[:2]:
            console.print(f"  [red]-[/red] {weakness}")
        console.print(f"Report with charts: {settings.api_base_url}/v1/reports/videos/{video_id}")
        response = http.post(
            f"/v1/videos/{video_id}/improvements", json={"approve_over_budget": True}
        )
        if response.status_code != 202:
            console.print(f"[red]improvement refused: {response.text}[/red]")
            raise typer.Exit(1)
        improvement_id = response.json()["improvement_id"]
        deadline = time.monotonic() + 300
        with console.status("improving") as status:
            while True:
                detail = http.get(f"/v1/improvements/{improvement_id}").json()
                status.update(detail["status"])
                if detail["status"] in ("completed", "failed", "canceled"):
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        if detail["status"] != "completed":
            error = (detail.get("error") or {}).get("message", detail["status"])
            console.print(f"[red]improvement ended as {detail['status']}: {error}[/red]")
            raise typer.Exit(1)
        console.print(f"Improved prompt ({detail['writer']}): {detail['improved_prompt']!r}")
        for change in detail["changes"][:3]:
            console.print(f"  {change['kind']}: {change['what']} — because {change['because']}")
        versions = http.get(f"/v1/videos/{video_id}/versions").json()["versions"]
        console.print(
            "Versions: " + " → ".join(f"v{v['version']} {v['video_id']}" for v in versions)
        )


if __name__ == "__main__":
    app()
