"""accuracy: train a budget of steps (or seconds) over a small learning-rate sweep, choose the lr on
validation data, report the test score with its chance level and interval.

Recurrent nets and SSMs train well only in a narrow learning-rate window, so every lr
of `lrs` trains a fresh copy of the model (same seeded initialisation) with the shared
loop of bench/measures/train.py (AdamW, warm-up + cosine, clipping). The learning curve and
the choice of lr use the task's "valid" split; the reported score is on its "eval" (test)
split, which chooses nothing. All lrs are reported; the best validation score is flagged
`best=True`.

Budget: `steps` optimizer steps, or with `budget_s` a wall-clock budget (the schedule is laid
out over those training seconds; `steps` is a cap). Every row records the steps reached
(`step`), the training seconds (`train_s`) and whether a clock stopped training (`time_limited`).

Settings: AccuracySettings below (the training ones shared with gradient_flow).

Rows (the primary metric is "accuracy" for token/sequence-accuracy tasks, else the task's
metric: mse, nmse or bits_per_char). Every row of the primary metric carries `chance` (the task's
chance level at eval_seq_len), `n_scored` (positions, or sequences, scored) and `ci_low`/`ci_high`
(95%: Wilson for fractions, mean ± 1.96 se for error metrics; bench/results/query.py):
    <primary>, eval_loss     per lr x length factor, test split: lr, best, eval_seq_len,
                             length_factor, step, train_s, time_limited, split "eval"
    <primary>                per lr at the trained length on validation data: split "valid"
    status "skipped" row     per length factor a model cannot run (e.g. past a learned position
                             table), with the reason; the other lengths are still evaluated
    <primary>, train_loss    learning curve per lr (validation data): lr, step, split "curve"
    steps_to_90pct           best lr: the first curve step whose validation score is 90% of the way
                             from chance to the final validation score (absent when that score is
                             not learned: nothing to reach)
    accuracy with distance   per lr at the trained length, when the task reports by_distance
The test-only fault "accuracy_drop" is subtracted from every "accuracy" row.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Annotated, Any

import torch

from seqbench.bench.measures import MeasureContext, Skip, measure
from seqbench.bench.measures.timing import row
from seqbench.bench.measures.train import TrainingSettings, TrainResult, eval_batches, evaluate, run_model, train
from seqbench.bench.results import query
from seqbench.bench.results.schema import METRICS
from seqbench.config import NONEMPTY, PosFloat, PosInt

VALID, TEST, CURVE = "valid", "eval", "curve"  # the split column of validation, test and curve rows


@dataclass(frozen=True)
class AccuracySettings(TrainingSettings):
    steps: PosInt = 200  # optimizer steps per lr (with budget_s: the most steps)
    lrs: Annotated[tuple[PosFloat, ...], NONEMPTY] = (1e-3, 3e-3)  # learning-rate sweep, a fresh model each
    eval_every: PosInt | None = None  # learning-curve period in steps (null: steps // 10, or budget_s / 10)
    eval_batches: PosInt = 4  # held-out batches per evaluation (validation and test alike)
    eval_batch_size: PosInt | None = None  # (null: batch_size; at most a real split's size)
    # evaluate at these multiples of the trained length when the task extrapolates (only 1
    # otherwise); a length the model cannot run is a skipped row with the reason
    length_factors: Annotated[tuple[PosFloat, ...], NONEMPTY] = (1, 2, 4)


ACCURACY_METRICS = ("token_accuracy", "sequence_accuracy")


def primary_metric(task: Any) -> tuple[str, str]:
    """(row metric name, key in Task.score): accuracy-type tasks report "accuracy"."""
    return ("accuracy", task.metric) if task.metric in ACCURACY_METRICS else (task.metric, task.metric)


def _better(a: float, b: float, higher: bool) -> bool:
    """a strictly better than b; NaN (a diverged run) is worse than anything."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b if higher else a < b


