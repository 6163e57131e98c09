"""How every measure runs a model: the shared training loop, evaluation, and the
random workloads of the speed measures.

Training (accuracy and gradient_flow): AdamW (betas 0.9/0.95, weight decay 0.01 on
every parameter), a linear warm-up over the first `warmup_frac` of the steps then a
cosine decay to `min_lr_frac` x lr at the last step, gradient-norm clipping, a budget
of `steps` optimizer steps and an optional wall-clock cap `time_limit_s` (the
schedule is still laid out over `steps`; the cap only stops early). Every step draws
a fresh batch from the task's train stream (seed `seed * 1_000_003 + step`);
evaluation uses the task's "eval" stream, which the task keeps disjoint from train.
`torch.manual_seed(seed)` at the start makes dropout reproducible, so a CPU run is
deterministic for a fixed seed.

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
from seqbench.tasks.base import IGNORE_INDEX, Batch, Task

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
    warmup_frac: UnitFloat = 0.1  # fraction of steps with linear warm-up
    min_lr_frac: UnitFloat = 0.1  # cosine decays to this fraction of lr
    weight_decay: NonNegFloat = 0.01  # AdamW weight decay
    betas: tuple[Beta, Beta] = (0.9, 0.95)  # AdamW betas
    grad_clip: NonNegFloat = 1.0  # max global gradient norm; 0 disables clipping

    def train_settings(self, *, lr: float, seed: int, seq_len: int, eval_every: int = 0) -> "TrainSettings":
        """The loop's settings for one learning rate."""
        return TrainSettings(
            steps=self.steps, lr=float(lr), batch_size=self.batch_size, seq_len=seq_len,
            warmup_frac=self.warmup_frac, min_lr_frac=self.min_lr_frac, weight_decay=self.weight_decay,
            betas=self.betas, grad_clip=self.grad_clip, time_limit_s=self.time_limit_s,
            eval_every=eval_every, seed=seed,
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
    eval_every: int = 0  # learning-curve evaluation period in steps; 0 = only at the end
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


def lr_at(step: int, s: TrainSettings) -> float:
    """Linear warm-up to s.lr, then cosine decay to s.min_lr_frac * s.lr at s.steps."""
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
                 device: torch.device) -> list[Batch]:
    """Held-out batches from the task's eval stream (disjoint from train)."""
    return [
        task.batch(batch_size, seq_len=seq_len, seed=seed * TRAIN_SEED_STRIDE + k, split="eval").to(device)
        for k in range(n_batches)
    ]


_PER_SEQUENCE = ("sequence_accuracy",)


@torch.no_grad()
def evaluate(model: torch.nn.Module, task: Task, batches: list[Batch]) -> dict[str, Any]:
    """Task.score over `batches`, pooled: per-position metrics weighted by scored positions,
    sequence metrics by sequences, by_distance by the positions at each distance."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    dist_sums: dict[int, float] = {}
    dist_counts: dict[int, int] = {}
    for batch in batches:
        score = task.score(run_model(model, batch.inputs, batch.src_len), batch)
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
    for step in range(s.steps):
        if s.time_limit_s is not None and result.wall_s >= s.time_limit_s:
            result.time_limited = True
            break
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, s)
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
        at_point = s.eval_every > 0 and result.steps_done % s.eval_every == 0 and result.steps_done < s.steps
        if at_point and eval_fn is not None:
            result.curve.append(CurvePoint(result.steps_done, float(loss_sum) / loss_n, eval_fn(model)))
            loss_sum, loss_n = 0.0, 0
        if progress is not None and (step + 1) % 50 == 0:
            progress(f"step {step + 1}/{s.steps} loss {loss.item():.4f} lr {lr_at(step, s):.2e}")
    if eval_fn is not None:
        train_loss = float(loss_sum) / loss_n if loss_n else (result.curve[-1].train_loss if result.curve else math.nan)
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
