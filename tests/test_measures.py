"""The measures: schema of their rows, training that learns, determinism, timings that agree
with an independent clock, CPU peak memory that tracks allocations, the fault knobs, and
the gradient probe against a hand-written backward pass."""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqbench import models, tasks
from seqbench.bench.measures import MEASURES, MeasureContext, Skip
from seqbench.bench.measures import latency as latency_mod
from seqbench.bench.measures import memory as memory_mod
from seqbench.bench.measures.timing import QuietGuard, guarded, measure_samples, summarize
from seqbench.bench.measures.train import random_batch, workload_fn
from seqbench.bench.results.schema import EXTRA_FIELDS, METRICS
from seqbench.bench.run.matrix import Cell
from seqbench.errors import SettingsError
from seqbench.tasks.base import Task, token_batch

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@dataclass(frozen=True)
class IdentityConfig:
    vocab_size: int = 8
    seq_len: int = 12


class IdentityTask(Task):
    """Target = input at every position: a task any model learns in a few steps.

    Example (vocab_size=4): inputs 2 0 3 1 -> targets 2 0 3 1 (every position scored).
    """

    name = "identity"
    metric = "token_accuracy"

    def chance(self, seq_len=None):
        return 1.0 / self.config.vocab_size  # targets uniform over the vocabulary

    def _batch(self, batch_size, seq_len, rng, split):
        x = rng.integers(0, self.config.vocab_size, size=(batch_size, seq_len))
        return token_batch(x, x.copy())


def make_ctx(measure: str, family: str = "lstm", task: Task | None = None, settings: dict | None = None,
             batch_size: int | None = None, seq_len: int | None = None, faults: dict | None = None,
             seed: int = 0, **model_config) -> MeasureContext:
    """A MeasureContext as the runner builds it: a seeded model sized for the task."""
    cfg = {"d_model": 16, "n_layers": 1, **model_config}
    if task is not None:
        cfg["vocab_size"] = task.vocab_size
        cfg["d_output"] = task.n_outputs

    def build():
        torch.manual_seed(seed)
        return models.build(family, **cfg)

    cell = Cell(model=family, family=family, model_config=cfg, task=getattr(task, "name", None),
                task_kind=getattr(task, "name", None), task_params={}, measure=measure,
                settings=settings or {}, batch_size=batch_size, seq_len=seq_len, seed=seed)
    return MeasureContext(cell=cell, build_model=build, task=task, device=CPU, dtype=torch.float32,
                          settings=settings or {}, faults=faults or {})


def run(ctx: MeasureContext) -> list[dict]:
    """Validate the settings as the runner does, then measure."""
    spec = MEASURES[ctx.cell.measure]
    ctx.settings = spec.make_settings(ctx.settings)
    return spec.fn(ctx)


def pick(rows: list[dict], metric: str, **cols) -> list[dict]:
    return [r for r in rows if r["metric"] == metric and all(r.get(k) == v for k, v in cols.items())]


ACC = {"steps": 8, "lrs": [1e-3, 3e-3], "batch_size": 8, "eval_batches": 2, "eval_every": 4, "length_factors": [1, 2]}
CASES = {
    "static": {"seq_len": 32},
    "throughput": {"batch_size": 2, "seq_len": 16, "settings": {"warmup": 1, "repeats": 3, "min_time_s": 0.005}},
    "latency": {"seq_len": 24, "settings": {"prefill_len": 4, "repeats": 2}},
    "memory": {"batch_size": 2, "seq_len": 16},
    "accuracy": {"task": IdentityTask(IdentityConfig()), "settings": ACC},
    "gradient_flow": {"task": IdentityTask(IdentityConfig()), "settings": {"steps": 4, "batch_size": 8}},
}


@pytest.mark.parametrize("measure", sorted(CASES))
def test_rows_follow_the_schema(measure):
    rows = run(make_ctx(measure, **CASES[measure]))
    assert rows
    allowed = {"metric", "value", "unit", "higher_is_better", "samples", "stats", *EXTRA_FIELDS}
    for r in rows:
        assert set(r) <= allowed, set(r) - allowed
        assert r["metric"] in METRICS
        assert (r["unit"], r["higher_is_better"]) == METRICS[r["metric"]]
        assert math.isfinite(r["value"]), r
        for s in r.get("samples") or []:
            assert math.isfinite(s)
        if r.get("stats"):
            assert r["stats"]["n"] == len(r["samples"]) if r.get("samples") else r["stats"]["n"] >= 1


