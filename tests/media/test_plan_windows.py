"""Transcription windows (`schemas.ingest.plan_windows`) cover the audio that gets sliced.

The workflow plans windows with `plan_windows`; `transcribe_window` cuts each one out of the
extracted WAV with `read_wav_segment`. These were the guarantees of the old, unused
`plan_segments` twin, kept on the planner the workflow really calls.
"""

from __future__ import annotations

import itertools
import wave
from pathlib import Path

import pytest

from reelflow.media.ffmpeg import read_wav_segment, wav_duration
from schemas.ingest import plan_windows


def test_nothing_to_plan() -> None:
    assert plan_windows(0.0, 120.0) == []
    assert plan_windows(-5.0, 120.0) == []


def test_shorter_than_one_window() -> None:
    assert plan_windows(7.25, 120.0) == [(0.0, 7.25)]


def test_exact_multiple() -> None:
    assert plan_windows(360.0, 120.0) == [(0.0, 120.0), (120.0, 240.0), (240.0, 360.0)]


def test_short_tail_joins_the_previous_window() -> None:
    # 23.9 s is under a fifth of 120 s.
    assert plan_windows(263.9, 120.0) == [(0.0, 120.0), (120.0, 263.9)]


def test_tail_of_a_fifth_or_more_is_its_own_window() -> None:
    assert plan_windows(264.0, 120.0) == [(0.0, 120.0), (120.0, 240.0), (240.0, 264.0)]


def test_float_noise_does_not_make_a_sliver() -> None:
    assert plan_windows(0.1 + 0.2, 0.1) == [(0.0, 0.1), (0.1, 0.2), (0.2, 0.3)]


@pytest.mark.parametrize("duration", [0.5, 59.999, 119.0, 121.0, 600.0, 3601.7, 10_800.0])
@pytest.mark.parametrize("segment", [30.0, 120.0, 45.5])
def test_windows_cover_the_duration_contiguously(duration: float, segment: float) -> None:
    windows = plan_windows(duration, segment)

    assert windows[0][0] == 0.0
    assert windows[-1][1] == pytest.approx(duration, abs=1e-3)
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert start == end
    lengths = [end - start for start, end in windows]
    assert all(length > 0 for length in lengths)
    assert all(length < segment * 1.2 + 1e-6 for length in lengths)
    if len(windows) > 1:
        assert lengths[-1] >= segment * 0.2 - 1e-6


@pytest.mark.parametrize("segment", [0.0, -1.0])
def test_a_window_length_must_be_positive(segment: float) -> None:
    with pytest.raises(ValueError):
        plan_windows(10.0, segment)


def test_sliced_windows_add_up_to_the_whole_audio(tmp_path: Path) -> None:
    # 10.3 s at 8 kHz in 2 s windows: the 0.3 s tail joins the last window.
    rate, seconds = 8000, 10.3
    source = tmp_path / "audio.wav"
    with wave.open(str(source), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x01\x00" * round(rate * seconds))

    windows = plan_windows(seconds, 2.0)
    sliced = [
        read_wav_segment(source, start, end, tmp_path / f"window-{index}.wav")
        for index, (start, end) in enumerate(windows)
    ]

    assert len(windows) == 5
    assert sum(sliced) == pytest.approx(wav_duration(source), abs=1 / rate)
