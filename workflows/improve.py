"""The improvement run: insights → improved prompt → admitted generation → child run → link.

One workflow per improvement (`improve-<improvement_id>`). Deterministic orchestration only:
the insights, the prompt and the original's content live on the `improvements` row, and
activities read them by id.

* **Generation as a child.** The generation is admitted (row and quota reservation) the way
  `POST /v1/generations` admits one, then `GenerationWorkflow` runs as a child with the id
  `generate-<generation_id>`, so the generation API shows, approves and cancels it like any
  other. Its quota is the child's to settle: it commits on success and releases on failure,
  rejection or cancel.
* **Approval.** The child's approval gate is the generation's own. With
  `approve_over_budget` the run sends the child the `approve` update in advance (an
  activity: workflow code cannot send updates); otherwise the child waits, and
  `POST /v1/improvements/{id}/approve` approves it through the same update.
* **Failure and cancel.** The child failing fails the improvement with the child's code and
  reason. Canceling the improvement cancels the child (it is awaited, and the parent close
  policy asks for the cancel even if this run is terminated), which releases the quota.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError, CancelledError, ChildWorkflowError
from temporalio.workflow import ParentClosePolicy

from workflows._admission import RunSlot
from workflows._steps import StepFailed, call, step

with workflow.unsafe.imports_passed_through():
    from schemas import search_attributes as sa
    from schemas.admission_activities import RUN_SLOT_QUERY, RunSlotState
    from schemas.failures import FailureCode, known_code
    from schemas.generation import GenerationInput, GenerationResult, GenerationStatus
    from schemas.generation_activities import GENERATION_WORKFLOW
    from schemas.improve_activities import (
        ADMIT_IMPROVEMENT_GENERATION,
        FINISH_IMPROVEMENT,
        IMPROVE_WORKFLOW,
        LINK_IMPROVED_VERSION,
        LOAD_IMPROVEMENT_INSIGHTS,
        PRE_APPROVE_GENERATION,
        WRITE_IMPROVED_PROMPT,
    )
    from schemas.improvement import (
        AdmitGenerationOutput,
        FinishImprovementInput,
        ImproveInput,
        ImprovementStatus,
        ImprovementStepInput,
        ImproveProgress,
        ImproveResult,
        LinkVersionInput,
        PreApproveInput,
    )
    from schemas.queues import TaskQueues

CHILD_GENERATION_TIMEOUT = timedelta(days=8)
"""Longer than any generation can take (approval waits, provider queues), so it never ends
one that is still making progress; a bound all the same."""


def _child_failure(err: ChildWorkflowError) -> StepFailed:
    """The generation's own code and reason, so the improvement fails with them."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        code = known_code(cause.type)
        if code is not None:
            return StepFailed(code, f"the generation failed: {cause.message}")
        return StepFailed(FailureCode.GENERATION_FAILED, f"the generation failed: {cause.message}")
    if isinstance(cause, CancelledError):
        return StepFailed(FailureCode.CANCELED, "the generation was canceled")
    return StepFailed(FailureCode.GENERATION_FAILED, "the generation failed")


