"""OpenAIWhisperTranscriber through the real openai SDK against a local server."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from pydantic import SecretStr

from reelflow.core.provider_errors import (
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
)
from reelflow.core.settings import Settings
from reelflow.ingest.transcription import (
    OpenAIWhisperTranscriber,
    TranscribedSegment,
    build_transcriber,
)
from tests.support.openai_server import (
    FakeOpenAIServer,
    ScriptedResponse,
    openai_error,
    write_silence_wav,
)


def _settings(base_url: str, *, model: str = "whisper-1") -> Settings:
    # Keyword arguments take precedence over the environment and any .env file.
    return Settings(
        transcription_provider="openai",
        openai_api_key=SecretStr("sk-test-key"),
        openai_base_url=base_url,
        openai_transcription_model=model,
    )


@pytest.fixture
def transcriber(fake_openai: FakeOpenAIServer) -> OpenAIWhisperTranscriber:
    built = build_transcriber(_settings(fake_openai.base_url))
    assert isinstance(built, OpenAIWhisperTranscriber)
    return built


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    return write_silence_wav(tmp_path / "segment-0003.wav", seconds=6.0)


def test_uploads_wav_and_returns_offset_segments(
    transcriber: OpenAIWhisperTranscriber, fake_openai: FakeOpenAIServer, wav: Path
) -> None:
    result = transcriber.transcribe(wav, offset_s=360.0)

    assert len(fake_openai.requests) == 1
    sent = fake_openai.requests[0]
    assert sent.path == "/v1/audio/transcriptions"
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert sent.headers["authorization"] == "Bearer sk-test-key"
    assert sent.form["model"] == ["whisper-1"]
    assert sent.form["response_format"] == ["verbose_json"]
    assert sent.form["timestamp_granularities[]"] == ["segment"]
    upload = sent.files["file"]
    assert upload.filename == "segment-0003.wav"
    assert upload.content_type == "audio/wav"
    assert upload.data == wav.read_bytes()

    assert result.segments == [
        TranscribedSegment(start_s=360.0, end_s=362.5, text="Hello and welcome."),
        TranscribedSegment(
            start_s=362.5, end_s=364.75, text="Today we talk about durable pipelines."
        ),
    ]
    assert result.audio_seconds == pytest.approx(6.0)
    assert result.language == "en"
    assert transcriber.model_name == "openai/whisper-1"
    assert transcriber.provider == "openai"


def test_silence_gives_no_segments(
    transcriber: OpenAIWhisperTranscriber, fake_openai: FakeOpenAIServer, wav: Path
) -> None:
    fake_openai.transcription_segments = []
    result = transcriber.transcribe(wav)
    assert result.segments == []
    assert result.audio_seconds == pytest.approx(6.0)


def test_missing_duration_falls_back_to_wav_length(
    transcriber: OpenAIWhisperTranscriber, fake_openai: FakeOpenAIServer, tmp_path: Path
) -> None:
    wav = write_silence_wav(tmp_path / "s.wav", seconds=2.5)
    fake_openai.enqueue(
        ScriptedResponse(200, {"task": "transcribe", "language": "german", "text": "Hallo."})
    )

    result = transcriber.transcribe(wav, offset_s=10.0)

    # No segment list: the text covers the whole file.
    assert result.segments == [TranscribedSegment(start_s=10.0, end_s=12.5, text="Hallo.")]
    assert result.audio_seconds == pytest.approx(2.5)
    assert result.language == "de"


def test_model_comes_from_settings(fake_openai: FakeOpenAIServer, wav: Path) -> None:
    transcriber = build_transcriber(_settings(fake_openai.base_url, model="gpt-4o-transcribe"))
    transcriber.transcribe(wav)
    assert fake_openai.requests[0].form["model"] == ["gpt-4o-transcribe"]


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (429, "rate_limit_exceeded", ProviderTransientError),
        (500, None, ProviderTransientError),
        (401, "invalid_api_key", ProviderPermanentError),
        (400, None, ProviderPermanentError),  # e.g. an unsupported file format
        (413, None, ProviderPermanentError),  # over the 25 MB upload limit
    ],
)
def test_errors_are_classified_with_one_request(
    transcriber: OpenAIWhisperTranscriber,
    fake_openai: FakeOpenAIServer,
    wav: Path,
    status: int,
    code: str | None,
    kind: type[ProviderError],
) -> None:
    error_type = "requests" if status == 429 else "invalid_request_error"
    fake_openai.enqueue(openai_error(status, "request failed", type_=error_type, code=code))

    with pytest.raises(kind) as caught:
        transcriber.transcribe(wav)

    assert caught.value.status_code == status
    assert isinstance(caught.value.__cause__, openai.APIStatusError)
    assert len(fake_openai.requests) == 1
