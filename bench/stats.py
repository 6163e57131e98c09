"""Statistics for the compare gate: ratio of medians, bootstrap interval, Mann–Whitney U, Holm.

A timing change is called a regression only when all three agree (as asv and
pytest-benchmark users expect: a threshold *and* a significance test):

  1. the point estimate (ratio of medians, current / baseline) is past the threshold,
  2. the Mann–Whitney U test rejects "same distribution" after Holm correction
     across every timing metric of the comparison, and
  3. the bootstrap 95% interval of the ratio lies entirely past the threshold.

It is a pass only when the interval lies entirely on the good side of the
threshold; anything in between is "inconclusive" — too noisy to tell, never a
silent pass. All functions are pure and deterministic (the bootstrap is seeded).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

Verdict = Literal["pass", "improvement", "regression", "inconclusive"]

ALPHA = 0.05  # family-wise error rate of the Holm-corrected tests
N_BOOT = 2000  # bootstrap resamples


def quantile(samples: Sequence[float], q: float = 0.5) -> float:
    """The q-quantile (0.5: median) of `samples`, linear interpolation."""
    return float(np.quantile(np.asarray(samples, dtype=float), q))


def bootstrap_ratio_ci(baseline: Sequence[float], current: Sequence[float], *, q: float = 0.5,
                       confidence: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of quantile_q(current) / quantile_q(baseline).

    Each side is resampled with replacement independently (they are independent
    samples); `seed` makes the interval reproducible.
    """
    a = np.asarray(baseline, dtype=float)
    b = np.asarray(current, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("bootstrap_ratio_ci needs at least one sample on each side")
    rng = np.random.default_rng(seed)
    qa = np.quantile(a[rng.integers(0, a.size, size=(n_boot, a.size))], q, axis=1)  # (n_boot,)
    qb = np.quantile(b[rng.integers(0, b.size, size=(n_boot, b.size))], q, axis=1)  # (n_boot,)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = qb / qa
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(ratios, [tail, 1.0 - tail])
    return float(lo), float(hi)


def mann_whitney_p(baseline: Sequence[float], current: Sequence[float]) -> float:
    """Two-sided Mann–Whitney U p-value; 1.0 when there is nothing to test (n < 2 or all equal)."""
    a = np.asarray(baseline, dtype=float)
    b = np.asarray(current, dtype=float)
    if a.size < 2 or b.size < 2:
        return 1.0
    if np.all(a == a[0]) and np.all(b == a[0]):
        return 1.0
    return float(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def min_p_value(n_baseline: int, n_current: int) -> float:
    """The smallest two-sided Mann–Whitney p-value two samples of these sizes can give
    (complete separation, no ties): 2 / C(n1 + n2, n1)."""
    if n_baseline < 1 or n_current < 1:
        return 1.0
    # in logs: C(n1 + n2, n1) overflows a float from about 520 samples a side
    log_comb = math.lgamma(n_baseline + n_current + 1) - math.lgamma(n_baseline + 1) - math.lgamma(n_current + 1)
    return min(1.0, math.exp(math.log(2.0) - log_comb))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order.

    Sorted ascending p_(1) ≤ … ≤ p_(m): adj_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j)).
    Rejecting where adj < alpha controls the family-wise error rate at alpha.
    """
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.maximum.accumulate(scaled)
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


@dataclass(frozen=True)
class RatioTest:
    """current / baseline for one metric: point ratio, bootstrap interval, raw U-test p-value."""

    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    n_baseline: int
    n_current: int


def ratio_test(baseline: Sequence[float], current: Sequence[float], *, q: float = 0.5,
               confidence: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> RatioTest:
    """Ratio of q-quantiles with its bootstrap interval and the Mann–Whitney p-value."""
    base_q = quantile(baseline, q)
    ratio = quantile(current, q) / base_q if base_q != 0 else float("inf")
    lo, hi = bootstrap_ratio_ci(baseline, current, q=q, confidence=confidence, n_boot=n_boot, seed=seed)
    return RatioTest(ratio, lo, hi, mann_whitney_p(baseline, current), len(baseline), len(current))


def timing_verdict(test: RatioTest, p_adjusted: float, threshold: float, higher_is_better: bool,
                   alpha: float = ALPHA) -> Verdict:
    """Verdict for one timing metric.

    `threshold` is the tolerated relative change in the bad direction (0.10 = 10%):
    for higher-is-better metrics (tokens/s) a regression is ratio < 1 − threshold,
    for lower-is-better ones (latency) ratio > 1 + threshold.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    significant = p_adjusted < alpha
    if higher_is_better:
        limit = 1.0 - threshold
        past = test.ratio < limit
        ci_past = test.ci_high < limit  # the whole interval is a regression
        ci_safe = test.ci_low > limit  # the whole interval is within tolerance
        better = test.ratio > 1.0 and test.ci_low > 1.0
    else:
        limit = 1.0 + threshold
        past = test.ratio > limit
        ci_past = test.ci_low > limit
        ci_safe = test.ci_high < limit
        better = test.ratio < 1.0 and test.ci_high < 1.0
    if past and significant and ci_past:
        return "regression"
    if ci_safe:
        return "improvement" if better and significant and abs(test.ratio - 1.0) > threshold else "pass"
    return "inconclusive"
