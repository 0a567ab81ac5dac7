"""VeoProvider through the real google-genai SDK against a local server speaking Vertex's
Veo wire format (``predictLongRunning`` / ``fetchPredictOperation``)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from reelflow.core.provider_errors import ProviderPermanentError, ProviderTransientError
from reelflow.generation.providers.base import VideoProvider
from reelflow.generation.providers.veo import VeoProvider, build_veo_client
from tests.generation.helpers import job_request
from tests.generation.providers.fake_http import Answer, FakeHTTPServer, Recorded

MODEL_PATH = "/v1beta1/publishers/google/models/veo-3.0-generate-001"
RESOURCE = "projects/p1/locations/us-central1/publishers/google/models/veo-3.0-generate-001"
OPERATION = f"{RESOURCE}/operations/op1"
VIDEO = b"\x00\x00\x00\x18ftypmp42 veo video bytes"


class FakeVeo:
    """Operations walk through `script` (one step per fetch; the last repeats)."""

    def __init__(self) -> None:
        self.script: list[dict[str, object]] = [
            {"done": False},
            {"done": True, "response": {"@type": "x", "videos": [
                {"bytesBase64Encoded": base64.b64encode(VIDEO).decode(), "mimeType": "video/mp4"}
            ]}},
        ]  # fmt: skip

    def route(self, request: Recorded) -> Answer:
        if request.method == "POST" and request.path == f"{MODEL_PATH}:predictLongRunning":
            return Answer(200, {"name": OPERATION})
        if request.path.endswith(":fetchPredictOperation"):
            step = self.script[0] if len(self.script) == 1 else self.script.pop(0)
            return Answer(200, {"name": OPERATION, **step})
        return _error(404, "NOT_FOUND", f"unknown path {request.path}")


def _error(code: int, status: str, message: str) -> Answer:
    return Answer(code, {"error": {"code": code, "message": message, "status": status}})


@pytest.fixture
def fake() -> FakeVeo:
    return FakeVeo()


@pytest.fixture
def server(fake: FakeVeo) -> Iterator[FakeHTTPServer]:
    with FakeHTTPServer(fake.route) as srv:
        yield srv


@pytest.fixture
def veo(server: FakeHTTPServer) -> VeoProvider:
    return VeoProvider(build_veo_client("test-key", base_url=f"{server.base_url}/"))


def test_is_a_video_provider(veo: VeoProvider) -> None:
    provider: VideoProvider = veo
    assert provider.capabilities.key == "veo/veo-3.0-generate-001"


def test_submit_is_one_request_with_the_parameters(
    veo: VeoProvider, server: FakeHTTPServer
) -> None:
    job_id = veo.submit(
        job_request(prompt="A red fox", duration_s=8, aspect_ratio="9:16", resolution="720p")
    )

    assert job_id == OPERATION
    assert len(server.requests) == 1
    sent = server.requests[0]
    assert (sent.method, sent.path) == ("POST", f"{MODEL_PATH}:predictLongRunning")
    assert sent.headers["x-goog-api-key"] == "test-key"
    assert sent.body == {
        "instances": [{"prompt": "A red fox"}],
        "parameters": {
            "sampleCount": 1,
            "durationSeconds": 8,
            "aspectRatio": "9:16",
            "resolution": "720p",
        },
    }


def test_status_follows_the_operation(veo: VeoProvider, server: FakeHTTPServer) -> None:
    seen = [veo.status(OPERATION) for _ in range(3)]

    assert [s.state for s in seen] == ["running", "succeeded", "succeeded"]
    assert len(server.requests) == 3
    for sent in server.requests:
        assert (sent.method, sent.path) == ("POST", f"/v1beta1/{RESOURCE}:fetchPredictOperation")
        assert sent.body == {"operationName": OPERATION}


def test_failed_operation_carries_the_reason(veo: VeoProvider, fake: FakeVeo) -> None:
    fake.script = [{"done": True, "error": {"code": 3, "message": "prompt blocked"}}]
    status = veo.status(OPERATION)
    assert (status.state, status.error) == ("failed", "3: prompt blocked")
    assert status.terminal


def test_filtered_operation_is_failed(veo: VeoProvider, fake: FakeVeo) -> None:
    fake.script = [
        {"done": True, "response": {"raiMediaFilteredCount": 1,
                                    "raiMediaFilteredReasons": ["unsafe content"]}}
    ]  # fmt: skip
    status = veo.status(OPERATION)
    assert status.state == "failed"
    assert status.error is not None and "unsafe content" in status.error


def test_download_writes_the_inline_video(
    veo: VeoProvider, fake: FakeVeo, server: FakeHTTPServer, tmp_path: Path
) -> None:
    fake.script = fake.script[1:]
    dest = veo.download(OPERATION, tmp_path / "veo.mp4")
    assert dest.read_bytes() == VIDEO
    assert len(server.requests) == 1


def test_download_of_an_unfinished_operation_is_permanent(veo: VeoProvider, tmp_path: Path) -> None:
    with pytest.raises(ProviderPermanentError, match="not done"):
        veo.download(OPERATION, tmp_path / "veo.mp4")
    assert not (tmp_path / "veo.mp4").exists()


def test_rate_limit_is_transient_after_one_request(
    veo: VeoProvider, server: FakeHTTPServer
) -> None:
    server.enqueue(_error(429, "RESOURCE_EXHAUSTED", "quota"))
    with pytest.raises(ProviderTransientError) as caught:
        veo.submit(job_request(duration_s=4, resolution="720p"))
    assert caught.value.status_code == 429
    assert caught.value.provider == "veo"
    assert len(server.requests) == 1


def test_server_error_on_status_is_transient(veo: VeoProvider, server: FakeHTTPServer) -> None:
    server.enqueue(_error(503, "UNAVAILABLE", "try later"))
    with pytest.raises(ProviderTransientError):
        veo.status(OPERATION)
    assert len(server.requests) == 1


def test_bad_request_is_permanent(veo: VeoProvider, server: FakeHTTPServer) -> None:
    server.enqueue(_error(400, "INVALID_ARGUMENT", "bad aspect ratio"))
    with pytest.raises(ProviderPermanentError) as caught:
        veo.submit(job_request(duration_s=4, resolution="720p"))
    assert caught.value.status_code == 400
    assert len(server.requests) == 1


def test_cancel_is_not_supported_and_sends_nothing(
    veo: VeoProvider, server: FakeHTTPServer
) -> None:
    assert veo.cancel(OPERATION) is False
    assert server.requests == []
