"""Small-sample statistics for runs repeated over seeds: mean ± std and Welch's t-test.

With n runs x_1..x_n of one configuration, ``mean = sum x_i / n`` and the sample standard
deviation ``std = sqrt(sum (x_i - mean)^2 / (n - 1))``. Two configurations a and b are compared by
Welch's t-test (unequal variances):

    t = (mean_a - mean_b) / sqrt(s_a^2 / n_a + s_b^2 / n_b),
    nu = (s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2 / (n_a - 1) + (s_b^2/n_b)^2 / (n_b - 1)),

and the two-sided p-value ``P(|T_nu| >= |t|)`` of Student's t distribution with ``nu`` degrees of
freedom (integrated numerically; no SciPy needed). With three seeds a side the test has little
power: p < 0.05 needs a difference several times the seeds' spread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``n - 1``; 0 for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def student_t_sf2(t: float, nu: float, steps: int = 4000) -> float:
    """Two-sided tail ``P(|T| >= |t|)`` of Student's t with ``nu`` degrees of freedom.

    ``1 - 2 * int_0^|t| f(x) dx`` with ``f(x) = Gamma((nu+1)/2) / (sqrt(nu pi) Gamma(nu/2))
    (1 + x^2/nu)^(-(nu+1)/2)``, by Simpson's rule on ``atan``-substituted ``x = sqrt(nu) tan u``,
    which maps the whole half-line to ``[0, pi/2)`` (the density becomes ``c cos(u)^(nu-1)``).
    """
    if nu <= 0 or math.isnan(t):
        return float("nan")
    upper = math.atan(abs(t) / math.sqrt(nu))
    log_c = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(math.pi)
    h = upper / steps
    total = 0.0
    for i in range(steps + 1):
        weight = 1 if i in (0, steps) else (4 if i % 2 else 2)
        total += weight * math.cos(i * h) ** (nu - 1)
    area = math.exp(log_c) * total * h / 3
    return min(1.0, max(0.0, 1.0 - 2.0 * area))


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """``(t, nu, two-sided p)`` of Welch's test of equal means (module docstring).

    Both samples need two values or more; equal constant samples give ``(0, nan, 1)``, different
    constant samples ``(±inf, nan, 0)``.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's t-test needs at least two values per sample")
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    va, vb = sa**2 / len(a), sb**2 / len(b)
    if va + vb == 0:
        return (0.0, float("nan"), 1.0) if ma == mb else (math.copysign(math.inf, ma - mb),
                                                          float("nan"), 0.0)  # fmt: skip
    t = (ma - mb) / math.sqrt(va + vb)
    nu = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return t, nu, student_t_sf2(t, nu)
