"""The one task interface: seeded batch generators and offline loaders, and shared scoring.

A task turns (batch_size, seq_len, seed, split) into a `Batch`:

    inputs   (B, T) int64 tokens, or (B, T, F) float features
    targets  (B, T) int64 with IGNORE_INDEX where nothing is scored (classification), or
             (B, T, C) float (regression; `mask` says which positions count)
    mask     (B, T) bool — the scored positions
    src_len  where the target part starts, for encoder-decoder models (None if the
             scored positions are not a suffix)
    meta     extras, e.g. meta["distance"] (B, T) int64 for per-distance accuracy

The same (seed, split) always gives the same batch; train and eval draw from
independent seed streams (`task_rng`). Scoring is shared (`score`, `loss`) so
every model is judged the same way, and a test can prove that an oracle scores
100% and a constant predictor scores at the stated chance level.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from seqbench.errors import ConfigError, MissingDataError

IGNORE_INDEX = -100
# Seed streams: train, validation (model selection: the best lr, learning curves) and test (the
# reported score; "eval" is its older name). Synthetic tasks draw each from its own stream; real
# tasks carve "valid" out of their training data (`RealTask.valid_rows`), so it never sees test.
SPLITS = {"train": 0, "eval": 1, "test": 1, "valid": 2}

Metric = Literal["token_accuracy", "sequence_accuracy", "mse", "nmse", "bits_per_char"]


@dataclass
class Batch:
    inputs: torch.Tensor  # (B, T) int64 or (B, T, F) float
    targets: torch.Tensor  # (B, T) int64 with IGNORE_INDEX, or (B, T, C) float
    mask: torch.Tensor  # (B, T) bool, True where scored
    src_len: int | None = None  # first position of the target part (encoder-decoder models)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.inputs.shape[1])

    def to(self, device: torch.device | str) -> Batch:
        meta = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.meta.items()}
        return Batch(self.inputs.to(device), self.targets.to(device), self.mask.to(device), self.src_len, meta)


def require(module: str, package: str, what: str) -> Any:
    """Import optional `module` (pip name `package`) for `what`, or raise MissingDataError with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDataError(
            f"{what} needs the optional package {package!r}: pip install 'seqbench[data]' (or pip install {package})"
        ) from exc


