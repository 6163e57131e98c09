"""Copy-memory and selective copying: hold tokens across a gap, then reproduce them in order.

copy — the copy-memory problem (Hochreiter & Schmidhuber 1997, "Long Short-Term
Memory"), in the form of Arjovsky, Shah & Bengio 2016, "Unitary Evolution
Recurrent Neural Networks", §4.1: n symbols, a delay of blanks, a marker, then
the n symbols again.

selective_copy — Gu & Dao 2023, "Mamba", §3.1 / §4.1 and App. E.1: the data
tokens sit at random positions among noise tokens, so a model must decide from
the content which tokens to keep (time-invariant convolutions cannot).

Token layout shared by both: 0 is the blank / noise token, vocab_size - 1 the
marker, 1..vocab_size - 2 the data symbols. Outputs come after the marker, with
blank inputs, so the scored positions are a suffix and `Batch.src_len` (the
first output position) lets encoder-decoder models run on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import numpy as np

from seqbench.config import NonNegInt, PosInt, Range
from seqbench.errors import ConfigError
from seqbench.tasks.base import IGNORE_INDEX, Batch, Task, token_batch
from seqbench.tasks.registry import register

BLANK = 0


@dataclass(frozen=True)
class CopyConfig:
    # blank (0) + symbols 1..V-2 + marker V-1, so >= 3 (blank, marker, one symbol); Arjovsky et al. use 10 (8 symbols)
    vocab_size: Annotated[int, Range(ge=3)] = 10
    n_copy: PosInt = 10  # symbols to memorize and reproduce
    delay: NonNegInt = 100  # blanks between the last symbol and the marker (Arjovsky et al.'s T - 1)
    score_blanks: bool = False  # also score the blank targets before the outputs (Arjovsky et al.'s loss)


@register("copy", CopyConfig)
class Copy(Task):
    """Copy memory: n symbols, `delay` blanks, a marker, then output the n symbols.

    seq_len is derived: n_copy + delay + 1 + n_copy. Passing another seq_len to
    `batch` keeps n_copy and changes the delay to seq_len - 2 * n_copy - 1 (the
    way to test longer delays than trained).

    Metric: token accuracy on the n output positions (score_blanks=False, the
    default; chance 1 / (vocab_size - 2)). With score_blanks=True every position
    is scored, blanks included, as in Arjovsky et al.; `memoryless_loss()` then
    is their baseline n ln(A) / T (10 ln 8 / (T + 20) in their notation), the
    cross-entropy of a model that outputs blanks until the marker and then
    guesses uniformly among the A = vocab_size - 2 symbols.

    Example (vocab_size=6, n_copy=3, delay=2; 0 blank, 5 marker, -100 unscored):
        inputs   3    1    4    0    0    5    0  0  0
        targets  -100 -100 -100 -100 -100 -100 3  1  4      src_len = 6
    """

    metric = "token_accuracy"

    @property
    def alphabet(self) -> int:
        return self.config.vocab_size - 2

    @property
    def marker(self) -> int:
        return self.config.vocab_size - 1

    @property
    def seq_len(self) -> int:
        return 2 * self.config.n_copy + self.config.delay + 1

    def delay_for(self, seq_len: int) -> int:
        """The delay that makes a sequence of `seq_len` positions."""
        delay = seq_len - 2 * self.config.n_copy - 1
        if delay < 0:
            raise ConfigError(
                f"copy: seq_len must be >= 2 * n_copy + 1 = {2 * self.config.n_copy + 1}, got {seq_len}"
            )
        return delay

    def chance(self, seq_len: int | None = None) -> float:
        """Token accuracy of the memoryless predictor (blanks, then any fixed symbol)."""
        T = self.seq_len if seq_len is None else seq_len
        self.delay_for(T)
        n = self.config.n_copy
        if not self.config.score_blanks:
            return 1.0 / self.alphabet
        return (T - n) / T + n / (self.alphabet * T)

    def memoryless_loss(self, seq_len: int | None = None) -> float:
        """Cross-entropy (nats per scored position) of the memoryless predictor:
        n ln(A) / T with score_blanks (Arjovsky et al. 2016), ln(A) on the outputs alone."""
        T = self.seq_len if seq_len is None else seq_len
        self.delay_for(T)
        if not self.config.score_blanks:
            return math.log(self.alphabet)
        return self.config.n_copy * math.log(self.alphabet) / T

    def _batch(self, batch_size: int, seq_len: int, rng: np.random.Generator, split: str) -> Batch:
        n, delay = self.config.n_copy, self.delay_for(seq_len)
        start = n + delay + 1  # first output position
        data = rng.integers(1, self.marker, size=(batch_size, n))  # (B, n) symbols 1..V-2
        inputs = np.full((batch_size, seq_len), BLANK, dtype=np.int64)  # (B, T)
        inputs[:, :n] = data
        inputs[:, n + delay] = self.marker
        fill = BLANK if self.config.score_blanks else IGNORE_INDEX
        targets = np.full((batch_size, seq_len), fill, dtype=np.int64)  # (B, T)
        targets[:, start:] = data
        return token_batch(inputs, targets, src_len=None if self.config.score_blanks else start)


@dataclass(frozen=True)
class SelectiveCopyConfig:
    # noise (0) + symbols 1..V-2 + marker V-1, so >= 3 (noise, marker, one symbol); Mamba uses 16
    vocab_size: Annotated[int, Range(ge=3)] = 16
    n_copy: PosInt = 16  # data tokens scattered in the context, output in order; Mamba uses 16
    seq_len: int = 256  # context (seq_len - n_copy - 1) + marker + n_copy outputs; Mamba uses 4096

    def __post_init__(self) -> None:
        if self.seq_len < 2 * self.n_copy + 1:
            raise ConfigError(f"seq_len must be >= 2 * n_copy + 1 = {2 * self.n_copy + 1}, got {self.seq_len}")


@register("selective_copy", SelectiveCopyConfig)
class SelectiveCopy(Task):
    """Selective copying: n data tokens at random positions among noise, a marker, then the n in order.

    The context holds seq_len - n_copy - 1 positions; the data positions are a
    uniformly random subset of them. Any seq_len >= 2 * n_copy + 1 works at
    batch time (a longer context, same n_copy).

    Metric: token accuracy on the n output positions; chance 1 / (vocab_size - 2).

    Example (vocab_size=6, n_copy=2, seq_len=9; 0 noise, 5 marker, -100 unscored):
        inputs   0    3    0    0    2    0    5    0  0
        targets  -100 -100 -100 -100 -100 -100 -100 3  2      src_len = 7
    """

    metric = "token_accuracy"

    @property
    def marker(self) -> int:
        return self.config.vocab_size - 1

    def chance(self, seq_len: int | None = None) -> float:
        return 1.0 / (self.config.vocab_size - 2)

    def _batch(self, batch_size: int, seq_len: int, rng: np.random.Generator, split: str) -> Batch:
        n = self.config.n_copy
        if seq_len < 2 * n + 1:
            raise ConfigError(f"selective_copy: seq_len must be >= 2 * n_copy + 1 = {2 * n + 1}, got {seq_len}")
        context = seq_len - n - 1
        # the n smallest of iid uniforms pick a uniformly random subset of the context
        pos = np.sort(rng.random((batch_size, context)).argpartition(n - 1, axis=1)[:, :n], axis=1)  # (B, n)
        data = rng.integers(1, self.marker, size=(batch_size, n))  # (B, n)
        inputs = np.full((batch_size, seq_len), BLANK, dtype=np.int64)  # (B, T)
        np.put_along_axis(inputs, pos, data, axis=1)
        inputs[:, context] = self.marker
        targets = np.full((batch_size, seq_len), IGNORE_INDEX, dtype=np.int64)  # (B, T)
        targets[:, context + 1:] = data
        return token_batch(inputs, targets, src_len=context + 1)
