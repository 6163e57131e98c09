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


def test_smoke_run_rows_carry_chance_intervals_and_a_validation_score(smoke_run: Path):
    df = pd.read_json(smoke_run / "results.jsonl", lines=True)
    acc = df[(df.measure == "accuracy") & (df.status == "ok") & (df.metric.isin(["accuracy", "mse"]))]
    test = acc[(acc.split == "eval") & acc.distance.isna()]
    assert len(test) and test.chance.notna().all() and (test.n_scored > 0).all()
    assert ((test.ci_low <= test.value + 1e-12) & (test.value <= test.ci_high + 1e-12)).all()
    assert len(acc[acc.split == "valid"]) == len(test[test.length_factor == 1.0])  # one validation score per lr
    assert (test.train_s > 0).all() and (test.time_limited == False).all()


def test_expected_duration_and_eta_come_from_per_measure_costs(capsys: pytest.CaptureFixture[str]):
    """validate prints the expected duration; the ETA of a run is the remaining estimated work over the
    workers (list scheduling), not the mean time of the cells done so far."""
    import io

    from seqbench.bench.run import estimate
    from seqbench.bench.run.runner import Progress

    assert main(["validate", "quick", "--parallel", "2"]) == 0
    assert "expected duration" in capsys.readouterr().out
    cells = expand(load_suite("quick"))
    per = {c.cell_id: estimate.cell_seconds(c) for c in cells}
    acc = [per[c.cell_id] for c in cells if c.measure == "accuracy"]
    static = [per[c.cell_id] for c in cells if c.measure == "static"]
    assert min(acc) > max(static) and max(acc) > 20 * max(static)  # training cells cost far more than static ones
    more = expand(load_suite("quick", ["tasks.parity.measures.accuracy.steps=3000"]))
    assert sum(estimate.cell_seconds(c) for c in more) > sum(per.values())
    assert estimate.makespan([4.0, 1.0, 1.0, 1.0, 1.0], 2) == 4.0  # the long job on one worker
    assert estimate.makespan([1.0, 1.0, 1.0, 1.0, 4.0], 2) == 6.0  # ... started last
    # the ETA: 3 cells of 10 s on 2 workers; none finished yet -> makespan 20 s
    three = cells[:3]
    stream = io.StringIO()
    progress = Progress(3, stream=stream, estimates={c.cell_id: 10.0 for c in three}, parallel=2, heartbeat_s=0.0)
    progress.start()
    assert "expected about 0m20s with 2 worker(s)" in stream.getvalue()
    assert progress._eta() == "ETA 0m20s"
    progress.event("start", three[0], "")
    progress.event("progress", three[0], "step 50/100")  # not a terminal: a heartbeat line
    assert "step 50/100 (running" in stream.getvalue().splitlines()[-1]
