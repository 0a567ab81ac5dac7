"""`reelflow performance …` as a person types it, against a real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from reelflow.core.tenants import create_tenant
from reelflow.improve.performance_commands import app
from tests.cli.test_discover_commands import _run_db
from tests.cli.test_discover_commands import migrated_url as migrated_url
from tests.improve.test_performance import make_video


@pytest.fixture
def tenant(migrated_url: str) -> uuid.UUID:
    async def make(session: Any) -> uuid.UUID:
        return (await create_tenant(session, name="cli")).tenant_id

    tenant_id: uuid.UUID = _run_db(migrated_url, make)
    return tenant_id


@pytest.fixture
def perf(migrated_url: str, tenant: uuid.UUID) -> Any:
    runner = CliRunner()
    env = {"DATABASE_URL": migrated_url, "REELFLOW_TENANT_ID": str(tenant), "COLUMNS": "250"}

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), env=env)

    return invoke


def _video(url: str, tenant: uuid.UUID, **kwargs: Any) -> uuid.UUID:
    async def make(session: Any) -> uuid.UUID:
        return await make_video(session, tenant, **kwargs)

    video: uuid.UUID = _run_db(url, make)
    return video


def test_add_show_and_refusals(perf: Any, migrated_url: str, tenant: uuid.UUID) -> None:
    video = str(_video(migrated_url, tenant))
    added = perf(
        "add",
        video,
        "--platform",
        "tiktok",
        "--views",
        "1200",
        "--likes",
        "90",
        "--traffic-source",
        "fyp",
        "--recorded-at",
        "2026-11-01T10:00:00",
    )
    assert added.exit_code == 0, added.output
    again = perf(
        "add",
        video,
        "--platform",
        "tiktok",
        "--views",
        "1300",
        "--recorded-at",
        "2026-11-01T10:00:00",
    )
    assert again.exit_code == 1 and "already has" in again.output
    impossible = perf("add", video, "--platform", "tiktok", "--views", "1", "--likes", "5")
    assert impossible.exit_code == 1 and "exceed views" in impossible.output
    negative = perf("add", video, "--platform", "tiktok", "--views", "-4")
    assert negative.exit_code == 1 and "views" in negative.output
    assert "Traceback" not in negative.output
    stranger = perf("add", str(uuid.uuid4()), "--platform", "tiktok", "--views", "4")
    assert stranger.exit_code == 1 and "no video" in stranger.output

    shown = perf("show", video)
    assert shown.exit_code == 0, shown.output
    assert "1,200" in shown.output and "best platform tiktok" in shown.output
    as_json = json.loads(perf("show", video, "--json").stdout)
    assert as_json["totals"]["views"] == 1200


def test_import_and_series(perf: Any, migrated_url: str, tenant: uuid.UUID, tmp_path: Path) -> None:
    series = uuid.uuid4()
    videos = [
        _video(migrated_url, tenant, title=f"Ep{i} #go", collection_id=series) for i in range(3)
    ]
    lines = ["video_id;platform;views;recorded_at"]
    lines += [
        f"{v};instagram;{(i + 1) * 100};2026-10-0{i + 1}T12:00:00Z" for i, v in enumerate(videos)
    ]
    lines.append(f"{uuid.uuid4()};instagram;5;2026-10-01T12:00:00Z")
    file = tmp_path / "metrics.csv"
    file.write_text("\n".join(lines))
    imported = perf("import", str(file))
    assert imported.exit_code == 0, imported.output
    assert "3 new" in imported.output and "1 rejected" in imported.output
    assert "no video with id" in imported.output
    again = json.loads(perf("import", str(file), "--json").stdout)
    assert (again["inserted"], again["unchanged"]) == (0, 3)

    shown = perf("series", str(series))
    assert shown.exit_code == 0, shown.output
    assert "Ep2 #go" in shown.output and "#go" in shown.output
    missing = perf("series", str(uuid.uuid4()))
    assert missing.exit_code == 1 and "no video is in collection" in missing.output
    broken = tmp_path / "broken.json"
    broken.write_text('[{"video_id": "x", ')
    refused = perf("import", str(broken))
    assert refused.exit_code == 1 and "Nothing was imported" in refused.output
