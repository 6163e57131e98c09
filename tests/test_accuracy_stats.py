"""Chance, intervals, "learned" and ranks of accuracy scores (bench/results/query.py, bench/stats.py), and
fair budgets by size (bench/run/match.py), against closed forms and hand-made rows.

Wilson's interval is checked against its defining property (the endpoints p solve
|p̂ − p| = z √(p(1 − p)/n)) and textbook values; the t-interval against a t table; ranks, ties and
the ≈ chance mark against rows written here by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from seqbench.bench import stats
from seqbench.bench.report import tables
from seqbench.bench.report.summary import summary_table
from seqbench.bench.results import query
from seqbench.bench.results.schema import METRICS, blank_row

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
T95_DF1 = 12.706204736174698  # Student t, 97.5%, 1 degree of freedom (two seeds)
T95_DF2 = 4.302652729749464  # ... 2 degrees of freedom (three seeds)


# --- intervals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("k,n", [(9, 10), (0, 10), (10, 10), (37, 128), (500, 1000), (1, 3)])
def test_wilson_endpoints_solve_the_score_equation(k: int, n: int) -> None:
    lo, hi = stats.wilson_interval(k, n)
    p_hat = k / n
    for p in (lo, hi):
        if 0 < p < 1:  # an endpoint strictly inside (0, 1) sits exactly z standard errors from p_hat
            assert abs(p_hat - p) == pytest.approx(Z95 * math.sqrt(p * (1 - p) / n), rel=1e-9)
    assert 0 <= lo <= p_hat <= hi <= 1


def test_wilson_textbook_values() -> None:
    assert stats.wilson_interval(9, 10) == pytest.approx((0.5958500, 0.9821238), abs=1e-6)
    # zero successes: [0, z² / (n + z²)]; all successes: [n / (n + z²), 1]
    assert stats.wilson_interval(0, 10) == pytest.approx((0.0, Z95**2 / (10 + Z95**2)))
    assert stats.wilson_interval(10, 10) == pytest.approx((10 / (10 + Z95**2), 1.0))
    assert all(math.isnan(v) for v in stats.wilson_interval(0, 0))


def test_t_interval_and_the_seed_hull() -> None:
    lo, hi = stats.t_interval([0.9, 1.0])  # mean 0.95, s = 0.1 / √2, se = 0.05
    assert (lo, hi) == pytest.approx((0.95 - T95_DF1 * 0.05, 0.95 + T95_DF1 * 0.05))
    vals = [0.2, 0.4, 0.6]  # mean 0.4, s = 0.2, se = 0.2 / √3
    assert stats.t_interval(vals) == pytest.approx((0.4 - T95_DF2 * 0.2 / math.sqrt(3), 0.4 + T95_DF2 * 0.2 / math.sqrt(3)))
    assert stats.t_interval([0.7]) == (0.7, 0.7)
    # two seeds that agree exactly: the t-interval is empty, the pooled positions keep it honest
    assert stats.seed_interval([1.0, 1.0], (0.98, 1.0), bounds=(0, 1)) == (0.98, 1.0)
    # two seeds that disagree: the t-interval is wider than the pooled one, clipped to [0, 1]
    assert stats.seed_interval([0.9, 1.0], (0.93, 0.97), bounds=(0, 1)) == pytest.approx((0.95 - T95_DF1 * 0.05, 1.0))


def test_interval_of_error_metrics_is_normal_and_clipped_at_zero() -> None:
    assert query.interval_of("mse", 0.10, 256, 0.01) == pytest.approx((0.10 - Z95 * 0.01, 0.10 + Z95 * 0.01))
    assert query.interval_of("mse", 0.001, 256, 0.01)[0] == 0.0
    assert query.interval_of("accuracy", 0.9, 10) == pytest.approx(stats.wilson_interval(9, 10))


# --- skill and learned -------------------------------------------------------------------------------


def test_skill_is_zero_at_chance_and_one_when_perfect() -> None:
    assert query.skill("accuracy", 0.5, 0.5) == 0 and query.skill("accuracy", 1.0, 0.5) == 1
    assert query.skill("accuracy", 0.75, 0.5) == pytest.approx(0.5)
    assert query.skill("mse", 1 / 6, 1 / 6) == pytest.approx(0) and query.skill("mse", 0.0, 1 / 6) == 1
    assert query.skill("nmse", 0.25, 1.0) == pytest.approx(0.75)
    assert math.isnan(query.skill("accuracy", 0.7, None))


@pytest.mark.parametrize("metric,lo,hi,chance,learned", [
    ("accuracy", 0.56, 0.70, 0.5, True),  # parity: ci_low must clear 0.5 + 0.1 * 0.5 = 0.55
    ("accuracy", 0.54, 0.70, 0.5, False),
    ("accuracy", 0.13, 0.20, 1 / 32, True),  # 32 values: 1/32 + 0.1 * 31/32 = 0.128
    ("accuracy", 0.12, 0.90, 1 / 32, False),  # a wide interval does not count, however high its top
    ("mse", 0.00, 0.14, 1 / 6, True),  # adding: ci_high below (1 - 0.1) / 6 = 0.15
    ("mse", 0.00, 0.16, 1 / 6, False),
    ("accuracy", 0.9, 1.0, None, None),  # no chance level: unknown
])
def test_learned_means_the_whole_interval_clears_chance_by_the_margin(metric, lo, hi, chance, learned) -> None:
    assert query.LEARNED_SKILL == 0.1
    assert query.is_learned(metric, lo, hi, chance) is learned


# --- hand-made rows ----------------------------------------------------------------------------------


def _row(model: str, task: str, value: float, *, seed: int = 0, lr: float = 3e-3, split: str = "eval",
         metric: str = "accuracy", chance: float = 0.5, n: int = 256, factor: float = 1.0, best: bool = True,
         **extra) -> dict:
    row = blank_row()
    row.update(run_id="r", model=model, family=model, task=task, task_kind=task, measure="accuracy", metric=metric,
               value=value, unit=METRICS[metric][0], higher_is_better=METRICS[metric][1], status="ok", seed=seed,
               lr=lr, split=split, best=best, length_factor=factor, eval_seq_len=int(16 * factor), seq_len=16,
               chance=chance, n_scored=n, cell_id=f"{model}/{task}/{seed}", dtype="float32")
    lo, hi = query.interval_of(metric, value, n, extra.pop("se", None))
    row.update(ci_low=lo, ci_high=hi, **extra)
    return row


def test_scores_pick_the_lr_on_validation_and_report_test_with_seed_intervals() -> None:
    rows = []
    for seed, (test, valid_good, valid_bad) in enumerate([(0.96, 0.97, 0.99), (0.98, 0.99, 0.60)]):
        # lr 1e-3 validates better on average (0.98 vs 0.795) though lr 3e-3 has the higher test score
        rows += [_row("lstm", "parity", test, seed=seed, lr=1e-3),
                 _row("lstm", "parity", valid_good, seed=seed, lr=1e-3, split="valid"),
                 _row("lstm", "parity", 0.999, seed=seed, lr=3e-3),
                 _row("lstm", "parity", valid_bad, seed=seed, lr=3e-3, split="valid")]
    (sc,) = query.scores(pd.DataFrame(rows)).to_dict("records")
    assert sc["lr"] == 1e-3 and sc["value"] == pytest.approx(0.97) and sc["n_seeds"] == 2
    t_lo, t_hi = 0.97 - T95_DF1 * 0.01, 0.97 + T95_DF1 * 0.01  # seeds 0.96, 0.98: se 0.01
    pooled = stats.wilson_interval(0.96 * 256 + 0.98 * 256, 512)
    assert (sc["ci_low"], sc["ci_high"]) == pytest.approx((min(t_lo, pooled[0]), min(1.0, max(t_hi, pooled[1]))))
    assert sc["chance"] == 0.5 and sc["n_scored"] == 512 and sc["learned"] is True
    assert sc["skill"] == pytest.approx((0.97 - 0.5) / 0.5)


def test_one_seed_interval_is_its_wilson_interval() -> None:
    (sc,) = query.scores(pd.DataFrame([_row("rnn", "parity", 0.53, n=256)])).to_dict("records")
    assert (sc["ci_low"], sc["ci_high"]) == pytest.approx(stats.wilson_interval(0.53 * 256, 256))
    assert sc["learned"] is False  # 0.53 of 256: ci_low ≈ 0.47, below 0.55


def _board_rows() -> list[dict]:
    # intervals (one seed, n = 256, Wilson): a [0.93, 0.98], b [0.90, 0.96] overlap a; c [0.62, 0.73] does not;
    # d 0.52 is at chance
    return [_row("a", "parity", 0.96), _row("b", "parity", 0.935), _row("c", "parity", 0.68),
            _row("d", "parity", 0.52),
            _row("a", "adding", 0.16, metric="mse", chance=1 / 6, se=0.01),
            _row("b", "adding", 0.001, metric="mse", chance=1 / 6, se=0.0005),
            _row("c", "adding", 0.002, metric="mse", chance=1 / 6, se=0.0005),
            _row("d", "adding", 0.02, metric="mse", chance=1 / 6, se=0.002)]


def test_rank_with_ties_against_hand_made_intervals() -> None:
    board = query.scores(pd.DataFrame(_board_rows()))
    board["rank"] = query.rank_with_ties(board, ["task"])
    rank = {(r.task, r.model): r.rank for r in board.itertuples()}
    assert rank[("parity", "a")] == 1 and rank[("parity", "b")] == 1  # overlapping intervals share rank 1
    assert rank[("parity", "c")] == 3  # two scores lie entirely above it
    assert math.isnan(rank[("parity", "d")])  # ≈ chance: not ranked
    # mse, lower is better: b [0.00002, 0.00198] and c [0.00102, 0.00298] overlap; d is worse than both
    assert rank[("adding", "b")] == 1 and rank[("adding", "c")] == 1 and rank[("adding", "d")] == 3
    assert math.isnan(rank[("adding", "a")])  # 0.16 ± 0.02 does not clear 0.15


def test_leaderboard_and_summary_mark_chance_and_ties() -> None:
    rows = _board_rows()
    board = tables.leaderboard(pd.DataFrame(rows))
    parity = board[board["task"] == "parity"].set_index("model")
    assert list(parity.index) == ["a", "b", "c", "d"]
    assert parity.loc["a", "rank"] == parity.loc["b", "rank"] == 1 and parity.loc["c", "rank"] == 3
    assert parity.loc["d", "learned"] == "≈ chance" and np.isnan(parity.loc["d", "rank"])
    assert parity.loc["a", "learned"] == "yes" and parity.loc["a", "chance"] == 0.5
    text = summary_table(rows)
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "0.5" in lines["(chance)"] and "0.167" in lines["(chance)"]
    assert "≈0.52" in lines["d"] and "≈0.16" in lines["a"] and "≈" not in lines["b"]


def test_extrapolated_length_is_a_leaderboard_block_with_its_own_chance() -> None:
    rows = [_row("lstm", "parity", 1.0), _row("lstm", "parity", 0.99, factor=4.0),
            _row("transformer", "parity", 0.62), _row("transformer", "parity", 0.51, factor=4.0)]
    board = tables.leaderboard(pd.DataFrame(rows))
    at4 = board[board["length_factor"] == 4.0].set_index("model")
    assert at4.loc["lstm", "rank"] == 1 and at4.loc["transformer", "learned"] == "≈ chance"
    assert at4.loc["lstm", "eval_seq_len"] == 64
    ext = tables.extrapolation(pd.DataFrame(rows))
    assert len(ext) == 4 and set(ext["length_factor"]) == {1.0, 4.0}


def test_skipped_length_is_listed_with_its_reason() -> None:
    rows = [_row("attn", "ind", 1.0), _row("attn", "ind", 0.4, factor=2.0)]
    skip = blank_row()
    skip.update(run_id="r", model="attn", task="ind", measure="accuracy", metric="accuracy", status="skipped",
                error="transformer cannot run seq_len 64: max_len=32", length_factor=4.0, eval_seq_len=64,
                cell_id="attn/ind/0", split="eval", lr=3e-3, best=True, seed=0, dtype="float32")
    ext = tables.extrapolation(pd.DataFrame(rows + [skip])).set_index("length_factor")
    assert "max_len=32" in ext.loc[4.0, "note"] and np.isnan(ext.loc[4.0, "value"])
    fails = tables.failures(pd.DataFrame(rows + [skip]))
    assert list(fails["status"]) == ["skipped"]


def test_accuracy_throughput_names_missing_tasks_and_uses_skill() -> None:
    rows = [_row("a", "parity", 1.0), _row("a", "adding", 0.0, metric="mse", chance=1 / 6, se=0.0),
            _row("b", "parity", 0.75)]
    for m, tps in (("a", 1000.0), ("b", 5000.0)):
        r = blank_row()
        r.update(run_id="r", model=m, measure="throughput", metric="tokens_per_s", value=tps, mode="inference",
                 batch_size=8, seq_len=64, status="ok", dtype="float32", cell_id=f"{m}/tput")
        rows.append(r)
    t = tables.accuracy_throughput(pd.DataFrame(rows)).set_index("model")
    assert t.loc["a", "skill"] == pytest.approx(1.0) and t.loc["a", "missing"] == ""
    assert t.loc["b", "skill"] == pytest.approx(0.5) and t.loc["b", "missing"] == "adding"
    assert t.loc["b", "n_tasks"] == 1


# --- fair budgets by size (bench/run/match.py) ---------------------------------------------------------


@pytest.mark.parametrize("family,config,target", [
    ("lstm", {"n_layers": 2}, {"params": 50_000}),
    ("gru", {"n_layers": 1}, {"params": 50_000}),
    ("transformer", {"n_layers": 2, "n_heads": 2}, {"params": 50_000}),
    ("mamba", {"n_layers": 2}, {"params": 50_000}),
    ("mamba", {"n_layers": 2}, {"state_bytes": 8192}),
])
def test_match_fits_the_width_within_ten_percent(family: str, config: dict, target: dict) -> None:
    from seqbench import models
    from seqbench.bench.run import match

    config = {**config, "vocab_size": 64, "d_output": 64}
    width, size = match.fit_width(family, config, target, seq_len=64)
    model = models.build(family, **config, d_model=width)  # counted independently, on the CPU
    (key, want), = target.items()
    got = model.n_params if key == "params" else model.state_bytes(64, 1)
    assert got == size and abs(got - want) <= 0.10 * want
    for other in (width - 1, width + 1):  # no accepted neighbour is nearer
        try:
            m = models.build(family, **config, d_model=other)
        except models.ConfigError:
            continue
        near = m.n_params if key == "params" else m.state_bytes(64, 1)
        assert abs(near - want) >= abs(got - want)


def test_match_that_no_width_reaches_says_the_nearest() -> None:
    from seqbench.bench.run import match

    with pytest.raises(match.MatchError, match="nearest: d_model"):  # rope, 4 heads: widths step by 8
        match.fit_width("transformer", {"n_layers": 2, "n_heads": 4, "vocab_size": 64, "d_output": 64},
                        {"params": 50_000}, seq_len=64)
    with pytest.raises(match.MatchError, match="not streamable"):
        match.fit_width("lstm", {"bidirectional": True, "vocab_size": 8}, {"state_bytes": 4096}, seq_len=8)
    with pytest.raises(match.ConfigError, match="unknown key 'flops'; valid: params, state_bytes"):
        match.check_match({"flops": 3})