def eval_lengths(task: Any, train_len: int, factors: list[float]) -> list[tuple[float, int]]:
    """(factor, eval_seq_len) pairs the task allows; factor 1 (the trained length) always first.
    Whether a model can run each length is decided when it is evaluated (`_runs_at`)."""
    pairs = [(1, train_len)]
    if not task.extrapolates:
        return pairs
    for f in factors:
        n = _accepted_len(task, round(train_len * f))
        if f != 1 and n is not None and all(n != m for _, m in pairs):
            pairs.append((f, n))
    return pairs


def _accepted_len(task: Any, n: int) -> int | None:
    """n, or n + 1 when the task only takes lengths of one parity (e.g. reverse: 2k + 1);
    None when it takes neither. Probed with one tiny batch, before any training is spent."""
    from seqbench import tasks
    for cand in (n, n + 1):
        if cand < 1:
            continue
        try:
            task.batch(1, seq_len=cand, seed=0, split="eval")
            return cand
        except tasks.ConfigError:
            continue
    return None


@torch.no_grad()
def _runs_at(model: Any, task: Any, n: int, device: torch.device) -> str | None:
    """None when the model runs on one sequence of length n; else why not (a learned position table
    shorter than n, …). An out-of-memory error is not a reason: it propagates (an "oom" cell)."""
    batch = task.batch(1, seq_len=n, seed=0, split="eval").to(device)
    was_training = model.training
    model.eval()
    try:
        run_model(model, batch.inputs, batch.src_len)
    except (ValueError, RuntimeError) as exc:
        if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
            raise
        return f"{type(exc).__name__}: {exc}"
    finally:
        model.train(was_training)
    return None


def _primary_row(name: str, value: float, score: dict[str, Any], chance: float, **at: Any) -> dict[str, Any]:
    n = score.get("n_scored")
    lo, hi = query.interval_of(name, value, n or 0, score.get("se"))
    return row(name, value, chance=chance, n_scored=n, ci_low=lo, ci_high=hi, **at)


def _skipped_row(name: str, reason: str, **at: Any) -> dict[str, Any]:
    unit, higher = METRICS[name]
    return {"metric": name, "value": None, "unit": unit, "higher_is_better": higher, "status": "skipped",
            "error": reason, **at}


def _chance(task: Any, n: int) -> float | None:
    try:
        return float(task.chance(n))
    except NotImplementedError:
        return None


