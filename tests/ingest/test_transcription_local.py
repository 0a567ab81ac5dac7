"""LocalWhisperTranscriber on synthetic speech (espeak-ng) with the bundled tiny.en model."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reelflow.core.settings import Settings
from reelflow.ingest.transcription import (
    LocalWhisperTranscriber,
    Transcription,
    build_transcriber,
    wav_duration_s,
)
from tests.support.openai_server import write_silence_wav

SENTENCE = "The quick brown fox jumps over the lazy dog. Durable video pipelines run on Temporal."


@pytest.fixture(scope="module")
def transcriber() -> Iterator[LocalWhisperTranscriber]:
    yield LocalWhisperTranscriber()


@pytest.fixture(scope="module")
def speech_wav(
    speak: Callable[[str, Path], Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return speak(SENTENCE, tmp_path_factory.mktemp("speech") / "speech.wav")


@pytest.fixture(scope="module")
def at_zero(transcriber: LocalWhisperTranscriber, speech_wav: Path) -> Transcription:
    return transcriber.transcribe(speech_wav)


def _words(result: Transcription) -> set[str]:
    return set(re.findall(r"[a-z]+", " ".join(s.text for s in result.segments).lower()))


def test_transcribes_key_words(at_zero: Transcription, speech_wav: Path) -> None:
    assert {"quick", "lazy", "dog", "durable", "video", "pipelines", "temporal"} <= _words(at_zero)
    assert at_zero.language == "en"
    assert at_zero.audio_seconds == pytest.approx(wav_duration_s(speech_wav), abs=1e-3)
    for segment in at_zero.segments:
        assert 0.0 <= segment.start_s <= segment.end_s <= at_zero.audio_seconds + 0.5
        assert segment.text == segment.text.strip() and segment.text


def test_times_are_shifted_by_the_offset(
    transcriber: LocalWhisperTranscriber, speech_wav: Path, at_zero: Transcription
) -> None:
    shifted = transcriber.transcribe(speech_wav, offset_s=240.0)

    assert [s.text for s in shifted.segments] == [s.text for s in at_zero.segments]
    for moved, original in zip(shifted.segments, at_zero.segments, strict=True):
        assert moved.start_s == pytest.approx(original.start_s + 240.0)
        assert moved.end_s == pytest.approx(original.end_s + 240.0)
    assert shifted.audio_seconds == pytest.approx(at_zero.audio_seconds)


def test_silence_gives_no_segments(transcriber: LocalWhisperTranscriber, tmp_path: Path) -> None:
    result = transcriber.transcribe(write_silence_wav(tmp_path / "quiet.wav", 5.0), offset_s=30.0)
    assert result.segments == []
    assert result.audio_seconds == pytest.approx(5.0)


def test_empty_wav_gives_no_segments(transcriber: LocalWhisperTranscriber, tmp_path: Path) -> None:
    result = transcriber.transcribe(write_silence_wav(tmp_path / "empty.wav", 0.0))
    assert result.segments == []
    assert result.audio_seconds == 0.0


def test_other_wav_formats_are_resampled(
    transcriber: LocalWhisperTranscriber,
    speak: Callable[[str, Path], Path],
    tmp_path: Path,
) -> None:
    speak("Video pipelines", tmp_path / "ignored.wav")
    native = tmp_path / "ignored.espeak.wav"  # espeak-ng writes 22.05 kHz
    result = transcriber.transcribe(native)
    assert {"video", "pipelines"} <= _words(result)


def test_built_from_settings() -> None:
    built = build_transcriber(
        Settings(transcription_provider="local", local_whisper_compute_type="float32")
    )
    assert isinstance(built, LocalWhisperTranscriber)
    assert built.compute_type == "float32"
    assert built.model_name == "local/tiny.en"
    assert built.provider == "local"


def test_concurrent_calls_share_one_model(
    transcriber: LocalWhisperTranscriber, speech_wav: Path, at_zero: Transcription
) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda o: transcriber.transcribe(speech_wav, offset_s=o), [0, 0]))
    for result in results:
        assert [s.text for s in result.segments] == [s.text for s in at_zero.segments]
