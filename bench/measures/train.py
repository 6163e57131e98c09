"""How every measure runs a model: the shared training loop, evaluation, and the
random workloads of the speed measures.

Training (accuracy and gradient_flow): AdamW (betas 0.9/0.95, weight decay 0.01 on
every parameter), a linear warm-up over the first `warmup_frac` of the steps then a
cosine decay to `min_lr_frac` x lr at the last step, gradient-norm clipping, a budget
of `steps` optimizer steps and an optional wall-clock cap `time_limit_s` (the
schedule is still laid out over `steps`; the cap only stops early).

A wall-clock budget `budget_s` instead lays the schedule out over training time: the
warm-up covers the first `warmup_frac` of budget_s (from 1% of lr), the cosine reaches
`min_lr_frac` x lr at budget_s, training stops there (evaluation time excluded), and
`steps` is only a cap. Every model then gets the same seconds, not the same steps; the
steps reached are recorded. Such a run is not deterministic (it depends on the machine).

Every step draws a fresh batch from the task's train stream (seed `seed * 1_000_003 + step`);
learning curves and model selection use the task's "valid" stream, the reported score its
"eval" (test) stream, both disjoint from train. `torch.manual_seed(seed)` at the start makes
dropout reproducible, so a CPU run with a step budget is deterministic for a fixed seed.

Encoder-decoder models (`model.needs_src_len`) get `src_len` and, in training,
`targets` (teacher forcing); at evaluation they get no targets (greedy decoding).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
import torch.nn.functional as F

from seqbench.config import NonNegFloat, NonNegInt, PosFloat, PosInt, Range, UnitFloat
from seqbench.tasks.base import IGNORE_INDEX, Batch, Task, scored_values

TRAIN_SEED_STRIDE = 1_000_003  # train batch of step i for seed s: s * stride + i
Beta = Annotated[float, Range(ge=0, lt=1)]


@dataclass(frozen=True)
class TrainingSettings:
    """The training budget and optimizer settings shared by the measures that train
    (accuracy, gradient_flow); each subclasses this with its own settings."""

    steps: NonNegInt = 200  # optimizer steps
    batch_size: PosInt = 32  # training sequences per step
    seq_len: PosInt | None = None  # training length (null: the task's configured length)
    time_limit_s: PosFloat | None = None  # wall-clock cap on training (evaluation excluded)
    # wall-clock training budget in seconds: the lr schedule runs over it and `steps` becomes a cap
    budget_s: PosFloat | None = None
    warmup_frac: UnitFloat = 0.1  # fraction of steps with linear warm-up
    min_lr_frac: UnitFloat = 0.1  # cosine decays to this fraction of lr
    weight_decay: NonNegFloat = 0.01  # AdamW weight decay
    betas: tuple[Beta, Beta] = (0.9, 0.95)  # AdamW betas
    grad_clip: NonNegFloat = 1.0  # max global gradient norm; 0 disables clipping

    def train_settings(self, *, lr: float, seed: int, seq_len: int, eval_every: int = 0) -> TrainSettings:
        """The loop's settings for one learning rate."""
        return TrainSettings(
            steps=self.steps, lr=float(lr), batch_size=self.batch_size, seq_len=seq_len,
            warmup_frac=self.warmup_frac, min_lr_frac=self.min_lr_frac, weight_decay=self.weight_decay,
            betas=self.betas, grad_clip=self.grad_clip, time_limit_s=self.time_limit_s,
            budget_s=self.budget_s, eval_every=eval_every, seed=seed,
        )


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 200  # optimizer steps
    lr: float = 1e-3  # peak learning rate
    batch_size: int = 32  # sequences per step
    seq_len: int | None = None  # training length; None = the task's configured length
    warmup_frac: float = 0.1  # fraction of steps with linear warm-up
    min_lr_frac: float = 0.1  # cosine decays to this fraction of lr
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    time_limit_s: float | None = None  # stop early after this much training time
    budget_s: float | None = None  # schedule over this much training time and stop there; steps = a cap
    eval_every: int = 0  # learning-curve evaluation period in steps; 0 = only at the end
    eval_every_s: float | None = None  # ... or in training seconds (with budget_s)
    seed: int = 0


@dataclass
class CurvePoint:
    step: int
    train_loss: float  # mean training loss over the steps since the previous point
    score: dict[str, Any]  # Task.score of the evaluation at this step


@dataclass
class TrainResult:
    steps_done: int
    wall_s: float  # training time, evaluations excluded
    time_limited: bool
    curve: list[CurvePoint] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any]:
        return self.curve[-1].score


# --- model calls --------------------------------------------------------------------


