"""Stand-in activities for orchestration tests and the benchmark, under the real names.

They keep the generation in memory and simulate a provider on the *server's* clock: a job
is done once `latency_s` have passed between the submit activity's and a poll activity's
scheduled times. On the time-skipping server that time is skipped, so a 20-minute job
takes milliseconds; on the dev server it is real time. The real activities (Postgres,
ffmpeg, the local renderer) are tested with the real workflow in
`test_generation_workflow.py`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError

from schemas.generation import (
    CancelJobInput,
    CancelJobOutput,
    Candidate,
    CheckResult,
    DownloadOutputInput,
    DownloadOutputOutput,
    FinalizeGenerationInput,
    FinalizeGenerationOutput,
    GenerationPlan,
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
)
from schemas.queues import TaskQueues
from tests.workflows.admission import admit_every_run


def fake_plan(
    generation_id: str = "g",
    *,
    candidates: tuple[tuple[str, str], ...] = (("local", "ffmpeg"),),
    estimate: float = 0.0,
    approval_required: bool = False,
    approval_timeout_s: float = 3600.0,
    poll_initial_s: float = 5.0,
    poll_max_s: float = 60.0,
) -> GenerationPlan:
    """A plan as `prepare_generation` returns it."""
    return GenerationPlan(
        generation_id=generation_id,
        duration_s=4,
        aspect_ratio="16:9",
        resolution="720p",
        candidates=[
            Candidate(
                provider=provider,
                model=model,
                estimated_cost_usd=estimate,
                pool="media" if provider == "local" else "providers",
            )
            for provider, model in candidates
        ],
        estimated_cost_usd=estimate,
        approval_required=approval_required,
        approval_reason="the estimate is over max_cost_usd" if approval_required else None,
        approval_timeout_s=approval_timeout_s,
        poll_initial_s=poll_initial_s,
        poll_max_s=poll_max_s,
    )


def _report(passed: bool, failed_check: str = "black_frames") -> ValidationResult:
    return ValidationResult(
        passed=passed,
        checks=[
            CheckResult(
                name=failed_check if not passed else "duration",
                passed=passed,
                expected="what was asked",
                actual="what came back" if not passed else "what was asked",
                message="fake check",
            )
        ],
    )


@dataclass
class FakeGeneration:
    """Configurable behaviour plus a record of every call.

    Attributes:
        plan: What `prepare_generation` returns (its `generation_id` is replaced).
        latency_s: How long (server time) a job runs before it succeeds.
        invalid_attempts: Attempt numbers whose output fails validation.
        failed_jobs: Attempt numbers whose job ends ``failed``.
        prepare_error: Raised by `prepare_generation` instead of planning.
    """

    plan: GenerationPlan = field(default_factory=fake_plan)
    latency_s: float = 3.0
    invalid_attempts: set[int] = field(default_factory=set)
    failed_jobs: set[int] = field(default_factory=set)
    prepare_error: ApplicationError | None = None
    calls: list[str] = field(default_factory=list)
    submits: list[SubmitJobInput] = field(default_factory=list)
    polls: list[PollJobInput] = field(default_factory=list)
    releases: list[ReleaseGenerationInput] = field(default_factory=list)
    finalized: list[FinalizeGenerationInput] = field(default_factory=list)
    canceled: list[CancelJobInput] = field(default_factory=list)
    submitted_at: dict[str, datetime] = field(default_factory=dict)
    queues: TaskQueues = field(default_factory=lambda: TaskQueues.for_prefix(uuid.uuid4().hex))

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="prepare_generation")
        async def prepare_generation(input: PrepareGenerationInput) -> GenerationPlan:
            self.calls.append("prepare_generation")
            if self.prepare_error is not None:
                raise self.prepare_error
            return self.plan.model_copy(update={"generation_id": input.generation_id})

        @activity.defn(name="submit_generation_job")
        async def submit_generation_job(input: SubmitJobInput) -> SubmitJobOutput:
            self.calls.append(f"submit[{input.attempt}]")
            job_id = f"job-{input.idempotency_key}"
            if job_id not in self.submitted_at:
                self.submits.append(input)
                self.submitted_at[job_id] = activity.info().current_attempt_scheduled_time
            return SubmitJobOutput(job_id=job_id)

        @activity.defn(name="poll_generation_job")
        async def poll_generation_job(input: PollJobInput) -> PollJobOutput:
            self.polls.append(input)
            now = activity.info().current_attempt_scheduled_time
            elapsed = (now - self.submitted_at[input.job_id]).total_seconds()
            if elapsed < self.latency_s:
                return PollJobOutput(state="running", progress=round(elapsed / self.latency_s, 3))
            if input.attempt in self.failed_jobs:
                return PollJobOutput(state="failed", error="fake provider failure")
            return PollJobOutput(state="succeeded", progress=1.0, cost_usd=0.4)

        @activity.defn(name="download_generation_output")
        async def download_generation_output(input: DownloadOutputInput) -> DownloadOutputOutput:
            self.calls.append(f"download[{input.attempt}]")
            return DownloadOutputOutput(output_key=f"k/{input.attempt}.mp4", size_bytes=50_000)

        @activity.defn(name="validate_generation_output")
        async def validate_generation_output(input: ValidateOutputInput) -> ValidateOutputOutput:
            self.calls.append(f"validate[{input.attempt}]")
            if input.attempt in self.invalid_attempts:
                return ValidateOutputOutput(report=_report(False))
            return ValidateOutputOutput(
                report=_report(True),
                thumbnail_key="k/thumbnail.jpg",
                facts=VideoFacts(
                    duration_s=4.0,
                    width=1280,
                    height=720,
                    has_audio=True,
                    container="mp4",
                    video_codec="h264",
                    audio_codec="aac",
                    size_bytes=50_000,
                ),
            )

        @activity.defn(name="finalize_generation")
        async def finalize_generation(input: FinalizeGenerationInput) -> FinalizeGenerationOutput:
            self.calls.append("finalize_generation")
            self.finalized.append(input)
            return FinalizeGenerationOutput(
                video_id=str(generated_video_id(input.generation_id)), cost_usd=0.4
            )

        @activity.defn(name="release_generation")
        async def release_generation(input: ReleaseGenerationInput) -> ReleaseGenerationOutput:
            self.calls.append("release_generation")
            self.releases.append(input)
            return ReleaseGenerationOutput(cost_usd=0.0)

        @activity.defn(name="cancel_generation_job")
        async def cancel_generation_job(input: CancelJobInput) -> CancelJobOutput:
            self.calls.append(f"cancel[{input.attempt}]")
            self.canceled.append(input)
            return CancelJobOutput(canceled=True)

        return [
            prepare_generation,
            submit_generation_job,
            poll_generation_job,
            download_generation_output,
            validate_generation_output,
            finalize_generation,
            release_generation,
            cancel_generation_job,
            *admit_every_run(),
        ]


# --- the benchmark's baseline -------------------------------------------------------------


@activity.defn(name="probe_activity")
async def probe_activity(input: PrepareGenerationInput) -> PrepareGenerationInput:
    """Does nothing: the cheapest activity a workflow can run."""
    return input


@workflow.defn
class ProbeWorkflow:
    """One activity and nothing else: what any workflow costs at the least.

    The baseline `tests/benchmarks/generation_benchmark.py` measures the generation
    workflow against, started and run the same way.
    """

    @workflow.run
    async def run(self, input: PrepareGenerationInput) -> PrepareGenerationInput:
        queues = TaskQueues.of_workflow_queue(workflow.info().task_queue)
        return await workflow.execute_activity(
            probe_activity,
            input,
            task_queue=queues.providers,
            start_to_close_timeout=timedelta(seconds=30),
        )
