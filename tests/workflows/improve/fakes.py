"""Stand-in activities for the improvement workflow, registered under the real names.

They record what the workflow asked for, so the tests assert on orchestration alone (the
real activities are tested against Postgres in `tests/e2e/test_improve_pipeline.py`). The
child is the real `GenerationWorkflow` over the generation stand-ins, so its quota release
and its approval gate are the real ones; the pre-approval stand-in sends the real update.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.worker import Worker

from reelflow.core.errors import DomainError
from schemas.failures import FailureCode
from schemas.generation import ApprovalInput, ApprovalOutput, generation_workflow_id
from schemas.generation_activities import APPROVE_UPDATE
from schemas.improvement import (
    AdmitGenerationOutput,
    FinishImprovementInput,
    FinishImprovementOutput,
    ImprovementStepInput,
    LinkVersionInput,
    LinkVersionOutput,
    LoadInsightsOutput,
    PreApproveInput,
    PreApproveOutput,
    SourceKind,
    WritePromptOutput,
    improvement_generation_id,
)
from tests.workflows.generation.fakes import FakeGeneration, fake_plan
from workers.pools import activity_worker
from workflows.generation import GenerationWorkflow
from workflows.improve import ImproveWorkflow


@dataclass
class FakeImprove:
    """Configurable behaviour plus a record of every call.

    Attributes:
        generation: The child generation's stand-ins (plan, latency, failures).
        insights_error: Raised by `load_improvement_insights` instead of loading.
        original_iteration: The original's `improvement_iteration`.
    """

    generation: FakeGeneration = field(
        default_factory=lambda: FakeGeneration(plan=fake_plan(poll_initial_s=0.2), latency_s=0.1)
    )
    insights_error: DomainError | None = None
    original_iteration: int = 0
    calls: list[str] = field(default_factory=list)
    linked: list[LinkVersionInput] = field(default_factory=list)
    finished: list[FinishImprovementInput] = field(default_factory=list)
    pre_approved: list[bool] = field(default_factory=list)

    @property
    def queues(self) -> Any:
        return self.generation.queues

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="load_improvement_insights")
        async def load_improvement_insights(input: ImprovementStepInput) -> LoadInsightsOutput:
            self.calls.append("load_improvement_insights")
            if self.insights_error is not None:
                raise self.insights_error
            return LoadInsightsOutput(
                analyst="statistical", statistical=True, cached=True, strengths=2, weaknesses=1
            )

        @activity.defn(name="write_improved_prompt")
        async def write_improved_prompt(input: ImprovementStepInput) -> WritePromptOutput:
            self.calls.append("write_improved_prompt")
            return WritePromptOutput(
                writer="offline-template",
                is_template=True,
                source_kind=SourceKind.PROMPT,
                prompt_chars=120,
            )

        @activity.defn(name="admit_improvement_generation")
        async def admit_improvement_generation(
            input: ImprovementStepInput,
        ) -> AdmitGenerationOutput:
            self.calls.append("admit_improvement_generation")
            generation_id = str(improvement_generation_id(input.improvement_id))
            return AdmitGenerationOutput(
                generation_id=generation_id,
                workflow_id=generation_workflow_id(generation_id),
                estimated_cost_usd=self.generation.plan.estimated_cost_usd,
                provider="local",
                model="ffmpeg",
            )

        @activity.defn(name="pre_approve_generation")
        async def pre_approve_generation(input: PreApproveInput) -> PreApproveOutput:
            self.calls.append("pre_approve_generation")
            handle = activity.client().get_workflow_handle(
                generation_workflow_id(input.generation_id)
            )
            try:
                await handle.execute_update(
                    APPROVE_UPDATE, ApprovalInput(approve=True), result_type=ApprovalOutput
                )
            except WorkflowUpdateFailedError:
                self.pre_approved.append(False)
                return PreApproveOutput(accepted=False)
            self.pre_approved.append(True)
            return PreApproveOutput(accepted=True)

        @activity.defn(name="link_improved_version")
        async def link_improved_version(input: LinkVersionInput) -> LinkVersionOutput:
            self.calls.append("link_improved_version")
            self.linked.append(input)
            return LinkVersionOutput(iteration=self.original_iteration + 1)

        @activity.defn(name="finish_improvement")
        async def finish_improvement(input: FinishImprovementInput) -> FinishImprovementOutput:
            self.calls.append("finish_improvement")
            self.finished.append(input)
            return FinishImprovementOutput(updated=True)

        return [
            load_improvement_insights,
            write_improved_prompt,
            admit_improvement_generation,
            pre_approve_generation,
            link_improved_version,
            finish_improvement,
        ]

    @asynccontextmanager
    async def workers(self, client: Client) -> AsyncIterator[None]:
        """Workers on this test's own queue family, with the generation stand-ins too."""
        # The generation stand-ins admit every run to a slot (the improvement's too).
        activities = [*self.activities(), *self.generation.activities()]
        queues = self.queues
        async with (
            Worker(
                client,
                task_queue=queues.workflows,
                workflows=[ImproveWorkflow, GenerationWorkflow],
            ),
            activity_worker(client, queues.media, activities),
            activity_worker(client, queues.providers, activities),
        ):
            yield


def no_metrics() -> DomainError:
    return DomainError(
        FailureCode.NO_INSIGHTS, "video has no performance metrics yet: add some, then improve it"
    )


def new_ids() -> tuple[str, str, str]:
    """Tenant, improvement and video ids of one test run."""
    return str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
