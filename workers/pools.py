"""The three worker pools and the dependencies they share, built once per process.

- `reelflow-workflows`: workflow tasks only.
- `reelflow-media`: CPU-bound activities (ffmpeg, local Whisper, local embedder); as many
  at once as there are cores, so one host is never oversubscribed.
- `reelflow-providers`: I/O-bound activities (database, downloads, paid APIs); many at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import signal
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.worker import Worker, WorkerDeploymentConfig

from activities._errors import FailureTranslationInterceptor
from activities.admission import AdmissionActivities
from activities.billing import BillingActivities
from activities.catalog import CatalogActivities
from activities.discover import (
    AdaptationActivities,
    AnalysisActivities,
    ApifyActivities,
    DiscoverCatalogActivities,
)
from activities.generation import (
    GenerationCatalogActivities,
    GenerationMediaActivities,
    GenerationProviderActivities,
)
from activities.imports import ImportActivities
from activities.improve import ImproveActivities
from activities.indexing import IndexingActivities
from activities.media import MediaActivities
from activities.transcription import TranscriptionActivities
from reelflow.core.db import create_engine, session_factory
from reelflow.core.settings import Settings
from reelflow.core.storage import Storage, build_storage
from reelflow.core.temporal_client import connect_temporal
from reelflow.discover.adapters import ScriptAdapter, build_adapter
from reelflow.discover.analyzers import VideoAnalyzer, build_analyzer
from reelflow.discover.apify_source import ApifySource
from reelflow.generation.routing import ProviderRegistry, build_provider_registry
from reelflow.improve.analysts import InsightAnalyst, build_analyst
from reelflow.improve.improvements import PromptWriter, build_prompt_writer
from reelflow.ingest.transcription import Transcriber, build_transcriber
from reelflow.search.embedding import Embedder, build_embedder
from schemas.queues import POOLS, TaskQueues
from workers.versioning import deployment_config
from workflows.billing import BillingWorkflow
from workflows.discover import DiscoverWorkflow, ProcessOutlierWorkflow
from workflows.generation import GenerationWorkflow
from workflows.improve import ImproveWorkflow
from workflows.ingest import IngestWorkflow

logger = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN = timedelta(seconds=30)


def host_id_for(jobs_dir: Path) -> str:
    """`<hostname>-<8 hex of the jobs path>`: the same after a restart, so jobs left on this
    disk are found again, and different for two workers that keep separate disks."""
    digest = hashlib.sha256(str(jobs_dir.resolve()).encode()).hexdigest()[:8]
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-")[:40]
    return f"{host or 'host'}-{digest}"


"""In-flight activities get this long to finish on SIGTERM; the rest are retried elsewhere."""


@dataclass
class WorkerDependencies:
    """Clients and models shared by every pool in one process."""

    settings: Settings
    engine: AsyncEngine
    storage: Storage
    transcriber: Transcriber
    embedder: Embedder
    scratch_dir: Path
    media_executor: ThreadPoolExecutor
    io_executor: ThreadPoolExecutor
    video_providers: ProviderRegistry | None = None
    """Video generation providers; None builds them from the settings (tests inject some)."""
    discover: DiscoverClients | None = None
    """Apify, the analyzer and the adapter; None builds them from the settings."""
    host_id: str = field(default="")
    """Names this host's own queue: stable across restarts, distinct for each disk that
    holds local renderer jobs."""

    def __post_init__(self) -> None:
        if not self.host_id:
            self.host_id = host_id_for(self.settings.resolved_generation_jobs_dir)

    @classmethod
    def build(cls, settings: Settings) -> WorkerDependencies:
        """Build every client once; models load lazily on first use."""
        return cls(
            settings=settings,
            engine=create_engine(settings.database_url, pool_size=settings.provider_concurrency),
            storage=build_storage(settings),
            transcriber=build_transcriber(settings),
            embedder=build_embedder(settings),
            scratch_dir=settings.reelflow_home / "scratch",
            media_executor=ThreadPoolExecutor(
                max_workers=settings.media_concurrency, thread_name_prefix="media"
            ),
            io_executor=ThreadPoolExecutor(
                max_workers=settings.provider_concurrency, thread_name_prefix="io"
            ),
            video_providers=build_provider_registry(settings),
        )

    async def close(self) -> None:
        """Release pools and connections."""
        self.media_executor.shutdown(wait=False, cancel_futures=True)
        self.io_executor.shutdown(wait=False, cancel_futures=True)
        await self.engine.dispose()


class DiscoverClients:
    """The discover pipeline's clients, each built once, on first use.

    The analyzer and the adapter may load a provider SDK; building them lazily keeps a
    worker that never analyzes from paying for the import.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        apify: ApifySource | None = None,
        analyzer: VideoAnalyzer | None = None,
        adapter: ScriptAdapter | None = None,
    ) -> None:
        self._settings = settings
        token = settings.apify_token
        self.apify = apify or (
            ApifySource(token.get_secret_value(), base_url=settings.apify_base_url)
            if token is not None
            else None
        )
        self._analyzer = analyzer
        self._adapter = adapter

    def analyzer(self) -> VideoAnalyzer:
        if self._analyzer is None:
            self._analyzer = build_analyzer(self._settings)
        return self._analyzer

    def adapter(self) -> ScriptAdapter:
        if self._adapter is None:
            self._adapter = build_adapter(self._settings)
        return self._adapter


