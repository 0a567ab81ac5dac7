"""RunwayProvider over httpx against a local server speaking Runway's task API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reelflow.core.provider_errors import ProviderPermanentError, ProviderTransientError
from reelflow.core.settings import Settings
from reelflow.generation.providers.base import VideoProvider
from reelflow.generation.providers.runway import RunwayProvider
from reelflow.generation.routing import build_provider_registry
from tests.generation.helpers import job_request
from tests.generation.providers.fake_http import Answer, FakeHTTPServer, Recorded

VIDEO = b"\x00\x00\x00\x18ftypmp42 runway video bytes"


class FakeRunway:
    """Tasks walk through `script` (one step per GET; the last repeats)."""

    def __init__(self) -> None:
        self.base_url = ""
        self.script: list[dict[str, object]] = [
            {"status": "PENDING"},
            {"status": "THROTTLED"},
            {"status": "RUNNING", "progress": 0.4},
            {"status": "SUCCEEDED", "output": ["{base}/cdn/task-1.mp4"]},
        ]
        self.deleted: list[str] = []

    def route(self, request: Recorded) -> Answer:
        if request.path == "/cdn/task-1.mp4" and request.method == "GET":
            return Answer(200, VIDEO)
        if request.headers.get("authorization") != "Bearer rw-key":
            return Answer(401, {"error": "Unauthorized"})
        if request.method == "POST" and request.path == "/v1/text_to_video":
            return Answer(200, {"id": "task-1"})
        if request.path == "/v1/tasks/task-1":
            if request.method == "DELETE":
                self.deleted.append("task-1")
                return Answer(204)
            step = self.script[0] if len(self.script) == 1 else self.script.pop(0)
            output = step.get("output")
            if isinstance(output, list):
                step = {**step, "output": [u.format(base=self.base_url) for u in output]}
            return Answer(200, {"id": "task-1", "createdAt": "2025-01-01T00:00:00Z", **step})
        return Answer(404, {"error": "Task not found"})


@pytest.fixture
def fake() -> FakeRunway:
    return FakeRunway()


@pytest.fixture
def server(fake: FakeRunway) -> Iterator[FakeHTTPServer]:
    srv = FakeHTTPServer(fake.route)
    fake.base_url = srv.base_url
    with srv:
        yield srv


@pytest.fixture
def runway(server: FakeHTTPServer) -> Iterator[RunwayProvider]:
    with httpx.Client(timeout=10.0) as http:
        yield RunwayProvider(http, "rw-key", base_url=server.base_url)


def test_is_a_video_provider(runway: RunwayProvider) -> None:
    provider: VideoProvider = runway
    assert provider.capabilities.key == "runway/gen4_turbo"


def test_submit_is_one_post_with_the_request(
    runway: RunwayProvider, server: FakeHTTPServer
) -> None:
    job_id = runway.submit(
        job_request("gen-3/attempt-1", prompt="A red fox", duration_s=10,
                    aspect_ratio="9:16", resolution="720p")
    )  # fmt: skip

    assert job_id == "task-1"
    assert len(server.requests) == 1
    sent = server.requests[0]
    assert (sent.method, sent.path) == ("POST", "/v1/text_to_video")
    assert sent.headers["authorization"] == "Bearer rw-key"
    assert sent.headers["x-runway-version"] == "2024-11-06"
    assert sent.headers["idempotency-key"] == "gen-3/attempt-1"
    assert sent.body == {
        "model": "gen4_turbo",
        "promptText": "A red fox",
        "ratio": "720:1280",
        "duration": 10,
    }


def test_status_maps_runway_states(runway: RunwayProvider, server: FakeHTTPServer) -> None:
    seen = [runway.status("task-1") for _ in range(5)]

    assert [(s.state, s.progress) for s in seen] == [
        ("queued", None),
        ("queued", None),
        ("running", 0.4),
        ("succeeded", 1.0),
        ("succeeded", 1.0),
    ]
    assert [(r.method, r.path) for r in server.requests] == [("GET", "/v1/tasks/task-1")] * 5


def test_failed_and_cancelled_tasks(runway: RunwayProvider, fake: FakeRunway) -> None:
    fake.script = [{"status": "FAILED", "failure": "Content moderated", "failureCode": "SAFETY"}]
    failed = runway.status("task-1")
    assert (failed.state, failed.error) == ("failed", "SAFETY: Content moderated")
    fake.script = [{"status": "CANCELLED"}]
    assert runway.status("task-1").state == "canceled"


def test_download_writes_the_output(
    runway: RunwayProvider, fake: FakeRunway, server: FakeHTTPServer, tmp_path: Path
) -> None:
    fake.script = fake.script[-1:]

    dest = runway.download("task-1", tmp_path / "runway.mp4")

    assert dest.read_bytes() == VIDEO
    assert [(r.method, r.path) for r in server.requests] == [
        ("GET", "/v1/tasks/task-1"),
        ("GET", "/cdn/task-1.mp4"),
    ]
    # The signed output URL is not Runway's API: the key must not travel there.
    assert "authorization" not in server.requests[1].headers


def test_download_before_success_is_permanent(runway: RunwayProvider, tmp_path: Path) -> None:
    with pytest.raises(ProviderPermanentError, match="no output"):
        runway.download("task-1", tmp_path / "runway.mp4")
    assert not (tmp_path / "runway.mp4").exists()


def test_oversized_download_is_permanent(
    server: FakeHTTPServer, fake: FakeRunway, tmp_path: Path
) -> None:
    fake.script = fake.script[-1:]
    with httpx.Client(timeout=10.0) as http:
        small = RunwayProvider(http, "rw-key", base_url=server.base_url, max_download_bytes=8)
        with pytest.raises(ProviderPermanentError, match="larger than 8 bytes"):
            small.download("task-1", tmp_path / "runway.mp4")
    assert list(tmp_path.iterdir()) == []


def test_rate_limit_is_transient_after_one_request(
    runway: RunwayProvider, server: FakeHTTPServer
) -> None:
    server.enqueue(Answer(429, {"error": "Too many requests"}, {"retry-after": "7"}))
    with pytest.raises(ProviderTransientError) as caught:
        runway.submit(job_request(duration_s=5, resolution="720p"))
    assert caught.value.status_code == 429
    assert caught.value.retry_after_s == 7.0
    assert caught.value.provider == "runway"
    assert len(server.requests) == 1


def test_server_error_is_transient(runway: RunwayProvider, server: FakeHTTPServer) -> None:
    server.enqueue(Answer(502, {"error": "Bad gateway"}))
    with pytest.raises(ProviderTransientError):
        runway.status("task-1")
    assert len(server.requests) == 1


def test_bad_request_is_permanent(runway: RunwayProvider, server: FakeHTTPServer) -> None:
    server.enqueue(Answer(400, {"error": "Invalid ratio"}))
    with pytest.raises(ProviderPermanentError, match="Invalid ratio") as caught:
        runway.submit(job_request(duration_s=5, resolution="1080p"))
    assert caught.value.status_code == 400
    assert len(server.requests) == 1


def test_connection_failure_is_transient() -> None:
    with httpx.Client(timeout=2.0) as http:
        dead = RunwayProvider(http, "rw-key", base_url="http://127.0.0.1:9")
        with pytest.raises(ProviderTransientError):
            dead.status("task-1")


def test_cancel(runway: RunwayProvider, fake: FakeRunway, server: FakeHTTPServer) -> None:
    assert runway.cancel("task-1") is True
    assert fake.deleted == ["task-1"]
    assert server.requests[-1].method == "DELETE"
    assert runway.cancel("task-unknown") is False
    assert len(server.requests) == 2


def test_registered_only_with_their_keys(tmp_path: Path) -> None:
    bare = build_provider_registry(Settings(reelflow_home=tmp_path))
    assert "runway" not in bare.providers
    assert "veo" not in bare.providers
    keyed = build_provider_registry(
        Settings(reelflow_home=tmp_path, runway_api_key="rw-key", gemini_api_key="g-key")
    )
    assert isinstance(keyed.get("runway", "gen4_turbo"), RunwayProvider)
    assert keyed.get("veo", "veo-3.0-generate-001").capabilities.provider == "veo"
