"""Shared plumbing for the standalone benchmarks in this folder.

The benchmarks are scripts, not tests: pytest never collects this folder (see
``norecursedirs`` in pyproject.toml) and nothing here asserts a timing. Each script starts
its own throwaway PostgreSQL (and Temporal, when it needs one), prints plain lines, and can
write a JSON summary for tracking figures across runs.

Output goes through `report` rather than ``print`` because ruff bans ``print`` outside the
CLI, and because flushing every line lets a slow run be watched live.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reelflow.dev.stack import EmbeddedPostgres, TemporalDevServer
from tests.support import free_port


def report(line: str = "") -> None:
    """Write one result line to stdout at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def write_json(path: Path | None, summary: dict[str, Any]) -> None:
    """Write `summary` to `path` (if given) and say where it went."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    report(f"json summary: {path}")


@dataclass(frozen=True)
class Machine:
    """What the figures were measured on; without it a number means little."""

    cpu_model: str
    cores: int
    usable_cores: int
    ram_gib: float
    python: str
    load_average: tuple[float, float, float]

    def line(self) -> str:
        load = ", ".join(f"{x:.2f}" for x in self.load_average)
        return (
            f"machine: {self.cpu_model} | {self.cores} cores ({self.usable_cores} usable) | "
            f"{self.ram_gib:.1f} GiB RAM | Python {self.python} | load avg at start {load}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "cpu_model": self.cpu_model,
            "cores": self.cores,
            "usable_cores": self.usable_cores,
            "ram_gib": round(self.ram_gib, 2),
            "python": self.python,
            "load_average": list(self.load_average),
        }


def machine() -> Machine:
    """CPU model from /proc/cpuinfo, core counts, RAM from /proc/meminfo, Python version."""
    cpu_model = platform.processor() or "unknown CPU"
    try:
        for raw in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = raw.partition(":")
            if sep and key.strip() == "model name":
                cpu_model = value.strip()
                break
    except OSError:
        pass
    ram_gib = 0.0
    try:
        for raw in Path("/proc/meminfo").read_text().splitlines():
            if raw.startswith("MemTotal:"):
                ram_gib = int(raw.split()[1]) / 1024 / 1024
                break
    except OSError:
        pass
    cores = os.cpu_count() or 1
    # A container may be pinned to fewer CPUs than the host reports.
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return Machine(
        cpu_model=cpu_model,
        cores=cores,
        usable_cores=usable,
        ram_gib=ram_gib,
        python=platform.python_version(),
        load_average=(load[0], load[1], load[2]),
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) with linear interpolation, like numpy's default."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


@contextmanager
def throwaway_postgres(database: str) -> Iterator[EmbeddedPostgres]:
    """PostgreSQL + pgvector in a temp directory on a free port, removed afterwards.

    `tempfile` rather than a private directory: as root, PostgreSQL runs as its own
    system user, which must be able to reach the data directory (same as tests/conftest).
    fsync is off (``durable=False``): the data is thrown away and we measure queries and
    index builds, not commit latency.
    """
    root = Path(tempfile.mkdtemp(prefix="reelflow-bench-pg-"))
    server = EmbeddedPostgres(
        root / "data",
        free_port(),
        database=database,
        log_file=root / "postgres.log",
        durable=False,
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def throwaway_temporal() -> Iterator[TemporalDevServer]:
    """``temporal server start-dev`` (headless) in a temp directory on a free port.

    The product's own supervisor: the server's output goes to a log file, not into the
    benchmark's report, and it is stopped even when the benchmark fails.
    """
    root = Path(tempfile.mkdtemp(prefix="reelflow-bench-temporal-"))
    server = TemporalDevServer(
        root / "temporal.db",
        free_port(),
        free_port(),
        log_file=root / "temporal.log",
        ui=False,
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
