"""Activities of the generation pipeline, in three classes by what they need.

* `GenerationCatalogActivities` (providers pool): the request row, quota and the asset —
  prepare (check, estimate, reserve), finalize (store and settle) and release.
* `GenerationProviderActivities` (both pools): submit, poll, download and cancel provider
  jobs. The workflow sends local-renderer jobs to the media pool (ffmpeg is CPU work)
  and remote providers to the providers pool (I/O).
* `GenerationMediaActivities` (media pool): ffprobe/ffmpeg validation and the thumbnail.

Every step writes what it learned to the `generations` / `generation_attempts` rows
before it returns, so `GET /v1/generations/{id}` shows the truth even while a worker is
down, and a retried step finds what an earlier try already did (the provider job id
above all: it is written before the workflow ever polls).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity

from activities._support import materialize, run_blocking
from reelflow.core.db import SessionFactory
from reelflow.core.errors import DomainError
from reelflow.core.ledger import Usage, record_usage
from reelflow.core.pricing import generation_price_model
from reelflow.core.provider_errors import ProviderPermanentError, ProviderTransientError
from reelflow.core.settings import Settings
from reelflow.core.storage import Storage
from reelflow.generation import quotas
from reelflow.generation.capabilities import UnsupportedRequest
from reelflow.generation.providers.base import GenerationJobRequest, VideoProvider
from reelflow.generation.routing import (
    GenerationSpec,
    NoRouteAvailable,
    ProviderRegistry,
    approval_reasons,
    ledger_cost,
    plan_route,
    pool_of,
)
from reelflow.media import ffmpeg as media
from reelflow.media.validation import ExpectedVideo, first_non_black_thumbnail, validate_video
from schemas.failures import FailureCode
from schemas.generation import (
    ApprovalState,
    AttemptOutcome,
    CancelJobInput,
    CancelJobOutput,
    Candidate,
    CheckResult,
    DownloadOutputInput,
    DownloadOutputOutput,
    FinalizeGenerationInput,
    FinalizeGenerationOutput,
    GenerationPlan,
    GenerationStatus,
    PollJobInput,
    PollJobOutput,
    PrepareGenerationInput,
    ReleaseGenerationInput,
    ReleaseGenerationOutput,
    SubmitJobInput,
    SubmitJobOutput,
    ValidateOutputInput,
    ValidateOutputOutput,
    ValidationResult,
    VideoFacts,
    generated_video_id,
    ledger_key,
)
from schemas.generation_activities import (
    CANCEL_GENERATION_JOB,
    DOWNLOAD_GENERATION_OUTPUT,
    FINALIZE_GENERATION,
    POLL_GENERATION_JOB,
    PREPARE_GENERATION,
    RELEASE_GENERATION,
    SUBMIT_GENERATION_JOB,
    VALIDATE_GENERATION_OUTPUT,
)
from schemas.generation_tables import Generation, GenerationAttempt
from schemas.tables import Tenant, Video

logger = logging.getLogger(__name__)

T = TypeVar("T")

_TITLE_CHARS = 120


def not_found(generation_id: str) -> DomainError:
    return DomainError(
        FailureCode.GENERATION_NOT_FOUND, f"generation {generation_id} does not exist"
    )


def _transient(exc: ProviderTransientError, what: str) -> DomainError:
    """A retryable failure; a provider's Retry-After becomes the next retry's delay."""
    return DomainError(
        FailureCode.PROVIDER_UNAVAILABLE, f"{what}: {exc}", retry_after_s=exc.retry_after_s
    )


def _rejected(exc: Exception, what: str) -> DomainError:
    """A permanent refusal: the same call would fail the same way."""
    return DomainError(FailureCode.PROVIDER_REJECTED, f"{what}: {exc}")


def _video_prefix(tenant_id: str, generation_id: str) -> str:
    video_id = generated_video_id(generation_id)
    return f"tenants/{uuid.UUID(tenant_id)}/videos/{video_id}"


def output_key(tenant_id: str, generation_id: str, attempt: int) -> str:
    """Where an attempt's file is stored (kept after a failed validation, for inspection)."""
    return f"{_video_prefix(tenant_id, generation_id)}/attempts/{attempt}.mp4"


