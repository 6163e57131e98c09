"""accuracy: train a budget of steps over a small learning-rate sweep, evaluate held out.

Recurrent nets and SSMs train well only in a narrow learning-rate window, so every lr
of `lrs` trains a fresh copy of the model (same seeded initialisation) with the shared
loop of bench/measures/train.py (AdamW, warm-up + cosine, clipping); all are reported and the
best final eval is flagged `best=True`.

Settings: AccuracySettings below (the training ones shared with gradient_flow).

Rows (the primary metric is "accuracy" for token/sequence-accuracy tasks, else the task's
metric: mse, nmse or bits_per_char):
    <primary>, eval_loss     per lr x length factor: lr, best, eval_seq_len, length_factor,
                             step (steps done, fewer than `steps` if time_limit_s hit), split "eval"
    <primary>, train_loss    learning curve per lr: lr, step, split "curve"
    steps_to_90pct           best lr: first curve step whose accuracy reaches 90% of the
                             final one (accuracy-type metrics only)
    accuracy with distance   per lr at the trained length, when the task reports by_distance
The test-only fault "accuracy_drop" is subtracted from every "accuracy" row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

from seqbench.bench.measures import MeasureContext, Skip, measure
from seqbench.bench.measures.timing import row
from seqbench.bench.measures.train import TrainingSettings, TrainResult, eval_batches, evaluate, train
from seqbench.config import NONEMPTY, PosFloat, PosInt


@dataclass(frozen=True)
class AccuracySettings(TrainingSettings):
    steps: PosInt = 200  # optimizer steps per lr
    lrs: Annotated[tuple[PosFloat, ...], NONEMPTY] = (1e-3, 3e-3)  # learning-rate sweep, a fresh model each
    eval_every: PosInt | None = None  # learning-curve period in steps (null: steps // 10, at least 1)
    eval_batches: PosInt = 4  # held-out batches per evaluation
    eval_batch_size: PosInt | None = None  # (null: batch_size)
    # evaluate at these multiples of the trained length when the task extrapolates (only 1
    # otherwise, or where a model's max_len stops it)
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


def eval_lengths(task: Any, model: Any, train_len: int, factors: list[float]) -> list[tuple[float, int]]:
    """(factor, eval_seq_len) pairs the task and the model allow; factor 1 always first."""
    pairs = [(1, train_len)]
    if not task.extrapolates:
        return pairs
    max_len = getattr(model.config, "max_len", None)
    for f in factors:
        n = _accepted_len(task, round(train_len * f))
        if f != 1 and n is not None and (max_len is None or n <= max_len):
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
    n_eval = s.eval_batches
    seed = ctx.cell.seed
    every = s.eval_every if s.eval_every is not None else max(1, s.steps // 10)

    probe = task.batch(1, seed=0, split="eval")
    held_out: dict[int, list] = {}  # eval_seq_len -> batches, shared by every lr

    def batches_at(n: int) -> list:
        if n not in held_out:
            held_out[n] = eval_batches(task, batch_size=eval_bs, n_batches=n_eval, seq_len=n, seed=seed,
                                       device=ctx.device)
        return held_out[n]

    results: list[TrainResult] = []
    scores: list[list[tuple[float, int, dict[str, Any]]]] = []  # per lr: (factor, eval_seq_len, score)
    for i, lr in enumerate(lrs):
        model = ctx.build_model()
        if getattr(model, "needs_src_len", False) and probe.src_len is None:
            raise Skip(f"{model.family} is an encoder-decoder model; task {task.name!r} needs a source/target split")
        ctx.progress(f"lr {lr:g} ({i + 1}/{len(lrs)})")
        result = train(model, task, s.train_settings(lr=lr, seed=seed, seq_len=train_len, eval_every=every), ctx.device,
                       eval_fn=lambda m: evaluate(m, task, batches_at(train_len)), progress=ctx.progress)
        at_lengths = [(1.0, train_len, result.final)]
        for factor, n in eval_lengths(task, model, train_len, list(s.length_factors))[1:]:
            ctx.progress(f"lr {lr:g}: eval at seq_len {n}")
            at_lengths.append((float(factor), n, evaluate(model, task, batches_at(n))))
        results.append(result)
        scores.append(at_lengths)
        del model

    best = 0
    for i in range(1, len(lrs)):
        if _better(results[i].final.get(key, math.nan), results[best].final.get(key, math.nan), higher):
            best = i

    def acc_value(v: float) -> float:
        return v - drop if name == "accuracy" else v

    rows: list[dict] = []
    for i, (lr, result) in enumerate(zip(lrs, results)):
        for factor, n, score in scores[i]:
            at = {"lr": float(lr), "best": i == best, "eval_seq_len": n, "length_factor": factor,
                  "step": result.steps_done, "split": "eval"}
            rows.append(row(name, acc_value(score[key]), **at))
            rows.append(row("eval_loss", score["loss"], **at))
            if factor == 1.0:
                for d, acc in score.get("by_distance", {}).items():
                    rows.append(row("accuracy", acc_value(acc), distance=int(d), **at))
        rows.extend(curve_rows(name, key, result, float(lr), train_len, acc_value))
    if higher:
        rows.append(row("steps_to_90pct", steps_to_fraction(results[best], key, 0.9), lr=float(lrs[best]),
                        best=True, eval_seq_len=train_len, split="eval"))
    return rows


def curve_rows(name: str, key: str, result: TrainResult, lr: float, seq_len: int, adjust: Any) -> list[dict]:
    rows = []
    for point in result.curve:
        at = {"lr": lr, "step": point.step, "split": "curve", "eval_seq_len": seq_len}
        rows.append(row(name, adjust(point.score[key]), **at))
        rows.append(row("train_loss", point.train_loss, **at))
    return rows


def steps_to_fraction(result: TrainResult, key: str, fraction: float) -> float:
    """The first curve step whose `key` reaches `fraction` x the final value."""
    target = fraction * result.final[key]
    for point in result.curve:
        if point.score[key] >= target:
            return float(point.step)
    return float(result.steps_done)
