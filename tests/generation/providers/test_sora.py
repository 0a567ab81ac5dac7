"""SoraProvider through the real openai SDK against a local server speaking Sora's wire format."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from reelflow.core.provider_errors import ProviderPermanentError, ProviderTransientError
from reelflow.generation.providers.base import GenerationJobRequest, VideoProvider
from reelflow.generation.providers.sora import SoraProvider
from reelflow.media.validation import ExpectedVideo, validate_video
from tests.generation.helpers import job_request
from tests.generation.providers.fake_http import Answer
from tests.generation.providers.sora_server import FakeSoraServer, openai_error

# The SDK marks its video methods deprecated (OpenAI announced the Sora API's shutdown for
# 2026-09-24); the wire format is what is under test here.
pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")


@pytest.fixture
def sora(sora_client: openai.OpenAI) -> SoraProvider:
    return SoraProvider(sora_client, model="sora-2")


def _request(key: str = "gen-1/attempt-1") -> GenerationJobRequest:
    """A request Sora 2 accepts: 4 s, 16:9, 720p."""
    return job_request(key, duration_s=4, aspect_ratio="16:9", resolution="720p")


def test_is_a_video_provider(sora: SoraProvider) -> None:
    provider: VideoProvider = sora
    assert provider.capabilities.key == "sora/sora-2"


def test_submit_is_one_post_with_the_request(sora: SoraProvider, fake_sora: FakeSoraServer) -> None:
    job_id = sora.submit(job_request("gen-9/attempt-1", prompt="A red fox", duration_s=8,
                                     aspect_ratio="9:16", resolution="720p"))  # fmt: skip

    assert job_id == "video_0001"
    assert len(fake_sora.requests) == 1
    sent = fake_sora.requests[0]
    assert (sent.method, sent.path) == ("POST", "/v1/videos")
    assert sent.headers["authorization"] == "Bearer sk-test-key"
    assert sent.headers["idempotency-key"] == "gen-9/attempt-1"
    assert sent.form == {
        "prompt": "A red fox",
        "model": "sora-2",
        "seconds": "8",
        "size": "720x1280",
    }


def test_fifteen_seconds_and_1080p_reach_the_wire(
    sora_client: openai.OpenAI, fake_sora: FakeSoraServer
) -> None:
    pro = SoraProvider(sora_client, model="sora-2-pro")
    pro.submit(job_request(duration_s=15, aspect_ratio="16:9", resolution="1080p"))
    assert fake_sora.requests[0].form["seconds"] == "15"
    assert fake_sora.requests[0].form["size"] == "1920x1080"
    assert fake_sora.requests[0].form["model"] == "sora-2-pro"


def test_status_follows_the_job_to_completion(
    sora: SoraProvider, fake_sora: FakeSoraServer
) -> None:
    job_id = sora.submit(_request())

    seen = [sora.status(job_id) for _ in range(4)]

    assert [(s.state, s.progress) for s in seen] == [
        ("queued", 0.0),
        ("running", 0.4),
        ("succeeded", 1.0),
        ("succeeded", 1.0),
    ]
    gets = fake_sora.requests_to("GET")
    assert [r.path for r in gets] == [f"/v1/videos/{job_id}"] * 4


def test_failed_job_carries_the_providers_reason(
    sora: SoraProvider, fake_sora: FakeSoraServer
) -> None:
    fake_sora.status_script = [("failed", 12)]
    fake_sora.failure = {"code": "moderation_blocked", "message": "The prompt was blocked."}
    job_id = sora.submit(_request())

    status = sora.status(job_id)

    assert status.state == "failed"
    assert status.error == "moderation_blocked: The prompt was blocked."
    assert status.terminal


def test_download_streams_a_video_that_passes_validation(
    sora: SoraProvider, fake_sora: FakeSoraServer, sora_like_clip: Path, tmp_path: Path
) -> None:
    fake_sora.status_script = [("completed", 100)]
    fake_sora.content = sora_like_clip.read_bytes()
    job_id = sora.submit(_request())

    dest = sora.download(job_id, tmp_path / "sora.mp4")

    assert dest.read_bytes() == fake_sora.content
    content_get = fake_sora.requests[-1]
    assert (content_get.method, content_get.path) == ("GET", f"/v1/videos/{job_id}/content")
    assert content_get.query == {"variant": ["video"]}
    report = validate_video(dest, ExpectedVideo(4, "16:9", "720p"), max_bytes=10**8)
    assert report.passed, report.summary()


def test_download_over_the_limit_is_refused_and_leaves_nothing(
    sora_client: openai.OpenAI, fake_sora: FakeSoraServer, tmp_path: Path
) -> None:
    provider = SoraProvider(sora_client, max_download_bytes=1000)
    fake_sora.status_script = [("completed", 100)]
    fake_sora.content = b"\x00" * 5000
    job_id = provider.submit(_request())

    with pytest.raises(ProviderPermanentError, match="larger than 1000 bytes"):
        provider.download(job_id, tmp_path / "big.mp4")
    assert list(tmp_path.iterdir()) == []


def test_download_before_completion_is_a_permanent_error(
    sora: SoraProvider, fake_sora: FakeSoraServer, tmp_path: Path
) -> None:
    job_id = sora.submit(_request())
    with pytest.raises(ProviderPermanentError) as caught:
        sora.download(job_id, tmp_path / "early.mp4")
    assert caught.value.status_code == 400
    assert not (tmp_path / "early.mp4").exists()


def test_rate_limit_then_success_is_a_caller_level_retry(
    sora: SoraProvider, fake_sora: FakeSoraServer
) -> None:
    fake_sora.enqueue(
        openai_error(429, "Rate limit reached", type_="requests", code="rate_limit_exceeded",
                     headers={"retry-after": "7"})
    )  # fmt: skip

    with pytest.raises(ProviderTransientError) as caught:
        sora.submit(_request())

    # The client was built with max_retries=3; the provider still made one request.
    assert caught.value.status_code == 429
    assert caught.value.retry_after_s == 7.0
    assert isinstance(caught.value.__cause__, openai.RateLimitError)
    assert len(fake_sora.requests_to("POST")) == 1
    assert fake_sora.videos == {}

    job_id = sora.submit(_request())  # the caller's retry

    assert job_id == "video_0001"
    assert len(fake_sora.requests_to("POST")) == 2
    assert len(fake_sora.videos) == 1


@pytest.mark.parametrize(
    ("response", "kind", "status"),
    [
        (openai_error(500, "Internal error", type_="server_error"), ProviderTransientError, 500),
        (openai_error(503, "Overloaded", type_="server_error"), ProviderTransientError, 503),
        (
            openai_error(429, "Quota", type_="insufficient_quota", code="insufficient_quota"),
            ProviderPermanentError,
            429,
        ),
        (openai_error(401, "Bad key", code="invalid_api_key"), ProviderPermanentError, 401),
        (openai_error(404, "No such video", code="video_not_found"), ProviderPermanentError, 404),
    ],
)
def test_status_errors_are_classified_with_one_request(
    sora: SoraProvider,
    fake_sora: FakeSoraServer,
    response: Answer,
    kind: type[Exception],
    status: int,
) -> None:
    job_id = sora.submit(_request())
    fake_sora.enqueue(response)

    with pytest.raises(kind) as caught:
        sora.status(job_id)

    assert getattr(caught.value, "status_code", None) == status
    assert len(fake_sora.requests_to("GET")) == 1


def test_timeout_is_transient(fake_sora: FakeSoraServer) -> None:
    client = openai.OpenAI(api_key="sk-test-key", base_url=fake_sora.base_url, timeout=0.3)
    provider = SoraProvider(client)
    fake_sora.enqueue(Answer(200, {}, delay_s=1.5))

    with pytest.raises(ProviderTransientError, match="timed out"):
        provider.submit(_request())
    assert len(fake_sora.requests) == 1


def test_cancel_deletes_a_finished_job_and_reports_refusals(
    sora: SoraProvider, fake_sora: FakeSoraServer
) -> None:
    running = sora.submit(_request("a"))
    # Still queued: the API refuses to delete it, so the job is not canceled.
    assert sora.cancel(running) is False

    fake_sora.status_script = [("completed", 100)]
    finished = sora.submit(_request("b"))
    assert sora.cancel(finished) is True
    assert finished not in fake_sora.videos
    assert sora.cancel("video_missing") is False

    deletes = fake_sora.requests_to("DELETE")
    assert [r.path for r in deletes] == [
        f"/v1/videos/{running}",
        f"/v1/videos/{finished}",
        "/v1/videos/video_missing",
    ]


def test_cancel_treats_a_state_conflict_as_refusal(
    sora: SoraProvider, fake_sora: FakeSoraServer
) -> None:
    fake_sora.enqueue(openai_error(409, "Video is in progress", code="conflict"))
    assert sora.cancel("video_0001") is False
    assert len(fake_sora.requests) == 1


def test_cancel_raises_on_transient_errors(sora: SoraProvider, fake_sora: FakeSoraServer) -> None:
    fake_sora.enqueue(openai_error(502, "Bad gateway", type_="server_error"))
    with pytest.raises(ProviderTransientError):
        sora.cancel("video_0001")
    assert len(fake_sora.requests) == 1
