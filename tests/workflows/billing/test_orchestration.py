"""BillingWorkflow's orchestration over stand-in activities."""

from __future__ import annotations

from temporalio.testing import WorkflowEnvironment

from tests.workflows.billing.fakes import FakeBilling
from tests.workflows.billing.scenarios import SCENARIOS, run_scenario


async def test_copies_of_a_signal_reach_the_activity_once(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    fake = FakeBilling()
    events = SCENARIOS["billing_subscribed"](fake.tenant_id)
    _, state = await run_scenario(time_skipping_env, fake, events, copies=3)
    assert state.plan == "pro"
    assert fake.calls == [f"apply:{e.event_id}" for e in sorted(events, key=lambda e: e.created)]


async def test_the_grace_timer_asks_once_and_the_run_then_ends(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    fake = FakeBilling()
    events = SCENARIOS["billing_grace_expired"](fake.tenant_id)
    _, state = await run_scenario(time_skipping_env, fake, events)
    assert state.plan == "free"
    assert fake.calls.count("expire") == 1
