"""Starting a run from the API loads no provider SDK and no workflow or activity code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HEAVY = (
    "openai",
    "anthropic",
    "google.genai",
    "boto3",
    "yt_dlp",
    "faster_whisper",
    "ctranslate2",
    "workflows.ingest",
    "workflows.generation",
    "activities.media",
    "activities.generation",
)


def _loaded_after(statement: str) -> list[str]:
    loaded = f"[m for m in {HEAVY!r} if m in sys.modules]"
    probe = f"import sys, json; {statement}; print(json.dumps({loaded}))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return list(json.loads(result.stdout))


def test_importing_the_api_loads_no_provider_sdk_and_no_pipeline_code() -> None:
    # Each of these costs the API's cold start up to a second and belongs in the workers.
    assert _loaded_after("import api.app") == []


def test_the_cli_starts_runs_without_pipeline_code() -> None:
    assert _loaded_after("import reelflow.cli, reelflow.core.runs") == []