def test_unknown_setting_names_the_key():
    with pytest.raises(SettingsError, match="'repeat'.*did you mean 'repeats'"):
        run(make_ctx("throughput", batch_size=2, seq_len=8, settings={"repeat": 3}))


def test_summarize_matches_numpy():
    x = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    s = summarize(x)
    assert s["median"] == 3.5 and s["n"] == 6 and s["mean"] == pytest.approx(25 / 6)
    assert s["iqr"] == pytest.approx(np.quantile(x, 0.75) - np.quantile(x, 0.25))
    assert s["std"] == pytest.approx(np.std(x, ddof=1))
    assert s["p20"] <= s["median"] <= s["p80"]


# --- accuracy -----------------------------------------------------------------------


def test_accuracy_learns_an_easy_task():
    task = IdentityTask(IdentityConfig(vocab_size=8, seq_len=12))
    settings = {"steps": 40, "lrs": [1e-2], "batch_size": 16, "eval_batches": 2, "length_factors": [1, 2]}
    rows = run(make_ctx("accuracy", task=task, settings=settings, d_model=32))
    final = pick(rows, "accuracy", split="eval", length_factor=1.0)
    assert len(final) == 1 and final[0]["value"] > 0.9 and final[0]["best"] is True
    longer = pick(rows, "accuracy", split="eval", length_factor=2.0)
    assert longer[0]["eval_seq_len"] == 24 and longer[0]["value"] > 0.9  # identity extrapolates
    curve = pick(rows, "accuracy", split="curve")
    assert [r["step"] for r in curve] == list(range(4, 41, 4))  # eval_every = steps // 10
    assert curve[0]["value"] < final[0]["value"]
    assert pick(rows, "train_loss", split="curve")[-1]["value"] < pick(rows, "train_loss", split="curve")[0]["value"]


def test_accuracy_is_deterministic_for_a_seed():
    task = IdentityTask(IdentityConfig())
    a, b = ([{k: v for k, v in r.items() if k != "train_s"} for r in run(make_ctx("accuracy", task=task,
            settings=ACC, seed=3))] for _ in range(2))  # train_s is a wall-clock time
    assert a == b
    c = run(make_ctx("accuracy", task=task, settings=ACC, seed=4))
    assert [r["value"] for r in a] != [r["value"] for r in c]


def test_accuracy_sweep_picks_the_lr_on_validation_and_steps_to_90pct():
    task = IdentityTask(IdentityConfig())
    rows = run(make_ctx("accuracy", task=task, settings={**ACC, "steps": 24, "eval_every": 2}, d_model=32))
    valid = pick(rows, "accuracy", split="valid")
    finals = pick(rows, "accuracy", split="eval", length_factor=1.0)
    assert sorted(r["lr"] for r in finals) == sorted(r["lr"] for r in valid) == ACC["lrs"]
    best = [r for r in valid if r["best"]]  # chosen on validation data, not on the test score
    assert len(best) == 1 and best[0]["value"] == max(r["value"] for r in valid)
    assert [r["lr"] for r in finals if r["best"]] == [best[0]["lr"]]
    for lr in ACC["lrs"]:  # every lr keeps its curve (validation data), which ends at its validation score
        curve = pick(rows, "accuracy", split="curve", lr=lr)
        assert curve[-1]["step"] == 24
        assert curve[-1]["value"] == pick(rows, "accuracy", split="valid", lr=lr)[0]["value"]
    # 90% of the way from chance (1/8) to the final validation score, by hand
    curve = pick(rows, "accuracy", split="curve", lr=best[0]["lr"])
    target = 1 / 8 + 0.9 * (best[0]["value"] - 1 / 8)
    first = next(r["step"] for r in curve if r["value"] >= target)
    (s90,) = pick(rows, "steps_to_90pct")
    assert s90["value"] == first and s90["lr"] == best[0]["lr"]
    assert best[0]["chance"] == 1 / 8 and best[0]["ci_low"] < best[0]["value"] < best[0]["ci_high"]


