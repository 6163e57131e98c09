"""seqbench ab: the paired statistics against scipy and brute force on synthetic samples, the A/A
contrast, the judging and rendering of synthetic timings, and `seqbench ab` end to end on two
tiny checkouts of the same code."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from seqbench.bench import stats
from seqbench.bench.compare import ab, ab_worker
from seqbench.bench.compare.cli import run_cli
from seqbench.bench.run.matrix import Cell

REPO = Path(__file__).resolve().parents[1]


# --- Wilcoxon signed-rank -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 7, 12, 20, 35, 50])
def test_signed_rank_exact_matches_scipy(n: int) -> None:
    rng = np.random.default_rng(n)
    for shift in (0.0, 0.3, 1.0):
        d = rng.normal(shift, 1.0, n)
        assert stats.signed_rank_p(d) == pytest.approx(sps.wilcoxon(d, method="exact").pvalue, rel=1e-12)


@pytest.mark.parametrize("n", [51, 80, 200])
def test_signed_rank_large_n_matches_scipy_normal_approximation(n: int) -> None:
    d = np.random.default_rng(n).normal(0.2, 1.0, n)
    assert stats.signed_rank_p(d) == pytest.approx(sps.wilcoxon(d, method="asymptotic").pvalue, rel=1e-10)


def test_signed_rank_ties_and_zeros_match_scipy() -> None:
    rng = np.random.default_rng(7)
    d = np.round(rng.normal(0.3, 1.0, 40), 1)  # ties among |d| and a few exact zeros
    assert np.any(d == 0) and len(np.unique(np.abs(d))) < d.size
    want = sps.wilcoxon(d, zero_method="wilcox", method="asymptotic").pvalue
    assert stats.signed_rank_p(d) == pytest.approx(want, rel=1e-10)


def test_signed_rank_null_distribution_is_the_brute_force_one() -> None:
    for n in range(1, 11):
        counts = np.zeros(n * (n + 1) // 2 + 1, dtype=np.int64)
        for signs in itertools.product((0, 1), repeat=n):  # every subset of the ranks 1..n
            counts[sum(r for r, s in zip(range(1, n + 1), signs) if s)] += 1
        assert np.array_equal(stats._signed_rank_counts(n), counts)


def test_signed_rank_degenerate_inputs() -> None:
    assert stats.signed_rank_p([]) == 1.0
    assert stats.signed_rank_p([0.0, 0.0]) == 1.0
    assert stats.signed_rank_p(np.arange(1.0, 13.0)) == pytest.approx(2.0 / 2**12)  # every sign the same


# --- bootstrap interval of the median -------------------------------------------------------------


def test_bootstrap_median_ci_is_the_naive_loop() -> None:
    x = np.random.default_rng(3).lognormal(0.0, 0.2, 25)
    rng = np.random.default_rng(11)  # the same draws, one resample at a time
    medians = [np.median(x[rng.integers(0, x.size, size=x.size)]) for _ in range(500)]
    want = np.quantile(medians, [0.025, 0.975])
    assert stats.bootstrap_median_ci(x, n_boot=500, seed=11) == pytest.approx(tuple(want), rel=1e-12)


def test_bootstrap_median_ci_agrees_with_scipy_percentile_bootstrap() -> None:
    x = np.random.default_rng(5).normal(0.0, 1.0, 60)
    lo, hi = stats.bootstrap_median_ci(x, n_boot=20000, seed=1)
    ref = sps.bootstrap((x,), np.median, method="percentile", n_resamples=20000,
                        random_state=np.random.default_rng(2)).confidence_interval
    width = ref.high - ref.low
    assert abs(lo - ref.low) < 0.1 * width and abs(hi - ref.high) < 0.1 * width


# --- the paired ratio test ------------------------------------------------------------------------


def _paired(seed: int, n: int, effect: float, noise: float = 0.02, drift: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Block times of two sides taken in pairs: a machine speed shared by both members of a pair
    (log-normal, spread `drift`, the load) times each side's own small noise; HEAD x `effect`."""
    rng = np.random.default_rng(seed)
    machine = np.exp(rng.normal(0.0, drift, n))  # (n,) slowdown of the machine at pair i
    base = machine * np.exp(rng.normal(0.0, noise, n))
    head = effect * machine * np.exp(rng.normal(0.0, noise, n))
    return base, head


