"""Robust statistics shared by Discover (outlier scoring) and Improve ("x× your usual").

Both pipelines compare one post's numbers with an account's usual numbers, and an
account's numbers are heavy-tailed: one viral post moves the mean and the standard
deviation far more than it moves the median. So "usual" is the median, and spread is the
median absolute deviation (MAD), which one extreme value cannot drag either.

Every function is pure and exact for the inputs it is given (no sampling, no
approximation beyond float arithmetic), so tests can check results computed by hand.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

MAD_TO_Z = 0.6745
"""The 0.75 quantile of the standard normal: on normal data, MAD ÷ 0.6745 estimates the
standard deviation, so ``0.6745·(x − median) / MAD`` reads like an ordinary z-score
(the "modified z-score" of Iglewicz and Hoaglin, who suggest |z| > 3.5 for outliers)."""


def median(values: Sequence[float]) -> float:
    """The middle value; the mean of the two middle values for an even count.

    Raises `ValueError` on an empty sequence: an empty account has no usual, and a
    silent NaN would travel into stored scores.
    """
    if not values:
        raise ValueError("median of an empty sequence")
    return float(statistics.median(values))


def median_absolute_deviation(values: Sequence[float], center: float | None = None) -> float:
    """Median of ``|x − center|`` over `values`, unscaled (no 1.4826 normal factor).

    `center` defaults to the median of `values`; pass it when it is already known, to
    save a second sort. Zero whenever more than half the values equal the center, which
    is common for small accounts with repeated counts (see `robust_z`).
    """
    if not values:
        raise ValueError("median absolute deviation of an empty sequence")
    middle = median(values) if center is None else center
    return median([abs(value - middle) for value in values])


def robust_z(value: float, values: Sequence[float]) -> float | None:
    """``0.6745·(value − median) / MAD`` of `value` against `values`.

    None when the MAD is 0: then at least half of `values` are identical and any other
    value is "infinitely" far in MAD units, so the score cannot say how unusual it is.
    Callers decide what None means for them (outlier scoring lets the ratio test alone
    decide; see `reelflow.discover.outliers`). `value` need not be one of `values`.
    """
    center = median(values)
    spread = median_absolute_deviation(values, center)
    if spread == 0:
        return None
    return MAD_TO_Z * (value - center) / spread


def ratio_to_median(value: float, values: Sequence[float]) -> float | None:
    """`value` ÷ the median of `values` ("3.2× your usual").

    None when the median is 0: every ratio would be infinite (or undefined for a value
    of 0), which says nothing a user can act on.
    """
    center = median(values)
    if center == 0:
        return None
    return value / center
