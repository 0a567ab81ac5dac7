"""Report pages in a real browser: the system chromium, headless, driven over the DevTools
protocol, loads each page from the real API (served by uvicorn, authenticated with a header)
and must show every chart at a real size with nothing in the console.

Console errors are what a person opening the page with DevTools would see: page exceptions
(`Runtime.exceptionThrown`), `console.error` (`Runtime.consoleAPICalled`) and the browser's
own complaints (`Log.entryAdded`: a failed load, a Content-Security-Policy violation, …).
The page is served with its real CSP, so styles or images the policy forbids would show up
here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import ClientConnection, connect

from api.app import create_app
from api.routers import reports as reports_routes
from reelflow.core.db import create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.settings import Settings
from reelflow.core.tenants import create_tenant
from reelflow.improve import insights
from reelflow.improve.analysts import StatisticalAnalyst
from tests.api.api_support import BagOfWordsEmbedder
from tests.improve.test_reports import HOSTILE_TITLE, START, seed_series, seed_video
from tests.support.helpers import free_port

CHROMIUM = "/usr/bin/chromium"
STARTUP_S = 30.0
"""Guards against a browser that never answers; no assertion is about time."""


# --- a minimal DevTools protocol client -----------------------------------------------------


@dataclass
class DevTools:
    """One browser connection; commands go to the page session it attached to."""

    socket: ClientConnection
    session_id: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _waiters: list[tuple[str, asyncio.Future[dict[str, Any]]]] = field(default_factory=list)

    async def pump(self) -> None:
        async for raw in self.socket:
            message = json.loads(raw)
            if "id" in message:
                future = self._pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
                continue
            self.events.append(message)
            for method, waiter in list(self._waiters):
                if message.get("method") == method and not waiter.done():
                    waiter.set_result(message)
                    self._waiters.remove((method, waiter))

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if self.session_id is not None:
            message["sessionId"] = self.session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self.socket.send(json.dumps(message))
        async with asyncio.timeout(STARTUP_S):
            reply = await future
        assert "error" not in reply, (method, reply["error"])
        result: dict[str, Any] = reply["result"]
        return result

    def expect(self, method: str) -> asyncio.Future[dict[str, Any]]:
        """A future for the next `method` event; ask before causing it."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, future))
        return future

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def console_errors(self) -> list[str]:
        errors = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                errors.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in {
                "error",
                "assert",
            }:
                errors.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                entry = params["entry"]
                errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")
        return errors


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[DevTools]:
    """The system chromium, headless, with a fresh profile, attached to one blank page."""
    profile = Path(tempfile.mkdtemp(prefix="reelflow-chromium-"))
    process = subprocess.Popen(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pump: asyncio.Task[None] | None = None
    try:
        # Chromium writes the port it picked and the browser's websocket path here.
        active_port = profile / "DevToolsActivePort"
        async with asyncio.timeout(STARTUP_S):
            while not active_port.exists() or len(active_port.read_text().splitlines()) < 2:
                assert process.poll() is None, "chromium exited at startup"
                await asyncio.sleep(0.05)
        port, path = active_port.read_text().splitlines()[:2]
        async with connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as socket:
            tools = DevTools(socket)
            pump = asyncio.create_task(tools.pump())
            target = await tools.send("Target.createTarget", {"url": "about:blank"})
            attached = await tools.send(
                "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
            )
            tools.session_id = attached["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                await tools.send(f"{domain}.enable")
            yield tools
    finally:
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)


async def open_page(tools: DevTools, path: str, served: Served) -> None:
    """Open `path` of the served API as its tenant (the key rides in a header, as a
    backend service embedding the report would send it)."""
    await tools.send(
        "Network.setExtraHTTPHeaders",
        {"headers": {"Authorization": f"Bearer {served.api_key}"}},
    )
    loaded = tools.expect("Page.loadEventFired")
    navigation = await tools.send("Page.navigate", {"url": served.base_url + path})
    assert "errorText" not in navigation, navigation
    async with asyncio.timeout(STARTUP_S):
        await loaded


CHART_SIZES = """JSON.stringify(Array.from(document.querySelectorAll('figure.chart')).map(f => {
  const svg = f.querySelector('svg');
  const r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  return {chart: f.dataset.chart, width: r.width, height: r.height};
}))"""

PAGE_FACTS = """JSON.stringify({
  status: performance.getEntriesByType('navigation')[0].responseStatus,
  title: document.title,
  heading: document.querySelector('h1').textContent,
  scripts: document.scripts.length,
  overflow: document.scrollingElement.scrollWidth > window.innerWidth,
  text: document.body.innerText,
})"""


# --- the API, served for real ---------------------------------------------------------------


@dataclass
class Served:
    base_url: str
    api_key: str
    video_id: uuid.UUID
    collection_id: uuid.UUID


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    upgrade_database(database_url)
    engine = create_engine(database_url, pool_size=4)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def served(
    engine: AsyncEngine, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    home = tmp_path_factory.mktemp("report-browser")
    settings = Settings(
        environment="test",
        database_url=database_url,
        storage_url=(home / "media").as_uri(),
        reelflow_home=home,
        secret_key=SecretStr("test-secret-key"),
        task_queue_prefix=f"reports-{uuid.uuid4().hex[:8]}",
    )
    sessions = session_factory(engine)
    async with sessions() as session:
        tenant = await create_tenant(session, name="creator")
        original = await seed_video(session, tenant.tenant_id, title=HOSTILE_TITLE)
        await seed_video(
            session,
            tenant.tenant_id,
            title="Improved cut",
            start=START + timedelta(days=40),
            days=12,
            scale=1400,
            improved_from=original,
            iteration=1,
        )
        collection_id, _ = await seed_series(session, tenant.tenant_id, episodes=8)
        await session.commit()
    # Cached insights, as a person who asked for them before opening the report has.
    await insights.video_insights(
        sessions,
        tenant_id=tenant.tenant_id,
        video_id=original,
        refresh=False,
        analyst=StatisticalAnalyst(),
        settings=settings,
    )

    app: FastAPI = create_app(settings, engine=engine, embedder=BagOfWordsEmbedder())
    if "/v1/reports/videos/{video_id}" not in {getattr(r, "path", None) for r in app.routes}:
        app.include_router(reports_routes.router)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(STARTUP_S):
            while not server.started:
                assert not serving.done(), "the API did not start"
                await asyncio.sleep(0.05)
        yield Served(
            base_url=f"http://127.0.0.1:{port}",
            api_key=tenant.api_key,
            video_id=original,
            collection_id=collection_id,
        )
    finally:
        server.should_exit = True
        await serving


@pytest.mark.parametrize("width", [1280, 390])
async def test_the_video_report_loads_cleanly_with_every_chart_visible(
    served: Served, width: int
) -> None:
    async with chromium() as tools:
        await tools.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600},
        )
        await open_page(tools, f"/v1/reports/videos/{served.video_id}", served)
        facts = json.loads(await tools.evaluate(PAGE_FACTS))
        sizes = json.loads(await tools.evaluate(CHART_SIZES))
        errors = tools.console_errors()

    assert facts["status"] == 200
    assert errors == []
    assert [s["chart"] for s in sizes] == ["views", "engagement", "traffic", "versions"]
    for size in sizes:
        assert size["width"] > 0 and size["height"] > 0, size
        # Charts keep their 2:1 shape at any width.
        assert abs(size["width"] / size["height"] - 2) < 0.05, size
    # The hostile title is shown as the text it is, and ran nothing.
    assert facts["heading"] == HOSTILE_TITLE
    assert facts["scripts"] == 0
    assert not facts["overflow"], "the page scrolls sideways"
    assert "What worked" in facts["text"] or "What did not" in facts["text"]