def test_accuracy_rows_carry_chance_and_wilson_interval():
    from seqbench.bench import stats

    task = IdentityTask(IdentityConfig(vocab_size=8, seq_len=12))
    rows = run(make_ctx("accuracy", task=task, settings={**ACC, "lrs": [3e-3], "eval_batches": 3}))
    for r in pick(rows, "accuracy", split="eval") + pick(rows, "accuracy", split="valid"):
        n = 3 * 8 * r["eval_seq_len"]  # eval_batches x batch_size x every position scored
        assert r["n_scored"] == n and r["chance"] == 1 / 8
        assert (r["ci_low"], r["ci_high"]) == pytest.approx(stats.wilson_interval(r["value"] * n, n))


def test_accuracy_wall_clock_budget_records_the_steps_reached():
    task = IdentityTask(IdentityConfig())
    settings = {"steps": 100_000, "budget_s": 0.3, "lrs": [3e-3], "batch_size": 8, "eval_batches": 1,
                "length_factors": [1]}
    rows = run(make_ctx("accuracy", task=task, settings=settings))
    (final,) = pick(rows, "accuracy", split="eval")
    assert final["time_limited"] is True and 0 < final["step"] < 100_000
    assert 0.3 <= final["train_s"] < 0.3 + 0.2  # stopped at the first step past the budget
    curve = pick(rows, "accuracy", split="curve")
    assert 2 <= len(curve) <= 11 and curve[-1]["step"] == final["step"]  # a point per tenth of the budget


def test_lr_schedule_over_a_wall_clock_budget():
    from seqbench.bench.measures.train import TrainSettings, lr_at

    s = TrainSettings(lr=1.0, budget_s=10.0, warmup_frac=0.1, min_lr_frac=0.1, steps=10**9)
    assert lr_at(0, s, 0.0) == pytest.approx(0.01)  # warm-up starts at 1% of lr
    assert lr_at(0, s, 0.5) == pytest.approx(0.5)  # half of the 1 s warm-up
    assert lr_at(0, s, 1.0) == pytest.approx(1.0)
    assert lr_at(0, s, 5.5) == pytest.approx(0.1 + 0.9 * 0.5)  # half of the cosine: mid-way to 0.1
    assert lr_at(0, s, 10.0) == pytest.approx(0.1) and lr_at(0, s, 20.0) == pytest.approx(0.1)


def test_accuracy_length_a_model_cannot_run_is_a_skipped_row():
    task = IdentityTask(IdentityConfig(vocab_size=8, seq_len=12))
    settings = {**ACC, "lrs": [3e-3], "length_factors": [1, 2, 4]}
    rows = run(make_ctx("accuracy", family="transformer", task=task, settings=settings, n_heads=2,
                        positions="learned", max_len=30))
    by_len = {r["length_factor"]: r for r in pick(rows, "accuracy", split="eval")}
    assert "status" not in by_len[1.0]
    assert by_len[2.0].get("status") is None and by_len[2.0]["eval_seq_len"] == 24  # 24 <= max_len: evaluated
    skipped = by_len[4.0]
    assert skipped["status"] == "skipped" and skipped["value"] is None and skipped["eval_seq_len"] == 48
    assert "max_len=30" in skipped["error"]
    rope = run(make_ctx("accuracy", family="transformer", task=task, settings=settings, n_heads=2,
                        positions="rope", max_len=30))  # rotary positions run at any length
    assert [r["eval_seq_len"] for r in pick(rope, "accuracy", split="eval") if r.get("status") is None] == [12, 24, 48]