def thumbnail_key(tenant_id: str, generation_id: str) -> str:
    return f"{_video_prefix(tenant_id, generation_id)}/thumbnail.jpg"


async def _generation(
    session: AsyncSession, tenant_id: str, generation_id: str, *, lock: bool = False
) -> Generation:
    query = select(Generation).where(
        Generation.id == uuid.UUID(generation_id), Generation.tenant_id == uuid.UUID(tenant_id)
    )
    row = await session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise not_found(generation_id)
    return row


async def _set_attempt(
    session: AsyncSession, generation_id: str, attempt: int, **values: Any
) -> None:
    await session.execute(
        update(GenerationAttempt)
        .where(
            GenerationAttempt.generation_id == uuid.UUID(generation_id),
            GenerationAttempt.attempt == attempt,
        )
        .values(**values)
    )


async def _set_generation(session: AsyncSession, generation_id: str, **values: Any) -> None:
    # Never move a finished generation back: a late step of a canceled run is ignored.
    await session.execute(
        update(Generation)
        .where(
            Generation.id == uuid.UUID(generation_id),
            Generation.status.not_in(
                [GenerationStatus.COMPLETED.value, GenerationStatus.CANCELED.value]
            ),
        )
        .values(updated_at=func.now(), **values)
    )


# --- database -----------------------------------------------------------------------------