def test_paired_ratio_test_statistics_are_the_textbook_ones() -> None:
    base, head = _paired(0, 30, 1.2)
    t = stats.paired_ratio_test(base, head)
    d = np.log(head / base)
    assert t.ratio == pytest.approx(math.exp(np.median(d)), rel=1e-12)
    assert t.p_value == pytest.approx(sps.wilcoxon(d, method="exact").pvalue, rel=1e-12)
    lo, hi = stats.bootstrap_median_ci(d)
    assert (t.ci_low, t.ci_high) == pytest.approx((math.exp(lo), math.exp(hi)), rel=1e-12)
    assert t.n_baseline == t.n_current == 30


def test_pairing_sees_through_a_load_that_hides_everything_from_the_unpaired_test() -> None:
    """Machine load varying 1.6x between pairs: the unpaired U test (what compare does on pooled
    samples) cannot tell a 30% slowdown, the paired one catches it and passes identical code."""
    base, head = _paired(1, 20, 1.3)
    unpaired = stats.ratio_test(base, head)
    assert stats.timing_verdict(unpaired, unpaired.p_value, 0.10, higher_is_better=False) == "inconclusive"
    paired = stats.paired_ratio_test(base, head)
    assert stats.timing_verdict(paired, paired.p_value, 0.10, higher_is_better=False) == "regression"
    same = [stats.paired_ratio_test(*_paired(s, 20, 1.0)) for s in range(2, 22)]
    assert all(stats.timing_verdict(t, t.p_value, 0.10, higher_is_better=False) == "pass" for t in same)


def test_paired_rule_needs_the_estimate_past_the_limit_not_the_whole_interval() -> None:
    t = stats.RatioTest(ratio=1.13, ci_low=1.08, ci_high=1.17, p_value=0.001, n_baseline=30, n_current=30)
    assert stats.timing_verdict(t, 0.001, 0.10, higher_is_better=False) == "inconclusive"  # compare's rule
    assert stats.timing_verdict(t, 0.001, 0.10, higher_is_better=False, paired=True) == "regression"
    assert stats.timing_verdict(t, 0.2, 0.10, higher_is_better=False, paired=True) == "inconclusive"  # not significant
    below = stats.RatioTest(1.07, 1.03, 1.12, 0.001, 30, 30)  # significant, but within the limit
    assert stats.timing_verdict(below, 0.001, 0.10, higher_is_better=False, paired=True) == "inconclusive"
    straddles_one = stats.RatioTest(1.12, 0.99, 1.3, 0.01, 30, 30)
    assert stats.timing_verdict(straddles_one, 0.01, 0.10, higher_is_better=False, paired=True) == "inconclusive"
    tps = stats.RatioTest(1 / 1.13, 1 / 1.17, 1 / 1.08, 0.001, 30, 30)  # tokens/s: the same change, inverted
    assert stats.timing_verdict(tps, 0.001, 0.10, higher_is_better=True, paired=True) == "regression"
    # the note's reason: past the limit but too weak, or an interval that reaches past the limit
    assert "not significant" in stats.why_inconclusive(straddles_one, 0.10, higher_is_better=False)
    assert "reaches past the limit" in stats.why_inconclusive(below, 0.10, higher_is_better=False)
    assert "not significant" in stats.why_inconclusive(tps, 0.10, higher_is_better=True)


def test_paired_ratio_test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="equally long"):
        stats.paired_ratio_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        stats.paired_ratio_test([1.0, 0.0], [1.0, 1.0])


# --- the A/A contrast ------------------------------------------------------------------------------


def _rounds(times: np.ndarray, orders: str) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """(R, 4) block times in time order -> ab's rounds: (A's two blocks, B's two blocks) in time order."""
    out = []
    for j, row in enumerate(times):
        order = orders[4 * j:4 * j + 4]
        a = [t for t, s in zip(row, order) if s == "A"]
        b = [t for t, s in zip(row, order) if s == "B"]
        out.append(((a[0], a[1]), (b[0], b[1])))
    return out


def test_aa_contrast_ignores_the_code_difference_and_a_linear_drift() -> None:
    rng = np.random.default_rng(0)
    orders = "".join(rng.choice(["ABBA", "BAAB"]) for _ in range(12))
    pos = np.arange(48, dtype=float).reshape(12, 4)  # block index in time
    is_b = np.array([[s == "B" for s in orders[4 * j:4 * j + 4]] for j in range(12)])
    times = 0.01 * np.exp(0.02 * pos) * np.where(is_b, 1.3, 1.0)  # load rising 2% per block, HEAD 30% slower
    contrasts = ab.aa_contrasts(_rounds(times, orders), orders)
    assert np.allclose(contrasts, 0.0, atol=1e-12)
    base, head = ab.UnitResult(_unit("latency_p50_ms"), rounds=_rounds(times, orders)).paired()
    assert stats.paired_ratio_test(base, head).ratio == pytest.approx(1.3)  # the A/B contrast sees it


