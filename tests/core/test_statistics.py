"""Median, MAD, robust z and ratio-to-median on values small enough to check by hand."""

from __future__ import annotations

import math

import pytest

from reelflow.core.statistics import (
    MAD_TO_Z,
    median,
    median_absolute_deviation,
    ratio_to_median,
    robust_z,
)


def test_median_odd_even_and_unsorted() -> None:
    assert median([5, 1, 3]) == 3.0
    assert median([4, 1, 3, 2]) == 2.5
    assert median([7]) == 7.0
    assert median([2, 2, 2, 9]) == 2.0


def test_median_of_nothing_is_an_error_not_nan() -> None:
    with pytest.raises(ValueError):
        median([])
    with pytest.raises(ValueError):
        median_absolute_deviation([])
    with pytest.raises(ValueError):
        robust_z(1.0, [])


def test_mad_around_own_median_and_given_center() -> None:
    # median 3; deviations 2,1,0,1,97 → median 1
    assert median_absolute_deviation([1, 2, 3, 4, 100]) == 1.0
    # around 0: deviations 1,2,3,4,100 → 3
    assert median_absolute_deviation([1, 2, 3, 4, 100], center=0.0) == 3.0


def test_one_extreme_value_barely_moves_the_robust_figures() -> None:
    usual = [10, 11, 12, 13, 14]
    spiked = [10, 11, 12, 13, 10_000]
    assert median(spiked) == median(usual)
    assert median_absolute_deviation(spiked) == median_absolute_deviation(usual)


def test_robust_z_by_hand() -> None:
    # median 3, MAD 1 → z(8) = 0.6745·5/1
    assert robust_z(8.0, [1, 2, 3, 4, 100]) == pytest.approx(MAD_TO_Z * 5)
    assert robust_z(3.0, [1, 2, 3, 4, 100]) == 0.0
    assert robust_z(1.0, [1, 2, 3, 4, 100]) == pytest.approx(-MAD_TO_Z * 2)


def test_robust_z_is_none_when_half_the_values_are_identical() -> None:
    assert robust_z(1000.0, [5, 5, 5, 6, 200]) is None
    assert robust_z(5.0, [5, 5]) is None


def test_ratio_to_median() -> None:
    assert ratio_to_median(300, [100, 50, 200]) == 3.0
    assert ratio_to_median(0, [100, 50, 200]) == 0.0
    assert ratio_to_median(300, [0, 0, 10]) is None
    assert ratio_to_median(1, [0, 2]) == 1.0


def test_works_on_log_views() -> None:
    logs = [math.log1p(v) for v in (100, 100, 1000, 1000)]
    assert median(logs) == pytest.approx((math.log1p(100) + math.log1p(1000)) / 2)
