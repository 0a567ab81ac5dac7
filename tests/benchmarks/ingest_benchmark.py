"""Ingest benchmark: the real pipeline against a bare Whisper run on the same audio.

Run:  .venv/bin/python tests/benchmarks/ingest_benchmark.py [--minutes 5] [--json out.json]
      (about 1.5 minutes on 2 cores; every combination of the variant options runs, e.g.
      --segment-s 120 150 75 --whisper 0x0 1x0 is six variants, about 7 minutes)

The question it answers: how much does durable orchestration (Temporal, windows,
Postgres writes, extraction, chunking, embedding) cost on top of just transcribing the
audio? Both figures come from the same run, interleaved, on the same machine:

* baseline — `LocalWhisperTranscriber` (model, compute type and beam exactly as the
  pipeline builds it) on the whole 16 kHz WAV, in-process, model loaded beforehand;
* ingest — `start_ingest` to result through the real workers (`build_workers`, all three
  pools) running in this process against a throwaway Temporal dev server and PostgreSQL,
  models warmed and one short warm-up ingest done before any timing.

Each run prints the machine, absolute times, the ratio ingest/baseline (target <= 1.15),
real-time factors, a per-stage breakdown read from the workflow history and the cost
ledger, embedding throughput and the process's peak memory. Nothing is asserted.
"""

from __future__ import annotations

import os

# Must precede the first numpy import, as in `reelflow worker`: the media pool already
# runs one model call per core, and BLAS threads on top oversubscribe the CPU.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import asyncio
import dataclasses
import logging
import re
import resource
import shutil
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from reelflow.core.db import SessionFactory, create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.runs import start_ingest
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from reelflow.core.temporal_client import connect_temporal
from reelflow.core.tenants import create_tenant
from reelflow.dev.samples import SpeechVideo, make_long_speech_video, make_speech_video
from reelflow.ingest.transcription import LocalWhisperTranscriber, Transcriber
from reelflow.media.ffmpeg import extract_audio, read_wav_segment
from schemas.ingest import VideoStatus
from schemas.queues import POOLS, TaskQueues
from schemas.tables import Chunk, LedgerEntry, TranscriptSegment, Video
from tests.benchmarks.common import (
    machine,
    median,
    report,
    throwaway_postgres,
    throwaway_temporal,
    verdict,
    write_json,
)
from workers.pools import WorkerDependencies, build_workers
from workflows.ingest import IngestWorkflow

RATIO_TARGET = 1.15


# --- variants ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WhisperSpec:
    """How the media pool's Whisper model is built; ``0x0`` is what the product ships
    (`build_transcriber`: one replica per media slot, cores shared between them).

    `replicas` is CTranslate2's ``num_workers`` (model copies that can run at the same
    time); `threads` its ``cpu_threads`` per copy (0 = CTranslate2's default).
    """

    replicas: int
    threads: int

    @classmethod
    def parse(cls, value: str) -> WhisperSpec:
        replicas, _, threads = value.lower().partition("x")
        spec = cls(int(replicas), int(threads or 0))
        if spec.replicas < 0 or spec.threads < 0:
            raise argparse.ArgumentTypeError(f"bad whisper spec {value!r}; use e.g. 0x0 or 1x0")
        return spec

    @property
    def shipped(self) -> bool:
        return (self.replicas, self.threads) == (0, 0)

    def label(self) -> str:
        if self.shipped:
            return "whisper as shipped (one replica per media slot)"
        return f"whisper {self.replicas} replica(s) x cpu_threads={self.threads} (experiment)"


@dataclass(frozen=True)
class Variant:
    segment_s: float
    media_concurrency: int
    whisper: WhisperSpec

    def label(self) -> str:
        return (
            f"segment_s={self.segment_s:g} media_concurrency={self.media_concurrency}"
            f" {self.whisper.label()}"
        )


# --- measurements ------------------------------------------------------------------------


