"""Reports from synthetic runs: every figure and table, the scaling fit, merging, failures, bad input.

`make_run` writes a run directory (results.jsonl + env.json) with every kind of row the
measures write, generated from known laws, including failed, skipped and timed-out cells.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqbench.bench.report import plots, tables
from seqbench.bench.report.build import ReportInputError, build_report, cmd_report
from seqbench.bench.results.io import load_runs, write_plan
from seqbench.bench.results.schema import METRICS, ROW_FIELDS, blank_row
from seqbench.bench.run.runner import plan_record

MODELS = {"lstm": "lstm", "mamba": "mamba", "transformer": "transformer", "lstm_bidir": "lstm"}
# time per sequence ∝ seq_len^k: recurrent and SSM linear, attention quadratic
EXPONENT = {"lstm": 1.0, "mamba": 1.0, "transformer": 2.0, "lstm_bidir": 1.0}
SEQ_LENS = [64, 128, 256, 512, 1024]
LRS = [1e-3, 3e-3]
FIGURES = ["accuracy_heatmap", "accuracy_vs_seq_len", "accuracy_vs_distance", "length_extrapolation",
           "learning_curves", "throughput_scaling", "memory_scaling", "latency_vs_position", "latency_percentiles",
           "accuracy_vs_throughput", "gradient_flow"]
TABLES = ["runs", "leaderboard", "scaling_exponents", "speed_memory", "latency", "accuracy_throughput", "static",
          "failures", "environment"]


def _acc(model: str, task: str, lr: float, seed: int = 0) -> float:
    """A deterministic 'final accuracy' per (model, task, lr)."""
    h = int(hashlib.sha256(f"{model}/{task}/{lr}/{seed}".encode()).hexdigest()[:8], 16)
    return 0.5 + 0.45 * (h % 1000) / 1000


class Rows:
    def __init__(self, run_id: str, device: str, dtype: str = "float32") -> None:
        self.rows: list[dict] = []
        self.base = {"run_id": run_id, "suite": "synthetic", "device": device, "dtype": dtype, "seed": 0,
                     "device_name": "Synthetic CPU" if device == "cpu" else "Synthetic GPU",
                     "torch_version": "2.13.0", "git_sha": "0123456789abcdef", "threads": 2}

    def add(self, model: str, measure: str, metric: str | None, value: float | None, *, task: str | None = None,
            status: str = "ok", error: str | None = None, **extra) -> None:
        row = blank_row()
        cell = f"{model}/{task}/{measure}/{extra.get('batch_size')}/{extra.get('seq_len')}"
        row.update(self.base, model=model, family=MODELS[model], impl="torch", task=task,
                   task_kind=None if task is None else task.split("_")[0], measure=measure, metric=metric,
                   value=value, status=status, error=error, params=10_000,
                   cell_id=hashlib.sha256(cell.encode()).hexdigest()[:16])
        if metric is not None:
            row["unit"], row["higher_is_better"] = METRICS[metric]
        row.update(extra)
        self.rows.append(row)


def accuracy_rows(r: Rows, model: str, task: str, train_len: int, metric: str = "accuracy") -> None:
    finals = {lr: _acc(model, task, lr) for lr in LRS}
    if metric != "accuracy":
        finals = {lr: 1.0 - a for lr, a in finals.items()}  # an error metric: lower is better
    best = (max if metric == "accuracy" else min)(finals, key=finals.get)
    for lr, final in finals.items():
        for factor in (1.0, 2.0, 4.0):
            value = final / factor if metric == "accuracy" else final * factor
            at = {"lr": lr, "best": lr == best, "eval_seq_len": int(train_len * factor), "length_factor": factor,
                      "step": 100, "split": "eval", "wall_s": 1.0}
            r.add(model, "accuracy", metric, value, task=task, **at)
            r.add(model, "accuracy", "eval_loss", 1.0 - final, task=task, **at)
        if task.startswith("copy"):
            for d in (1, 2, 4, 8, 16, 32):
                r.add(model, "accuracy", "accuracy", final * (1 - d / 64), task=task, distance=d, lr=lr,
                      best=lr == best, eval_seq_len=train_len, length_factor=1.0, step=100, split="eval")
        for step in range(10, 101, 10):
            r.add(model, "accuracy", metric, final * step / 100, task=task, lr=lr, step=step, split="curve",
                  eval_seq_len=train_len)
            r.add(model, "accuracy", "train_loss", 2.0 / step, task=task, lr=lr, step=step, split="curve",
                  eval_seq_len=train_len)
    if metric == "accuracy":
        r.add(model, "accuracy", "steps_to_90pct", 90.0, task=task, lr=best, best=True, eval_seq_len=train_len,
              split="eval")


def make_run(path: Path, run_id: str = "synthetic-cpu", device: str = "cpu", noise: float = 0.02,
             seed: int = 0, scale: float = 1.0) -> Path:
    """Write a run directory with every kind of row; `scale` multiplies every speed (a faster device)."""
    rng = np.random.default_rng(seed)
    r = Rows(run_id, device)
    for model in MODELS:
        # accuracy: two lengths of the copy kind, a regression task; mamba diverges on adding
        accuracy_rows(r, model, "copy_64", 64)
        accuracy_rows(r, model, "copy_128", 128)
        if model == "mamba":
            r.add(model, "accuracy", None, None, task="adding", status="error",
                  error="RuntimeError: loss is NaN at step 37")
        else:
            accuracy_rows(r, model, "adding", 100, metric="mse")
        # throughput and memory at every seq_len; the transformer runs out of memory at 2048
        for t in SEQ_LENS:
            shape = {"batch_size": 8, "seq_len": t}
            for mode, slow in (("inference", 1.0), ("training", 3.0)):
                per_seq = 1e-6 * slow * t ** EXPONENT[model] / scale
                samples = [t / (per_seq * (1 + noise * rng.standard_normal())) for _ in range(5)]
                tps = float(np.median(samples))
                r.add(model, "throughput", "tokens_per_s", tps, mode=mode, samples=samples,
                      stats={"median": tps, "n": 5}, **shape)
                r.add(model, "throughput", "achieved_flops", tps * 2e4, mode=mode, **shape)
                r.add(model, "throughput", "mfu", tps * 2e4 / 1e12, mode=mode, **shape)
                r.add(model, "memory", "peak_bytes", 2**20 * (1 + t * slow * (t if model == "transformer" else 1)
                                                               / 64), mode=mode, **shape)
            r.add(model, "memory", "state_bytes", 4096.0 * (t if model == "transformer" else 1), **shape)
            r.add(model, "static", "params", 10_000.0, seq_len=t)
            r.add(model, "static", "flops_per_token", 2e4 + (t * 64 if model == "transformer" else 0), seq_len=t)
            r.add(model, "static", "matmul_flops_ceiling", 1e12, seq_len=t)
        if model == "transformer":
            r.add(model, "throughput", None, None, status="oom", error="CUDA out of memory (simulated)",
                  batch_size=8, seq_len=2048)
        # streaming latency; the bidirectional model cannot stream
        if model == "lstm_bidir":
            r.add(model, "latency", None, None, status="skipped", error="lstm_bidir is bidirectional: not streamable",
                  batch_size=1, seq_len=256)
        else:
            grow = 0.01 if model == "transformer" else 0.0
            for name, q in (("latency_p50_ms", 1.0), ("latency_p90_ms", 1.3), ("latency_p99_ms", 2.0),
                            ("first_token_ms", 1.5)):
                r.add(model, "latency", name, q * (0.5 + grow * 128) / scale, batch_size=1, seq_len=256)
            for pos in (1, 4, 16, 64, 128, 250):
                r.add(model, "latency", "latency_ms", (0.5 + grow * pos) / scale, position=pos, batch_size=1,
                      seq_len=256)
        # gradient flow: geometric decay for the recurrent nets, flat for attention
        for step in (0, 100):
            for d in (0, 1, 2, 4, 8, 16, 32):
                decay = 1.0 if model == "transformer" else (0.8 if step == 0 else 0.95) ** d
                r.add(model, "gradient_flow", "grad_norm", decay, task="copy_64", distance=d, step=step, lr=1e-3)
    r.add("lstm", "gradient_flow", None, None, task="adding", status="timeout", error="cell exceeded timeout_s=180")
    path.mkdir(parents=True, exist_ok=True)
    with (path / "results.jsonl").open("w") as f:
        for row in r.rows:
            f.write(json.dumps(row) + "\n")
    env = {"device": device, "device_name": r.base["device_name"], "cpu_model": "Synthetic CPU", "threads": 2,
           "torch_version": "2.13.0", "cuda_version": None if device == "cpu" else "12.8", "git_sha": "0123456789abcdef",
           "git_dirty": False, "machine_class": f"{device}-synthetic", "run_id": run_id, "suite": "synthetic"}
    (path / "env.json").write_text(json.dumps(env))
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_run(tmp_path_factory.mktemp("run") / "synthetic-cpu")
    return build_report([run], strict=True)


def test_every_figure_and_table_exists(report: Path) -> None:
    assert report.name == "report"
    for name in FIGURES:
        for ext in ("png", "svg"):
            f = report / "figures" / f"{name}.{ext}"
            assert f.is_file() and f.stat().st_size > 2000, f
        assert (report / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (report / "figures" / f"{name}.svg").read_bytes()[:2000]
    for name in TABLES:
        table = pd.read_csv(report / "tables" / f"{name}.csv")
        assert len(table) > 0, name
    md = (report / "index.md").read_text()
    page = (report / "index.html").read_text()
    for name in FIGURES:
        assert f"figures/{name}.png" in md and f"figures/{name}.svg" in md
        assert f'id="fig-{name}"' in page
    assert "Omitted" not in md and "Not drawn" not in md
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert not re.search(r'(src|href)="(?!data:|#)', page), "index.html must not load anything external"
    for name in TABLES:
        assert f"tables/{name}.csv" in md


def test_captions_name_device_dtype_and_sha(report: Path) -> None:
    md = (report / "index.md").read_text()
    captions = [line for line in md.splitlines() if line.startswith("*") and "[SVG]" in line]
    assert len(captions) == len(FIGURES)
    for c in captions:
        assert "device cpu (Synthetic CPU)" in c and "dtype float32" in c and "git 0123456789" in c


def test_failed_skipped_cells_are_listed_with_reason(report: Path) -> None:
    fails = pd.read_csv(report / "tables" / "failures.csv")
    by_status = {s: set(g["error"]) for s, g in fails.groupby("status")}
    assert by_status["error"] == {"RuntimeError: loss is NaN at step 37"}
    assert by_status["oom"] == {"CUDA out of memory (simulated)"}
    assert by_status["skipped"] == {"lstm_bidir is bidirectional: not streamable"}
    assert by_status["timeout"] == {"cell exceeded timeout_s=180"}
    md = (report / "index.md").read_text()
    for reason in ("loss is NaN at step 37", "not streamable", "exceeded timeout_s=180", "out of memory"):
        assert reason in md
    # the leaderboard shows the failed model/task instead of dropping it
    board = pd.read_csv(report / "tables" / "leaderboard.csv")
    mamba_adding = board[(board["model"] == "mamba") & (board["task"] == "adding")]
    assert len(mamba_adding) == 1 and mamba_adding["value"].isna().all()
    assert "loss is NaN" in mamba_adding["note"].iloc[0]


def test_leaderboard_picks_best_lr_and_ranks(report: Path) -> None:
    board = pd.read_csv(report / "tables" / "leaderboard.csv")
    for (model, task), g in board.dropna(subset=["value"]).groupby(["model", "task"]):
        finals = {lr: _acc(model, task, lr) for lr in LRS}
        expect = max(finals.values()) if task != "adding" else min(1 - a for a in finals.values())
        assert g["value"].iloc[0] == pytest.approx(expect)
    trained = board[board["length_factor"] == 1.0]
    copy = trained[trained["task"] == "copy_64"].sort_values("rank")
    assert list(copy["value"]) == sorted(copy["value"], reverse=True)  # accuracy: higher ranks first
    adding = trained[(trained["task"] == "adding")].dropna(subset=["value"]).sort_values("rank")
    assert list(adding["value"]) == sorted(adding["value"])  # mse: lower ranks first
    assert set(trained.loc[trained["task"] == "copy_64", "steps_to_90pct"]) == {90.0}
    # the rows were evaluated at 1, 2 and 4 x the trained length: a second block at the longest
    longest = board[(board["task"] == "copy_64") & (board["length_factor"] != 1.0)]
    assert set(longest["length_factor"]) == {4.0} and set(longest["eval_seq_len"]) == {256}
    assert list(longest["value"]) == pytest.approx([v / 4 for v in copy["value"]])  # accuracy / factor


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_scaling_exponent_recovers_power_law(tmp_path: Path, noise: float) -> None:
    for k in (1.0, 2.0):
        rng = np.random.default_rng(1)
        r = Rows("fit", "cpu")
        for t in [32, 64, 128, 256, 512, 1024, 2048]:
            for _ in range(3):  # repeats at one length: the fit takes their median
                per_seq = 3e-6 * t**k * (1 + noise * rng.standard_normal())
                r.add("lstm", "throughput", "tokens_per_s", t / per_seq, mode="inference", batch_size=4, seq_len=t)
        fit = tables.scaling_exponents(pd.DataFrame(r.rows))
        assert len(fit) == 1
        assert fit["exponent"].iloc[0] == pytest.approx(k, abs=0.05)


def test_throughput_legend_shows_fitted_exponents(tmp_path: Path) -> None:
    df = pd.read_json(make_run(tmp_path / "r") / "results.jsonl", lines=True)
    fig = plots.throughput_scaling(df)
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    found = {m.group(1): (float(m.group(2)), float(m.group(3)))
             for t in labels if (m := re.fullmatch(r"(\w+)\s+k=([\d.]+) / ([\d.]+)", t))}
    assert set(found) == set(MODELS)  # one entry per model, k for inference / training
    for model, (k_inference, k_training) in found.items():
        assert k_inference == pytest.approx(EXPONENT[model], abs=0.05), model
        assert k_training == pytest.approx(EXPONENT[model], abs=0.05), model


def test_model_colour_is_fixed_across_figures(tmp_path: Path) -> None:
    assert plots.model_palette(["b", "a", "c", "a"]) == plots.model_palette(["c", "b", "a"])
    df = pd.read_json(make_run(tmp_path / "r") / "results.jsonl", lines=True)
    palette = plots.model_palette(df["model"])
    for draw in (plots.throughput_scaling, plots.memory_scaling, plots.gradient_flow, plots.learning_curves):
        fig = draw(df, palette)
        for ax in fig.axes:
            for line in ax.get_lines():
                label = line.get_label().split()[0]
                if label in palette:
                    assert line.get_color() == palette[label], (draw.__name__, label)


def test_pareto_mask_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 6, 40).astype(float), rng.integers(0, 6, 40).astype(float)
    naive = [not any(x[j] >= x[i] and y[j] >= y[i] and (x[j] > x[i] or y[j] > y[i]) for j in range(40))
             for i in range(40)]
    assert list(tables.pareto_mask(x, y)) == naive


def test_two_runs_merge(tmp_path: Path) -> None:
    cpu = make_run(tmp_path / "cpu-run", run_id="cpu-run", device="cpu")
    gpu = make_run(tmp_path / "gpu-run", run_id="gpu-run", device="cuda", scale=50.0, seed=1)
    out = build_report([cpu, gpu], strict=True)
    assert out == cpu / "report-merged"
    for name in ("leaderboard", "speed_memory", "latency", "scaling_exponents"):
        table = pd.read_csv(out / "tables" / f"{name}.csv")
        assert set(table["run"]) == {"cpu-run", "gpu-run"}, name
    speed = pd.read_csv(out / "tables" / "speed_memory.csv")
    both = speed[(speed["model"] == "lstm") & (speed["seq_len"] == 256)].set_index("run")
    ratio = both.loc["gpu-run", "tokens_per_s_inference"] / both.loc["cpu-run", "tokens_per_s_inference"]
    assert ratio == pytest.approx(50.0, rel=0.15)
    env = pd.read_csv(out / "tables" / "environment.csv")
    assert {"cpu-run", "gpu-run"} <= set(env.columns)
    md = (out / "index.md").read_text()
    assert "[cpu-run] device cpu" in md and "[gpu-run] device cuda" in md


def test_partial_run_omits_figures_with_a_reason(tmp_path: Path) -> None:
    r = Rows("speed-only", "cpu")
    for t in SEQ_LENS:
        r.add("lstm", "throughput", "tokens_per_s", 1e6 / t**0.1, mode="inference", batch_size=8, seq_len=t)
    run = tmp_path / "speed-only"
    run.mkdir()
    (run / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in r.rows))
    out = build_report([run], strict=True)
    md = (out / "index.md").read_text()
    assert (out / "figures" / "throughput_scaling.png").is_file()
    assert not (out / "figures" / "accuracy_heatmap.png").exists()
    assert "Omitted: no accuracy scores" in md
    assert "Omitted: no gradient-flow rows" in md
    assert "Omitted: no env.json" in md
    assert "None: every cell of the run wrote ok rows." in md


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r")
    n = len((run / "results.jsonl").read_text().splitlines())
    with (run / "results.jsonl").open("a") as f:
        f.write('{"run_id": "synthetic-cpu", "metr')  # a writer killed mid-line
    df = load_runs([run])
    assert len(df) == n and set(df["run"]) == {"synthetic-cpu"}
    assert set(ROW_FIELDS) <= set(df.columns) and df["git_dirty"].eq(False).all()  # env.json fields joined


def test_bad_input_raises_specific_error(tmp_path: Path) -> None:
    with pytest.raises(ReportInputError, match="does-not-exist"):
        build_report([tmp_path / "does-not-exist"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportInputError, match="no results.jsonl"):
        build_report([tmp_path / "empty"])



def test_garbled_lines_are_skipped_with_a_warning(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r")
    lines = (run / "results.jsonl").read_text().splitlines()
    lines.insert(1, "not json")
    (run / "results.jsonl").write_text("\n".join(lines) + "\n")
    warnings: list[str] = []
    out = build_report([run], warn=warnings.append)
    assert len(warnings) == 1 and "1 unreadable line(s)" in warnings[0] and "line 2" in warnings[0]
    assert "unreadable line" in (out / "index.md").read_text()


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    assert cmd_report(argparse.Namespace(run_dirs=[str(tmp_path / "nope")], out=None)) == 2
    assert "nope" in capsys.readouterr().err
    from seqbench.bench.cli import main

    assert main(["report", str(tmp_path / "nope")]) == 2
    run = tmp_path / "r"
    run.mkdir()
    r = Rows("small", "cpu")
    r.add("lstm", "static", "params", 1000.0, seq_len=64)
    (run / "results.jsonl").write_text(json.dumps(r.rows[0]) + "\n")
    assert main(["report", str(run), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "index.html").is_file()


def test_missing_cells_of_an_interrupted_run_are_listed(tmp_path: Path) -> None:
    from seqbench.bench.run.config import load_suite
    from seqbench.bench.run.matrix import expand

    run = tmp_path / "interrupted"
    run.mkdir()
    (run / "suite.yaml").write_text(
        "name: tiny\ndevice: cpu\ndtype: float32\nseeds: [0]\n"
        "models: {lstm: {family: lstm, d_model: 8, n_layers: 1}}\n"
        "tasks: {copy: {task: copy}}\n"
        "measures: {static: {}}\n"
        "shapes: {batch_size: [2], seq_len: [16, 32]}\n")
    cells = expand(load_suite(run / "suite.yaml"), "cpu")
    assert len(cells) == 2
    r = Rows("interrupted", "cpu")
    r.add("lstm", "static", "params", 1000.0, seq_len=cells[0].seq_len)
    r.rows[0]["cell_id"] = cells[0].cell_id
    (run / "results.jsonl").write_text(json.dumps(r.rows[0]) + "\n")
    (run / "env.json").write_text(json.dumps({"device": "cpu", "run_id": "interrupted"}))
    write_plan(run, [plan_record(c) for c in cells])  # as `seqbench run` does when it starts
    out = build_report([run], strict=True)
    fails = pd.read_csv(out / "tables" / "failures.csv")
    assert list(fails["status"]) == ["missing"]
    assert fails["seq_len"].iloc[0] == cells[1].seq_len
    assert "--resume" in fails["error"].iloc[0]