async def test_the_series_report_loads_cleanly_with_every_chart_visible(served: Served) -> None:
    async with chromium() as tools:
        await open_page(tools, f"/v1/reports/collections/{served.collection_id}", served)
        facts = json.loads(await tools.evaluate(PAGE_FACTS))
        sizes = json.loads(await tools.evaluate(CHART_SIZES))
        errors = tools.console_errors()

    assert facts["status"] == 200
    assert errors == []
    assert [s["chart"] for s in sizes] == ["episodes", "views"]
    assert all(s["width"] > 0 and s["height"] > 0 for s in sizes), sizes
    assert "Best episodes" in facts["text"]


async def test_the_console_check_would_see_an_error(served: Served) -> None:
    """The probe itself works: an error in the page is caught, so an empty list means
    there were none (not that nothing was listening)."""
    async with chromium() as tools:
        await open_page(tools, f"/v1/reports/videos/{uuid.uuid4()}", served)
        await tools.evaluate("console.error('probe')")
        await tools.evaluate("setTimeout(() => { throw new Error('thrown') }, 0); 1")
        # A round trip after the timer has run, so its exception event has arrived.
        await tools.evaluate("new Promise(r => setTimeout(r, 50)).then(() => 1)")
        errors = tools.console_errors()
    assert any("probe" in e for e in errors), errors
    assert any("thrown" in e for e in errors), errors
    # A 404 from the API is a failed load the browser reports too.
    assert any("404" in e for e in errors), errors