def run_model(model: torch.nn.Module, inputs: torch.Tensor, src_len: int | None = None,
              targets: torch.Tensor | None = None) -> torch.Tensor:
    """forward with the encoder-decoder extras where the model needs them.

    inputs (B, T) or (B, T, F) -> (B, T, C) or pooled (B, C). Teacher forcing
    (`targets`) is used only in training mode; evaluation decodes greedily."""
    if inputs.is_floating_point():  # float features follow the model's dtype (bf16 / fp16 runs)
        inputs = inputs.to(next(model.parameters()).dtype)
    if not getattr(model, "needs_src_len", False):
        return model(inputs)
    if src_len is None:
        raise ValueError(f"{model.family}: an encoder-decoder model needs src_len")
    return model(inputs, src_len=src_len, targets=targets if model.training else None)


def lr_at(step: int, s: TrainSettings, elapsed_s: float = 0.0) -> float:
    """Linear warm-up to s.lr, then cosine decay to s.min_lr_frac * s.lr at s.steps (with s.budget_s:
    over training seconds, `elapsed_s` of budget_s done)."""
    if s.budget_s is not None:
        f = min(1.0, elapsed_s / s.budget_s)  # fraction of the budget spent
        if f < s.warmup_frac:
            return s.lr * max(0.01, f / s.warmup_frac)
        progress = (f - s.warmup_frac) / max(1e-12, 1.0 - s.warmup_frac)
        return s.lr * (s.min_lr_frac + (1.0 - s.min_lr_frac) * 0.5 * (1.0 + math.cos(math.pi * progress)))
    warmup = max(1, round(s.warmup_frac * s.steps)) if s.warmup_frac > 0 else 0
    if step < warmup:
        return s.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, s.steps - warmup)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return s.lr * (s.min_lr_frac + (1.0 - s.min_lr_frac) * cosine)


def make_optimizer(model: torch.nn.Module, s: TrainSettings) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)


def train_batch(task: Task, s: TrainSettings, step: int, device: torch.device) -> Batch:
    return task.batch(s.batch_size, seq_len=s.seq_len, seed=s.seed * TRAIN_SEED_STRIDE + step,
                      split="train").to(device)


def eval_batches(task: Task, *, batch_size: int, n_batches: int, seq_len: int | None, seed: int,
                 device: torch.device, split: str = "eval") -> list[Batch]:
    """Held-out batches from the task's `split` stream: "valid" (model selection) or "eval" (test);
    both disjoint from train."""
    return [
        task.batch(batch_size, seq_len=seq_len, seed=seed * TRAIN_SEED_STRIDE + k, split=split).to(device)
        for k in range(n_batches)
    ]


_PER_SEQUENCE = ("sequence_accuracy",)
_UNIT_METRICS = ("token_accuracy", "sequence_accuracy", "mse", "nmse", "bits_per_char")


