"""Transcription windows cut at the silences between speech, on real espeak audio."""

from __future__ import annotations

import itertools
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from reelflow.dev.samples import long_script
from reelflow.ingest.speech_plan import SpeechPlan, plan_speech, plan_speech_windows
from reelflow.ingest.transcription import read_pcm16_mono

_PAUSE_S = 1.5


def _contiguous(windows: list[tuple[float, float]], duration_s: float) -> bool:
    return (
        windows[0][0] == 0.0
        and windows[-1][1] == pytest.approx(duration_s, abs=1e-3)
        and all(a[1] == b[0] for a, b in itertools.pairwise(windows))
    )


@pytest.fixture(scope="module")
def spoken(
    speak: Callable[[str, Path], Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[tuple[float, float]]]:
    """Sixteen sentences with 1.5 s pauses, and when each one is spoken."""
    workdir = tmp_path_factory.mktemp("plan")
    pause = np.zeros(int(_PAUSE_S * 16_000), dtype=np.float32)
    pieces, times, at = [pause], [], _PAUSE_S
    script = iter(long_script())
    for index in range(16):
        samples = read_pcm16_mono(speak(next(script), workdir / f"s{index}.wav"))
        assert samples is not None
        pieces += [samples, pause]
        times.append((at, at + len(samples) / 16_000))
        at += len(samples) / 16_000 + _PAUSE_S
    wav_path = workdir / "script.wav"
    with wave.open(str(wav_path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16_000)
        wav.writeframes((np.concatenate(pieces) * 32767).astype("<i2").tobytes())
    return wav_path, times


def test_no_window_boundary_falls_inside_a_sentence(
    spoken: tuple[Path, list[tuple[float, float]]],
) -> None:
    wav_path, sentences = spoken
    plan = plan_speech(wav_path, target_s=15.0)

    assert len(plan.windows) >= 3
    assert _contiguous(plan.windows, plan.audio_duration_s)
    for _, boundary in plan.windows[:-1]:
        inside = [(s, e) for s, e in sentences if s - 0.05 < boundary < e + 0.05]
        assert inside == [], f"boundary {boundary} cuts {inside}"
    # Near the target, for parallelism: pauses come every few seconds.
    assert all(7.5 <= end - start <= 22.5 for start, end in plan.windows[:-1])
    # Every sentence lies in voiced regions.
    for start, end in sentences:
        assert any(a <= start + 0.2 and end - 0.2 <= b for a, b in plan.voiced)


def test_the_plan_is_the_same_every_time_and_survives_storage(
    spoken: tuple[Path, list[tuple[float, float]]],
) -> None:
    first = plan_speech(spoken[0], target_s=15.0)
    again = plan_speech(spoken[0], target_s=15.0)

    assert again == first
    assert SpeechPlan.from_json(first.to_json()) == first


def test_silence_is_cut_at_the_target_and_a_long_talk_at_its_pauses() -> None:
    assert plan_speech_windows([], 600.0, 120.0) == [
        (0.0, 120.0),
        (120.0, 240.0),
        (240.0, 360.0),
        (360.0, 480.0),
        (480.0, 600.0),
    ]
    # Speech from 100 s to 150 s covers the target: the boundary moves to the nearest pause.
    voiced = [(2.0, 98.0), (100.0, 150.0), (152.0, 250.0)]
    windows = plan_speech_windows(voiced, 250.0, 120.0)
    assert windows == [(0.0, 99.0), (99.0, 250.0)]


def test_a_two_hour_plan_stays_small() -> None:
    # A pause every 9 s for two hours: the windows, not the regions, reach the workflow.
    voiced = [(t + 0.5, t + 8.0) for t in range(0, 7200, 9)]
    windows = plan_speech_windows(voiced, 7200.0, 120.0)

    assert 50 <= len(windows) <= 70
    assert _contiguous(windows, 7200.0)
    assert len(str(windows)) < 4096
