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
                   alpha: float = ALPHA, *, paired: bool = False) -> Verdict:
    """Verdict for one timing metric.

    `threshold` is the tolerated relative change in the bad direction (0.10 = 10%):
    for higher-is-better metrics (tokens/s) a regression is ratio < 1 − threshold,
    for lower-is-better ones (latency) ratio > 1 + threshold.

    Unpaired samples (compare: runs taken minutes apart) need the point ratio past the limit,
    p_adjusted < alpha AND the whole interval past the limit. `paired` (ab: both sides timed
    within milliseconds, so the load cancels and the estimate is precise) needs the point
    ratio past the limit, p_adjusted < alpha and the interval wholly on the bad side of 1 — the
    rule of Google Benchmark's compare.py and pyperf (significant, and slower by more than the
    threshold): a change just past the threshold is caught as often as its estimate lands past it.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    significant = p_adjusted < alpha
    if higher_is_better:
        limit = 1.0 - threshold
        past = test.ratio < limit
        ci_past = test.ci_high < (1.0 if paired else limit)  # the whole interval is a regression
        ci_safe = test.ci_low > limit  # the whole interval is within tolerance
        better = test.ratio > 1.0 and test.ci_low > 1.0
    else:
        limit = 1.0 + threshold
        past = test.ratio > limit
        ci_past = test.ci_low > (1.0 if paired else limit)
        ci_safe = test.ci_high < limit
        better = test.ratio < 1.0 and test.ci_high < 1.0
    if past and significant and ci_past:
        return "regression"
    if ci_safe:
        return "improvement" if better and significant and abs(test.ratio - 1.0) > threshold else "pass"
    return "inconclusive"


def why_inconclusive(test: RatioTest, threshold: float, higher_is_better: bool) -> str:
    """Why `timing_verdict` said inconclusive, in words for a note: the estimate is past the limit
    but the evidence is too weak for a regression, or the interval is too wide to call it a pass."""
    past = test.ratio < 1.0 - threshold if higher_is_better else test.ratio > 1.0 + threshold
    if past:
        return "the change is past the limit, but not significant (Holm) or its interval reaches no change"
    return "the 95% interval reaches past the limit"


# --- intervals of accuracy-type scores (bench/results/query.py decides what they mean) ---------


def z_value(confidence: float = 0.95) -> float:
    """The two-sided standard-normal quantile: 1.96 at 95%."""
    return float(sps.norm.ppf(0.5 + confidence / 2.0))


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion successes / n (NaN, NaN when n = 0).

    With p = successes / n and z the normal quantile:
        centre = (p + z²/2n) / (1 + z²/n),  half = z √(p(1−p)/n + z²/4n²) / (1 + z²/n).
    Unlike p ± z√(p(1−p)/n) it never leaves [0, 1] and is not empty at p = 0 or 1."""
    if n <= 0:
        return math.nan, math.nan
    z = z_value(confidence)
    p = min(1.0, max(0.0, successes / n))
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    lo = 0.0 if p == 0 else max(0.0, centre - half)  # exact at the ends, not 1 - 1e-16
    hi = 1.0 if p == 1 else min(1.0, centre + half)
    return lo, hi