def test_accuracy_per_distance_rows_average_to_the_total():
    task = tasks.build("long_range_recall", vocab_size=16, num_kv_pairs=2, distances=[2, 4, 8], seq_len=16)
    settings = {"steps": 4, "lrs": [3e-3], "batch_size": 12, "eval_batches": 2, "length_factors": [1]}
    rows = run(make_ctx("accuracy", task=task, settings=settings))
    by = {r["distance"]: r["value"] for r in rows if r["metric"] == "accuracy" and r.get("distance") is not None}
    assert sorted(by) == [2, 4, 8]
    # one scored position per sequence, distances balanced within a batch: the total is their mean
    (total,) = pick(rows, "accuracy", split="eval", length_factor=1.0, distance=None)
    assert total["value"] == pytest.approx(np.mean(list(by.values())))


def test_accuracy_drop_fault_lowers_every_accuracy_exactly():
    task = IdentityTask(IdentityConfig())
    settings = {**ACC, "lrs": [3e-3]}
    clean = run(make_ctx("accuracy", task=task, settings=settings))
    hurt = run(make_ctx("accuracy", task=task, settings=settings, faults={"accuracy_drop": 0.25}))
    assert len(clean) == len(hurt)
    for c, h in zip(clean, hurt):
        expected = c["value"] - 0.25 if c["metric"] == "accuracy" else c["value"]
        assert h["value"] == pytest.approx(expected, abs=1e-12), c


def test_accuracy_skips_an_encoder_decoder_without_a_source_split():
    with pytest.raises(Skip, match="source/target split"):
        run(make_ctx("accuracy", family="seq2seq", task=IdentityTask(IdentityConfig()), settings=ACC))


# --- throughput ---------------------------------------------------------------------


# The machine is shared: the scheduler hands the core to other processes for slices of a few
# ms, so a sample that spans slices is slowed by their share. Short samples (~2 ms) often fit
# in one slice; the timing tests take short samples on both sides, interleave the sides three
# times and compare their fastest samples, the least disturbed ones.


def _independent_tokens_per_s(model, mode: str, batch_size: int, seq_len: int, calls: int) -> float:
    """Best of 7 samples of `calls` back-to-back calls, timed with perf_counter here."""
    fn = workload_fn(model, mode, random_batch(model, batch_size, seq_len, CPU))
    for _ in range(3):
        fn()
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return batch_size * seq_len / min(times)


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_throughput_agrees_with_an_independent_clock(mode):
    settings = {"modes": [mode], "warmup": 2, "repeats": 7, "min_time_s": 0.002}
    ctx = make_ctx("throughput", batch_size=4, seq_len=32, settings=settings, d_model=32)
    harness, reference = [], []
    for _ in range(3):
        (tps,) = pick(run(ctx), "tokens_per_s", mode=mode)
        assert tps["value"] == pytest.approx(np.median(tps["samples"])) and len(tps["samples"]) == 7
        harness += tps["samples"]
        reference.append(_independent_tokens_per_s(ctx.build_model(), mode, 4, 32, calls=tps["stats"]["inner"]))
    assert 0.5 < max(harness) / max(reference) < 2.0, (harness, reference)


def test_throughput_flops_and_mfu_follow_their_definitions():
    ctx = make_ctx("throughput", batch_size=2, seq_len=16, d_model=32,
                   settings={"warmup": 1, "repeats": 3, "min_time_s": 0.005})
    rows = run(ctx)
    D, V = 32, 16  # lstm: W_ih, W_hh (4D x D each) and the head (V x D); embeddings excluded
    flops_per_token = 2 * (8 * D * D + V * D)
    for mode, factor in (("inference", 1), ("training", 3)):
        (tps,) = pick(rows, "tokens_per_s", mode=mode)
        (ach,) = pick(rows, "achieved_flops", mode=mode)
        (mfu,) = pick(rows, "mfu", mode=mode)
        assert ach["value"] == pytest.approx(tps["value"] * flops_per_token * factor)
        assert 0 < mfu["value"] < 1


def test_slowdown_fault_halves_tokens_per_s():
    settings = {"modes": ["inference"], "warmup": 2, "repeats": 7, "min_time_s": 0.002}
    fast, slow = [], []
    for _ in range(3):
        for faults, out in (({}, fast), ({"slowdown": 2.0}, slow)):
            ctx = make_ctx("throughput", batch_size=4, seq_len=32, settings=settings, d_model=32, faults=faults)
            out += pick(run(ctx), "tokens_per_s")[0]["samples"]
    assert 0.35 < max(slow) / max(fast) < 0.7, (slow, fast)


