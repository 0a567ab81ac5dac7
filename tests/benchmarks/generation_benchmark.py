"""Generation orchestration benchmark: concurrent generations against a one-activity probe.

Run:  .venv/bin/python tests/benchmarks/generation_benchmark.py [--generations 200]
      [--latency-s 3] [--poll-initial-s 5] [--json out.json]   (about a minute on 2 cores)

What it measures: **orchestration only**. The real `GenerationWorkflow` runs on a real
Temporal dev server (a throwaway one, file-backed as in `reelflow dev up`), with the
product's poll settings, but every activity is the in-memory stand-in from
`tests/workflows/generation/fakes.py`, registered under the real names: no ffmpeg render,
no validation, no database. The provider is simulated on the server's clock — a job is
done `--latency-s` seconds after its submit — so the workflow really sleeps, polls,
downloads, validates and settles, and what the figures show is the cost of the workflow
code, the SDK, the workers and the server, not of ffmpeg (which `ingest_benchmark.py`
and the generation tests cover).

Baseline, in the same run: `ProbeWorkflow` (one no-op activity, nothing else), the same
number at once, before and after the generations; its mean is the probe figure.

Prints, per workflow: history events (target for a generation: <= 50), our process's
CPU-seconds (workflow and activity workers, client) and the Temporal server's, wall time
per phase, and each generation figure as a ratio to the probe's. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from reelflow.core.runs import start_generation
from schemas.generation import GenerationResult, GenerationStatus, PrepareGenerationInput
from schemas.queues import TaskQueues
from tests.benchmarks.common import (
    machine,
    median,
    percentile,
    report,
    throwaway_temporal,
    verdict,
    write_json,
)
from tests.workflows.generation.fakes import (
    FakeGeneration,
    ProbeWorkflow,
    fake_plan,
    probe_activity,
)
from workflows.generation import GenerationWorkflow

EVENTS_TARGET = 50
_TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu_s(pid: int) -> float:
    """User + system CPU-seconds of a process so far (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: utime and stime are the 12th and 13th fields (1-based 14, 15).
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class Phase:
    """One batch of workflows started at once and awaited."""

    name: str
    count: int
    wall_s: float
    our_cpu_s: float
    server_cpu_s: float
    events: list[int]

    @property
    def our_cpu_per_workflow(self) -> float:
        return self.our_cpu_s / self.count

    @property
    def server_cpu_per_workflow(self) -> float:
        return self.server_cpu_s / self.count

    @property
    def total_cpu_per_workflow(self) -> float:
        return (self.our_cpu_s + self.server_cpu_s) / self.count

    def line(self) -> str:
        return (
            f"{self.name:<11} n={self.count} wall {self.wall_s:6.2f} s | events/workflow mean "
            f"{statistics.fmean(self.events):5.1f} max {max(self.events):3d} | CPU-s/workflow: "
            f"ours {self.our_cpu_per_workflow * 1000:6.2f} ms, server "
            f"{self.server_cpu_per_workflow * 1000:6.2f} ms, total "
            f"{self.total_cpu_per_workflow * 1000:6.2f} ms"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "wall_s": round(self.wall_s, 3),
            "our_cpu_s": round(self.our_cpu_s, 3),
            "server_cpu_s": round(self.server_cpu_s, 3),
            "events_mean": round(statistics.fmean(self.events), 2),
            "events_max": max(self.events),
            "events_p50": median([float(e) for e in self.events]),
        }


async def history_events(client: Client, workflow_id: str) -> int:
    """Events of every run of a workflow (following continue-as-new)."""
    total = 0
    run_id: str | None = None
    handle = client.get_workflow_handle(workflow_id)
    first = await handle.describe()
    run_id = first.raw_description.workflow_execution_info.first_run_id or first.run_id
    while run_id is not None:
        next_run: str | None = None
        async for event in client.get_workflow_handle(
            workflow_id, run_id=run_id
        ).fetch_history_events():
            total += 1
            if event.HasField("workflow_execution_continued_as_new_event_attributes"):
                attributes = event.workflow_execution_continued_as_new_event_attributes
                next_run = attributes.new_execution_run_id
        run_id = next_run
    return total


async def run_phase(
    name: str,
    client: Client,
    server_pid: int,
    count: int,
    start_one: Callable[[int], Awaitable[str]],
    wait_one: Callable[[str], Awaitable[None]],
) -> Phase:
    our_before, server_before = time.process_time(), server_cpu_s(server_pid)
    started = time.perf_counter()
    ids = await asyncio.gather(*(start_one(i) for i in range(count)))
    await asyncio.gather(*(wait_one(workflow_id) for workflow_id in ids))
    wall = time.perf_counter() - started
    our_cpu = time.process_time() - our_before
    server_cpu = server_cpu_s(server_pid) - server_before
    # Counted after the CPU window: reading histories is not orchestration.
    events = list(await asyncio.gather(*(history_events(client, i) for i in ids)))
    return Phase(name, count, wall, our_cpu, server_cpu, events)


async def benchmark(args: argparse.Namespace, target: str, server_pid: int) -> dict[str, Any]:
    client = await Client.connect(target, data_converter=pydantic_data_converter)
    queues = TaskQueues.for_prefix(f"bench-{uuid.uuid4().hex[:8]}")
    fake = FakeGeneration(
        plan=fake_plan(poll_initial_s=args.poll_initial_s, poll_max_s=60.0),
        latency_s=args.latency_s,
        queues=queues,
    )
    activities = [*fake.activities(), probe_activity]
    tenant_id = str(uuid.uuid4())

    async def start_generation_n(_: int) -> str:
        return await start_generation(
            client,
            tenant_id=tenant_id,
            generation_id=str(uuid.uuid4()),
            task_queue=queues.workflows,
        )

    async def wait_generation(workflow_id: str) -> None:
        result: GenerationResult = await client.get_workflow_handle_for(
            GenerationWorkflow.run, workflow_id
        ).result()
        if result.status != GenerationStatus.COMPLETED:
            raise RuntimeError(f"{workflow_id} ended {result.status}")

    async def start_probe(_: int) -> str:
        workflow_id = f"probe-{uuid.uuid4()}"
        await client.start_workflow(
            ProbeWorkflow.run,
            PrepareGenerationInput(tenant_id=tenant_id, generation_id=workflow_id),
            id=workflow_id,
            task_queue=queues.workflows,
        )
        return workflow_id

    async def wait_probe(workflow_id: str) -> None:
        await client.get_workflow_handle_for(ProbeWorkflow.run, workflow_id).result()

    async with (
        Worker(
            client,
            task_queue=queues.workflows,
            workflows=[GenerationWorkflow, ProbeWorkflow],
            max_cached_workflows=2 * args.generations,
        ),
        Worker(
            client,
            task_queue=queues.media,
            activities=activities,
            max_concurrent_activities=args.generations,
        ),
        Worker(
            client,
            task_queue=queues.providers,
            activities=activities,
            max_concurrent_activities=args.generations,
        ),
    ):
        # Warm-up: sandbox imports, worker pollers, server caches.
        await run_phase("warm-up", client, server_pid, 10, start_probe, wait_probe)
        await run_phase("warm-up", client, server_pid, 10, start_generation_n, wait_generation)
        n = args.generations
        probe_before = await run_phase("probe", client, server_pid, n, start_probe, wait_probe)
        report(probe_before.line())
        generation = await run_phase(
            "generation", client, server_pid, n, start_generation_n, wait_generation
        )
        report(generation.line())
        probe_after = await run_phase("probe", client, server_pid, n, start_probe, wait_probe)
        report(probe_after.line())

    probe_events = statistics.fmean([*probe_before.events, *probe_after.events])
    probe_ours = (probe_before.our_cpu_per_workflow + probe_after.our_cpu_per_workflow) / 2
    probe_total = (probe_before.total_cpu_per_workflow + probe_after.total_cpu_per_workflow) / 2
    mean_events = statistics.fmean(generation.events)
    worst = max(generation.events)
    polls = len(fake.polls) / (n + 10)
    report("")
    report(
        f"simulated provider latency {args.latency_s:g} s, first poll after "
        f"{args.poll_initial_s:g} s: {polls:.2f} status polls per generation"
    )
    report(
        f"history events per generation: mean {mean_events:.1f}, p95 "
        f"{percentile([float(e) for e in generation.events], 95):.0f}, max {worst} "
        f"(target <= {EVENTS_TARGET}: {verdict(worst <= EVENTS_TARGET)}); "
        f"probe {probe_events:.1f}; ratio {mean_events / probe_events:.2f}"
    )
    report(
        f"orchestration CPU-seconds per generation: ours {generation.our_cpu_per_workflow:.4f}"
        f" + server {generation.server_cpu_per_workflow:.4f}"
        f" = {generation.total_cpu_per_workflow:.4f}"
    )
    report(
        f"ratio to the one-activity probe: ours"
        f" {generation.our_cpu_per_workflow / probe_ours:.2f}x,"
        f" ours + server {generation.total_cpu_per_workflow / probe_total:.2f}x"
    )
    report(
        f"wall: {n} generations in {generation.wall_s:.1f} s "
        f"({generation.wall_s - args.poll_initial_s:.1f} s beyond the first poll wait)"
    )
    return {
        "generations": n,
        "latency_s": args.latency_s,
        "poll_initial_s": args.poll_initial_s,
        "polls_per_generation": round(polls, 3),
        "probe_before": probe_before.as_dict(),
        "generation": generation.as_dict(),
        "probe_after": probe_after.as_dict(),
        "events_ratio": round(mean_events / probe_events, 3),
        "our_cpu_ratio": round(generation.our_cpu_per_workflow / probe_ours, 3),
        "total_cpu_ratio": round(generation.total_cpu_per_workflow / probe_total, 3),
        "events_target_met": worst <= EVENTS_TARGET,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--generations", type=int, default=200, help="workflows per phase")
    parser.add_argument(
        "--latency-s", type=float, default=3.0, help="simulated provider time per job"
    )
    parser.add_argument(
        "--poll-initial-s",
        type=float,
        default=5.0,
        help="first status poll after submit (the product's GENERATION_POLL_INITIAL_S)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write a JSON summary")
    args = parser.parse_args()
    if args.generations < 1:
        parser.error("--generations must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    host = machine()
    report(host.line())
    report(
        "activities: in-memory stand-ins (tests/workflows/generation/fakes.py); the provider "
        "is simulated, nothing is rendered: this measures orchestration alone"
    )
    with throwaway_temporal() as temporal:
        process = temporal.process
        assert process is not None and process.pid is not None
        summary = asyncio.run(benchmark(args, temporal.target, process.pid))
    summary.update({"benchmark": "generation", "machine": host.as_dict()})
    write_json(args.json, summary)


if __name__ == "__main__":
    main()
