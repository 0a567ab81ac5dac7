"""`plan_segments`: contiguous windows that cover the audio, with no sliver at the end."""

from __future__ import annotations

import itertools
import math

import pytest

from reelflow.media.ffmpeg import plan_segments


def test_nothing_to_plan() -> None:
    assert plan_segments(0.0, 120.0) == []
    assert plan_segments(-5.0, 120.0) == []


def test_shorter_than_one_window() -> None:
    assert plan_segments(7.25, 120.0) == [(0.0, 7.25)]


def test_exact_multiple() -> None:
    assert plan_segments(360.0, 120.0) == [(0.0, 120.0), (120.0, 240.0), (240.0, 360.0)]


def test_short_tail_joins_the_previous_window() -> None:
    # 23.9 s is under a fifth of 120 s.
    assert plan_segments(263.9, 120.0) == [(0.0, 120.0), (120.0, 263.9)]


def test_tail_of_a_fifth_or_more_is_its_own_window() -> None:
    assert plan_segments(264.0, 120.0) == [(0.0, 120.0), (120.0, 240.0), (240.0, 264.0)]


def test_float_noise_does_not_make_a_sliver() -> None:
    assert plan_segments(0.1 + 0.2, 0.1) == [(0.0, 0.1), (0.1, 0.2), (0.2, 0.3)]


@pytest.mark.parametrize("duration", [0.5, 59.999, 119.0, 121.0, 600.0, 3601.7, 10_800.0])
@pytest.mark.parametrize("segment", [30.0, 120.0, 45.5])
def test_windows_cover_the_duration_contiguously(duration: float, segment: float) -> None:
    windows = plan_segments(duration, segment)

    assert windows[0][0] == 0.0
    assert windows[-1][1] == pytest.approx(duration, abs=1e-3)
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert start == end
    lengths = [end - start for start, end in windows]
    assert all(length > 0 for length in lengths)
    assert all(length < segment * 1.2 + 1e-6 for length in lengths)
    if len(windows) > 1:
        assert lengths[-1] >= segment * 0.2 - 1e-6


def test_mirrors_the_workflow_planner() -> None:
    # Workflow code plans windows with schemas.ingest.plan_windows; both must agree or the
    # transcription windows would not match the audio slices.
    from schemas.ingest import plan_windows

    for duration in (0.04, 1.0, 119.99, 120.0, 143.9, 144.0, 999.123, 7200.5, 10_800.0):
        for segment in (30.0, 60.0, 120.0, 300.0):
            assert plan_segments(duration, segment) == plan_windows(duration, segment)


@pytest.mark.parametrize(
    ("duration", "segment"), [(10.0, 0.0), (10.0, -1.0), (math.nan, 10.0), (math.inf, 10.0)]
)
def test_invalid_arguments(duration: float, segment: float) -> None:
    with pytest.raises(ValueError):
        plan_segments(duration, segment)
