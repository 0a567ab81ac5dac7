"""Replay checked-in histories: a workflow change that would break open runs fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.billing import BillingWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_are_histories_to_replay() -> None:
    assert {path.stem for path in HISTORIES} >= {"billing_subscribed", "billing_grace_expired"}


@pytest.mark.parametrize("history_file", HISTORIES, ids=lambda path: path.stem)
async def test_history_replays_without_nondeterminism(history_file: Path) -> None:
    history = WorkflowHistory.from_json(history_file.stem, history_file.read_text())
    replayer = Replayer(workflows=[BillingWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
