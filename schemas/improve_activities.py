"""The improvement run's activities as its workflow calls them (see `schemas/contracts.py`).

All of them are database or provider steps on the providers pool: the generation itself
runs as a child `GenerationWorkflow`, whose own activities go where its contracts say.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from schemas.contracts import (
    DATABASE_DEADLINE,
    DATABASE_RETRY,
    DATABASE_TIMEOUT,
    PROVIDER_RETRY,
    ActivityContract,
    Pool,
    WorkflowContract,
)
from schemas.improvement import (
    AdmitGenerationOutput,
    FinishImprovementInput,
    FinishImprovementOutput,
    ImproveInput,
    ImprovementStepInput,
    ImproveResult,
    LinkVersionInput,
    LinkVersionOutput,
    LoadInsightsOutput,
    PreApproveInput,
    PreApproveOutput,
    WritePromptOutput,
)

IMPROVE_WORKFLOW = WorkflowContract(
    name="ImproveWorkflow",
    input=ImproveInput,
    output=ImproveResult,
    id_prefix="improve-",
    pipeline="improve",
)

LOAD_IMPROVEMENT_INSIGHTS = ActivityContract(
    name="load_improvement_insights",
    input=ImprovementStepInput,
    output=LoadInsightsOutput,
    pool=Pool.PROVIDERS,
    start_to_close=timedelta(minutes=3),
    heartbeat=timedelta(seconds=30),
    retry=PROVIDER_RETRY,
)
"""The video's insights (cached, or generated now by the configured analyst), snapshotted on
the improvement row."""

WRITE_IMPROVED_PROMPT = ActivityContract(
    name="write_improved_prompt",
    input=ImprovementStepInput,
    output=WritePromptOutput,
    pool=Pool.PROVIDERS,
    start_to_close=timedelta(minutes=3),
    heartbeat=timedelta(seconds=30),
    retry=PROVIDER_RETRY,
)
"""The original's prompt, script or transcript plus the insights → the improved prompt."""

ADMIT_IMPROVEMENT_GENERATION = ActivityContract(
    name="admit_improvement_generation",
    input=ImprovementStepInput,
    output=AdmitGenerationOutput,
    pool=Pool.PROVIDERS,
    start_to_close=DATABASE_TIMEOUT,
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)
"""The generation row and its quota reservation, written as `POST /v1/generations` does."""

PRE_APPROVE_GENERATION = ActivityContract(
    name="pre_approve_generation",
    input=PreApproveInput,
    output=PreApproveOutput,
    pool=Pool.PROVIDERS,
    start_to_close=timedelta(seconds=30),
    retry=PROVIDER_RETRY,
)
"""Send the child generation the `approve` update the caller gave in advance."""

LINK_IMPROVED_VERSION = ActivityContract(
    name="link_improved_version",
    input=LinkVersionInput,
    output=LinkVersionOutput,
    pool=Pool.PROVIDERS,
    start_to_close=DATABASE_TIMEOUT,
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)

FINISH_IMPROVEMENT = ActivityContract(
    name="finish_improvement",
    input=FinishImprovementInput,
    output=FinishImprovementOutput,
    pool=Pool.PROVIDERS,
    start_to_close=DATABASE_TIMEOUT,
    schedule_to_close=DATABASE_DEADLINE,
    retry=DATABASE_RETRY,
)

IMPROVE_ACTIVITIES: tuple[ActivityContract[Any, Any], ...] = (
    LOAD_IMPROVEMENT_INSIGHTS,
    WRITE_IMPROVED_PROMPT,
    ADMIT_IMPROVEMENT_GENERATION,
    PRE_APPROVE_GENERATION,
    LINK_IMPROVED_VERSION,
    FINISH_IMPROVEMENT,
)
"""Every activity of the improvement run (all on the providers pool)."""