@torch.no_grad()
def evaluate(model: torch.nn.Module, task: Task, batches: list[Batch]) -> dict[str, Any]:
    """Task.score over `batches`, pooled: per-position metrics weighted by scored positions,
    sequence metrics by sequences, by_distance by the positions at each distance.

    Also "n_scored" (scored units of the task's metric: positions, or sequences for
    sequence_accuracy) and "se" (standard error of the metric's mean over those units,
    from tasks.base.scored_values), which the accuracy measure's intervals use."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    dist_sums: dict[int, float] = {}
    dist_counts: dict[int, int] = {}
    units: list[torch.Tensor] = []
    for batch in batches:
        out = run_model(model, batch.inputs, batch.src_len)
        score = task.score(out, batch)
        if task.metric in _UNIT_METRICS:
            units.append(scored_values(out, batch, metric=task.metric).double().cpu())
        n_scored = float(batch.mask.sum())
        for key, value in score.items():
            if key == "by_distance":
                continue
            w = float(batch.batch_size) if key in _PER_SEQUENCE else n_scored
            sums[key] = sums.get(key, 0.0) + w * float(value)
            weights[key] = weights.get(key, 0.0) + w
        if "by_distance" in score:
            dist = batch.meta["distance"]
            for d, acc in score["by_distance"].items():
                n = int((batch.mask & (dist == d)).sum())
                dist_sums[d] = dist_sums.get(d, 0.0) + acc * n
                dist_counts[d] = dist_counts.get(d, 0) + n
    model.train(was_training)
    result: dict[str, Any] = {k: sums[k] / weights[k] if weights[k] > 0 else math.nan for k in sums}
    if units:
        u = torch.cat(units)  # (N,)
        result["n_scored"] = int(u.numel())
        result["se"] = float(u.std() / math.sqrt(u.numel())) if u.numel() > 1 else math.nan
    if dist_counts:
        result["by_distance"] = {d: dist_sums[d] / dist_counts[d] for d in sorted(dist_counts) if dist_counts[d]}
    return result


def train(
    model: torch.nn.Module,
    task: Task,
    s: TrainSettings,
    device: torch.device,
    *,
    eval_fn: Callable[[torch.nn.Module], dict[str, Any]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train `model` in place on `task` for s.steps steps (or until s.time_limit_s).

    `eval_fn(model)` is called every s.eval_every steps and after the last step; the
    curve holds those evaluations with the mean training loss since the previous one."""
    torch.manual_seed(s.seed)
    model.train()
    opt = make_optimizer(model, s)
    result = TrainResult(steps_done=0, wall_s=0.0, time_limited=False)
    loss_sum: torch.Tensor | float = 0.0  # summed on the device: no host sync per step
    loss_n = 0
    stop_s = min(t for t in (s.time_limit_s, s.budget_s) if t is not None) if (s.time_limit_s or s.budget_s) else None
    next_point_s = s.eval_every_s
    for step in range(s.steps):
        if stop_s is not None and result.wall_s >= stop_s:
            result.time_limited = True
            break
        t0 = time.perf_counter()
        lr = lr_at(step, s, result.wall_s)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = train_batch(task, s, step, device)
        out = run_model(model, batch.inputs, batch.src_len, batch.targets)
        loss = task.loss(out, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        loss_sum += loss.detach().float()
        loss_n += 1
        result.steps_done = step + 1
        result.wall_s += time.perf_counter() - t0
        if next_point_s is not None:
            at_point = result.wall_s >= next_point_s and result.wall_s < (stop_s or math.inf)
            if at_point:
                next_point_s += s.eval_every_s
        else:
            at_point = s.eval_every > 0 and result.steps_done % s.eval_every == 0 and result.steps_done < s.steps
        if at_point and eval_fn is not None:
            result.curve.append(CurvePoint(result.steps_done, float(loss_sum) / loss_n, eval_fn(model)))
            loss_sum, loss_n = 0.0, 0
        if progress is not None and (step + 1) % 50 == 0:
            progress(f"step {step + 1}/{s.steps} loss {loss.item():.4f} lr {lr:.2e}")
    if eval_fn is not None:
        train_loss = float(loss_sum) / loss_n if loss_n else (result.curve[-1].train_loss if result.curve else math.nan)
        if result.curve and result.curve[-1].step == result.steps_done:
            result.curve.pop()  # a time-based point just before the budget ran out: the final one replaces it
        result.curve.append(CurvePoint(result.steps_done, train_loss, eval_fn(model)))
    return result


# --- random workloads of the speed measures ------------------------------------------


@dataclass
class RandomBatch:
    inputs: torch.Tensor  # (B, T) int64 tokens or (B, T, F) floats
    targets: torch.Tensor  # (B, T) int64 classes (IGNORE_INDEX on the source part), or (B,) when pooled
    src_len: int | None  # seq_len // 2 for encoder-decoder models, else None


def random_batch(model: torch.nn.Module, batch_size: int, seq_len: int, device: torch.device,
                 seed: int = 0) -> RandomBatch:
    """Random inputs of the model's vocabulary (or float features when d_input is set)
    and random class targets, for the speed and memory measures."""
    cfg = model.config
    g = torch.Generator(device="cpu").manual_seed(seed)
    if cfg.d_input is not None:
        dtype = next(model.parameters()).dtype
        inputs = torch.randn(batch_size, seq_len, cfg.d_input, generator=g).to(device=device, dtype=dtype)
    else:
        inputs = torch.randint(0, cfg.vocab_size, (batch_size, seq_len), generator=g).to(device)
    src_len = seq_len // 2 if getattr(model, "needs_src_len", False) else None
    if getattr(cfg, "pool", "none") != "none":
        targets = torch.randint(0, cfg.n_outputs, (batch_size,), generator=g)
    else:
        targets = torch.randint(0, cfg.n_outputs, (batch_size, seq_len), generator=g)
        if src_len is not None:
            targets[:, :src_len] = IGNORE_INDEX
    return RandomBatch(inputs, targets.to(device), src_len)


def random_loss(out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, T, C) or (B, C) outputs against random class targets."""
    if out.dim() == 3 and targets.dim() == 2 and out.shape[1] != targets.shape[1]:
        targets = targets[:, -out.shape[1]:]  # a decoder that returns only the target part
    return F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def inference_fn(model: torch.nn.Module, batch: RandomBatch) -> Callable[[], torch.Tensor]:
    """() -> output: one forward pass without gradients (model in eval mode)."""
    model.eval()

    def fn() -> torch.Tensor:
        with torch.no_grad():
            return run_model(model, batch.inputs, batch.src_len)

    return fn


def training_fn(model: torch.nn.Module, batch: RandomBatch, lr: float = 1e-3) -> Callable[[], torch.Tensor]:
    """() -> loss: one training step (forward, backward, AdamW step; model in train mode)."""
    model.train()
    opt = make_optimizer(model, TrainSettings(lr=lr))

    def fn() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = random_loss(run_model(model, batch.inputs, batch.src_len, batch.targets), batch.targets)
        loss.backward()
        opt.step()
        return loss

    return fn


def workload_fn(model: torch.nn.Module, mode: str, batch: RandomBatch, lr: float = 1e-3) -> Callable[[], Any]:
    """The timed callable of a speed or memory measure for `mode` (inference | training)."""
    if mode == "inference":
        return inference_fn(model, batch)
    if mode == "training":
        return training_fn(model, batch, lr)
    raise ValueError(f"mode must be 'inference' or 'training', got {mode!r}")