# --- quiet guard ----------------------------------------------------------------------


class ScriptedGuard(QuietGuard):
    """A guard whose probe ratios follow a script (no clock): 1.0 quiet, > 1.15 busy."""

    def __init__(self, ratios):
        self.tolerance, self.ratios, self.calls = 0.15, list(ratios), 0

    def probe(self):
        self.calls += 1
        return self.ratios.pop(0) if self.ratios else 1.0


def test_guard_retakes_busy_samples_and_keeps_quiet_ones():
    taken = iter(range(100))
    # a probe before the first sample, one after each, and a fresh one after a pause:
    # samples 1 and 3 (0-based) end on a busy probe
    guard = ScriptedGuard([1.0, 1.0, 1.6, 1.0, 1.0, 1.3, 1.0, 1.0, 1.0])
    got, counts = guarded(lambda: next(taken), guard, want=4, max_retries=5, pause_s=0)
    assert got == [0, 2, 4, 5]
    assert counts == {"busy": 2, "busy_kept": 0}
    assert guard.calls == 9


def test_guard_keeps_the_least_busy_samples_when_retries_run_out():
    taken = iter(range(100))
    guard = ScriptedGuard([1.0, 1.0, 2.0, 1.0, 1.3, 1.0, 3.0])  # sample 0 quiet; of the busy, 1.3 is the least
    got, counts = guarded(lambda: next(taken), guard, want=3, max_retries=2, pause_s=0)
    assert got == [0, 2, 1]
    assert counts == {"busy": 3, "busy_kept": 2}


def test_no_guard_takes_exactly_what_was_asked():
    got, counts = guarded(iter(range(10)).__next__, None, want=3, max_retries=5)
    assert got == [0, 1, 2] and counts == {"busy": 0, "busy_kept": 0}


class VirtualClock:
    """time.perf_counter replaced by a clock that only the fake workloads advance:
    the guard's arithmetic is tested without depending on this machine's load."""

    def __init__(self):
        self.now, self.busy = 0.0, False

    def __call__(self):
        return self.now

    def spend(self, quiet_s):
        self.now += quiet_s * (3.0 if self.busy else 1.0)


@pytest.fixture
def clock(monkeypatch):
    c = VirtualClock()
    monkeypatch.setattr(time, "perf_counter", c)
    return c


class ClockGuard(QuietGuard):
    """The real QuietGuard with a probe that costs 0.2 ms of virtual time (0.6 ms while busy)."""

    def __init__(self, clock, tolerance=0.2):
        self.clock = clock
        super().__init__(tolerance, learn_s=0.0)

    def _work(self):
        self.clock.spend(0.0002)


def test_guard_ratio_is_relative_to_the_quiet_reference(clock):
    guard = ClockGuard(clock)
    assert guard.reference == pytest.approx(0.0002) and guard.probe() == pytest.approx(1.0)
    clock.busy = True
    assert guard.probe() == pytest.approx(3.0) and not guard.quiet(1.0, 3.0)
    clock.busy = False
    assert guard.quiet(guard.probe(), 1.2)


def test_measure_retakes_the_samples_of_a_busy_window(clock):
    """The machine is busy (everything 3x slower) from the 2nd to the 4th sample: the guard
    sees it, those samples are retaken, and every kept sample is the quiet 1 ms."""
    guard = ClockGuard(clock)
    calls = {"n": 0}

    def work():
        calls["n"] += 1
        clock.busy = 4 <= calls["n"] <= 6  # calls 1-2: warm-up and calibration; 3: first sample
        clock.spend(0.001)

    seconds, inner, counts = measure_samples(work, CPU, warmup=1, repeats=5, min_time_s=0, guard=guard)
    assert inner == 1
    assert seconds == pytest.approx([0.001] * 5)
    # samples 2-4 ran busy; sample 5's "before" probe still sees the window and is retaken too
    assert counts == {"busy": 4, "busy_kept": 0}
    clock.busy = False
    unguarded, _, _ = measure_samples(work, CPU, warmup=0, repeats=3, min_time_s=0, guard=None)
    assert unguarded == pytest.approx([0.001] * 3)


