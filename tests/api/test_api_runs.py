"""`/v1/runs/{workflow_id}`: inspect, retry and cancel, only for the run's own tenant."""

from __future__ import annotations

import httpx
from temporalio.client import Client

from tests.api.api_support import TenantKey, assert_error


async def start_run(api: httpx.AsyncClient, tenant: TenantKey) -> tuple[str, str]:
    response = await api.post(
        "/v1/videos",
        headers=tenant.headers,
        data={"title": "run me"},
        files={"file": ("r.mp4", b"bytes", "video/mp4")},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    return body["video_id"], body["workflow_id"]


async def test_get_run_shows_the_ingest_run(
    api: httpx.AsyncClient, alice: TenantKey, temporal: Client
) -> None:
    video_id, workflow_id = await start_run(api, alice)
    response = await api.get(f"/v1/runs/{workflow_id}", headers=alice.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    description = await temporal.get_workflow_handle(workflow_id).describe()
    assert body["workflow_id"] == workflow_id
    assert body["run_id"] == description.run_id
    assert (body["pipeline"], body["status"], body["stage"]) == ("ingest", "running", "queued")
    assert body["tenant_id"] == str(alice.tenant_id)
    assert body["video_id"] == video_id
    assert workflow_id in body["ui_url"]


async def test_runs_of_another_tenant_are_404(
    api: httpx.AsyncClient, alice: TenantKey, bob: TenantKey, temporal: Client
) -> None:
    _, workflow_id = await start_run(api, alice)
    assert_error(await api.get(f"/v1/runs/{workflow_id}", headers=bob.headers), 404, "not_found")
    assert_error(
        await api.post(f"/v1/runs/{workflow_id}/retry", headers=bob.headers), 404, "not_found"
    )
    assert_error(
        await api.post(f"/v1/runs/{workflow_id}/cancel", headers=bob.headers), 404, "not_found"
    )
    # Bob's cancel did not reach Alice's run.
    description = await temporal.get_workflow_handle(workflow_id).describe()
    assert description.raw_description.workflow_execution_info.status == 1  # RUNNING
    history = [e async for e in temporal.get_workflow_handle(workflow_id).fetch_history_events()]
    assert not any(
        e.HasField("workflow_execution_cancel_requested_event_attributes") for e in history
    )


async def test_unknown_run_is_404(api: httpx.AsyncClient, alice: TenantKey) -> None:
    assert_error(await api.get("/v1/runs/ingest-nope", headers=alice.headers), 404, "not_found")
    assert_error(
        await api.post("/v1/runs/ingest-nope/retry", headers=alice.headers), 404, "not_found"
    )
    assert_error(
        await api.post("/v1/runs/ingest-nope/cancel", headers=alice.headers), 404, "not_found"
    )


async def test_running_run_is_not_retryable(api: httpx.AsyncClient, alice: TenantKey) -> None:
    _, workflow_id = await start_run(api, alice)
    response = await api.post(f"/v1/runs/{workflow_id}/retry", headers=alice.headers)
    assert_error(response, 409, "not_retryable")


async def test_cancel_records_a_cancel_request(
    api: httpx.AsyncClient, alice: TenantKey, temporal: Client
) -> None:
    _, workflow_id = await start_run(api, alice)
    response = await api.post(f"/v1/runs/{workflow_id}/cancel", headers=alice.headers)
    assert response.status_code == 202
    assert response.json() == {
        "workflow_id": workflow_id,
        "run_id": None,
        "status": "cancel_requested",
    }
    history = [e async for e in temporal.get_workflow_handle(workflow_id).fetch_history_events()]
    assert any(e.HasField("workflow_execution_cancel_requested_event_attributes") for e in history)


async def test_terminated_run_can_be_retried_as_a_new_run(
    api: httpx.AsyncClient, alice: TenantKey, temporal: Client
) -> None:
    _, workflow_id = await start_run(api, alice)
    handle = temporal.get_workflow_handle(workflow_id)
    first_run = (await handle.describe()).run_id
    await handle.terminate("operator stopped it")

    response = await api.post(f"/v1/runs/{workflow_id}/retry", headers=alice.headers)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["workflow_id"] == workflow_id
    assert body["status"] == "running"
    assert body["run_id"] and body["run_id"] != first_run
    latest = await temporal.get_workflow_handle(workflow_id).describe()
    assert latest.run_id == body["run_id"]
