"""The generation pipeline: prepare → (approval) → submit → poll → download → validate → store.

One workflow per request (`generate-<generation_id>`). Deterministic orchestration only:
provider calls, ffmpeg and the database are activities, and the prompt never enters
history (activities read it from the `generations` row).

* **Submit once.** The submit activity writes the provider's job id to the attempt row
  before it returns, and the workflow keeps it in its state; a worker that dies after
  that replays the submit from history and only ever polls. Each attempt has its own
  idempotency key (`generation-<id>/attempt-<n>`), so a retried submit activity cannot
  make a second job either.
* **Poll durably.** `workflow.sleep` between status activities, growing 1.5x from
  `poll_initial_s` up to `poll_max_s`. A run continues as new after `MAX_POLLS_PER_RUN`
  polls (carrying the job in `GenerationCursor`), so history stays bounded however long
  a provider takes.
* **Fall back.** A job that fails, or whose file fails validation, is retried on the same
  provider up to `MAX_TRIES_PER_PROVIDER` times, then the next candidate is tried.
  Every attempt is recorded (attempt rows, and the `progress` query).
* **Settle.** Success stores a video asset and commits the quota; failure, rejection and
  cancellation release it. Cancel stops the provider job where the provider can.
* **Index on request.** A request with `index: true` starts the stored video's ingest run
  (`ingest-<video_id>`) as a child that outlives this run (parent close policy ABANDON):
  the generation completes as soon as its video is stored, whatever indexing then does.
  Indexing succeeds or fails on the video (`GET /v1/videos/{id}`: status, error, coverage)
  and in its own run (`GET /v1/runs/ingest-<video_id>`), as any ingest does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    WorkflowAlreadyStartedError,
)
from temporalio.workflow import ParentClosePolicy

from workflows._admission import RunSlot
from workflows._steps import StepFailed, call, describe_failure, step

with workflow.unsafe.imports_passed_through():
    from schemas import search_attributes as sa
    from schemas.admission_activities import OWN_SLOT, RUN_SLOT_MEMO, RUN_SLOT_QUERY, RunSlotState
    from schemas.failures import FailureCode
    from schemas.generation import (
        ApprovalInput,
        ApprovalOutput,
        ApprovalState,
        AttemptOutcome,
        AttemptSummary,
        CancelJobInput,
        Candidate,
        DownloadOutputInput,
        FinalizeGenerationInput,
        GenerationCursor,
        GenerationInput,
        GenerationProgress,
        GenerationResult,
        GenerationStatus,
        JobInFlight,
        PollJobInput,
        PollJobOutput,
        PrepareGenerationInput,
        ReleaseGenerationInput,
        SubmitJobInput,
        ValidateOutputInput,
        ValidateOutputOutput,
        attempt_idempotency_key,
    )
    from schemas.generation_activities import (
        CANCEL_GENERATION_JOB,
        DOWNLOAD_GENERATION_OUTPUT,
        FINALIZE_GENERATION,
        GENERATION_WORKFLOW,
        POLL_GENERATION_JOB,
        PREPARE_GENERATION,
        RELEASE_GENERATION,
        SUBMIT_GENERATION_JOB,
        VALIDATE_GENERATION_OUTPUT,
    )
    from schemas.ingest import IngestInput, ingest_workflow_id
    from schemas.ingest_activities import INGEST_WORKFLOW
    from schemas.queues import TaskQueues

T = TypeVar("T")

POLL_BACKOFF = 1.5
MAX_POLLS_PER_RUN = 30
"""About 11 history events per poll: a run continues as new before ~350 events."""
JOB_DEADLINE = timedelta(hours=2)
"""A provider job unfinished this long after submit is canceled and counted as failed."""
MAX_TRIES_PER_PROVIDER = 2
"""Generation is stochastic: a black or silent clip is tried once more before falling back."""


@workflow.defn(name=GENERATION_WORKFLOW.name)
class GenerationWorkflow:
    """Turn one generation request into a validated, stored video asset (or a clear failure)."""

    @workflow.init
    def __init__(self, input: GenerationInput) -> None:
        # The input is known before any update can arrive, so `approve` never sees a
        # half-initialized run.
        self._queues = TaskQueues.of_workflow_queue(workflow.info().task_queue)
        self._input = input
        self._cursor: GenerationCursor | None = None
        self._progress: GenerationProgress | None = None
        self._decision: ApprovalInput | None = None
        # Open until the run is past the approval gate: a decision sent while `prepare`
        # is still finishing (the row already says awaiting_approval) is kept, not lost.
        self._gate_open = True
        self._polls_this_run = 0
        self._slot: RunSlot | None = None

    # --- queries and updates ------------------------------------------------------------

    @workflow.query
    def progress(self) -> GenerationProgress:
        """Status, provider, job, attempts and cost, as the API and the CLI show them."""
        if self._progress is None:
            raise ApplicationError("the run has not started yet")
        return self._progress

    @workflow.query(name=RUN_SLOT_QUERY)
    def run_slot(self) -> RunSlotState | None:
        """The run's place among its tenant's concurrent runs (None: it takes no slot)."""
        return self._slot.state if self._slot is not None else None

    @workflow.update
    def approve(self, input: ApprovalInput) -> ApprovalOutput:
        """Approve (`approve: true`) or reject a generation waiting for approval."""
        self._decision = input
        return ApprovalOutput(
            generation_id=self._input.generation_id,
            approval=ApprovalState.APPROVED if input.approve else ApprovalState.REJECTED,
        )

    @approve.validator
    def _validate_approve(self, input: ApprovalInput) -> None:
        # Rejected before it enters history: a late or repeated decision changes nothing.
        if not self._gate_open or self._decision is not None:
            raise ApplicationError(
                "the generation is not waiting for approval",
                type=FailureCode.NOT_AWAITING_APPROVAL,
            )

    # --- run ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: GenerationInput) -> GenerationResult:
        """Run (or, with a cursor, continue) the generation `input.generation_id`."""
        self._progress = GenerationProgress(
            generation_id=input.generation_id,
            status=GenerationStatus.QUEUED,
            stage=GenerationStatus.QUEUED.value,
        )
        # The slot is taken after the approval gate: a run waiting for a person uses no
        # worker, and holding a slot through it would stall the tenant's other runs.
        self._slot = RunSlot(
            tenant_id=input.tenant_id,
            pipeline=GENERATION_WORKFLOW.pipeline,
            queues=self._queues,
            on_queued=self._queued,
        )
        try:
            if input.cursor is not None:
                self._gate_open = False
                self._resume(input.cursor)
            else:
                plan = await step(
                    call(
                        PREPARE_GENERATION,
                        PrepareGenerationInput(
                            tenant_id=input.tenant_id, generation_id=input.generation_id
                        ),
                        self._queues,
                    )
                )
                self._resume(
                    GenerationCursor(
                        plan=plan,
                        next_attempt=plan.first_attempt,
                        approval=(
                            ApprovalState.PENDING
                            if plan.approval_required
                            else ApprovalState.NOT_REQUIRED
                        ),
                    )
                )
                if not plan.approval_required:
                    self._gate_open = False
                elif not await self._wait_for_approval():
                    return await self._end_rejected()
            # Continued runs keep their slot: asking again answers "running" at once.
            async with self._slot:
                return await self._generate()
        except StepFailed as failed:
            await self._release(GenerationStatus.FAILED, failed.code, failed.message)
            raise ApplicationError(failed.message, type=failed.code, non_retryable=True) from None
        except asyncio.CancelledError:
            await self._abandon_job()
            await self._release(
                GenerationStatus.CANCELED, FailureCode.CANCELED, "the generation was canceled"
            )
            raise

    def _resume(self, cursor: GenerationCursor) -> None:
        self._cursor = cursor
        progress = self._progress
        assert progress is not None
        progress.estimated_cost_usd = cursor.plan.estimated_cost_usd
        progress.quota_warning = cursor.plan.quota_warning
        progress.approval = cursor.approval
        progress.attempts = cursor.attempts
        progress.cost_usd = cursor.cost_usd
        progress.polls = cursor.total_polls
        job = cursor.job
        if job is not None:
            self._set_status(GenerationStatus.GENERATING)
            progress.provider, progress.model = job.provider, job.model
            progress.provider_job_id, progress.attempt = job.job_id, job.attempt

    async def _queued(self, _state: RunSlotState) -> None:
        self._set_status(GenerationStatus.QUEUED)
        workflow.upsert_search_attributes([sa.STAGE.value_set(GenerationStatus.QUEUED.value)])

    async def _wait_for_approval(self) -> bool:
        """Wait for the `approve` update; True when approved. Times out into a failure."""
        cursor = self._cursor
        assert cursor is not None
        self._set_status(GenerationStatus.AWAITING_APPROVAL)
        workflow.upsert_search_attributes(
            [sa.STAGE.value_set(GenerationStatus.AWAITING_APPROVAL.value)]
        )
        timeout = timedelta(seconds=cursor.plan.approval_timeout_s)
        try:
            await workflow.wait_condition(lambda: self._decision is not None, timeout=timeout)
        except TimeoutError:
            self._set_approval(ApprovalState.TIMED_OUT)
            raise StepFailed(
                FailureCode.APPROVAL_TIMED_OUT,
                f"the estimate of ${cursor.plan.estimated_cost_usd:.2f} needed approval "
                f"({cursor.plan.approval_reason}) and none came within {timeout}",
            ) from None
        finally:
            self._gate_open = False
        decision = self._decision
        assert decision is not None
        self._set_approval(ApprovalState.APPROVED if decision.approve else ApprovalState.REJECTED)
        return decision.approve

    async def _end_rejected(self) -> GenerationResult:
        assert self._decision is not None
        note = f": {self._decision.note}" if self._decision.note else ""
        message = f"the estimate was rejected{note}"
        await self._release(GenerationStatus.CANCELED, FailureCode.APPROVAL_REJECTED, message)
        return self._result(GenerationStatus.CANCELED, message=message)

    async def _generate(self) -> GenerationResult:
        cursor = self._cursor
        assert cursor is not None
        candidates = cursor.plan.candidates
        while cursor.candidate_index < len(candidates):
            candidate = candidates[cursor.candidate_index]
            if cursor.tries_on_candidate >= MAX_TRIES_PER_PROVIDER:
                cursor.candidate_index += 1
                cursor.tries_on_candidate = 0
                continue
            job = cursor.job or await self._submit(candidate)
            if job is None:
                # The provider refused the request: asking it again would be refused too.
                cursor.candidate_index += 1
                cursor.tries_on_candidate = 0
                continue
            finished = await self._poll(job)
            cursor.job = None
            cursor.tries_on_candidate += 1
            if finished is None:
                continue
            validated = await self._check_output(job)
            if validated is not None:
                output_key, checked = validated
                return await self._finalize(job, output_key, checked)
        raise self._exhausted()

    # --- stages -------------------------------------------------------------------------

    async def _submit(self, candidate: Candidate) -> JobInFlight | None:
        cursor, input = self._cursor, self._input
        assert cursor is not None
        attempt = cursor.next_attempt
        cursor.next_attempt += 1
        summary = AttemptSummary(
            attempt=attempt, provider=candidate.provider, model=candidate.model
        )
        cursor.attempts.append(summary)
        self._set_status(GenerationStatus.SUBMITTED)
        progress = self._progress
        assert progress is not None
        progress.provider, progress.model = candidate.provider, candidate.model
        progress.attempt, progress.provider_job_id, progress.job_progress = attempt, None, None
        try:
            submitted = await self._attempt_step(
                summary,
                call(
                    SUBMIT_GENERATION_JOB,
                    SubmitJobInput(
                        tenant_id=input.tenant_id,
                        generation_id=input.generation_id,
                        attempt=attempt,
                        provider=candidate.provider,
                        model=candidate.model,
                        idempotency_key=attempt_idempotency_key(input.generation_id, attempt),
                    ),
                    self._queues,
                    task_queue=self._queues.by_pool(candidate.pool),
                ),
            )
        except _AttemptFailed:
            return None
        summary.job_id = submitted.job_id
        job = JobInFlight(
            attempt=attempt,
            candidate_index=cursor.candidate_index,
            provider=candidate.provider,
            model=candidate.model,
            pool=candidate.pool,
            job_id=submitted.job_id,
            submitted_at=workflow.now(),
            next_poll_s=cursor.plan.poll_initial_s,
            # No `workflow.patched` needed: the commands are the same, only their queue
            # differs, and a submit recorded before host queues carries no queue (None), so
            # replaying it keeps the shared queue it used.
            task_queue=submitted.task_queue,
        )
        cursor.job = job
        progress.provider_job_id = job.job_id
        self._set_status(GenerationStatus.GENERATING)
        workflow.upsert_search_attributes([sa.STAGE.value_set(GenerationStatus.GENERATING.value)])
        return job

    async def _poll(self, job: JobInFlight) -> PollJobOutput | None:
        """Poll until the job ends; None when it failed (the attempt says why)."""
        cursor, input, progress = self._cursor, self._input, self._progress
        assert cursor is not None and progress is not None
        summary = self._summary(job.attempt)
        while True:
            if workflow.now() - job.submitted_at > JOB_DEADLINE:
                await self._abandon_job()
                summary.outcome = AttemptOutcome.TIMED_OUT
                summary.message = f"the job did not finish within {JOB_DEADLINE}"
                return None
            if (
                self._polls_this_run >= MAX_POLLS_PER_RUN
                or workflow.info().is_continue_as_new_suggested()
            ):
                # The job travels in the cursor: the next run polls it, never resubmits.
                workflow.continue_as_new(
                    GenerationInput(
                        tenant_id=input.tenant_id,
                        generation_id=input.generation_id,
                        cursor=cursor,
                    )
                )
            await workflow.sleep(timedelta(seconds=job.next_poll_s))
            try:
                status = await self._attempt_step(
                    summary,
                    call(
                        POLL_GENERATION_JOB,
                        PollJobInput(
                            tenant_id=input.tenant_id,
                            generation_id=input.generation_id,
                            attempt=job.attempt,
                            provider=job.provider,
                            model=job.model,
                            job_id=job.job_id,
                            run_id=workflow.info().workflow_id,
                        ),
                        self._queues,
                        task_queue=self._job_queue(job),
                    ),
                )
            except _AttemptFailed:
                await self._abandon_job()
                return None
            job.polls += 1
            cursor.total_polls += 1
            self._polls_this_run += 1
            progress.polls = cursor.total_polls
            progress.job_progress = status.progress
            if status.state == "succeeded":
                summary.cost_usd = status.cost_usd
                cursor.cost_usd = round(cursor.cost_usd + status.cost_usd, 8)
                progress.cost_usd = cursor.cost_usd
                return status
            if status.terminal:
                summary.outcome = (
                    AttemptOutcome.CANCELED
                    if status.state == "canceled"
                    else AttemptOutcome.JOB_FAILED
                )
                summary.message = status.error or f"the provider job ended {status.state}"
                return None
            job.next_poll_s = min(job.next_poll_s * POLL_BACKOFF, cursor.plan.poll_max_s)

    async def _check_output(self, job: JobInFlight) -> tuple[str, ValidateOutputOutput] | None:
        """Download and validate; the stored key and report when it passed, else None."""
        cursor, input = self._cursor, self._input
        assert cursor is not None
        plan = cursor.plan
        summary = self._summary(job.attempt)
        self._set_status(GenerationStatus.VALIDATING)
        workflow.upsert_search_attributes([sa.STAGE.value_set(GenerationStatus.VALIDATING.value)])
        try:
            downloaded = await self._attempt_step(
                summary,
                call(
                    DOWNLOAD_GENERATION_OUTPUT,
                    DownloadOutputInput(
                        tenant_id=input.tenant_id,
                        generation_id=input.generation_id,
                        attempt=job.attempt,
                        provider=job.provider,
                        model=job.model,
                        job_id=job.job_id,
                    ),
                    self._queues,
                    task_queue=self._job_queue(job),
                ),
            )
            checked = await self._attempt_step(
                summary,
                call(
                    VALIDATE_GENERATION_OUTPUT,
                    ValidateOutputInput(
                        tenant_id=input.tenant_id,
                        generation_id=input.generation_id,
                        attempt=job.attempt,
                        output_key=downloaded.output_key,
                        duration_s=plan.duration_s,
                        aspect_ratio=plan.aspect_ratio,
                        resolution=plan.resolution,
                    ),
                    self._queues,
                ),
            )
        except _AttemptFailed:
            return None
        summary.message = checked.report.summary()
        if not checked.report.passed:
            summary.outcome = AttemptOutcome.INVALID_OUTPUT
            return None
        summary.outcome = AttemptOutcome.PASSED
        return downloaded.output_key, checked

    async def _finalize(
        self, job: JobInFlight, output_key: str, checked: ValidateOutputOutput
    ) -> GenerationResult:
        cursor, input, progress = self._cursor, self._input, self._progress
        assert cursor is not None and progress is not None
        assert checked.thumbnail_key is not None and checked.facts is not None
        self._set_status(GenerationStatus.STORING)
        stored = await step(
            call(
                FINALIZE_GENERATION,
                FinalizeGenerationInput(
                    tenant_id=input.tenant_id,
                    generation_id=input.generation_id,
                    attempt=job.attempt,
                    output_key=output_key,
                    thumbnail_key=checked.thumbnail_key,
                    facts=checked.facts,
                    run_id=workflow.info().workflow_id,
                ),
                self._queues,
            )
        )
        cursor.cost_usd = stored.cost_usd
        progress.cost_usd = stored.cost_usd
        progress.video_id = stored.video_id
        self._set_status(GenerationStatus.COMPLETED)
        workflow.upsert_search_attributes(
            [
                sa.STAGE.value_set(GenerationStatus.COMPLETED.value),
                sa.COST_USD.value_set(stored.cost_usd),
                sa.VIDEO_ID.value_set(stored.video_id),
            ]
        )
        # Runs recorded before the option existed end here, without the marker. Asked only
        # when indexing is, so a generation without it keeps its history (and its size).
        if cursor.plan.index and workflow.patched("index-result"):
            await self._start_indexing(stored.video_id)
        return self._result(GenerationStatus.COMPLETED, video_id=stored.video_id)

    async def _start_indexing(self, video_id: str) -> None:
        """Start the video's ingest run; it is not awaited, so it cannot fail the generation."""
        tenant_id = self._input.tenant_id
        try:
            await workflow.start_child_workflow(
                INGEST_WORKFLOW.name,
                IngestInput(tenant_id=tenant_id, video_id=video_id),
                id=ingest_workflow_id(video_id),
                parent_close_policy=ParentClosePolicy.ABANDON,
                # Nobody waits for it, so it takes a slot of its own (after this run's).
                memo=(
                    {RUN_SLOT_MEMO: OWN_SLOT}
                    if self._slot is not None and self._slot.gated
                    else None
                ),
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa.TENANT_ID, tenant_id),
                        SearchAttributePair(sa.VIDEO_ID, video_id),
                        SearchAttributePair(sa.PIPELINE, "ingest"),
                        SearchAttributePair(sa.STAGE, "queued"),
                        SearchAttributePair(sa.COST_USD, 0.0),
                    ]
                ),
            )
        except WorkflowAlreadyStartedError:
            # Indexing was asked for already (`POST /v1/videos/{id}/ingest`): that run does it.
            workflow.logger.info("video %s is already being indexed", video_id)

    # --- endings ------------------------------------------------------------------------

    def _exhausted(self) -> StepFailed:
        cursor = self._cursor
        assert cursor is not None
        if not cursor.attempts:
            return StepFailed(FailureCode.GENERATION_FAILED, "no provider could be tried")
        lines = "; ".join(
            f"attempt {a.attempt} ({a.provider}/{a.model}): {a.outcome.value}"
            + (f" — {a.message}" if a.message else "")
            for a in cursor.attempts
        )
        invalid = cursor.attempts[-1].outcome == AttemptOutcome.INVALID_OUTPUT
        code = FailureCode.VALIDATION_FAILED if invalid else FailureCode.GENERATION_FAILED
        return StepFailed(
            code,
            f"no provider delivered a valid video in {len(cursor.attempts)} attempt(s): {lines}",
        )

    async def _abandon_job(self) -> None:
        """Cancel the job in flight, if any, where the provider supports it (best effort)."""
        cursor, input = self._cursor, self._input
        if cursor is None or cursor.job is None:
            return
        job = cursor.job
        cursor.job = None
        summary = self._summary(job.attempt)
        if summary.outcome == AttemptOutcome.IN_PROGRESS:
            summary.outcome = AttemptOutcome.CANCELED
        try:
            await call(
                CANCEL_GENERATION_JOB,
                CancelJobInput(
                    tenant_id=input.tenant_id,
                    generation_id=input.generation_id,
                    attempt=job.attempt,
                    provider=job.provider,
                    model=job.model,
                    job_id=job.job_id,
                ),
                self._queues,
                task_queue=self._job_queue(job),
            )
        except ActivityError:
            # The job may still finish at the provider; its cost, if any, is on the ledger
            # only if we ever see it succeed, and the quota is released either way.
            workflow.logger.warning("could not cancel provider job %s", job.job_id)

    async def _release(self, status: GenerationStatus, code: FailureCode, message: str) -> None:
        input, progress, cursor = self._input, self._progress, self._cursor
        assert progress is not None
        approval = cursor.approval if cursor is not None else None
        released = await call(
            RELEASE_GENERATION,
            ReleaseGenerationInput(
                tenant_id=input.tenant_id,
                generation_id=input.generation_id,
                status=status,
                error_code=code,
                error_message=message,
                approval=approval,
            ),
            self._queues,
        )
        progress.cost_usd = released.cost_usd
        progress.error = message
        self._set_status(status)
        workflow.upsert_search_attributes(
            [sa.STAGE.value_set(status.value), sa.COST_USD.value_set(released.cost_usd)]
        )

    def _result(
        self, status: GenerationStatus, *, video_id: str | None = None, message: str | None = None
    ) -> GenerationResult:
        progress = self._progress
        assert progress is not None
        return GenerationResult(
            generation_id=progress.generation_id,
            status=status,
            video_id=video_id,
            provider=progress.provider,
            model=progress.model,
            provider_job_id=progress.provider_job_id,
            cost_usd=progress.cost_usd,
            attempts=list(progress.attempts),
            message=message,
        )

    # --- helpers ------------------------------------------------------------------------

    def _set_status(self, status: GenerationStatus) -> None:
        assert self._progress is not None
        self._progress.status = status
        self._progress.stage = status.value

    def _set_approval(self, approval: ApprovalState) -> None:
        assert self._cursor is not None and self._progress is not None
        self._cursor.approval = approval
        self._progress.approval = approval

    def _job_queue(self, job: JobInFlight) -> str:
        """Where a job's polls, download and cancel go: its host's queue, or its pool's."""
        return job.task_queue or self._queues.by_pool(job.pool)

    def _summary(self, attempt: int) -> AttemptSummary:
        assert self._cursor is not None
        return next(a for a in self._cursor.attempts if a.attempt == attempt)

    @staticmethod
    async def _attempt_step(summary: AttemptSummary, awaitable: Awaitable[T]) -> T:
        """Await a step of one attempt; its failure ends the attempt, not the generation."""
        try:
            return await awaitable
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise asyncio.CancelledError() from err
            reason = describe_failure(err)
            summary.outcome = (
                AttemptOutcome.REJECTED
                if reason.code == FailureCode.PROVIDER_REJECTED
                else AttemptOutcome.ERROR
            )
            summary.message = reason.message
            raise _AttemptFailed() from err


class _AttemptFailed(Exception):
    """Internal: this attempt is over (its summary says why); try the next one."""
