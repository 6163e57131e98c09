"""The smoke suite end to end: every family x a few tasks x every measure, then its report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from seqbench import models
from seqbench.bench.cli import main
from seqbench.bench.report.build import build_report
from seqbench.bench.run.config import load_suite
from seqbench.bench.run.matrix import expand

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    code = main(["run", "smoke", "--out", str(run_dir), "--parallel", "2"])
    assert code == 0, (run_dir / "results.jsonl").read_text()[-3000:]
    return run_dir


def test_every_cell_has_rows_and_none_failed(smoke_run: Path):
    df = pd.read_json(smoke_run / "results.jsonl", lines=True)
    cells = expand(load_suite(smoke_run / "suite.yaml"))
    assert set(df.cell_id) == {c.cell_id for c in cells}
    assert set(df.status) <= {"ok", "skipped"}
    # every registered family ran, and every measure produced measurements
    assert set(df.family) == set(models.names())
    assert set(df[df.status == "ok"].measure) == {"static", "throughput", "memory", "latency", "accuracy",
                                                   "gradient_flow"}
    # skips are the documented ones: streaming of non-streamable models, seq2seq without a split
    skipped = df[df.status == "skipped"]
    assert set(skipped.model) <= {"lstm_bidir", "seq2seq"}
    assert skipped.error.str.len().min() > 10


def test_rows_are_tidy(smoke_run: Path):
    df = pd.read_json(smoke_run / "results.jsonl", lines=True)
    ok = df[df.status == "ok"]
    assert ok.value.notna().all() and ok.unit.notna().all() and ok.metric.notna().all()
    assert ok.impl.notna().all() and (ok.params > 0).all()
    tps = ok[ok.metric == "tokens_per_s"]
    assert set(tps["mode"]) == {"inference", "training"}
    assert all(len(s) >= 3 for s in tps.samples)
    # a KV cache grows with the sequence, a recurrent state does not
    sb = ok[(ok.metric == "state_bytes") & (ok.measure == "static")].pivot_table(
        index="model", columns="seq_len", values="value")
    assert sb.loc["transformer", 64] == 2 * sb.loc["transformer", 32]
    for m in ("rnn", "lstm", "gru", "mamba"):
        assert sb.loc[m, 64] == sb.loc[m, 32]


def test_report_of_the_smoke_run(smoke_run: Path):
    report = build_report([smoke_run], strict=True)
    assert (report / "index.html").stat().st_size > 10_000
    figures = list((report / "figures").glob("*.png"))
    assert len(figures) >= 8 and all(f.stat().st_size > 1000 for f in figures)
    assert (report / "tables" / "leaderboard.csv").stat().st_size > 100
