"""Replay checked-in histories: a workflow change that would break open runs fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.generation import GenerationWorkflow
from workflows.improve import ImproveWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_are_histories_to_replay() -> None:
    assert {path.stem for path in HISTORIES} >= {
        "improve_completed",
        "improve_completed_generation",
        "improve_child_failed",
        "improve_child_failed_generation",
        "improve_canceled",
        "improve_canceled_generation",
        "improve_approved_in_advance",
        "improve_approved_in_advance_generation",
    }


@pytest.mark.parametrize("history_file", HISTORIES, ids=lambda path: path.stem)
async def test_history_replays_without_nondeterminism(history_file: Path) -> None:
    history = WorkflowHistory.from_json(history_file.stem, history_file.read_text())
    replayer = Replayer(
        workflows=[ImproveWorkflow, GenerationWorkflow],
        data_converter=pydantic_data_converter,
    )
    await replayer.replay_workflow(history)
