"""Replay checked-in generation histories: a change that would break open runs fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.generation import GenerationWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_are_histories_to_replay() -> None:
    assert {path.stem for path in HISTORIES} >= {
        "generation_completed",
        "generation_fallback",
        "generation_continued_run0",
        "generation_continued_run1",
        "generation_approved",
        "generation_rejected",
        "generation_approval_timed_out",
        "generation_quota_refused",
        "generation_canceled",
    }


@pytest.mark.parametrize("history_file", HISTORIES, ids=lambda path: path.stem)
async def test_history_replays_without_nondeterminism(history_file: Path) -> None:
    history = WorkflowHistory.from_json(history_file.stem, history_file.read_text())
    replayer = Replayer(workflows=[GenerationWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