class GenerationCatalogActivities:
    """The request row, the quota and the video asset (providers pool)."""

    def __init__(
        self, sessions: SessionFactory, settings: Settings, registry: ProviderRegistry
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._registry = registry

    @activity.defn(name=PREPARE_GENERATION.name)
    async def prepare_generation(self, input: PrepareGenerationInput) -> GenerationPlan:
        """Check the request against the providers, estimate it and reserve its quota.

        Raises:
            ApplicationError: ``unsupported_request`` or ``no_provider_available`` (with
                the allowed values), ``quota_exceeded``, ``generation_not_found``; all
                permanent. Nothing is written when one is raised.
        """
        settings = self._settings
        async with self._sessions.begin() as session:
            row = await _generation(session, input.tenant_id, input.generation_id, lock=True)
            tenant = await session.get(Tenant, row.tenant_id)
            plan = quotas.plan_named(tenant.plan if tenant is not None else "free")
            spec = GenerationSpec(
                provider=row.requested_provider,
                duration_s=row.duration_s,
                aspect_ratio=row.aspect_ratio,
                resolution=row.resolution,
                max_cost_usd=row.max_cost_usd,
            )
            try:
                route = plan_route(
                    self._registry, spec, plan=tenant.plan if tenant is not None else None
                )
            except (UnsupportedRequest, NoRouteAvailable):
                raise  # the request was admitted by the API; a changed table refuses it now
            estimate = route.estimated_cost_usd
            try:
                reservation = await quotas.reserve(
                    session,
                    tenant_id=row.tenant_id,
                    plan=plan,
                    generation_id=row.id,
                    seconds=row.duration_s,
                    cost_usd=estimate,
                    now=datetime.now(UTC),
                )
            except quotas.QuotaExceeded:
                raise  # the month's quota filled up while the request waited
            reasons = approval_reasons(
                estimate, row.max_cost_usd, reservation.budget_left_usd, plan.name
            )
            last_attempt = await session.scalar(
                select(func.max(GenerationAttempt.attempt)).where(
                    GenerationAttempt.generation_id == row.id
                )
            )
            row.status = (
                GenerationStatus.AWAITING_APPROVAL if reasons else GenerationStatus.QUEUED
            ).value
            row.approval = (ApprovalState.PENDING if reasons else ApprovalState.NOT_REQUIRED).value
            row.estimated_cost_usd = estimate
            row.provider = route.primary.capabilities.provider
            row.model = route.primary.capabilities.model
            # A retried run starts clean; its earlier attempts stay on record.
            row.error_code = row.error_message = None
            row.completed_at = None
        return GenerationPlan(
            generation_id=input.generation_id,
            duration_s=row.duration_s,
            aspect_ratio=row.aspect_ratio,
            resolution=row.resolution,
            candidates=[
                Candidate(
                    provider=option.capabilities.provider,
                    model=option.capabilities.model,
                    estimated_cost_usd=float(option.estimated_cost_usd),
                    pool=pool_of(option.capabilities.provider),
                )
                for option in route.candidates
            ],
            estimated_cost_usd=float(estimate),
            approval_required=bool(reasons),
            approval_reason="; ".join(reasons) or None,
            approval_timeout_s=settings.approval_timeout_s,
            poll_initial_s=settings.generation_poll_initial_s,
            poll_max_s=settings.generation_poll_max_s,
            quota_warning=reservation.warning,
            # Asked for with `index: true`: the run ingests the stored video when done.
            index=row.index_result is not None,
            first_attempt=int(last_attempt or 0) + 1,
        )

    @activity.defn(name=FINALIZE_GENERATION.name)
    async def finalize_generation(self, input: FinalizeGenerationInput) -> FinalizeGenerationOutput:
        """Store the passing attempt as a video asset, settle its cost and commit the quota.

        One transaction: the asset row (id derived from the generation, so a retry finds
        it), the generation's result and the quota move together or not at all.
        """
        video_id = generated_video_id(input.generation_id)
        facts = input.facts
        async with self._sessions.begin() as session:
            row = await _generation(session, input.tenant_id, input.generation_id, lock=True)
            attempt = await session.get(GenerationAttempt, (row.id, input.attempt))
            if attempt is not None:
                row.provider, row.model = attempt.provider, attempt.model
                row.provider_job_id = attempt.provider_job_id
                row.validation = attempt.validation
            cost = await ledger_cost(session, video_id)
            if await session.get(Video, video_id) is None:
                session.add(
                    Video(
                        id=video_id,
                        tenant_id=row.tenant_id,
                        title=_title(row.prompt),
                        origin="generated",
                        source_key=input.output_key,
                        thumbnail_key=input.thumbnail_key,
                        content_type="video/mp4",
                        size_bytes=facts.size_bytes,
                        status="completed",
                        stage="completed",
                        progress=1.0,
                        note=(
                            f"Generated from a prompt by {row.provider}/{row.model} "
                            f"(generation {row.id}); not transcribed or indexed."
                        ),
                        duration_s=facts.duration_s,
                        width=facts.width,
                        height=facts.height,
                        has_audio=facts.has_audio,
                        container=facts.container,
                        video_codec=facts.video_codec,
                        audio_codec=facts.audio_codec,
                        cost_usd=cost,
                        workflow_id=input.run_id,
                        completed_at=func.now(),
                    )
                )
            row.status = GenerationStatus.COMPLETED.value
            row.video_id = video_id
            row.cost_usd = cost
            row.completed_at = datetime.now(UTC)
            row.error_code = row.error_message = None
            await quotas.commit(session, generation_id=row.id, cost_usd=cost)
        return FinalizeGenerationOutput(video_id=str(video_id), cost_usd=float(cost))

    @activity.defn(name=RELEASE_GENERATION.name)
    async def release_generation(self, input: ReleaseGenerationInput) -> ReleaseGenerationOutput:
        """End a generation without a video (failed, canceled, rejected) and free its quota.

        What its provider jobs cost stays on the ledger (providers bill delivered jobs);
        the tenant's quota and budget get the reservation back.
        """
        video_id = generated_video_id(input.generation_id)
        async with self._sessions.begin() as session:
            row = await _generation(session, input.tenant_id, input.generation_id, lock=True)
            cost = await ledger_cost(session, video_id)
            if row.status != GenerationStatus.COMPLETED.value:
                row.status = input.status.value
                row.error_code = input.error_code
                row.error_message = input.error_message
                row.cost_usd = cost
                row.completed_at = datetime.now(UTC)
                if input.approval is not None:
                    row.approval = input.approval.value
                unfinished = (
                    AttemptOutcome.CANCELED
                    if input.status == GenerationStatus.CANCELED
                    else AttemptOutcome.ERROR
                )
                await session.execute(
                    update(GenerationAttempt)
                    .where(
                        GenerationAttempt.generation_id == row.id,
                        GenerationAttempt.outcome == AttemptOutcome.IN_PROGRESS.value,
                    )
                    .values(outcome=unfinished.value, finished_at=func.now())
                )
                await quotas.release(session, generation_id=row.id)
        return ReleaseGenerationOutput(cost_usd=float(cost))


def _title(prompt: str) -> str:
    text = " ".join(prompt.split())
    return text if len(text) <= _TITLE_CHARS else text[: _TITLE_CHARS - 1].rstrip() + "…"


# --- providers ----------------------------------------------------------------------------


class GenerationProviderActivities:
    """Provider job calls; one instance per pool, each on that pool's executor.

    Args:
        host_queue: for the instance whose jobs live on this host's disk (the local
            renderer on a media host), the queue only this host polls; submit returns it
            so the job's polls, download and cancel come back here.
    """

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        storage: Storage,
        registry: ProviderRegistry,
        scratch_dir: Path,
        executor: Executor,
        host_queue: str | None = None,
    ) -> None:
        self._sessions = sessions
        self._storage = storage
        self._registry = registry
        self._scratch = scratch_dir
        self._executor = executor
        self._host_queue = host_queue

    def _provider(self, provider: str, model: str) -> VideoProvider:
        try:
            return self._registry.get(provider, model)
        except UnsupportedRequest as exc:
            # A worker configured without this provider cannot help; another might, but a
            # deployment is configured as a whole, so this is permanent.
            raise DomainError(FailureCode.PROVIDER_UNAVAILABLE_HERE, exc.message) from None

    async def _call(self, fn: Callable[[], T], step: str) -> T:
        return await run_blocking(self._executor, fn, heartbeat_details=step)

    async def _attempt_error(
        self, generation_id: str, attempt: int, error: str, outcome: AttemptOutcome | None
    ) -> None:
        values: dict[str, Any] = {"error": error[:2000]}
        if outcome is not None:
            values.update(outcome=outcome.value, finished_at=func.now())
        async with self._sessions.begin() as session:
            await _set_attempt(session, generation_id, attempt, **values)

    @activity.defn(name=SUBMIT_GENERATION_JOB.name)
    async def submit_generation_job(self, input: SubmitJobInput) -> SubmitJobOutput:
        """Submit one attempt and write its job id before returning.

        The attempt row exists before the provider is called; a retry of this activity
        that finds a job id on it returns that job instead of submitting again, and one
        that does not resubmits with the same idempotency key (providers that honour it
        return the first job).
        """
        generation_id = uuid.UUID(input.generation_id)
        async with self._sessions.begin() as session:
            row = await _generation(session, input.tenant_id, input.generation_id)
            existing = await session.get(GenerationAttempt, (generation_id, input.attempt))
            if existing is not None and existing.provider_job_id:
                return SubmitJobOutput(job_id=existing.provider_job_id, task_queue=self._host_queue)
            await session.execute(
                insert(GenerationAttempt)
                .values(
                    generation_id=generation_id,
                    attempt=input.attempt,
                    tenant_id=row.tenant_id,
                    provider=input.provider,
                    model=input.model,
                    idempotency_key=input.idempotency_key,
                    job_state="submitting",
                    outcome=AttemptOutcome.IN_PROGRESS.value,
                    cost_usd=Decimal(0),
                )
                .on_conflict_do_nothing(index_elements=["generation_id", "attempt"])
            )
            # Reaching submit means any approval the run waited for was given.
            await _set_generation(
                session,
                input.generation_id,
                status=GenerationStatus.SUBMITTED.value,
                provider=input.provider,
                model=input.model,
                provider_job_id=None,
                approval=case(
                    (
                        Generation.approval == ApprovalState.PENDING.value,
                        ApprovalState.APPROVED.value,
                    ),
                    else_=Generation.approval,
                ),
            )
            job = GenerationJobRequest(
                prompt=row.prompt,
                duration_s=row.duration_s,
                aspect_ratio=row.aspect_ratio,
                resolution=row.resolution,
                idempotency_key=input.idempotency_key,
            )
        provider = self._provider(input.provider, input.model)
        try:
            job_id = await self._call(lambda: provider.submit(job), "submit")
        except (ProviderPermanentError, UnsupportedRequest, ValueError) as exc:
            await self._attempt_error(
                input.generation_id, input.attempt, str(exc), AttemptOutcome.REJECTED
            )
            raise _rejected(exc, f"{input.provider} refused the job") from None
        except ProviderTransientError as exc:
            await self._attempt_error(input.generation_id, input.attempt, str(exc), None)
            raise _transient(exc, f"{input.provider} did not take the job") from None
        async with self._sessions.begin() as session:
            await _set_attempt(
                session,
                input.generation_id,
                input.attempt,
                provider_job_id=job_id,
                job_state="queued",
                error=None,
            )
            await _set_generation(
                session,
                input.generation_id,
                status=GenerationStatus.GENERATING.value,
                provider_job_id=job_id,
            )
        activity.logger.info(
            "generation %s attempt %d is job %s", generation_id, input.attempt, job_id
        )
        return SubmitJobOutput(job_id=job_id, task_queue=self._host_queue)

    @activity.defn(name=POLL_GENERATION_JOB.name)
    async def poll_generation_job(self, input: PollJobInput) -> PollJobOutput:
        """Ask the provider for the job's state; a succeeded job gets its ledger row here."""
        provider = self._provider(input.provider, input.model)
        try:
            status = await self._call(lambda: provider.status(input.job_id), "status")
        except ProviderPermanentError as exc:
            await self._attempt_error(
                input.generation_id, input.attempt, str(exc), AttemptOutcome.ERROR
            )
            raise _rejected(exc, f"{input.provider} could not report job {input.job_id}") from None
        except ProviderTransientError as exc:
            await self._attempt_error(input.generation_id, input.attempt, str(exc), None)
            raise _transient(exc, f"{input.provider} did not report job {input.job_id}") from None
        cost = Decimal(0)
        async with self._sessions.begin() as session:
            values: dict[str, Any] = {"job_state": status.state}
            if status.state == "succeeded":
                row = await _generation(session, input.tenant_id, input.generation_id)
                # Providers bill a job that delivered, whatever we think of the file: the
                # ledger says so once per job, keyed by its id.
                cost = await record_usage(
                    session,
                    Usage(
                        idempotency_key=ledger_key(
                            input.generation_id, input.provider, input.job_id
                        ),
                        tenant_id=row.tenant_id,
                        step=f"generate/attempt-{input.attempt}",
                        provider=input.provider,
                        operation="generation",
                        model=generation_price_model(input.model, row.resolution),
                        units=Decimal(row.duration_s),
                        run_id=input.run_id,
                        video_id=generated_video_id(input.generation_id),
                    ),
                )
                values["cost_usd"] = cost
            elif status.state == "failed":
                values.update(
                    outcome=AttemptOutcome.JOB_FAILED.value,
                    error=status.error or "the provider reported the job failed",
                    finished_at=func.now(),
                )
            elif status.state == "canceled":
                values.update(outcome=AttemptOutcome.CANCELED.value, finished_at=func.now())
            await _set_attempt(session, input.generation_id, input.attempt, **values)
        return PollJobOutput(
            state=status.state, progress=status.progress, error=status.error, cost_usd=float(cost)
        )

    @activity.defn(name=DOWNLOAD_GENERATION_OUTPUT.name)
    async def download_generation_output(self, input: DownloadOutputInput) -> DownloadOutputOutput:
        """Fetch the job's file into storage, whatever it is (validation judges it)."""
        provider = self._provider(input.provider, input.model)
        key = output_key(input.tenant_id, input.generation_id, input.attempt)
        scratch = self._scratch / str(uuid.UUID(input.generation_id))
        scratch.mkdir(parents=True, exist_ok=True)
        # Named the way `materialize` caches, so validation on this host skips a download.
        local = scratch / key.replace("/", "__")

        def fetch() -> int:
            provider.download(input.job_id, local)
            self._storage.put_file(key, local, content_type="video/mp4")
            return local.stat().st_size

        try:
            size = await self._call(fetch, "download")
        except ProviderPermanentError as exc:
            await self._attempt_error(
                input.generation_id, input.attempt, str(exc), AttemptOutcome.ERROR
            )
            raise _rejected(exc, f"{input.provider} did not deliver job {input.job_id}") from None
        except ProviderTransientError as exc:
            await self._attempt_error(input.generation_id, input.attempt, str(exc), None)
            raise _transient(exc, f"downloading job {input.job_id} failed") from None
        async with self._sessions.begin() as session:
            await _set_attempt(
                session, input.generation_id, input.attempt, output_key=key, size_bytes=size
            )
        return DownloadOutputOutput(output_key=key, size_bytes=size)

    @activity.defn(name=CANCEL_GENERATION_JOB.name)
    async def cancel_generation_job(self, input: CancelJobInput) -> CancelJobOutput:
        """Stop the provider job if the provider can; record the attempt as canceled."""
        provider = self._provider(input.provider, input.model)
        try:
            canceled = await self._call(lambda: provider.cancel(input.job_id), "cancel")
        except ProviderPermanentError:
            canceled = False
        except ProviderTransientError as exc:
            raise _transient(exc, f"canceling job {input.job_id} failed") from None
        async with self._sessions.begin() as session:
            await _set_attempt(
                session,
                input.generation_id,
                input.attempt,
                outcome=AttemptOutcome.CANCELED.value,
                job_state="canceled" if canceled else "cancel_refused",
                finished_at=func.now(),
            )
        return CancelJobOutput(canceled=canceled)


