"""Sequence-to-sequence tasks, where encoder-decoder models are the natural fit.

reverse — output the source sequence reversed, the classic probe of
Sutskever, Vinyals & Le 2014 ("Sequence to Sequence Learning with Neural
Networks", which reversed source order) and of Graves et al. 2014 ("Neural
Turing Machines") style algorithmic tasks: every output token depends on a
source token at a different distance, the first output on the last source token
and the last output on the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np

from seqbench.config import PosInt, Range
from seqbench.errors import ConfigError
from seqbench.tasks.base import IGNORE_INDEX, Batch, Task, token_batch
from seqbench.tasks.registry import register

BLANK = 0


@dataclass(frozen=True)
class ReverseConfig:
    # blank (0) + symbols 1..V-2 + separator V-1, so >= 3 (blank, separator, one symbol)
    vocab_size: Annotated[int, Range(ge=3)] = 16
    n_tokens: PosInt = 32  # source length n; seq_len = 2 * n + 1


@register("reverse", ReverseConfig)
class Reverse(Task):
    """Reverse: n source symbols, a separator, then the n symbols in reverse order.

    seq_len is derived: 2 * n_tokens + 1. Passing another (odd) seq_len to
    `batch` reverses n = (seq_len - 1) // 2 tokens instead (length
    generalization); an even seq_len raises. Output positions have blank
    inputs; Batch.src_len = n + 1 marks where the target part starts.

    Metric: token accuracy on the n output positions (sequence exact match is
    reported beside it); chance 1 / (vocab_size - 2).

    Example (vocab_size=6, n_tokens=3; 0 blank, 5 separator, -100 unscored):
        inputs   2    4    1    5    0  0  0
        targets  -100 -100 -100 -100 1  4  2      src_len = 4
    """

    metric = "token_accuracy"

    @property
    def separator(self) -> int:
        return self.config.vocab_size - 1

    @property
    def seq_len(self) -> int:
        return 2 * self.config.n_tokens + 1

    def chance(self, seq_len: int | None = None) -> float:
        return 1.0 / (self.config.vocab_size - 2)

    def _batch(self, batch_size: int, seq_len: int, rng: np.random.Generator, split: str) -> Batch:
        if seq_len < 3 or seq_len % 2 == 0:
            raise ConfigError(f"reverse: seq_len must be odd and >= 3 (2 * n + 1), got {seq_len}")
        n = (seq_len - 1) // 2
        src = rng.integers(1, self.separator, size=(batch_size, n))  # (B, n)
        inputs = np.full((batch_size, seq_len), BLANK, dtype=np.int64)  # (B, T)
        inputs[:, :n] = src
        inputs[:, n] = self.separator
        targets = np.full((batch_size, seq_len), IGNORE_INDEX, dtype=np.int64)  # (B, T)
        targets[:, n + 1:] = src[:, ::-1]
        return token_batch(inputs, targets, src_len=n + 1)