def test_throughput_rows_report_the_guard():
    settings = {"modes": ["inference"], "warmup": 1, "repeats": 3, "min_time_s": 0.001}
    on = pick(run(make_ctx("throughput", batch_size=2, seq_len=8, settings=settings, d_model=16)), "tokens_per_s")[0]
    assert len(on["samples"]) == 3 and 0 <= on["stats"]["busy_kept"] <= on["stats"]["busy"]
    off = pick(run(make_ctx("throughput", batch_size=2, seq_len=8, settings={**settings, "guard": 0}, d_model=16)),
               "tokens_per_s")[0]
    assert off["stats"]["busy"] == 0 and len(off["samples"]) == 3
    with pytest.raises(SettingsError, match="guard"):
        run(make_ctx("throughput", batch_size=2, seq_len=8, settings={**settings, "guard": -1}, d_model=16))


# --- latency ------------------------------------------------------------------------


def test_latency_rows_cover_every_position():
    rows = run(make_ctx("latency", seq_len=40, settings={"prefill_len": 5, "repeats": 2}))
    (p50,) = pick(rows, "latency_p50_ms")
    per_token = np.asarray(p50["samples"])
    assert per_token.size == 2 * 40 and p50["value"] == pytest.approx(np.median(per_token))
    p90, p99 = pick(rows, "latency_p90_ms")[0]["value"], pick(rows, "latency_p99_ms")[0]["value"]
    assert p50["value"] <= p90 <= p99 == pytest.approx(np.percentile(per_token, 99))
    by_pos = pick(rows, "latency_ms")
    assert sum(len(r["samples"]) for r in by_pos) == 2 * 40
    positions = [r["position"] for r in by_pos]
    assert positions == sorted(positions) and positions[0] == 5 and positions[-1] < 45
    (prefill,) = pick(rows, "prefill_ms")
    (first,) = pick(rows, "first_token_ms")
    assert first["value"] > prefill["value"] > 0


def test_position_buckets_partition_the_stream():
    for seq_len in (1, 7, 100, 4096):
        buckets = latency_mod.position_buckets(seq_len, 16)
        assert buckets[0][0] == 0 and buckets[-1][1] == seq_len
        assert all(a < b for a, b in buckets) and all(b == c for (_, b), (c, _) in itertools.pairwise(buckets))
        assert len(buckets) <= 16
    widths = [b - a for a, b in latency_mod.position_buckets(4096, 16)]
    assert widths[-1] > 100 * widths[0]  # log-spaced


@pytest.mark.parametrize("family,config", [("lstm", {"bidirectional": True}), ("seq2seq", {})])
def test_latency_skips_a_non_streamable_model(family, config):
    with pytest.raises(Skip, match="not streamable"):
        run(make_ctx("latency", family=family, seq_len=8, **config))


# --- memory -------------------------------------------------------------------------


def _peak(rows: list[dict], mode: str) -> float:
    return pick(rows, "peak_bytes", mode=mode)[0]["value"]


def test_memory_grows_with_the_model():
    tiny = run(make_ctx("memory", batch_size=4, seq_len=32, d_model=8, settings={"modes": ["training"]}))
    big = run(make_ctx("memory", batch_size=4, seq_len=32, d_model=256, n_layers=2, settings={"modes": ["training"]}))
    # 2 layers x 8 D^2 weights: gradients + 2 AdamW moments = 3 x 4.2 MB at least
    assert _peak(big, "training") > _peak(tiny, "training") + 3 * 2 * 8 * 256**2 * 4 * 0.8
    assert pick(big, "state_bytes")[0]["value"] == 2 * 2 * 4 * 256 * 4  # layers x (h, c) x B x D x fp32


def test_memory_extra_bytes_fault_raises_the_peak_by_that_much():
    extra = 64 * 2**20
    settings = {"modes": ["inference"]}
    clean = _peak(run(make_ctx("memory", batch_size=2, seq_len=16, settings=settings)), "inference")
    hurt = _peak(run(make_ctx("memory", batch_size=2, seq_len=16, settings=settings,
                              faults={"extra_bytes": extra})), "inference")
    assert 0.9 * extra < hurt - clean < 1.1 * extra


