"""The submit template every remote provider shares, on a scripted provider and the real three."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from reelflow.core.provider_errors import (
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
)
from reelflow.generation.capabilities import UnsupportedRequest
from reelflow.generation.providers.base import (
    GenerationJobRequest,
    JobStatus,
    RemoteVideoProvider,
)
from reelflow.generation.providers.runway import RunwayProvider
from reelflow.generation.providers.sora import SoraProvider
from reelflow.generation.providers.veo import VeoProvider, build_veo_client
from tests.generation.helpers import job_request
from tests.generation.providers.fake_http import Answer, FakeHTTPServer

VEO_REQUEST = job_request(duration_s=4, resolution="720p")


class WireError(Exception):
    """What the scripted provider's "SDK" raises."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class ScriptedProvider(RemoteVideoProvider):
    """Veo's capabilities over a wire that answers `answer` (or raises it)."""

    provider = "veo"
    wire_errors = (WireError,)

    def __init__(self, answer: object = "job-1", *, max_download_bytes: int = 1000) -> None:
        super().__init__(max_download_bytes=max_download_bytes)
        self.answer = answer
        self.sent: list[GenerationJobRequest] = []

    def _start_job(self, request: GenerationJobRequest) -> object:
        self.sent.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def _classify(self, exc: Exception, what: str) -> ProviderError:
        assert isinstance(exc, WireError)
        if exc.status == 429:
            return ProviderTransientError(
                f"busy during {what}", provider=self.provider, status_code=429, retry_after_s=3.0
            )
        return ProviderPermanentError(
            f"refused during {what}", provider=self.provider, status_code=exc.status
        )

    def status(self, job_id: str) -> JobStatus:
        return JobStatus(state=self._job_state(job_id, self.answer, {"DONE": "succeeded"}))

    def download(self, job_id: str, dest: Path) -> Path:
        return self._write_video(job_id, dest, [b"abc", b"defg"])

    def cancel(self, job_id: str) -> bool:
        return False


def test_submit_checks_sends_once_and_returns_the_job_id(caplog: pytest.LogCaptureFixture) -> None:
    provider = ScriptedProvider()
    with caplog.at_level(logging.INFO, logger="reelflow.generation.providers.base"):
        assert provider.submit(VEO_REQUEST) == "job-1"
    assert provider.sent == [VEO_REQUEST]
    assert "veo job job-1 submitted (veo-3.0-generate-001)" in caplog.text


@pytest.mark.parametrize("answer", [None, "", 42])
def test_an_accepted_request_without_a_job_id_is_permanent(answer: object) -> None:
    with pytest.raises(ProviderPermanentError, match="named no job"):
        ScriptedProvider(answer).submit(VEO_REQUEST)


def test_wire_errors_are_classified_with_retry_after_and_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wire = WireError(429)
    with pytest.raises(ProviderTransientError) as caught:
        ScriptedProvider(wire).submit(VEO_REQUEST)
    assert (caught.value.status_code, caught.value.retry_after_s) == (429, 3.0)
    assert caught.value.__cause__ is wire
    assert "veo submit failed: ProviderTransientError (status 429)" in caplog.text

    with pytest.raises(ProviderPermanentError, match="refused during submit"):
        ScriptedProvider(WireError(400)).submit(VEO_REQUEST)


def test_provider_errors_and_bugs_pass_through_unchanged() -> None:
    already = ProviderPermanentError("classified by the provider", provider="veo")
    with pytest.raises(ProviderPermanentError) as caught:
        ScriptedProvider(already).submit(VEO_REQUEST)
    assert caught.value is already
    # Not one of the SDK's errors: a bug, which no retry policy should see as a provider's.
    with pytest.raises(KeyError):
        ScriptedProvider(KeyError("bug")).submit(VEO_REQUEST)


def test_unknown_states_read_as_running(caplog: pytest.LogCaptureFixture) -> None:
    assert ScriptedProvider("DONE").status("job-1").state == "succeeded"
    assert ScriptedProvider("WARMING_UP").status("job-1").state == "running"
    assert "veo job job-1 has unknown status 'WARMING_UP'" in caplog.text


def test_download_is_atomic_and_limited(tmp_path: Path) -> None:
    dest = ScriptedProvider().download("job-1", tmp_path / "out.mp4")
    assert dest.read_bytes() == b"abcdefg"

    small = ScriptedProvider(max_download_bytes=5)
    with pytest.raises(ProviderPermanentError, match="larger than 5 bytes"):
        small.download("job-1", tmp_path / "big.mp4")
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


# --- the real providers: nothing reaches the wire for a request the model cannot make -----


@pytest.fixture
def server() -> Iterator[FakeHTTPServer]:
    with FakeHTTPServer(lambda request: Answer(500, {"error": "nothing should arrive"})) as srv:
        yield srv


def _sora(base_url: str, _: httpx.Client) -> SoraProvider:
    return SoraProvider(openai.OpenAI(api_key="sk-test", base_url=f"{base_url}/v1"))


def _veo(base_url: str, _: httpx.Client) -> VeoProvider:
    return VeoProvider(build_veo_client("test-key", base_url=f"{base_url}/"))


def _runway(base_url: str, http: httpx.Client) -> RunwayProvider:
    return RunwayProvider(http, "rw-key", base_url=base_url)


@pytest.mark.parametrize(
    ("build", "good", "bad_duration", "allowed"),
    [
        (_sora, 4, 5, "4, 8, 12, 15"),
        (_veo, 4, 5, "4, 6, 8"),
        (_runway, 5, 4, "5, 10"),
    ],
    ids=["sora", "veo", "runway"],
)
def test_every_remote_provider_refuses_before_sending(
    server: FakeHTTPServer,
    build: Callable[[str, httpx.Client], RemoteVideoProvider],
    good: int,
    bad_duration: int,
    allowed: str,
) -> None:
    with httpx.Client(timeout=5.0) as http:
        provider = build(server.base_url, http)
    with pytest.raises(UnsupportedRequest, match=f"allowed: {allowed}"):
        provider.submit(job_request(duration_s=bad_duration, resolution="720p"))
    with pytest.raises(UnsupportedRequest, match="resolution '4k' is not supported"):
        provider.submit(job_request(duration_s=good, resolution="4k"))
    with pytest.raises(ValueError, match="prompt"):
        provider.submit(job_request(prompt="  ", duration_s=good, resolution="720p"))
    assert server.requests == []