# --- media --------------------------------------------------------------------------------


class GenerationMediaActivities:
    """Validation and thumbnails with ffprobe/ffmpeg (media pool)."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        storage: Storage,
        settings: Settings,
        scratch_dir: Path,
        executor: Executor,
    ) -> None:
        self._sessions = sessions
        self._storage = storage
        self._limits = media.MediaLimits.from_settings(settings)
        self._scratch = scratch_dir
        self._executor = executor

    @activity.defn(name=VALIDATE_GENERATION_OUTPUT.name)
    async def validate_generation_output(self, input: ValidateOutputInput) -> ValidateOutputOutput:
        """Check the file against the request; a passing one gets its thumbnail stored.

        A bad file (0 bytes, an HTML page, garbage, black, silent, the wrong length or
        shape) is a failed report, not an error: the workflow records it and falls back.
        """
        async with self._sessions.begin() as session:
            await _set_generation(
                session, input.generation_id, status=GenerationStatus.VALIDATING.value
            )
        scratch = self._scratch / str(uuid.UUID(input.generation_id))
        scratch.mkdir(parents=True, exist_ok=True)
        expected = ExpectedVideo(
            duration_s=float(input.duration_s),
            aspect_ratio=input.aspect_ratio,
            resolution=input.resolution,
        )
        thumb_key = thumbnail_key(input.tenant_id, input.generation_id)

        def check() -> tuple[ValidationResult, VideoFacts | None]:
            local = materialize(self._storage, input.output_key, scratch)
            report = validate_video(local, expected, max_bytes=self._limits.max_bytes)
            result = ValidationResult(
                passed=report.passed,
                checks=[CheckResult(**dataclasses.asdict(c)) for c in report.checks],
            )
            if not report.passed:
                return result, None
            probe = media.probe_video(local, self._limits)
            thumbnail = scratch / f"thumbnail-{input.attempt}.jpg"
            first_non_black_thumbnail(local, thumbnail)
            self._storage.put_file(thumb_key, thumbnail, content_type="image/jpeg")
            facts = VideoFacts(
                duration_s=probe.duration_s,
                width=probe.width,
                height=probe.height,
                has_audio=probe.has_audio,
                container=probe.container,
                video_codec=probe.video_codec,
                audio_codec=probe.audio_codec,
                size_bytes=probe.size_bytes,
            )
            return result, facts

        result, facts = await run_blocking(self._executor, check, heartbeat_details="validate")
        report_json = result.model_dump(mode="json")
        async with self._sessions.begin() as session:
            await _set_attempt(
                session,
                input.generation_id,
                input.attempt,
                validation=report_json,
                outcome=(
                    AttemptOutcome.PASSED if result.passed else AttemptOutcome.INVALID_OUTPUT
                ).value,
                error=None if result.passed else result.summary(),
                finished_at=func.now(),
            )
            await _set_generation(
                session,
                input.generation_id,
                validation=report_json,
                **({"status": GenerationStatus.STORING.value} if result.passed else {}),
            )
        return ValidateOutputOutput(
            report=result, thumbnail_key=thumb_key if result.passed else None, facts=facts
        )