@dataclass
class StageSpan:
    """One activity type in one run, from the workflow history."""

    count: int = 0
    first_start_s: float = float("inf")
    last_end_s: float = 0.0
    run_s: float = 0.0  # sum of started -> completed
    wait_s: float = 0.0  # sum of scheduled -> started (queueing for a slot)

    @property
    def span_s(self) -> float:
        return max(0.0, self.last_end_s - self.first_start_s) if self.count else 0.0


@dataclass(frozen=True)
class CpuSample:
    """CPU counters of this process and of the whole machine at one instant."""

    at: float
    own_s: float
    machine_busy_s: float


@dataclass(frozen=True)
class CpuUse:
    """Average cores busy over an interval: ours, and everyone's.

    On a shared machine the difference is the noise: other tenants' work (and, during an
    ingest, our own Postgres and Temporal servers, which are separate processes).
    """

    own_cores: float
    machine_cores: float

    @property
    def other_cores(self) -> float:
        return max(0.0, self.machine_cores - self.own_cores)

    def text(self) -> str:
        return (
            f"this process {self.own_cores:.2f} cores, other processes {self.other_cores:.2f} cores"
        )


def cpu_sample() -> CpuSample:
    own = resource.getrusage(resource.RUSAGE_SELF)
    # Children count once waited for: ffmpeg/ffprobe run to completion inside activities.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    # /proc/stat "cpu" line: user nice system idle iowait irq softirq steal (clock ticks).
    # Steal counts as busy: on a shared VM it is CPU another guest took from us.
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return CpuSample(
        at=time.perf_counter(),
        own_s=own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
        machine_busy_s=busy / os.sysconf("SC_CLK_TCK"),
    )


def cpu_use(start: CpuSample) -> CpuUse:
    end = cpu_sample()
    wall = max(1e-9, end.at - start.at)
    return CpuUse(
        own_cores=(end.own_s - start.own_s) / wall,
        machine_cores=(end.machine_busy_s - start.machine_busy_s) / wall,
    )


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    """Word-level Levenshtein distance over the reference length (no number normalising).

    Windows change what Whisper hears around cuts and across its own 30 s chunks, so the
    benchmark checks that a faster setting is not buying speed with a worse transcript.
    """
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp in enumerate(hypothesis, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp))
        previous = current
    return previous[-1] / max(1, len(reference))


@dataclass
class IngestRun:
    wall_s: float
    baseline_s: float
    ingest_cpu: CpuUse
    baseline_cpu: CpuUse
    chunks: int
    transcript_words: int
    wer: float
    baseline_wer: float
    windows: int
    transcribe_compute_s: float
    embed_compute_s: float
    workflow_s: float
    stages: dict[str, StageSpan] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.wall_s / self.baseline_s


@dataclass
class VariantResult:
    variant: Variant
    runs: list[IngestRun]
    standalone_embed_s: float
    standalone_embed_chunks: int
    peak_rss_mib: float
    start_rss_mib: float

    @property
    def wall_s(self) -> float:
        return median([r.wall_s for r in self.runs])

    @property
    def baseline_s(self) -> float:
        return median([r.baseline_s for r in self.runs])

    @property
    def ratio(self) -> float:
        return self.wall_s / self.baseline_s


