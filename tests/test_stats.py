"""seqbench.bench.stats on synthetic samples with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from seqbench.bench import stats


def _draw(seed: int, n: int, center: float, cv: float) -> np.ndarray:
    """n lognormal samples with median `center` and roughly `cv` relative spread."""
    rng = np.random.default_rng(seed)
    return center * np.exp(rng.normal(0.0, cv, size=n))


def _verdict(base: np.ndarray, cur: np.ndarray, higher: bool, threshold: float = 0.10) -> str:
    test = stats.ratio_test(base, cur)
    return stats.timing_verdict(test, stats.holm([test.p_value])[0], threshold, higher)


@pytest.mark.parametrize("higher", [True, False])
def test_identical_distributions_never_regress(higher: bool) -> None:
    verdicts = [_verdict(_draw(2 * s, 15, 100.0, 0.03), _draw(2 * s + 1, 15, 100.0, 0.03), higher)
                for s in range(20)]
    assert "regression" not in verdicts
    assert verdicts.count("pass") >= 18  # low noise: the interval sits inside ±10%


def test_30pct_shift_is_a_regression_in_the_bad_direction_only() -> None:
    base = _draw(0, 10, 100.0, 0.02)
    slower = _draw(1, 10, 100.0 / 1.3, 0.02)  # tokens/s down 30% / a time up 30%
    assert _verdict(base, slower, higher=True) == "regression"  # throughput fell
    assert _verdict(base, slower, higher=False) == "improvement"  # a latency that fell is better
    longer = _draw(2, 10, 130.0, 0.02)
    assert _verdict(base, longer, higher=False) == "regression"  # latency rose 30%
    assert _verdict(base, longer, higher=True) == "improvement"


def test_heavy_noise_is_inconclusive_not_a_pass() -> None:
    base = _draw(0, 5, 100.0, 0.6)
    assert _verdict(base, _draw(1, 5, 100.0, 0.6), higher=True) == "inconclusive"  # same center
    assert _verdict(base, _draw(2, 5, 80.0, 0.6), higher=True) == "inconclusive"  # real 20% drop, too noisy


def test_verdict_needs_threshold_significance_and_interval() -> None:
    t = stats.RatioTest(ratio=0.7, ci_low=0.65, ci_high=0.75, p_value=0.001, n_baseline=10, n_current=10)
    assert stats.timing_verdict(t, 0.001, 0.10, True) == "regression"
    assert stats.timing_verdict(t, 0.2, 0.10, True) == "inconclusive"  # not significant after Holm
    wide = stats.RatioTest(0.7, 0.6, 0.95, 0.001, 10, 10)
    assert stats.timing_verdict(wide, 0.001, 0.10, True) == "inconclusive"  # interval reaches past -10%
    small = stats.RatioTest(0.95, 0.93, 0.97, 0.001, 10, 10)
    assert stats.timing_verdict(small, 0.001, 0.10, True) == "pass"  # significant but within tolerance
    assert stats.timing_verdict(small, 0.001, 0.02, True) == "regression"  # past a 2% threshold


def test_holm_against_hand_computed_example() -> None:
    # sorted: 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    statsmodels = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(0).uniform(0, 0.2, size=12)
    expected = statsmodels.multipletests(p, method="holm")[1]
    assert stats.holm(p) == pytest.approx(expected)


def test_mann_whitney_exact_small_case() -> None:
    # completely separated samples of 3: the exact two-sided p is 2 / C(6, 3) = 0.1
    assert stats.mann_whitney_p([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)
    assert stats.mann_whitney_p([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]) == 1.0
    assert stats.mann_whitney_p([1.0], [2.0]) == 1.0
    assert stats.min_p_value(3, 3) == pytest.approx(stats.mann_whitney_p([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]))
    assert stats.min_p_value(7, 7) == pytest.approx(stats.mann_whitney_p(range(7), range(10, 17)))


def test_bootstrap_interval_covers_true_ratio() -> None:
    # medians of Uniform(90, 110) and Uniform(108, 132) are 100 and 120: the true ratio is 1.2
    covered = 0
    for s in range(40):
        rng = np.random.default_rng(s)
        lo, hi = stats.bootstrap_ratio_ci(rng.uniform(90, 110, 30), rng.uniform(108, 132, 30), seed=s)
        assert lo < hi
        covered += lo <= 1.2 <= hi
    assert covered >= 34  # nominal 95% of 40 = 38; allow for the percentile bootstrap's undercoverage


def test_ratio_test_point_estimate_is_ratio_of_medians() -> None:
    base, cur = [1.0, 2.0, 3.0, 4.0, 100.0], [2.0, 4.0, 6.0, 8.0, 0.5]
    t = stats.ratio_test(base, cur)
    assert t.ratio == pytest.approx(np.median(cur) / np.median(base))
    assert (t.n_baseline, t.n_current) == (5, 5)


def test_min_p_value_of_large_samples_does_not_overflow() -> None:
    from math import comb

    from seqbench.bench.stats import min_p_value

    assert min_p_value(3, 3) == pytest.approx(2 / comb(6, 3))
    assert min_p_value(10, 12) == pytest.approx(2 / comb(22, 10))
    assert min_p_value(1200, 1200) == 0.0  # underflows to zero instead of raising OverflowError
