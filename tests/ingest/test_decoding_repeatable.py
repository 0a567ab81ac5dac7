"""Local decoding gives the same transcript for the same audio, and nothing for silence."""

from __future__ import annotations

import itertools
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from reelflow.dev.samples import long_script
from reelflow.ingest.transcription import LocalWhisperTranscriber, TranscribedSegment


def _quiet_room(path: Path, seconds: float) -> Path:
    """Room tone: noise at about -50 dBFS, loud enough to pass the silence short-cut."""
    rng = np.random.default_rng(7)
    samples = (rng.standard_normal(int(seconds * 16_000)) * 0.003 * 32768).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16_000)
        wav.writeframes(samples.tobytes())
    return path


def test_five_runs_give_identical_segments(
    speak: Callable[[str, Path], Path], tmp_path: Path
) -> None:
    script = " ".join(itertools.islice(long_script(), 14))
    wav = speak(script, tmp_path / "script.wav")

    runs: list[list[TranscribedSegment]] = []
    for _ in range(4):
        runs.append(LocalWhisperTranscriber().transcribe(wav, offset_s=12.5).segments)
    # One instance decoding twice, as a worker does for retried windows.
    shared = LocalWhisperTranscriber()
    shared.transcribe(wav, offset_s=12.5)
    runs.append(shared.transcribe(wav, offset_s=12.5).segments)

    words = len(" ".join(s.text for s in runs[0]).split())
    assert words >= 0.8 * len(script.split())
    assert all(run == runs[0] for run in runs[1:])


def test_a_silent_minute_yields_no_segment(tmp_path: Path) -> None:
    result = LocalWhisperTranscriber().transcribe(_quiet_room(tmp_path / "room.wav", 60.0))

    assert result.segments == []
    assert result.audio_seconds == pytest.approx(60.0)
