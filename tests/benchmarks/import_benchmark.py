"""What it costs to start the API: imports and cold start, against a same-run baseline.

Starting a run from the API or the CLI must not load provider SDKs (openai, anthropic,
google-genai, boto3, yt-dlp, faster-whisper) or workflow code. This prints, over fresh
processes on this machine:

* `import api.app` wall time, against importing fastapi, sqlalchemy's asyncio layer and
  temporalio's client and worker alone (the baseline), median of N runs, and the ratio;
* `python -X importtime` self-reported cumulative import time of `api.app`;
* the API's cold start: from spawning `reelflow api`'s app under uvicorn to its first answer
  on `/healthz`, against a bare FastAPI app importing the same baseline libraries;
* which provider SDK modules `import api.app` loaded (the answer should be: none).

Targets (issue "one shape for four pipelines"): import and cold start under 1.5 s, or within
1.3x of the baseline measured in the same run.

    .venv/bin/python tests/benchmarks/import_benchmark.py [--runs 7]
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.benchmarks.common import machine, report, verdict

ROOT = Path(__file__).resolve().parents[2]
BASELINE_IMPORTS = "import fastapi, sqlalchemy.ext.asyncio, temporalio.client, temporalio.worker"
PROVIDER_SDKS = ("openai", "anthropic", "google.genai", "boto3", "yt_dlp", "faster_whisper")

_BARE_APP = """
import sys, uvicorn
{imports}
app = fastapi.FastAPI()
@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {{"status": "ok"}}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""

_REAL_APP = """
import sys, uvicorn
from api.app import create_app
from reelflow.core.settings import Settings
settings = Settings(
    environment="test",
    database_url="postgresql+psycopg://reelflow@127.0.0.1:1/none",
    temporal_address="127.0.0.1:1",
    reelflow_home=sys.argv[2],
)
uvicorn.run(create_app(settings), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _timed(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return time.perf_counter() - started


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cold_start(code: str) -> float:
    port = _free_port()
    with tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", code, str(port), home],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                        return time.perf_counter() - started
                except OSError as exc:
                    # Any HTTP answer (even 503: Temporal is not there) means it is serving.
                    if getattr(exc, "code", None):
                        return time.perf_counter() - started
                if process.poll() is not None:
                    raise RuntimeError("the app exited before answering") from None
                time.sleep(0.01)
        finally:
            process.terminate()
            process.wait(timeout=10)


def _importtime_total() -> float:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import api.app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"\|\s*(\d+) \| api\.app\s*$", result.stderr, re.M)
    return int(match.group(1)) / 1e6 if match else float("nan")


def _loaded_sdks() -> list[str]:
    probe = (
        f"import sys, api.app; print(','.join(m for m in {PROVIDER_SDKS!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    return [name for name in out.split(",") if name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    report(machine().line())
    _timed("import api.app")  # warm the OS file cache and the .pyc files once

    imports_app, imports_base, cold_app, cold_base = [], [], [], []
    for _ in range(args.runs):  # interleaved, so load on the machine hits both alike
        imports_base.append(_timed(BASELINE_IMPORTS))
        imports_app.append(_timed("import api.app"))
        cold_base.append(_cold_start(_BARE_APP.format(imports=BASELINE_IMPORTS)))
        cold_app.append(_cold_start(_REAL_APP))

    def line(name: str, ours: list[float], base: list[float]) -> None:
        mine, theirs = statistics.median(ours), statistics.median(base)
        met = mine < 1.5 or mine <= 1.3 * theirs
        report(
            f"{name}: {mine:.2f} s (min {min(ours):.2f}) vs baseline {theirs:.2f} s "
            f"(min {min(base):.2f}) = {mine / theirs:.2f}x; target < 1.5 s or <= 1.3x: "
            f"{verdict(met)}"
        )

    report(f"runs: {args.runs}, medians of fresh processes")
    line("import api.app", imports_app, imports_base)
    line("API cold start to first /healthz answer", cold_app, cold_base)
    report(f"python -X importtime, api.app cumulative: {_importtime_total():.2f} s")
    sdks = _loaded_sdks()
    report(f"provider SDKs loaded by import api.app: {', '.join(sdks) or 'none'}")


if __name__ == "__main__":
    main()
