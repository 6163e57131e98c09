"""The adding problem: sum the two marked values of a long sequence of random numbers.

Hochreiter & Schmidhuber 1997, "Long Short-Term Memory", §5.4 (Experiment 4),
in the common modern form of Le, Jaitly & Hinton 2015 ("A Simple Way to
Initialize Recurrent Networks of Rectified Linear Units", §4.1) and Arjovsky et
al. 2016: each position carries (value ~ U[0, 1), marker in {0, 1}); exactly two
markers are set, one in the first half and one in the second half; the target at
the last position is the sum of the two marked values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch

from seqbench.config import Range
from seqbench.errors import ConfigError
from seqbench.tasks.base import Batch, Task
from seqbench.tasks.registry import register


@dataclass(frozen=True)
class AddingConfig:
    seq_len: Annotated[int, Range(ge=2)] = 100  # T; Hochreiter & Schmidhuber use T >= 100, Le et al. 150..750


@register("adding", AddingConfig)
class Adding(Task):
    """Adding problem: float inputs (B, T, 2) = (value, marker), regression target (B, T, 1).

    The first marker is uniform in [0, T // 2), the second in [T // 2, T); only
    the last position is scored (mask), with target X1 + X2 (the two marked
    values). Any seq_len >= 2 works at batch time.

    Metric: MSE at the last position. Chance: predicting the mean, 1.0, gives
    E[(X1 + X2 - 1)^2] = Var(X1) + Var(X2) = 2 / 12 = 1/6 ≈ 0.167; no
    input-blind predictor does better.

    Example (seq_len=4; inputs as (value, marker) pairs; target only at t = 3):
        inputs   (0.64, 1) (0.27, 0) (0.04, 0) (0.81, 1)
        targets  -         -         -         1.45        mask 0 0 0 1
    """

    metric = "mse"
    regression = True
    sequence_level = True

    @property
    def vocab_size(self) -> int | None:
        return None

    @property
    def d_input(self) -> int:
        return 2

    @property
    def n_outputs(self) -> int:
        return 1

    def chance(self, seq_len: int | None = None) -> float:
        """MSE of the best constant prediction (1.0): Var(U[0,1)) per marked value, two of them."""
        return 2 * (1.0 / 12.0)

    def _batch(self, batch_size: int, seq_len: int, rng: np.random.Generator, split: str) -> Batch:
        if seq_len < 2:
            raise ConfigError(f"adding: seq_len must be >= 2, got {seq_len}")
        B, T = batch_size, seq_len
        rows = np.arange(B)
        values = rng.random((B, T), dtype=np.float32)  # (B, T)
        first = rng.integers(0, T // 2, size=B)  # (B,)
        second = rng.integers(T // 2, T, size=B)  # (B,)
        marker = np.zeros((B, T), dtype=np.float32)  # (B, T)
        marker[rows, first] = 1.0
        marker[rows, second] = 1.0
        inputs = np.stack([values, marker], axis=-1)  # (B, T, 2)
        targets = np.zeros((B, T, 1), dtype=np.float32)  # (B, T, 1)
        targets[:, -1, 0] = values[rows, first] + values[rows, second]
        mask = torch.zeros(B, T, dtype=torch.bool)
        mask[:, -1] = True
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets), mask)
