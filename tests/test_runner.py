"""The runner: fault isolation (raise, OOM, hang, SIGKILL), interrupt + resume, run directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from itertools import groupby
from pathlib import Path

import pandas as pd

from seqbench.bench.cli import main
from seqbench.bench.run.config import load_suite
from seqbench.bench.run.matrix import expand
from seqbench.bench.run.runner import read_rows

SUITE = """\
name: faults
device: cpu
threads: 1
timeout_s: 25
defaults: {d_model: 16, n_layers: 1}
models:
  lstm: {family: lstm}
  gru: {family: gru}
measures:
  static: {}
  throughput: {warmup: 1, repeats: 2}
shapes: {batch_size: [2], seq_len: [8, 16]}
faults:
  - {match: {model: lstm, measure: throughput, seq_len: 8}, kind: raise, value: boom}
  - {match: {model: lstm, measure: throughput, seq_len: 16}, kind: oom}
  - {match: {model: gru, measure: throughput, seq_len: 8}, kind: hang}
  - {match: {model: gru, measure: throughput, seq_len: 16}, kind: kill}
"""


def _statuses(run_dir: Path) -> dict[tuple, tuple[str, str]]:
    df = pd.read_json(run_dir / "results.jsonl", lines=True)
    out = {}
    for _, r in df.iterrows():
        key = (r.model, r.measure, None if pd.isna(r.seq_len) else int(r.seq_len))
        out.setdefault(key, (r.status, r.error))
    return out


def test_each_failure_costs_one_cell(tmp_path: Path, capsys):
    suite = tmp_path / "faults.yaml"
    suite.write_text(SUITE)
    run_dir = tmp_path / "run"
    assert main(["run", str(suite), "--out", str(run_dir)]) == 1
    st = _statuses(run_dir)
    assert st[("lstm", "throughput", 8)][0] == "error" and "boom" in st[("lstm", "throughput", 8)][1]
    assert st[("lstm", "throughput", 16)][0] == "oom"
    assert st[("gru", "throughput", 8)][0] == "timeout"
    assert st[("gru", "throughput", 16)][0] == "error" and "SIGKILL" in st[("gru", "throughput", 16)][1]
    static = [k for k in st if k[1] == "static"]
    assert len(static) == 4 and all(st[k][0] == "ok" for k in static)
    # every cell of the matrix has rows, and the run directory is complete
    cells = expand(load_suite(run_dir / "suite.yaml"))
    assert {r["cell_id"] for r in read_rows(run_dir / "results.jsonl")} == {c.cell_id for c in cells}
    env = json.loads((run_dir / "env.json").read_text())
    assert env["torch_version"] and env["threads"] >= 1 and "git_sha" in env
    out = capsys.readouterr().out
    assert "failed" in out and "lstm" in out


RESUME_SUITE = """\
name: resume
device: cpu
threads: 1
defaults: {d_model: 16, n_layers: 1}
models:
  lstm: {family: lstm}
  gru: {family: gru}
  rnn: {family: rnn}
measures:
  throughput: {warmup: 1, repeats: 3, min_time_s: 0.05}
shapes: {batch_size: [2, 4], seq_len: [8, 16, 32]}
"""


def _cells_done(path: Path) -> int:
    return len({r["cell_id"] for r in read_rows(path)})


def test_interrupt_then_resume_runs_each_cell_once(tmp_path: Path):
    suite = tmp_path / "resume.yaml"
    suite.write_text(RESUME_SUITE)
    run_dir = tmp_path / "run"
    results = run_dir / "results.jsonl"
    total = len(expand(load_suite(suite)))
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", str(suite), "--out", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and (not results.exists() or _cells_done(results) < 3):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err
    partial = _cells_done(results)
    assert 3 <= partial < total
    done = subprocess.run([sys.executable, "-m", "bench", "run", "--resume", str(run_dir)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = read_rows(results)
    # each cell's rows form exactly one contiguous block: no cell ran twice
    blocks = [k for k, _ in groupby(r["cell_id"] for r in rows)]
    assert len(blocks) == len(set(blocks)) == total
    assert f"{total - partial} cells run, {partial} already done" in done.stdout


def test_existing_run_dir_is_not_overwritten(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.jsonl").write_text('{"cell_id": "x"}\n')
    assert main(["run", "smoke", "--out", str(run_dir)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_torn_last_line_is_ignored_and_repaired(tmp_path: Path):
    from seqbench.bench.run.runner import ResultsWriter

    path = tmp_path / "results.jsonl"
    path.write_text('{"cell_id": "a"}\n{"cell_id": "b", "val')
    assert [r["cell_id"] for r in read_rows(path)] == ["a"]
    ResultsWriter(path).append([{"cell_id": "c"}])
    assert [r["cell_id"] for r in read_rows(path)] == ["a", "c"]