@workflow.defn(name=IMPROVE_WORKFLOW.name)
class ImproveWorkflow:
    """Make an improved new version of a video from its insights, and link it to the original."""

    @workflow.init
    def __init__(self, input: ImproveInput) -> None:
        self._queues = TaskQueues.of_workflow_queue(workflow.info().task_queue)
        self._input = input
        self._progress = ImproveProgress(
            improvement_id=input.improvement_id,
            status=ImprovementStatus.QUEUED,
            stage=ImprovementStatus.QUEUED.value,
        )
        self._slot: RunSlot | None = None

    @workflow.query
    def progress(self) -> ImproveProgress:
        """Status, writer, child generation and cost, as the API and the CLI show them."""
        return self._progress

    @workflow.query(name=RUN_SLOT_QUERY)
    def run_slot(self) -> RunSlotState | None:
        """The run's place among its tenant's concurrent runs (None: it takes no slot)."""
        return self._slot.state if self._slot is not None else None

    @workflow.run
    async def run(self, input: ImproveInput) -> ImproveResult:
        """Run the improvement `input.improvement_id`."""
        ids = ImprovementStepInput(tenant_id=input.tenant_id, improvement_id=input.improvement_id)
        # One slot for the improvement and its generation child, which it waits for (see
        # `workflows/_admission.py`): a second slot for the child could only deadlock.
        self._slot = RunSlot(
            tenant_id=input.tenant_id,
            pipeline=IMPROVE_WORKFLOW.pipeline,
            queues=self._queues,
            on_queued=self._queued,
        )
        try:
            async with self._slot:
                return await self._improve(input, ids)
        except StepFailed as failed:
            # A person stopped it (the generation rejected or canceled on its own): the
            # improvement reads canceled, as the generation does; the run still fails, with
            # the reason, so whoever waits on it learns why.
            stopped = failed.code in (FailureCode.APPROVAL_REJECTED, FailureCode.CANCELED)
            status = ImprovementStatus.CANCELED if stopped else ImprovementStatus.FAILED
            await self._finish(status, failed.code, failed.message)
            raise ApplicationError(failed.message, type=failed.code, non_retryable=True) from None
        except asyncio.CancelledError:
            await self._finish(
                ImprovementStatus.CANCELED, FailureCode.CANCELED, "the improvement was canceled"
            )
            raise

    async def _improve(self, input: ImproveInput, ids: ImprovementStepInput) -> ImproveResult:
        self._enter(ImprovementStatus.LOADING_INSIGHTS)
        await step(call(LOAD_IMPROVEMENT_INSIGHTS, ids, self._queues))
        self._enter(ImprovementStatus.WRITING)
        written = await step(call(WRITE_IMPROVED_PROMPT, ids, self._queues))
        self._progress.writer = written.writer
        self._add_cost(written.cost_usd)
        self._enter(ImprovementStatus.GENERATING)
        admitted = await step(call(ADMIT_IMPROVEMENT_GENERATION, ids, self._queues))
        self._progress.generation_id = admitted.generation_id
        self._progress.generation_workflow_id = admitted.workflow_id
        generated = await self._generate(input, admitted)
        if generated.status != GenerationStatus.COMPLETED or generated.video_id is None:
            # Only a rejected approval ends a generation without a video and without
            # failing: the person said no, so the improvement stops there too.
            raise StepFailed(
                FailureCode.APPROVAL_REJECTED,
                generated.message or "the generation's estimate was rejected",
            )
        self._add_cost(generated.cost_usd)
        self._enter(ImprovementStatus.LINKING)
        linked = await step(
            call(
                LINK_IMPROVED_VERSION,
                LinkVersionInput(
                    tenant_id=input.tenant_id,
                    improvement_id=input.improvement_id,
                    generation_id=admitted.generation_id,
                    new_video_id=generated.video_id,
                    cost_usd=self._progress.cost_usd,
                ),
                self._queues,
            )
        )
        self._progress.new_video_id = generated.video_id
        self._enter(ImprovementStatus.COMPLETED)
        return ImproveResult(
            improvement_id=input.improvement_id,
            status=ImprovementStatus.COMPLETED,
            generation_id=admitted.generation_id,
            new_video_id=generated.video_id,
            iteration=linked.iteration,
            cost_usd=self._progress.cost_usd,
        )

    async def _generate(
        self, input: ImproveInput, admitted: AdmitGenerationOutput
    ) -> GenerationResult:
        """Run the admitted generation as a child; its failure becomes this run's."""
        child = await workflow.start_child_workflow(
            GENERATION_WORKFLOW.name,
            GenerationInput(tenant_id=input.tenant_id, generation_id=admitted.generation_id),
            id=admitted.workflow_id,
            result_type=GenerationResult,
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            # One generation per improvement: a failed one is reported, never rerun whole.
            retry_policy=RetryPolicy(maximum_attempts=1),
            execution_timeout=CHILD_GENERATION_TIMEOUT,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.TENANT_ID, input.tenant_id),
                    SearchAttributePair(sa.PIPELINE, GENERATION_WORKFLOW.pipeline),
                    SearchAttributePair(sa.STAGE, GenerationStatus.QUEUED.value),
                    SearchAttributePair(sa.COST_USD, 0.0),
                ]
            ),
            static_summary=f"improved version of video {input.video_id}",
        )
        if input.approve_over_budget:
            await step(
                call(
                    PRE_APPROVE_GENERATION,
                    PreApproveInput(
                        tenant_id=input.tenant_id,
                        improvement_id=input.improvement_id,
                        generation_id=admitted.generation_id,
                    ),
                    self._queues,
                )
            )
        try:
            result: GenerationResult = await child
            return result
        except ChildWorkflowError as err:
            # Canceling this run cancels the child (it is awaited) and waits for it to
            # settle its quota; the child then ends canceled, and so does this run.
            if isinstance(err.cause, CancelledError) and workflow.cancellation_reason() is not None:
                raise asyncio.CancelledError() from err
            raise _child_failure(err) from err

    async def _finish(self, status: ImprovementStatus, code: FailureCode, message: str) -> None:
        await call(
            FINISH_IMPROVEMENT,
            FinishImprovementInput(
                tenant_id=self._input.tenant_id,
                improvement_id=self._input.improvement_id,
                status=status,
                error_code=code,
                error_message=message,
            ),
            self._queues,
        )
        self._progress.error = message
        self._enter(status)

    # --- helpers ------------------------------------------------------------------------

    async def _queued(self, _state: RunSlotState) -> None:
        self._enter(ImprovementStatus.QUEUED)

    def _enter(self, status: ImprovementStatus) -> None:
        self._progress.status = status
        self._progress.stage = status.value
        workflow.upsert_search_attributes(
            [sa.STAGE.value_set(status.value), sa.COST_USD.value_set(self._progress.cost_usd)]
        )

    def _add_cost(self, cost_usd: float) -> None:
        self._progress.cost_usd = round(self._progress.cost_usd + cost_usd, 8)