def normal_interval(mean: float, se: float, confidence: float = 0.95) -> tuple[float, float]:
    """mean ± z · se: the interval of a mean over many scored positions (an MSE, bits per char)."""
    z = z_value(confidence)
    return mean - z * se, mean + z * se


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of `values` (e.g. one score per seed): mean ± t_{n−1} s / √n.

    NaN values are dropped; one value gives (v, v), none (NaN, NaN)."""
    v = np.asarray([x for x in values if not math.isnan(float(x))], dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    mean = float(v.mean())
    if v.size == 1:
        return mean, mean
    half = float(sps.t.ppf(0.5 + confidence / 2.0, v.size - 1)) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return mean - half, mean + half


def seed_interval(values: Sequence[float], within: tuple[float, float], confidence: float = 0.95,
                  bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float]:
    """Interval of a mean over seeds: the t-interval of the seeds' values, widened to contain
    `within` (the interval the scored positions of all seeds allow on their own), clipped to `bounds`.

    With few seeds that agree the t-interval alone can be empty (two seeds at 1.00 give [1, 1]);
    with seeds that disagree it is wide (t₁ = 12.7 for two). The hull keeps both sources of
    doubt: training noise between seeds and evaluation noise within them."""
    lo, hi = t_interval(values, confidence)
    w_lo, w_hi = within
    if not math.isnan(w_lo):
        lo = w_lo if math.isnan(lo) else min(lo, w_lo)
    if not math.isnan(w_hi):
        hi = w_hi if math.isnan(hi) else max(hi, w_hi)
    return max(bounds[0], lo), min(bounds[1], hi)


# --- paired statistics of interleaved A/B timing (seqbench ab) --------------------------------

EXACT_SIGNED_RANK_MAX = 50  # the exact null distribution up to this many nonzero differences (as scipy's "auto")


_SIGNED_RANK_COUNTS: dict[int, np.ndarray] = {}


def _signed_rank_counts(n: int) -> np.ndarray:
    """counts[w] = number of subsets of the ranks {1, …, n} whose sum is w (the null
    distribution of the signed-rank statistic W+ times 2^n); exact in int64 up to n = 61."""
    if n not in _SIGNED_RANK_COUNTS:
        counts = np.zeros(n * (n + 1) // 2 + 1, dtype=np.int64)
        counts[0] = 1
        top = 0
        for k in range(1, n + 1):  # add rank k: every subset either leaves it out or takes it
            counts[k:top + k + 1] += counts[:top + 1].copy()
            top += k
        _SIGNED_RANK_COUNTS[n] = counts
    return _SIGNED_RANK_COUNTS[n]


def signed_rank_p(differences: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (H0: symmetric about 0).

    Zero differences are dropped (Wilcoxon's convention); ranks of tied |d| are averaged.
    Without ties and with at most EXACT_SIGNED_RANK_MAX differences the p-value is exact,
    2 · P(W+ ≤ min(w+, w−)); otherwise the normal approximation with the tie-corrected
    variance n(n+1)(2n+1)/24 − Σ(t³ − t)/48, no continuity correction. 1.0 when nothing is left."""
    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    n = d.size
    if n == 0:
        return 1.0
    ranks = sps.rankdata(np.abs(d))  # (n,) average ranks for ties
    w_plus = float(ranks[d > 0].sum())
    _, tie_sizes = np.unique(ranks, return_counts=True)
    if n <= EXACT_SIGNED_RANK_MAX and tie_sizes.size == n:
        counts = _signed_rank_counts(n)
        w = round(min(w_plus, n * (n + 1) / 2 - w_plus))
        return float(min(1.0, 2.0 * counts[: w + 1].sum() / 2.0**n))
    mean = n * (n + 1) / 4.0
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float((tie_sizes**3 - tie_sizes).sum()) / 48.0
    if var <= 0:
        return 1.0
    z = (w_plus - mean) / math.sqrt(var)
    return float(min(1.0, 2.0 * sps.norm.sf(abs(z))))


def bootstrap_median_ci(values: Sequence[float], *, confidence: float = 0.95, n_boot: int = N_BOOT,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median of `values` (resampled with replacement;
    `seed` makes it reproducible)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap_median_ci needs at least one value")
    rng = np.random.default_rng(seed)
    medians = np.median(x[rng.integers(0, x.size, size=(n_boot, x.size))], axis=1)  # (n_boot,)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(medians, [tail, 1.0 - tail])
    return float(lo), float(hi)


def paired_ratio_test(baseline: Sequence[float], current: Sequence[float], *, confidence: float = 0.95,
                      n_boot: int = N_BOOT, seed: int = 0) -> RatioTest:
    """current / baseline of positive measurements taken in pairs (pair i side by side, so
    both saw the same machine): ratio = exp(median_i log(current_i / baseline_i)), its
    interval the exponentiated bootstrap interval of that median, p the Wilcoxon
    signed-rank test of the log-ratios. Judged by `timing_verdict` like `ratio_test`."""
    a = np.asarray(baseline, dtype=float)
    b = np.asarray(current, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_ratio_test needs two equally long 1-d samples, got {a.shape} and {b.shape}")
    if not (np.all(a > 0) and np.all(b > 0)):
        raise ValueError("paired_ratio_test needs positive values (times or rates)")
    d = np.log(b) - np.log(a)  # (n,) log-ratios
    lo, hi = bootstrap_median_ci(d, confidence=confidence, n_boot=n_boot, seed=seed)
    return RatioTest(math.exp(float(np.median(d))), math.exp(lo), math.exp(hi), signed_rank_p(d), a.size, b.size)
