"""Confidence intervals of a metric over seeds: the mean and the half-width of its 95%
interval, with Student's t quantiles.

Why this exists: a paper's figure shows a metric against a parameter over several seeds
with a confidence interval (medbft/views/sweep_figures.py draws them from results.csv).
A handful of seeds is the usual case, so the interval uses Student's t, not the normal
quantile. What it must not know: where the values come from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["mean_ci95", "t_quantile_975"]


#: Student's t, 0.975 quantile, for 1..30 degrees of freedom.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (table to 30, then
    1.96 + 2.4/df, within 0.002 of the exact value)."""
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% confidence interval of the mean): t * s / sqrt(k), with
    s the sample standard deviation of k values; the half-width is 0 for one value."""
    k = len(values)
    if k == 0:
        return math.nan, math.nan
    mean = sum(values) / k
    if k == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (k - 1)
    return mean, t_quantile_975(k - 1) * math.sqrt(var) / math.sqrt(k)