class ImproveClients:
    """The improve pipeline's insight analyst and prompt writer, each built once, on first use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._analyst: InsightAnalyst | None = None
        self._writer: PromptWriter | None = None

    def analyst(self) -> InsightAnalyst:
        if self._analyst is None:
            self._analyst = build_analyst(self._settings)
        return self._analyst

    def writer(self) -> PromptWriter:
        if self._writer is None:
            self._writer = build_prompt_writer(self._settings)
        return self._writer


@dataclass(frozen=True)
class QueueActivities:
    """The activities one task queue serves in this process, and how many at once."""

    task_queue: str
    activities: list[Callable[..., Any]]
    max_concurrent: int


def build_workers(client: Client, deps: WorkerDependencies, pools: Sequence[str]) -> list[Worker]:
    """One `Worker` per task queue of the requested pools (`workflows`, `media`, `providers`).

    Every activity worker translates failures into the failure vocabulary
    (`activities/_errors.py`).
    """
    unknown = set(pools) - set(POOLS)
    if unknown:
        raise ValueError(f"unknown pool(s) {sorted(unknown)}; choose from {', '.join(POOLS)}")
    workers: list[Worker] = []
    # Every worker of the process is the same version, so a pinned run's activities find it.
    versioning = deployment_config(deps.settings)
    if "workflows" in pools:
        workers.append(
            Worker(
                client,
                task_queue=TaskQueues.for_prefix(deps.settings.task_queue_prefix).workflows,
                workflows=[
                    IngestWorkflow,
                    GenerationWorkflow,
                    DiscoverWorkflow,
                    ProcessOutlierWorkflow,
                    ImproveWorkflow,
                    BillingWorkflow,
                ],
                graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
                deployment_config=versioning,
            )
        )
    for queue in activities_by_queue(deps, pools, client=client):
        workers.append(
            activity_worker(
                client,
                queue.task_queue,
                queue.activities,
                max_concurrent=queue.max_concurrent,
                versioning=versioning,
            )
        )
    return workers


def activity_worker(
    client: Client,
    task_queue: str,
    activities: Sequence[Callable[..., Any]],
    *,
    max_concurrent: int | None = None,
    versioning: WorkerDeploymentConfig | None = None,
) -> Worker:
    """A worker for `activities` on `task_queue`, translating failures like every worker.

    The workflow tests build theirs with this too, so stand-in activities fail exactly as
    the real ones do in production.
    """
    return Worker(
        client,
        task_queue=task_queue,
        activities=activities,
        max_concurrent_activities=max_concurrent,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        interceptors=[FailureTranslationInterceptor()],
        deployment_config=versioning,
    )


def activities_by_queue(
    deps: WorkerDependencies, pools: Sequence[str], *, client: Client | None = None
) -> list[QueueActivities]:
    """Which activity implementations each task queue of `pools` serves, built once.

    `client` lets the run-slot activities wake a tenant's next queued run at once; without
    it, a queued run finds its slot at its next look.
    """
    settings = deps.settings
    queues = TaskQueues.for_prefix(settings.task_queue_prefix)
    sessions = session_factory(deps.engine)
    video_providers = deps.video_providers or build_provider_registry(settings)

    def provider_activities(
        executor: Executor, host_queue: str | None = None
    ) -> GenerationProviderActivities:
        # Both pools call providers: the local renderer (ffmpeg) on the media pool, remote
        # APIs on the I/O pool; the workflow picks the queue per provider.
        return GenerationProviderActivities(
            sessions=sessions,
            storage=deps.storage,
            registry=video_providers,
            scratch_dir=deps.scratch_dir / "generation",
            executor=executor,
            host_queue=host_queue,
        )

    def model_activities(executor: Executor) -> tuple[TranscriptionActivities, IndexingActivities]:
        # The same activities serve both pools: local models run on the media pool's
        # executor, remote providers on the I/O pool's; the workflow picks the queue.
        transcription = TranscriptionActivities(
            storage=deps.storage,
            sessions=sessions,
            transcriber=deps.transcriber,
            scratch_dir=deps.scratch_dir,
            executor=executor,
        )
        indexing = IndexingActivities(
            sessions=sessions, embedder=deps.embedder, settings=settings, executor=executor
        )
        return transcription, indexing

    discover = deps.discover or DiscoverClients(settings)

    def discover_provider_activities() -> list[Callable[..., Any]]:
        catalog = DiscoverCatalogActivities(
            sessions=sessions,
            settings=settings,
            storage=deps.storage,
            executor=deps.io_executor,
            apify=discover.apify,
            scratch_dir=deps.scratch_dir / "discover",
        )
        apify = ApifyActivities(
            sessions=sessions, settings=settings, apify=discover.apify, executor=deps.io_executor
        )
        # Gemini analyzes over the network: the same activity on the I/O pool.
        analysis = AnalysisActivities(
            sessions=sessions,
            storage=deps.storage,
            analyzer=discover.analyzer,
            settings=settings,
            scratch_dir=deps.scratch_dir / "discover",
            executor=deps.io_executor,
        )
        adaptation = AdaptationActivities(
            sessions=sessions,
            adapter=discover.adapter,
            settings=settings,
            executor=deps.io_executor,
        )
        return [
            catalog.begin_scrape,
            catalog.set_scrape_state,
            catalog.import_posts,
            catalog.score_outliers,
            catalog.next_outliers,
            catalog.finish_scrape,
            catalog.prepare_outlier_video,
            apify.start_apify_run,
            apify.poll_apify_run,
            apify.abort_apify_runs,
            analysis.analyze_video,
            adaptation.adapt_script,
        ]

    served: list[QueueActivities] = []
    activities: list[Callable[..., Any]]
    if "media" in pools:
        media = MediaActivities(
            storage=deps.storage,
            sessions=sessions,
            settings=settings,
            scratch_dir=deps.scratch_dir,
            executor=deps.media_executor,
        )
        transcription, indexing = model_activities(deps.media_executor)
        activities = [
            media.probe_video,
            media.extract_media,
            transcription.transcribe_window,
            indexing.embed_chunks,
        ]
        generation_media = GenerationMediaActivities(
            sessions=sessions,
            storage=deps.storage,
            settings=settings,
            scratch_dir=deps.scratch_dir / "generation",
            executor=deps.media_executor,
        )
        host_queue = queues.host(deps.host_id)
        local_jobs = provider_activities(deps.media_executor, host_queue)
        host_bound: list[Callable[..., Any]] = [
            local_jobs.poll_generation_job,
            local_jobs.download_generation_output,
            local_jobs.cancel_generation_job,
        ]
        # The shared queue keeps the host-bound calls for runs submitted before host queues.
        activities += [
            generation_media.validate_generation_output,
            local_jobs.submit_generation_job,
        ]
        activities += host_bound
        activities.append(
            AnalysisActivities(
                sessions=sessions,
                storage=deps.storage,
                analyzer=discover.analyzer,
                settings=settings,
                scratch_dir=deps.scratch_dir / "discover",
                executor=deps.media_executor,
            ).analyze_video
        )
        served.append(QueueActivities(queues.media, activities, settings.media_concurrency))
        served.append(QueueActivities(host_queue, host_bound, settings.media_concurrency))
    if "providers" in pools:
        catalog = CatalogActivities(sessions, settings, embedding_model=deps.embedder.model_name)
        imports = ImportActivities(
            storage=deps.storage,
            sessions=sessions,
            settings=settings,
            scratch_dir=deps.scratch_dir,
            executor=deps.io_executor,
        )
        transcription, indexing = model_activities(deps.io_executor)
        activities = [
            catalog.load_ingest_plan,
            catalog.set_video_state,
            imports.download_source,
            indexing.chunk_transcript,
            transcription.transcribe_window,
            indexing.embed_chunks,
        ]
        generation_catalog = GenerationCatalogActivities(sessions, settings, video_providers)
        remote_jobs = provider_activities(deps.io_executor)
        activities += [
            generation_catalog.prepare_generation,
            generation_catalog.finalize_generation,
            generation_catalog.release_generation,
            remote_jobs.submit_generation_job,
            remote_jobs.poll_generation_job,
            remote_jobs.download_generation_output,
            remote_jobs.cancel_generation_job,
        ]
        activities += discover_provider_activities()
        improve = ImproveClients(settings)
        improvement = ImproveActivities(
            sessions=sessions,
            settings=settings,
            registry=video_providers,
            analyst=improve.analyst,
            writer=improve.writer,
            executor=deps.io_executor,
        )
        activities += [
            improvement.load_improvement_insights,
            improvement.write_improved_prompt,
            improvement.admit_improvement_generation,
            improvement.pre_approve_generation,
            improvement.link_improved_version,
            improvement.finish_improvement,
        ]
        billing = BillingActivities(sessions=sessions, settings=settings)
        activities += [billing.apply_billing_event, billing.expire_billing_grace]
        admission = AdmissionActivities(sessions=sessions, settings=settings, client=client)
        activities += [admission.acquire_run_slot, admission.release_run_slot]
        served.append(QueueActivities(queues.providers, activities, settings.provider_concurrency))
    return served


async def run_workers(settings: Settings, pools: Sequence[str]) -> None:
    """Run the requested pools until SIGINT/SIGTERM, then shut down gracefully."""
    client = await connect_temporal(settings)
    deps = WorkerDependencies.build(settings)
    workers = build_workers(client, deps, pools)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    logger.info("worker pools running: %s", ", ".join(pools))
    runs = [asyncio.create_task(worker.run()) for worker in workers]
    stopped = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*runs, stopped], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopped and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        logger.info("shutting down workers (up to %s for in-flight work)", GRACEFUL_SHUTDOWN)
        await asyncio.gather(*(worker.shutdown() for worker in workers), return_exceptions=True)
        await deps.close()