def test_aa_contrast_has_the_spread_of_the_ab_log_ratio_under_block_noise() -> None:
    rng = np.random.default_rng(1)
    orders = "".join(rng.choice(["ABBA", "BAAB"]) for _ in range(4000))
    times = np.exp(rng.normal(0.0, 0.05, (4000, 4)))
    rounds = _rounds(times, orders)
    aa = np.array(ab.aa_contrasts(rounds, orders))
    d = np.array([0.5 * (math.log(b0 * b1) - math.log(a0 * a1)) for (a0, a1), (b0, b1) in rounds])
    assert aa.std() == pytest.approx(d.std(), rel=0.05)


# --- judging and rendering synthetic timings -------------------------------------------------------


def _unit(metric: str, model: str = "lstm") -> ab.Unit:
    cell = Cell(model=model, family=model, model_config={}, task=None, task_kind=None, task_params={},
                measure="throughput" if metric == "tokens_per_s" else "latency", batch_size=4, seq_len=32)
    row = {"cell_id": cell.cell_id, "measure": cell.measure, "model": model, "batch_size": 4, "seq_len": 32,
           "mode": "inference" if metric == "tokens_per_s" else None}
    return ab.Unit(cell, "inference" if metric == "tokens_per_s" else "stream", metric, row, {}, 128, 1.0)


def _result(unit: ab.Unit, effect: float, seed: int, n: int = 16) -> ab.UnitResult:
    rng = np.random.default_rng(seed)
    orders = "".join(rng.choice(["ABBA", "BAAB"]) for _ in range(n))
    load = np.exp(rng.normal(0.0, 0.3, (n, 1)))  # one load level per round
    times = 1e-3 * load * np.exp(rng.normal(0.0, 0.01, (n, 4)))
    is_b = np.array([[s == "B" for s in orders[4 * j:4 * j + 4]] for j in range(n)])
    res = ab.UnitResult(unit, calls=10, rounds=_rounds(times * np.where(is_b, effect, 1.0), orders), orders=orders)
    res.test = stats.paired_ratio_test(*res.paired())
    res.noise = ab.aa_test(ab.aa_contrasts(res.rounds, res.orders))
    return res


def _run(results: list[ab.UnitResult]) -> ab.ABRun:
    comps, only_b, only_c = ab.judge_units(results, ab.ABSettings(), comparable=True)
    result = ab.CompareResult("base (x)", "head (y)", comps, only_b, only_c, [])
    sides = {n: ab.SideEnv(n, n, REPO, "python") for n in ("base", "head")}
    return ab.ABRun(result, ab.noise_summary(results, ab.ABSettings()), results, sides, {}, "tiny", 0,
                    ab.ABSettings(), 1.0)


def test_judge_units_flags_the_slowed_cell_and_passes_the_rest() -> None:
    slow = _result(_unit("tokens_per_s", "lstm"), 1.3, 0)  # block times 30% longer: tokens/s down
    fine = _result(_unit("latency_p50_ms", "gru"), 1.0, 1)
    run = _run([slow, fine])
    verdicts = {c.label.split()[1]: c for c in run.result.comparisons}
    assert verdicts["lstm"].verdict == "regression" and verdicts["lstm"].change == pytest.approx(1 / 1.3 - 1, abs=0.02)
    assert verdicts["gru"].verdict == "pass"
    assert run.result.exit_code == 1
    assert "A/A noise ±" in verdicts["gru"].note


def test_judge_units_failed_skipped_and_one_sided_cells() -> None:
    head_err = ab.UnitResult(_unit("tokens_per_s", "rnn"), errors={"head": "RuntimeError: boom"})
    base_err = ab.UnitResult(_unit("tokens_per_s", "gru"), errors={"base": "RuntimeError: old bug"})
    both_skip = ab.UnitResult(_unit("latency_p50_ms", "seq2seq"), skipped={"base": "no step", "head": "no step"})
    comps, only_b, only_c = ab.judge_units([head_err, base_err, both_skip], ab.ABSettings(), comparable=True)
    assert [(c.verdict, c.label.split()[1]) for c in comps] == [("failed", "rnn")]
    assert [x["label"].split()[1] for x in only_c] == ["gru"] and not only_b