def test_memory_skips_without_proc(monkeypatch, tmp_path):
    monkeypatch.setattr(memory_mod, "CLEAR_REFS", tmp_path / "missing" / "clear_refs")
    with pytest.raises(Skip, match="clear_refs"):
        run(make_ctx("memory", batch_size=2, seq_len=8))


# --- static -------------------------------------------------------------------------


def test_static_rows_match_the_formulas():
    D, V, T = 24, 16, 64
    ctx = make_ctx("static", seq_len=T, d_model=D)
    rows = {r["metric"]: r["value"] for r in run(ctx)}
    model = ctx.build_model()
    assert rows["params"] == sum(p.numel() for p in model.parameters())
    assert rows["flops_per_token"] == 2 * (8 * D * D + V * D)
    assert rows["state_bytes"] == 2 * D * 4  # (h, c) at batch 1 in fp32
    assert rows["matmul_flops_ceiling"] > 1e8
    bi = {r["metric"] for r in run(make_ctx("static", seq_len=T, bidirectional=True))}
    assert "state_bytes" not in bi


# --- gradient_flow ------------------------------------------------------------------


def _reference_grad_norms(model, batch) -> np.ndarray:
    """d CE(last position) / d embedding, by re-running the backbone by hand. (T,) mean norms by distance."""
    model.eval()
    emb = model.embed(batch.inputs).detach().requires_grad_(True)  # (B, T, D)
    h = emb
    for block in model.blocks:
        h = block(h)
    logits = model.head(model.norm_f(h))  # (B, T, C)
    loss = F.cross_entropy(logits[:, -1], batch.targets[:, -1])
    (grad,) = torch.autograd.grad(loss, emb)
    norms = grad.norm(dim=-1).mean(0).numpy()  # (T,)
    return norms[::-1]  # index = distance from the last position


@pytest.mark.parametrize("family", ["rnn", "lstm"])
def test_gradient_flow_matches_a_hand_written_backward(family):
    task = IdentityTask(IdentityConfig(seq_len=20))
    ctx = make_ctx("gradient_flow", family=family, task=task, settings={"steps": 3, "batch_size": 8})
    rows = run(ctx)
    at_init = {r["distance"]: r["value"] for r in pick(rows, "grad_norm", step=0)}
    trained = {r["distance"]: r["value"] for r in pick(rows, "grad_norm", step=3)}
    assert sorted(at_init) == list(range(20)) == sorted(trained)
    batch = task.batch(16, seed=0, split="eval")
    reference = _reference_grad_norms(ctx.build_model(), batch)
    assert [at_init[d] for d in range(20)] == pytest.approx(reference.tolist(), rel=1e-4, abs=1e-12)
    assert at_init != trained


def test_gradient_flow_log_spaced_distances_and_seq2seq():
    task = tasks.build("copy", vocab_size=6, n_copy=3, delay=40)  # T = 47
    rows = run(make_ctx("gradient_flow", family="lstm", task=task, settings={"steps": 0, "n_distances": 8}))
    distances = [r["distance"] for r in rows]
    assert len(distances) == 8 and distances[0] == 0 and distances[-1] == task.seq_len - 1
    assert all(math.isfinite(r["value"]) and r["value"] >= 0 for r in rows)
    s2s = run(make_ctx("gradient_flow", family="seq2seq", task=task, settings={"steps": 0, "n_distances": 8}))
    assert s2s and all(math.isfinite(r["value"]) for r in s2s)


def test_eval_lengths_snap_to_lengths_the_task_takes():
    from seqbench import tasks
    from seqbench.bench.measures.accuracy import eval_lengths

    task = tasks.build("reverse")  # takes odd lengths 2n + 1 only
    pairs = eval_lengths(task, task.seq_len, [1, 2, 4])
    assert [f for f, _ in pairs] == [1, 2, 4]
    assert all(n % 2 == 1 for _, n in pairs)
    assert [n for _, n in pairs][1:] == [2 * task.seq_len + 1, 4 * task.seq_len + 1]