def task_rng(seed: int, split: str, *extra: int) -> np.random.Generator:
    """Independent generator per (seed, split, *extra); train and eval never share a stream."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[split], *extra]))


def token_batch(inputs: np.ndarray, targets: np.ndarray, src_len: int | None = None, **meta: Any) -> Batch:
    """Batch from int arrays; targets use IGNORE_INDEX where unscored."""
    t = torch.as_tensor(targets, dtype=torch.long)
    meta_t = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in meta.items()}
    return Batch(torch.as_tensor(inputs, dtype=torch.long), t, t != IGNORE_INDEX, src_len, meta_t)


class Task:
    """Base class. Subclasses set the class attributes and implement `_batch`.

    Attributes the harness reads to size a model and judge it:
      vocab_size (input tokens; None for float inputs), d_input (features; None for
      tokens), n_outputs (classes, or regression dims), metric, regression, seq_len
      (the configured length), extrapolates (other seq_len allowed), sequence_level
      (one scored position per sequence).
    """

    name: ClassVar[str] = ""
    metric: ClassVar[Metric] = "token_accuracy"
    regression: ClassVar[bool] = False
    sequence_level: ClassVar[bool] = False
    extrapolates: ClassVar[bool] = True
    real: ClassVar[bool] = False
    low_entropy: ClassVar[bool] = False  # short sequences repeat by design, so train and eval may share some

    def __init__(self, config: Any) -> None:
        self.config = config

    # --- what the model must look like -------------------------------------------------
    @property
    def vocab_size(self) -> int | None:
        return getattr(self.config, "vocab_size", None)

    @property
    def d_input(self) -> int | None:
        return None

    @property
    def n_outputs(self) -> int:
        assert self.vocab_size is not None
        return self.vocab_size

    @property
    def seq_len(self) -> int:
        return int(self.config.seq_len)

    def chance(self, seq_len: int | None = None) -> float:
        """The primary metric's value for a predictor that ignores the input.

        Classification tasks state theirs (the best constant prediction). The default, for
        regression tasks only, is the predict-the-mean baseline: the MSE on held-out batches of
        the mean training target (`mean_baseline_mse`)."""
        if self.regression:
            return mean_baseline_mse(self, seq_len=seq_len)
        raise NotImplementedError(f"{type(self).__name__} states no chance level; define chance()")

    def data_info(self) -> dict[str, Any]:
        """Provenance of real data (source, files, sha256); {} for synthetic tasks."""
        return {}

    # --- batches ----------------------------------------------------------------------
    def batch(self, batch_size: int, *, seq_len: int | None = None, seed: int, split: str = "train") -> Batch:
        """A deterministic batch for (seed, split); seq_len=None means the configured length."""
        if batch_size < 1:
            raise ConfigError(f"{self.name}: batch_size must be >= 1, got {batch_size}")
        if seq_len is not None and seq_len != self.seq_len and not self.extrapolates:
            raise ConfigError(f"{self.name}: seq_len is fixed at {self.seq_len} for this task, got {seq_len}")
        rng = task_rng(seed, split)
        return self._batch(batch_size, self.seq_len if seq_len is None else int(seq_len), rng, split)

    def _batch(self, batch_size: int, seq_len: int, rng: np.random.Generator, split: str) -> Batch:
        raise NotImplementedError

    # --- judging ----------------------------------------------------------------------
    def loss(self, output: torch.Tensor, batch: Batch) -> torch.Tensor:
        return loss(output, batch, regression=self.regression)

    def score(self, output: torch.Tensor, batch: Batch) -> dict[str, Any]:
        return score(output, batch, metric=self.metric)


class RealTask(Task):
    """A task over real data: `load()` reads it once (on first use, not when the task is built, so
    a suite validates without the data) and keeps it; subclasses implement `_load()`.

    Three splits: "train" (what the model fits), "valid" (carved out of the training data by
    `class_valid_split` or `tail_split`: model selection, i.e. the best lr and the learning curves)
    and "test" (alias "eval": the published or fixed test split, the reported score). Test data is
    never used to choose anything."""

    real: ClassVar[bool] = True

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._loaded: Any = None

    def load(self) -> Any:
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    def _load(self) -> Any:
        raise NotImplementedError


def mean_baseline_mse(task: Task, *, seq_len: int | None = None, n_batches: int = 8, batch_size: int = 64) -> float:
    """MSE of always predicting the mean training target (per output dimension), on test batches:
    the chance level of a regression task. Deterministic (fixed seeds 0..n_batches-1)."""
    train = [task.batch(batch_size, seq_len=seq_len, seed=k, split="train") for k in range(n_batches)]
    mean = torch.cat([b.targets[b.mask].float() for b in train]).mean(0)  # (C,)
    test = [task.batch(batch_size, seq_len=seq_len, seed=k, split="test") for k in range(n_batches)]
    err = torch.cat([(b.targets[b.mask].float() - mean).pow(2).mean(-1) for b in test])  # (N,)
    return float(err.mean())


@torch.no_grad()
def scored_values(output: torch.Tensor, batch: Batch, *, metric: Metric) -> torch.Tensor:
    """(N,) float: one value per scored unit whose mean is `metric` as `score` computes it (for nmse,
    up to the batch's naive-forecast normaliser): 1/0 per scored position (token_accuracy) or per
    sequence (sequence_accuracy), the squared error per scored position (mse, nmse) or its cross-entropy
    in bits (bits_per_char). What an interval over positions or sequences is computed from."""
    out, targets, mask = _scored(output, batch)
    if metric in ("mse", "nmse"):
        err = (out.float() - targets.float()).pow(2).mean(-1)[mask]  # (N,)
        if metric == "nmse":
            naive = batch.meta["naive"].to(out.device).float()
            naive_mse = float((naive - targets.float()).pow(2).mean(-1)[mask].mean())
            err = err / naive_mse if naive_mse > 0 else err * math.inf
        return err
    if metric == "bits_per_char":
        ce = F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), targets.reshape(-1),
                             ignore_index=IGNORE_INDEX, reduction="none").view(mask.shape)  # (B, T)
        return ce[mask] / math.log(2)
    correct = (out.argmax(-1) == targets) & mask  # (B, T)
    if metric == "sequence_accuracy":
        return (correct | ~mask).all(1).float()  # (B,)
    return correct[mask].float()


def class_valid_split(labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, valid rows) of a training set, each sorted: per class in file order, the last
    floor(fraction * n) rows (at least one of a class with two or more rows) are validation."""
    fit, valid = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(fraction * len(idx))
        k = max(k, 1) if len(idx) >= 2 else 0
        fit.append(idx[: len(idx) - k])
        valid.append(idx[len(idx) - k:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(valid))


def tail_split(n: int, fraction: float) -> int:
    """Where the validation tail of a training stream of n items starts: n - floor(fraction * n)."""
    return n - int(fraction * n)


def _scored(output: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align outputs with targets. Returns (out (B, T, C), targets, mask) — pooled (B, C)
    outputs are placed at each row's single scored position."""
    if output.dim() == 2:  # pooled model output (B, C): exactly one scored position per row
        counts = batch.mask.sum(1)
        if not bool((counts == 1).all()):
            raise ValueError("a pooled (B, C) output needs exactly one scored position per sequence")
        full = output.new_zeros(*batch.mask.shape, output.shape[-1])
        full[batch.mask] = output
        return full, batch.targets, batch.mask
    return output, batch.targets, batch.mask


def loss(output: torch.Tensor, batch: Batch, *, regression: bool = False) -> torch.Tensor:
    """Mean cross-entropy (or MSE) over scored positions. output (B, T, C) or pooled (B, C)."""
    out, targets, mask = _scored(output, batch)
    if regression:
        return F.mse_loss(out[mask].float(), targets[mask].float())
    return F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX)


@torch.no_grad()
def score(output: torch.Tensor, batch: Batch, *, metric: Metric) -> dict[str, Any]:
    """Score outputs on scored positions. Returns {metric: value, 'loss': …, …}.

    token_accuracy: correct scored positions / scored positions.
    sequence_accuracy: sequences whose scored positions are all correct / sequences.
    mse: mean squared error over scored positions; nmse: mse / mse of meta['naive'] forecast.
    bits_per_char: cross-entropy in bits over scored positions.
    With meta['distance'] (B, T), also 'by_distance': {distance: token accuracy}.
    """
    out, targets, mask = _scored(output, batch)
    result: dict[str, Any] = {}
    if metric in ("mse", "nmse"):
        err = (out.float() - targets.float()).pow(2).mean(-1)  # (B, T)
        mse = float(err[mask].mean())
        result["mse"] = mse
        result["loss"] = mse
        if metric == "nmse":
            naive = batch.meta["naive"].to(out.device).float()
            naive_mse = float((naive - targets.float()).pow(2).mean(-1)[mask].mean())
            result["nmse"] = mse / naive_mse if naive_mse > 0 else math.inf
        return result
    ce = F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX)
    result["loss"] = float(ce)
    correct = (out.argmax(-1) == targets) & mask  # (B, T)
    n = int(mask.sum())
    result["token_accuracy"] = float(correct.sum()) / max(n, 1)
    all_right = (correct | ~mask).all(1)  # (B,)
    result["sequence_accuracy"] = float(all_right.float().mean())
    if metric == "bits_per_char":
        result["bits_per_char"] = float(ce) / math.log(2)
    if "distance" in batch.meta:
        dist = batch.meta["distance"].to(out.device)
        by = {}
        for d in torch.unique(dist[mask]).tolist():
            sel = mask & (dist == d)
            by[int(d)] = float(correct[sel].sum()) / int(sel.sum())
        result["by_distance"] = by
    return result


def sha256_of(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()