def test_tables_put_the_verdict_first_and_last_and_state_the_noise_floor() -> None:
    run = _run([_result(_unit("tokens_per_s", "lstm"), 1.0, 2), _result(_unit("latency_p50_ms", "gru"), 1.0, 3)])
    table = ab.render_ab_table(run).split("\n")
    assert table[0].startswith("PASS: 2 compared") and table[-1] == table[0]
    assert table[1].startswith("noise floor (A/A")
    md = ab.render_ab_markdown(run).split("\n")
    assert md[0] == "## seqbench ab" and md[-1] == f"**{table[0]}**"
    assert any(line.startswith("noise floor") for line in md) and "Wilcoxon" in md[-3]
    doc = json.loads(ab.RENDER_AB["json"](run))
    assert doc["exit_code"] == 0 and doc["ab"]["noise_floor"]["n"] == 2
    assert len(doc["ab"]["timings"][0]["rounds"]) == 16


def test_worker_cpus() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    assert ab.worker_cpus(1, None) == ([allowed[-1]] if len(allowed) > 1 else [])
    assert ab.worker_cpus(None, None) == []  # torch's default threads: every CPU, nothing to pin
    assert ab.worker_cpus(1, ()) == []
    with pytest.raises(ab.CompareInputError, match="not available"):
        ab.worker_cpus(1, (10_000,))


def test_worker_refuses_modules_from_outside_its_checkout(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match="not from"):
        ab_worker.import_side(tmp_path)  # seqbench.models imports, but from this repository


# --- end to end -------------------------------------------------------------------------------------

TINY = """
name: ab-tiny
device: cpu
dtype: float32
seeds: [0]
timeout_s: 60
threads: 1
defaults: {d_model: 8, n_layers: 1}
models:
  lstm: {family: lstm}
  lstm_bidir: {family: lstm, bidirectional: true}
tasks:
  copy: {task: copy, n_copy: 2, delay: 2}
measures:
  throughput: {warmup: 1, modes: [inference]}
  latency: {warmup: 1}
  memory: {modes: [inference]}
  accuracy: {steps: 2, lrs: [0.003], batch_size: 4, eval_batches: 1, length_factors: [1]}
shapes: {batch_size: [2], seq_len: [8]}
"""


def _checkout(dest: Path) -> Path:
    """A copy of this repository's code: what a second checkout of the same commit holds."""
    for name in ("seqbench", "bench", "models", "tasks"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, dest / name)
    return dest


def test_ab_end_to_end_on_two_checkouts_of_the_same_code(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Two copies installed in their own venvs; timing only; too few rounds for any test to reject:
    exit 0, every timing compared, each side's worker imported its own copy."""
    base, head = _checkout(tmp_path / "base"), _checkout(tmp_path / "head")
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY.replace("  memory: {modes: [inference]}\n", "").replace(
        "  accuracy: {steps: 2, lrs: [0.003], batch_size: 4, eval_batches: 1, length_factors: [1]}\n", ""))
    code = run_cli(["ab", str(base), str(head), str(suite), "--timing-only", "--format", "json", "--quiet",
                    "--rounds", "4:4", "--block-ms", "1", "--cache-dir", str(tmp_path / "cache"),
                    "--work-dir", str(tmp_path / "work")])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["exit_code"] == 0
    labels = sorted((c["label"].split()[0], c["label"].split()[1], c["metric"]) for c in doc["comparisons"])
    assert labels == [("latency", "lstm", "latency_p50_ms"), ("throughput", "lstm", "tokens_per_s"),
                      ("throughput", "lstm_bidir", "tokens_per_s")]  # lstm_bidir has no step(): no latency
    for name, root in (("base", base), ("head", head)):
        side = doc["ab"]["sides"][name]
        assert side["root"] == str(root) and side["layout"] == "seqbench"
        assert Path(side["python"]).is_relative_to(tmp_path / "cache")  # its own venv
    assert all(len(t["rounds"]) == 4 for t in doc["ab"]["timings"] if not t["skipped"])