@measure("accuracy", AccuracySettings, needs_task=True)
def accuracy(ctx: MeasureContext) -> list[dict]:
    s: AccuracySettings = ctx.settings
    task = ctx.require_task("accuracy")
    lrs = list(s.lrs)
    name, key = primary_metric(task)
    higher = name == "accuracy"
    drop = float(ctx.faults.get("accuracy_drop", 0.0))
    train_len = int(s.seq_len or task.seq_len)
    eval_bs = s.eval_batch_size or s.batch_size
    seed = ctx.cell.seed
    every = s.eval_every if s.eval_every is not None else (0 if s.budget_s else max(1, s.steps // 10))
    every_s = s.budget_s / 10 if s.budget_s and s.eval_every is None else None

    probe = task.batch(1, seed=0, split="eval")
    held_out: dict[tuple[str, int], list] = {}  # (split, eval_seq_len) -> batches, shared by every lr

    sizes = task.data_info().get("split_sizes", {}) if task.real else {}

    def batches_at(split: str, n: int) -> list:
        if (split, n) not in held_out:
            # a batch never exceeds a real split: with eval_batches 1 and eval_batch_size >= the split's
            # size, each split is scored whole, every example once
            bs = min(eval_bs, sizes.get("test" if split == TEST else split, eval_bs))
            held_out[split, n] = eval_batches(task, batch_size=bs, n_batches=s.eval_batches, seq_len=n,
                                              seed=seed, device=ctx.device, split=split)
        return held_out[split, n]

    lengths = eval_lengths(task, train_len, list(s.length_factors))
    results: list[TrainResult] = []
    scores: list[list[tuple[float, int, dict[str, Any] | str]]] = []  # per lr: (factor, n, test score or skip reason)
    for i, lr in enumerate(lrs):
        model = ctx.build_model()
        if getattr(model, "needs_src_len", False) and probe.src_len is None:
            raise Skip(f"{model.family} is an encoder-decoder model; task {task.name!r} needs a source/target split")
        ctx.progress(f"lr {lr:g} ({i + 1}/{len(lrs)})")
        settings = s.train_settings(lr=lr, seed=seed, seq_len=train_len, eval_every=every)
        if every_s is not None:
            settings = dataclasses.replace(settings, eval_every_s=every_s)
        result = train(model, task, settings, ctx.device,
                       eval_fn=lambda m: evaluate(m, task, batches_at(VALID, train_len)), progress=ctx.progress)
        at_lengths: list[tuple[float, int, dict[str, Any] | str]] = []
        for factor, n in lengths:
            why = None if factor == 1 else _runs_at(model, task, n, ctx.device)
            if why is not None:
                at_lengths.append((float(factor), n, f"{model.family} cannot run seq_len {n}: {why}"))
                continue
            ctx.progress(f"lr {lr:g}: test at seq_len {n}")
            at_lengths.append((float(factor), n, evaluate(model, task, batches_at(TEST, n))))
        results.append(result)
        scores.append(at_lengths)
        del model

    best = 0
    for i in range(1, len(lrs)):
        if _better(results[i].final.get(key, math.nan), results[best].final.get(key, math.nan), higher):
            best = i

    def adjust(v: float) -> float:
        return v - drop if name == "accuracy" else v

    rows: list[dict] = []
    for i, (lr, result) in enumerate(zip(lrs, results)):
        budget = {"lr": float(lr), "best": i == best, "step": result.steps_done, "train_s": result.wall_s,
                  "time_limited": result.time_limited}
        chance_train = _chance(task, train_len)
        valid = result.final
        rows.append(_primary_row(name, adjust(valid[key]), valid, chance_train, eval_seq_len=train_len,
                                 length_factor=1.0, split=VALID, **budget))
        for factor, n, score in scores[i]:
            at = {"eval_seq_len": n, "length_factor": factor, "split": TEST, **budget}
            if isinstance(score, str):
                rows.append(_skipped_row(name, score, **at))
                continue
            rows.append(_primary_row(name, adjust(score[key]), score, _chance(task, n), **at))
            rows.append(row("eval_loss", score["loss"], **at))
            if factor == 1.0:
                for d, acc in score.get("by_distance", {}).items():
                    rows.append(row("accuracy", adjust(acc), distance=int(d), **at))
        rows.extend(curve_rows(name, key, result, float(lr), train_len, adjust, chance_train))
    steps = steps_to_fraction(results[best], key, 0.9, _chance(task, train_len), name)
    if steps is not None:
        rows.append(row("steps_to_90pct", steps, lr=float(lrs[best]), best=True, eval_seq_len=train_len,
                        split=VALID))
    return rows


def curve_rows(name: str, key: str, result: TrainResult, lr: float, seq_len: int, adjust: Any,
               chance: float | None) -> list[dict]:
    rows = []
    for point in result.curve:
        at = {"lr": lr, "step": point.step, "split": CURVE, "eval_seq_len": seq_len}
        rows.append(_primary_row(name, adjust(point.score[key]), point.score, chance, **at))
        rows.append(row("train_loss", point.train_loss, **at))
    return rows


def steps_to_fraction(result: TrainResult, key: str, fraction: float, chance: float | None,
                      name: str = "accuracy") -> float | None:
    """The first curve step whose validation `key` is `fraction` of the way from chance to the final
    value: score ≥ chance + fraction · (final − chance) (≤ for error metrics). None when the final
    score is not learned (query.is_learned) or the chance level is unknown: there is nothing to reach."""
    final = result.final
    if chance is None:
        return None
    lo, hi = query.interval_of(name, final[key], final.get("n_scored") or 0, final.get("se"))
    if not query.is_learned(name, lo, hi, chance):
        return None
    target = chance + fraction * (final[key] - chance)
    higher = query.higher_is_better(name)
    for point in result.curve:
        v = point.score[key]
        if (v >= target) if higher else (v <= target):
            return float(point.step)
    return float(result.steps_done)
