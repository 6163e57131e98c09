"""The committed reference run of the default suite (results/reference/cpu-quick) keeps the four
separations the README promises, read through the same query the report uses. A rerun that
breaks one fails here instead of being committed as the example report."""
from __future__ import annotations

from pathlib import Path

import pytest

from seqbench.bench.results import io, query

REF = Path(__file__).resolve().parents[1] / "results" / "reference" / "cpu-quick"


@pytest.fixture(scope="module")
def cells():
    if not (REF / "results.jsonl").exists():
        pytest.skip("no committed quick reference in this checkout")
    ls = query.length_scores(io.load_rows(REF))
    return {(r.model, r.task, float(r.length_factor)): r for r in ls.itertuples()}


def _cell(cells, model, task, factor=1.0):
    assert (model, task, factor) in cells, f"reference has no {model} {task} x{factor}"
    row = cells[(model, task, factor)]
    assert row.n_seeds >= 2, f"{model} {task}: {row.n_seeds} seed(s)"
    assert row.ci_low <= row.value <= row.ci_high
    return row


def test_mqar_transformer_recalls_lstm_does_not(cells):
    t, lstm = _cell(cells, "transformer", "associative_recall"), _cell(cells, "lstm", "associative_recall")
    assert t.value >= 0.9 and t.learned
    assert lstm.value <= 0.6


def test_parity_at_four_times_the_length(cells):
    lstm, t = _cell(cells, "lstm", "parity", 4.0), _cell(cells, "transformer", "parity", 4.0)
    assert lstm.value >= 0.9 and lstm.learned
    assert t.value <= 0.65 and not t.learned


def test_induction_heads_at_eight_times_the_length(cells):
    mamba, t = _cell(cells, "mamba", "induction_heads", 8.0), _cell(cells, "transformer", "induction_heads", 8.0)
    assert mamba.value >= 0.9 and mamba.learned
    assert t.value <= 0.5 and not t.learned


def test_adding_gated_rnns_solve_it_vanilla_does_not(cells):
    for model in ("gru", "lstm"):
        row = _cell(cells, model, "adding")
        assert row.eval_seq_len >= 100
        assert row.value < 0.05 and row.learned, model
    rnn = _cell(cells, "rnn", "adding")
    assert rnn.value > 0.1 and not rnn.learned
    assert rnn.chance == pytest.approx(1 / 6, rel=1e-3)