@pytest.mark.slow
def test_ab_catches_a_slowdown_from_a_git_ref_with_memory_and_accuracy(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """BASE a git ref (worktree + venv), HEAD a directory; the suite's slowdown fault x3 acts on
    HEAD only and is caught; memory and accuracy come from each side's own run and pass."""
    repo = _checkout(tmp_path / "repo")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-q", "-m", "x"], check=True)
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY + 'faults: [{match: {model: lstm}, kind: slowdown, value: 3.0}]\n')
    monkeypatch.chdir(repo)
    code = run_cli(["ab", "HEAD", str(repo), str(suite), "--format", "json", "--quiet", "--rounds", "12:12",
                    "--block-ms", "1", "--cache-dir", str(tmp_path / "cache"), "--work-dir", str(tmp_path / "work")])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    by = {(c["label"].split()[0], c["label"].split()[1], c["metric"]): c["verdict"] for c in doc["comparisons"]}
    assert by[("throughput", "lstm", "tokens_per_s")] == "regression"
    assert by[("latency", "lstm", "latency_p50_ms")] == "regression"
    assert by[("throughput", "lstm_bidir", "tokens_per_s")] != "regression"  # the fault matched model lstm only
    kinds = {c["kind"] for c in doc["comparisons"]}
    assert {"memory", "accuracy"} <= kinds
    assert all(c["verdict"] == "pass" for c in doc["comparisons"] if c["kind"] in ("memory", "accuracy"))
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert doc["ab"]["sides"]["base"]["sha"] == sha.stdout.strip()
    worktrees = subprocess.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True, text=True,
                               check=True)
    assert len(worktrees.stdout.strip().splitlines()) == 1  # BASE's worktree was removed afterwards


# --- your own project's models -------------------------------------------------------------------

PROJECT_SUITE = """
name: ab-project
device: cpu
seeds: [0]
timeout_s: 60
threads: 1
defaults: {d_model: 16, n_layers: 1}
models:
  gated_conv: {family: "my_mixer.mixers:GatedConv"}
  lstm: {family: lstm}
measures:
  throughput: {warmup: 1, modes: [inference]}
shapes: {batch_size: [2], seq_len: [16]}
"""
SLOW_FORWARD = """
    def forward(self, x):
        import time
        end = time.perf_counter() + 0.002  # HEAD's change: 2 ms more per forward
        while time.perf_counter() < end:
            pass
        return self._forward(x)
"""


@pytest.fixture
def isolated_imports(monkeypatch: pytest.MonkeyPatch):
    """ab puts HEAD's project first on sys.path to read the suite: undo that, and forget its modules."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name in [m for m in sys.modules if m.partition(".")[0] == "my_mixer"]:
        del sys.modules[name]


@pytest.mark.usefixtures("isolated_imports")
def test_ab_times_two_checkouts_of_a_users_project(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """BASE and HEAD are copies of examples/my_mixer (not seqbench): each side's worker imports its
    own copy of the mixer, so HEAD's slower forward is a regression of gated_conv and of nothing else."""
    base, head = tmp_path / "base", tmp_path / "head"
    for d in (base, head):
        shutil.copytree(REPO / "examples" / "my_mixer", d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    mixers = head / "my_mixer" / "mixers.py"
    text = mixers.read_text().replace("    def forward(self, x: torch.Tensor)", "    def _forward(self, x: torch.Tensor)")
    mixers.write_text(text.replace("    # streaming:", SLOW_FORWARD.lstrip("\n") + "\n    # streaming:"))
    suite = tmp_path / "suite.yaml"
    suite.write_text(PROJECT_SUITE)
    code = run_cli(["ab", str(base), str(head), str(suite), "--timing-only", "--format", "json", "--quiet",
                    "--rounds", "12:12", "--block-ms", "1", "--work-dir", str(tmp_path / "work")])
    doc = json.loads(capsys.readouterr().out)
    by = {c["label"].split()[1]: c["verdict"] for c in doc["comparisons"]}
    assert code == 1 and by["gated_conv"] == "regression" and by["lstm"] != "regression", by
    assert {s["layout"] for s in doc["ab"]["sides"].values()} == {"project"}


@pytest.mark.usefixtures("isolated_imports")
def test_ab_refuses_a_seqbench_checkout_against_a_project(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    project = tmp_path / "project"
    shutil.copytree(REPO / "examples" / "my_mixer", project, ignore=shutil.ignore_patterns("__pycache__"))
    code = run_cli(["ab", str(REPO), str(project), "smoke", "--timing-only", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "both be seqbench checkouts or both checkouts of your project" in err[0]


def test_foreign_modules_names_a_package_of_the_side_imported_from_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "json").mkdir()  # this side "has" a json package, but json was imported from the stdlib
    (tmp_path / "json" / "__init__.py").write_text("")
    foreign = ab_worker.foreign_modules(tmp_path)
    assert any(x.startswith("json (") for x in foreign)
    assert ab_worker.foreign_modules(tmp_path / "json") == []  # nothing of an empty side is imported