def rss_mib() -> float:
    """Current resident set of this process (VmRSS), MiB."""
    for raw in Path("/proc/self/status").read_text().splitlines():
        if raw.startswith("VmRSS:"):
            return int(raw.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    """Peak resident set of this process so far; ru_maxrss is KiB on Linux."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def stage_spans(client: Client, workflow_id: str) -> tuple[float, dict[str, StageSpan]]:
    """Workflow duration and per-activity-type timings from the run's history."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled: dict[int, tuple[str, datetime]] = {}
    started: dict[int, datetime] = {}
    stages: dict[str, StageSpan] = defaultdict(StageSpan)
    begin: datetime | None = None
    end: datetime | None = None
    for event in history.events:
        when = event.event_time.ToDatetime()
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            begin = when
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            end = when
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = (name, when)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started[event.activity_task_started_event_attributes.scheduled_event_id] = when
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            sid = event.activity_task_completed_event_attributes.scheduled_event_id
            name, at = scheduled[sid]
            start = started.get(sid, at)
            assert begin is not None
            span = stages[name]
            span.count += 1
            span.first_start_s = min(span.first_start_s, (start - begin).total_seconds())
            span.last_end_s = max(span.last_end_s, (when - begin).total_seconds())
            span.run_s += (when - start).total_seconds()
            span.wait_s += (start - at).total_seconds()
    duration = (end - begin).total_seconds() if begin and end else float("nan")
    return duration, dict(stages)


# --- the pipeline in this process --------------------------------------------------------


@dataclass
class Stack:
    database_url: str
    client: Client
    sessions: SessionFactory
    tenant_id: str
    home: Path


def pipeline_settings(stack: Stack, variant: Variant) -> Settings:
    """Settings as the e2e tests build them, with this variant's knobs."""
    return Settings(
        environment="test",
        database_url=stack.database_url,
        reelflow_home=stack.home,
        storage_url=(stack.home / "media").resolve().as_uri(),
        # A fresh queue family per variant: workers of one variant never take another's work.
        task_queue_prefix=f"bench{uuid.uuid4().hex[:10]}",
        transcribe_segment_s=variant.segment_s,
        media_concurrency=variant.media_concurrency,
        provider_concurrency=8,
    )


@asynccontextmanager
async def running_workers(
    stack: Stack, settings: Settings, whisper: WhisperSpec
) -> AsyncIterator[WorkerDependencies]:
    deps = WorkerDependencies.build(settings)
    if not whisper.shipped:
        deps = dataclasses.replace(
            deps,
            transcriber=LocalWhisperTranscriber(
                compute_type=settings.local_whisper_compute_type,
                cpu_threads=whisper.threads,
                num_workers=whisper.replicas,
            ),
        )
    workers = build_workers(stack.client, deps, POOLS)
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        yield deps
    finally:
        await asyncio.gather(*(worker.shutdown() for worker in workers))
        await asyncio.gather(*tasks, return_exceptions=True)
        await deps.close()


async def add_video(stack: Stack, settings: Settings, source: Path, title: str) -> str:
    """Store the file and insert a pending Video row, as an upload would."""
    video_id = uuid.uuid4()
    key = f"tenants/{stack.tenant_id}/videos/{video_id}/source{source.suffix}"
    storage = LocalStorage(Path(settings.resolved_storage_url.removeprefix("file://")))
    storage.put_file(key, source)
    async with stack.sessions.begin() as session:
        session.add(
            Video(
                id=video_id,
                tenant_id=uuid.UUID(stack.tenant_id),
                title=title,
                origin="upload",
                source_key=key,
                size_bytes=source.stat().st_size,
                status=VideoStatus.PENDING.value,
                stage="queued",
                progress=0.0,
                cost_usd=Decimal(0),
            )
        )
    return str(video_id)


async def ingest(stack: Stack, settings: Settings, video_id: str) -> tuple[float, str, int]:
    """Start the run and wait for it; returns (wall seconds, workflow id, chunk count)."""
    queues = TaskQueues.for_prefix(settings.task_queue_prefix)
    started = time.perf_counter()
    workflow_id = await start_ingest(
        stack.client, tenant_id=stack.tenant_id, video_id=video_id, task_queue=queues.workflows
    )
    result = await stack.client.get_workflow_handle_for(IngestWorkflow.run, workflow_id).result()
    wall = time.perf_counter() - started
    if result.status != VideoStatus.COMPLETED:
        raise RuntimeError(f"ingest of {video_id} ended {result.status}: {result.note}")
    return wall, workflow_id, result.chunk_count


async def video_facts(stack: Stack, video_id: str) -> tuple[str, float, float, list[str]]:
    """Transcript, ledger compute seconds (transcription, embedding), chunk texts."""
    vid = uuid.UUID(video_id)
    async with stack.sessions() as session:
        texts = (
            await session.scalars(
                select(TranscriptSegment.text)
                .where(TranscriptSegment.video_id == vid)
                .order_by(TranscriptSegment.window_index, TranscriptSegment.seq)
            )
        ).all()
        compute: dict[str, float] = {
            str(operation): float(seconds or 0.0)
            for operation, seconds in await session.execute(
                select(LedgerEntry.operation, func.sum(LedgerEntry.compute_seconds))
                .where(LedgerEntry.video_id == vid)
                .group_by(LedgerEntry.operation)
            )
        }
        chunks = (
            await session.scalars(
                select(Chunk.text).where(Chunk.video_id == vid).order_by(Chunk.chunk_index)
            )
        ).all()
    return (
        " ".join(texts),
        float(compute.get("transcription") or 0.0),
        float(compute.get("embedding") or 0.0),
        list(chunks),
    )


def time_baseline(transcriber: Transcriber, wav: Path) -> tuple[float, CpuUse, str]:
    """Wall seconds, CPU use and transcript of one whole-file transcription."""
    cpu = cpu_sample()
    started = time.perf_counter()
    result = transcriber.transcribe(wav)
    elapsed = time.perf_counter() - started
    return elapsed, cpu_use(cpu), " ".join(s.text for s in result.segments)


# --- reporting ---------------------------------------------------------------------------

_STAGE_ORDER = (
    "load_ingest_plan",
    "probe_video",
    "extract_media",
    "transcribe_window",
    "chunk_transcript",
    "embed_chunks",
    "set_video_state",
)


def report_stages(run: IngestRun, whisper: WhisperSpec, variant_slots: int) -> None:
    report(
        f"    workflow history: {run.workflow_s:.2f} s from start to completion"
        " (activity times relative to workflow start)"
    )
    names = [n for n in _STAGE_ORDER if n in run.stages]
    names += sorted(set(run.stages) - set(names))
    for name in names:
        s = run.stages[name]
        report(
            f"      {name:<18} x{s.count:<2} {s.first_start_s:6.2f}-{s.last_end_s:6.2f} s"
            f" | span {s.span_s:5.2f} s | sum of runs {s.run_s:5.2f} s"
            f" | queue wait {s.wait_s:5.2f} s"
        )
    t = run.stages.get("transcribe_window")
    # 0 means "as shipped": one replica per media slot.
    replicas = whisper.replicas or variant_slots
    if t and t.span_s > 0:
        report(
            f"      transcription: {run.windows} windows; transcribe() calls took"
            f" {run.transcribe_compute_s:.2f} s in sum (ledger compute_seconds) over a"
            f" {t.span_s:.2f} s span -> calls overlapped {run.transcribe_compute_s / t.span_s:.2f}x"
            + (
                " (one CTranslate2 replica: overlapping calls queue inside the model, so"
                " compute_seconds counts that wait)"
                if replicas == 1
                else f" ({replicas} replicas run calls side by side)"
            )
        )


def report_variant(result: VariantResult, video: SpeechVideo) -> None:
    d = video.duration_s
    for i, run in enumerate(result.runs, 1):
        report(
            f"  run {i}: baseline {run.baseline_s:6.2f} s | ingest {run.wall_s:6.2f} s"
            f" | ratio {run.ratio:.3f} | chunks {run.chunks}"
            f" | words {run.transcript_words} (WER {run.wer:.3f}; baseline {run.baseline_wer:.3f})"
        )
        report(f"         CPU during baseline: {run.baseline_cpu.text()}")
        report(f"         CPU during ingest:   {run.ingest_cpu.text()}")
    report(
        f"  ingest wall time (median of {len(result.runs)}): {result.wall_s:.2f} s"
        f" | real-time factor {result.wall_s / d:.4f} ({d / result.wall_s:.1f}x real time)"
    )
    report(
        f"  baseline whisper time (median): {result.baseline_s:.2f} s"
        f" | real-time factor {result.baseline_s / d:.4f} ({d / result.baseline_s:.1f}x real time)"
    )
    report(
        f"  ratio ingest/baseline: {result.ratio:.3f} (target <= {RATIO_TARGET})"
        f" -> {verdict(result.ratio <= RATIO_TARGET)}"
    )
    typical = sorted(result.runs, key=lambda r: r.wall_s)[len(result.runs) // 2]
    report("  breakdown of the median run:")
    report_stages(typical, result.variant.whisper, result.variant.media_concurrency)
    chunks = typical.chunks
    if typical.embed_compute_s > 0:
        report(
            f"  embedding: {chunks} chunks embedded; in-pipeline compute"
            f" {typical.embed_compute_s:.2f} s (sum of ledger compute_seconds; batches may"
            f" overlap) -> {chunks / typical.embed_compute_s:.1f} chunks/s"
        )
    if result.standalone_embed_s > 0:
        report(
            f"  embedding, standalone: embedder.embed over the {result.standalone_embed_chunks}"
            f" stored chunk texts in one call: {result.standalone_embed_s:.2f} s"
            f" -> {result.standalone_embed_chunks / result.standalone_embed_s:.1f} chunks/s"
        )
    report(
        f"  peak memory: {result.peak_rss_mib:.0f} MiB ru_maxrss of this process (RSS"
        f" {result.start_rss_mib:.0f} MiB before this variant's workers started). The workers"
        " run in-process, so this includes them, the baseline model and the benchmark itself;"
        " ru_maxrss never goes down, so after the first variant it is cumulative"
    )


# --- main --------------------------------------------------------------------------------


async def run_variant(
    stack: Stack,
    variant: Variant,
    *,
    video: SpeechVideo,
    warmup: SpeechVideo,
    wav: Path,
    warm_wav: Path,
    baseline: Transcriber,
    repeats: int,
) -> VariantResult:
    settings = pipeline_settings(stack, variant)
    report()
    report(f"variant: {variant.label()}")
    runs: list[IngestRun] = []
    start_rss = rss_mib()
    script = words_of(" ".join(line.text for line in video.spoken))
    async with running_workers(stack, settings, variant.whisper) as deps:
        # Models load before any timing: a worker process serves many videos.
        await asyncio.to_thread(deps.transcriber.transcribe, warm_wav)
        await asyncio.to_thread(deps.embedder.embed, ["warm up the embedder"])
        warm_id = await add_video(stack, settings, warmup.path, "warm-up")
        warm_wall, _, _ = await ingest(stack, settings, warm_id)
        report(
            f"  warm-up ingest of a {warmup.duration_s:.1f} s clip (not counted): {warm_wall:.2f} s"
        )

        for _ in range(repeats):
            # Interleaved, so both figures of a pair see the same machine load.
            baseline_s, baseline_cpu, baseline_text = await asyncio.to_thread(
                time_baseline, baseline, wav
            )
            video_id = await add_video(stack, settings, video.path, "benchmark")
            cpu = cpu_sample()
            wall, workflow_id, chunks = await ingest(stack, settings, video_id)
            ingest_cpu = cpu_use(cpu)
            workflow_s, stages = await stage_spans(stack.client, workflow_id)
            transcript, transcribe_s, embed_s, _ = await video_facts(stack, video_id)
            words = words_of(transcript)
            windows = stages["transcribe_window"].count if "transcribe_window" in stages else 0
            runs.append(
                IngestRun(
                    wall_s=wall,
                    baseline_s=baseline_s,
                    ingest_cpu=ingest_cpu,
                    baseline_cpu=baseline_cpu,
                    chunks=chunks,
                    transcript_words=len(words),
                    wer=word_error_rate(script, words),
                    baseline_wer=word_error_rate(script, words_of(baseline_text)),
                    windows=windows,
                    transcribe_compute_s=transcribe_s,
                    embed_compute_s=embed_s,
                    workflow_s=workflow_s,
                    stages=stages,
                )
            )

        # The same model call over every stored chunk of the last run, without the
        # pipeline around it: the embedder's own throughput on this machine.
        *_, texts = await video_facts(stack, video_id)
        started = time.perf_counter()
        await asyncio.to_thread(deps.embedder.embed, texts)
        standalone = time.perf_counter() - started
    return VariantResult(
        variant=variant,
        runs=runs,
        standalone_embed_s=standalone,
        standalone_embed_chunks=len(texts),
        peak_rss_mib=peak_rss_mib(),
        start_rss_mib=start_rss,
    )


async def benchmark(
    args: argparse.Namespace,
    video: SpeechVideo,
    wav: Path,
    root: Path,
    *,
    database_url: str,
    temporal_target: str,
) -> dict[str, Any]:
    warmup = make_speech_video(
        root / "warmup.mp4",
        ["This short clip warms up the pipeline.", "It is not part of any measurement."],
    )
    warm_wav = root / "warm.wav"
    first = video.spoken[0]
    read_wav_segment(wav, first.start_s, first.end_s, warm_wav)

    summary: dict[str, Any] = {"variants": []}
    client = await connect_temporal(Settings(temporal_address=temporal_target))
    engine = create_engine(database_url, pool_size=4)
    try:
        sessions = session_factory(engine)
        async with sessions.begin() as session:
            tenant = await create_tenant(session, name="benchmark")
        stack = Stack(
            database_url=database_url,
            client=client,
            sessions=sessions,
            tenant_id=str(tenant.tenant_id),
            home=root / "home",
        )
        # The baseline is bare faster-whisper on the whole file: the product's model, compute
        # type and beam, one replica, CTranslate2's own thread count (all cores).
        base_settings = pipeline_settings(
            stack, Variant(args.segment_s[0], args.media_concurrency[0], WhisperSpec(0, 0))
        )
        baseline = LocalWhisperTranscriber(compute_type=base_settings.local_whisper_compute_type)
        before = rss_mib()
        await asyncio.to_thread(baseline.transcribe, warm_wav)
        report(
            f"baseline transcriber: {type(baseline).__name__} {baseline.model_name},"
            f" compute_type={base_settings.local_whisper_compute_type},"
            f" beam_size={getattr(baseline, 'beam_size', '?')},"
            f" cpu_threads={getattr(baseline, 'cpu_threads', '?')}"
            f" (model adds {rss_mib() - before:.0f} MiB to this process)"
        )
        _, _, baseline_text = await asyncio.to_thread(time_baseline, baseline, wav)
        script = words_of(" ".join(line.text for line in video.spoken))
        baseline_words = words_of(baseline_text)
        baseline_wer = word_error_rate(script, baseline_words)
        report(
            f"baseline transcript: {len(baseline_words)} words, WER {baseline_wer:.3f} against"
            f" the {len(script)}-word script (warm-up pass, not timed)"
        )
        summary["script_words"] = len(script)
        summary["baseline_wer"] = round(baseline_wer, 4)
        summary["baseline_words"] = len(baseline_words)

        results: list[VariantResult] = []
        for segment_s in args.segment_s:
            for concurrency in args.media_concurrency:
                for whisper in args.whisper:
                    result = await run_variant(
                        stack,
                        Variant(segment_s, concurrency, whisper),
                        video=video,
                        warmup=warmup,
                        wav=wav,
                        warm_wav=warm_wav,
                        baseline=baseline,
                        repeats=args.repeats,
                    )
                    report_variant(result, video)
                    results.append(result)
                    summary["variants"].append(variant_summary(result, video))
    finally:
        await engine.dispose()

    report()
    report(f"summary ({video.duration_s:.1f} s video, medians of {args.repeats} interleaved runs):")
    for result in results:
        report(
            f"  {result.variant.label():<86} ingest {result.wall_s:6.2f} s"
            f" | baseline {result.baseline_s:6.2f} s | ratio {result.ratio:.3f}"
            f" {verdict(result.ratio <= RATIO_TARGET)}"
            f" | WER {median([r.wer for r in result.runs]):.3f}"
        )
    return summary


def variant_summary(result: VariantResult, video: SpeechVideo) -> dict[str, Any]:
    v = result.variant
    return {
        "segment_s": v.segment_s,
        "media_concurrency": v.media_concurrency,
        "whisper_replicas": v.whisper.replicas,
        "whisper_cpu_threads": v.whisper.threads,
        "ingest_wall_s": round(result.wall_s, 3),
        "baseline_s": round(result.baseline_s, 3),
        "ratio": round(result.ratio, 4),
        "ratio_target": RATIO_TARGET,
        "ratio_met": result.ratio <= RATIO_TARGET,
        "ingest_rtf": round(result.wall_s / video.duration_s, 5),
        "baseline_rtf": round(result.baseline_s / video.duration_s, 5),
        "peak_rss_mib": round(result.peak_rss_mib, 1),
        "rss_before_workers_mib": round(result.start_rss_mib, 1),
        "standalone_embed_chunks_per_s": round(
            result.standalone_embed_chunks / result.standalone_embed_s, 2
        )
        if result.standalone_embed_s
        else None,
        "runs": [
            {
                "ingest_wall_s": round(r.wall_s, 3),
                "baseline_s": round(r.baseline_s, 3),
                "ingest_cores_own": round(r.ingest_cpu.own_cores, 3),
                "ingest_cores_other": round(r.ingest_cpu.other_cores, 3),
                "baseline_cores_own": round(r.baseline_cpu.own_cores, 3),
                "baseline_cores_other": round(r.baseline_cpu.other_cores, 3),
                "wer": round(r.wer, 4),
                "ratio": round(r.ratio, 4),
                "chunks": r.chunks,
                "embedded_chunks_per_s": round(r.chunks / r.embed_compute_s, 2)
                if r.embed_compute_s
                else None,
                "transcript_words": r.transcript_words,
                "windows": r.windows,
                "transcribe_compute_s": round(r.transcribe_compute_s, 3),
                "embed_compute_s": round(r.embed_compute_s, 3),
                "stages": {name: dataclasses.asdict(s) for name, s in r.stages.items()},
            }
            for r in result.runs
        ],
    }


def parse_args() -> argparse.Namespace:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the speech video")
    parser.add_argument(
        "--segment-s",
        type=float,
        nargs="+",
        default=[120.0],
        help="transcription window length(s); several values run one variant each",
    )
    parser.add_argument(
        "--media-concurrency",
        type=int,
        nargs="+",
        default=[cores],
        help="media pool slot count(s); default: the core count, as the product does",
    )
    parser.add_argument(
        "--whisper",
        type=WhisperSpec.parse,
        nargs="+",
        default=[WhisperSpec(0, 0)],
        help="REPLICASxTHREADS for the media pool's Whisper; 0x0 means as shipped",
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per variant")
    parser.add_argument("--json", type=Path, default=None, help="also write a JSON summary")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    host = machine()
    report(host.line())
    root = Path(tempfile.mkdtemp(prefix="reelflow-bench-ingest-"))
    try:
        started = time.perf_counter()
        video = make_long_speech_video(root / "speech.mp4", args.minutes)
        report(
            f"video: {video.duration_s:.1f} s of espeak speech, {len(video.spoken)} sentences,"
            f" {video.path.stat().st_size / 1e6:.1f} MB, rendered in"
            f" {time.perf_counter() - started:.1f} s"
        )
        wav = root / "audio.wav"
        started = time.perf_counter()
        extract_audio(video.path, wav)
        extract_s = time.perf_counter() - started
        report(f"audio extraction alone (ffmpeg.extract_audio, 16 kHz mono): {extract_s:.2f} s")
        with (
            throwaway_postgres("reelflow_ingest_bench") as postgres,
            throwaway_temporal() as temporal,
        ):
            upgrade_database(postgres.url)
            summary = asyncio.run(
                benchmark(
                    args,
                    video,
                    wav,
                    root,
                    database_url=postgres.url,
                    temporal_target=temporal.target,
                )
            )
        summary.update(
            {
                "benchmark": "ingest",
                "machine": host.as_dict(),
                "video_duration_s": round(video.duration_s, 3),
                "extract_audio_s": round(extract_s, 3),
                "repeats": args.repeats,
            }
        )
        write_json(args.json, summary)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
