"""Formal-language tasks: parity, modular_arithmetic, cycle_navigation, even_pairs.

The regular-language tasks of Delétang et al. 2023, "Neural Networks and the
Chomsky Hierarchy" (ICLR), as used again in Beck et al. 2024, xLSTM §4.1: a
finite automaton solves each one at any length, yet Transformers and most
SSMs fail to extrapolate past the training lengths while recurrent networks
(LSTM, sLSTM) do. Protocol: train on short strings, test on longer ones.

Every task is sequence classification with the label at the last real position:

    inputs   (B, T) symbols, right-padded with PAD (= vocab_size - 1)
    targets  (B, T) IGNORE_INDEX everywhere except position n - 1 (n = string length),
             which holds the class label
    meta     "length" (B,) int64, the string lengths n

Right padding keeps a causal model's output at n - 1 independent of the padding
(it has read exactly the string); a pooled (B, C) output is placed at that position
by the shared scorer. Metric: sequence_accuracy (one scored position per sequence,
so it equals token accuracy).

Lengths. At the configured seq_len (the training length) each string length is
uniform over the valid lengths in [min_len, max_len] (max_len None = seq_len),
as Delétang et al. train on lengths 1..N. At any other seq_len L (test lengths,
e.g. train 40, test 200) every string has the longest valid length <= L, with no
padding, so accuracy is reported at exactly that length, as in their per-length
plots. `chance(seq_len)` is the accuracy of the best constant predictor, computed
exactly from the label distribution over those lengths (1/n_classes when labels
are balanced).

Worked examples (seq_len=8; -100 is IGNORE_INDEX):

parity — bits 0/1, PAD 2; label = number of 1s mod 2 (1 = odd):
    inputs  [1, 0, 1, 1, 0, 2, 2, 2]          "10110", three 1s
    targets [-100, -100, -100, -100, 1, -100, -100, -100]

modular_arithmetic (modulus 5) — digits 0..4, '+' 5, '-' 6, '*' 7, PAD 8 (in general digits
0..m-1, then '+', '-', '*', PAD).
Evaluated with the usual precedence as in Delétang et al.: '*' binds tighter than
'+'/'-', then left to right, result mod 5 ('-' adds the additive inverse):
    inputs  [1, 5, 2, 7, 3, 6, 4, 8]          "1 + 2 * 3 - 4" = 1 + 6 - 4 = 3
    targets [-100, -100, -100, -100, -100, -100, 3, -100]
(strictly left to right it would be ((1 + 2) * 3 - 4) mod 5 = 0). Strings have odd
length: digit (op digit)*.

cycle_navigation (cycle_len 5) — moves: 0 = -1 (left), 1 = 0 (stay), 2 = +1 (right),
PAD 3; start at position 0; label = final position mod 5:
    inputs  [2, 2, 0, 1, 0, 0, 3, 3]          +1 +1 -1 0 -1 -1 = -1 -> 4
    targets [-100, -100, -100, -100, -100, 4, -100, -100]

even_pairs — symbols a = 0, b = 1, PAD 2; label = number of 'ab' plus 'ba'
substrings mod 2 (Delétang's classes: 0 = even, 1 = odd), which equals
first symbol != last symbol:
    inputs  [0, 1, 1, 0, 0, 1, 2, 2]          "abbaab": ab, ba, ab = 3 pairs, odd
    targets [-100, -100, -100, -100, -100, 1, -100, -100]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import numpy as np

from seqbench.config import PosInt, Range
from seqbench.errors import ConfigError
from seqbench.tasks.base import IGNORE_INDEX, Batch, Task, token_batch
from seqbench.tasks.registry import register


@dataclass(frozen=True)
class FormalConfig:
    seq_len: PosInt = 40  # training length T: batches are padded to it; test lengths via batch(seq_len=L)
    min_len: PosInt = 1  # shortest string at the training length
    max_len: int | None = None  # longest string at the training length; None = seq_len

    def __post_init__(self) -> None:
        hi = self.seq_len if self.max_len is None else self.max_len
        if not self.min_len <= hi <= self.seq_len:
            raise ConfigError(
                f"need min_len <= max_len <= seq_len, got min_len={self.min_len}, max_len={self.max_len}, "
                f"seq_len={self.seq_len}; lower min_len or raise max_len/seq_len"
            )


@dataclass(frozen=True)
class ParityConfig(FormalConfig):
    pass


@dataclass(frozen=True)
class EvenPairsConfig(FormalConfig):
    pass


@dataclass(frozen=True)
class CycleNavigationConfig(FormalConfig):
    cycle_len: Annotated[int, Range(ge=2)] = 5  # number of positions on the cycle (= classes)


@dataclass(frozen=True)
class ModularArithmeticConfig(FormalConfig):
    modulus: Annotated[int, Range(ge=2)] = 5  # digits 0..modulus-1; the result mod modulus is the class

    def __post_init__(self) -> None:
        super().__post_init__()
        hi = self.seq_len if self.max_len is None else self.max_len
        if self.min_len == hi and hi % 2 == 0:
            raise ConfigError(
                f"modular_arithmetic strings have odd length; min_len = max_len = {hi} allows none, "
                "widen the range"
            )


class FormalTask(Task):
    """Shared machinery: lengths, padding, the label position and the exact chance level."""

    metric = "sequence_accuracy"
    sequence_level = True
    extrapolates = True
    low_entropy = True  # strings of length 1..few repeat between train and eval by design
    n_symbols: ClassVar[int] = 2  # input symbols; PAD = n_symbols

    @property
    def pad(self) -> int:
        return self.n_symbols

    @property
    def vocab_size(self) -> int:
        return self.n_symbols + 1

    @property
    def n_classes(self) -> int:
        raise NotImplementedError

    @property
    def n_outputs(self) -> int:
        return self.n_classes

    # --- lengths ----------------------------------------------------------------------
    def valid(self, n: np.ndarray) -> np.ndarray:
        """Which string lengths the task can produce."""
        return n >= 1

    def lengths_for(self, seq_len: int) -> np.ndarray:
        """All string lengths a batch at seq_len draws from, uniformly."""
        cfg = self.config
        if seq_len == self.seq_len:
            hi = cfg.seq_len if cfg.max_len is None else cfg.max_len
            n = np.arange(cfg.min_len, hi + 1)
            return n[self.valid(n)]
        n = np.arange(1, seq_len + 1)
        n = n[self.valid(n)]
        if n.size == 0:
            raise ConfigError(f"{self.name}: no valid string fits seq_len={seq_len}")
        return n[-1:]

    # --- labels -----------------------------------------------------------------------
    def strings(self, n: np.ndarray, seq_len: int, rng: np.random.Generator) -> np.ndarray:
        """(B, T) random symbols; positions >= n are overwritten with PAD afterwards."""
        return rng.integers(0, self.n_symbols, size=(n.size, seq_len))

    def labels(self, x: np.ndarray, real: np.ndarray, n: np.ndarray) -> np.ndarray:
        """(B,) labels of the strings x (B, T); real (B, T) marks the non-pad positions."""
        raise NotImplementedError

    def label_dists(self, lengths: np.ndarray) -> np.ndarray:
        """(len(lengths), C) exact class probabilities of a random string of each length."""
        raise NotImplementedError

    def chance(self, seq_len: int | None = None) -> float:
        lengths = self.lengths_for(self.seq_len if seq_len is None else int(seq_len))
        dist = self.label_dists(lengths).mean(0)  # (C,): lengths are uniform
        return float(dist.max())

    # --- batches ----------------------------------------------------------------------
    def _batch(self, batch_size: int, seq_len: int, rng: np.random.Generator, split: str) -> Batch:
        n = rng.choice(self.lengths_for(seq_len), size=batch_size)  # (B,)
        x = self.strings(n, seq_len, rng)  # (B, T)
        real = np.arange(seq_len)[None, :] < n[:, None]  # (B, T)
        x = np.where(real, x, self.pad)
        y = np.full((batch_size, seq_len), IGNORE_INDEX, dtype=np.int64)  # (B, T)
        y[np.arange(batch_size), n - 1] = self.labels(x, real, n)
        return token_batch(x, y, length=n.astype(np.int64))


@register("parity", ParityConfig)
class Parity(FormalTask):
    """Parity of the number of 1s in a bit string; 2 classes. See the module docstring."""

    n_symbols = 2

    @property
    def n_classes(self) -> int:
        return 2

    def labels(self, x: np.ndarray, real: np.ndarray, n: np.ndarray) -> np.ndarray:
        return ((x == 1) & real).sum(1) % 2

    def label_dists(self, lengths: np.ndarray) -> np.ndarray:
        return np.full((lengths.size, 2), 0.5)


@register("even_pairs", EvenPairsConfig)
class EvenPairs(FormalTask):
    """Parity of the number of 'ab'/'ba' pairs (= first != last); 2 classes. See the module docstring."""

    n_symbols = 2

    @property
    def n_classes(self) -> int:
        return 2

    def labels(self, x: np.ndarray, real: np.ndarray, n: np.ndarray) -> np.ndarray:
        last = x[np.arange(x.shape[0]), n - 1]
        return (x[:, 0] != last).astype(np.int64)

    def label_dists(self, lengths: np.ndarray) -> np.ndarray:
        # a single symbol has no pairs (class 0); otherwise first and last are independent
        one = (lengths == 1).astype(float)[:, None]
        return one * np.array([1.0, 0.0]) + (1 - one) * np.array([0.5, 0.5])


@register("cycle_navigation", CycleNavigationConfig)
class CycleNavigation(FormalTask):
    """Final position on a cycle after moves -1/0/+1 from 0; cycle_len classes. See the module docstring."""

    n_symbols = 3

    @property
    def n_classes(self) -> int:
        return self.config.cycle_len

    def labels(self, x: np.ndarray, real: np.ndarray, n: np.ndarray) -> np.ndarray:
        return np.where(real, x - 1, 0).sum(1) % self.n_classes

    def label_dists(self, lengths: np.ndarray) -> np.ndarray:
        C = self.n_classes
        step = np.zeros((C, C))  # step[a, b] = P(position a -> b) for one uniform move
        for a in range(C):
            for move in (-1, 0, 1):
                step[a, (a + move) % C] += 1 / 3
        start = np.eye(C)[0]  # (C,): at position 0
        return _chain(start, step, lengths)  # one move per symbol


@register("modular_arithmetic", ModularArithmeticConfig)
class ModularArithmetic(FormalTask):
    """digit (op digit)* with + - * and precedence, mod `modulus`. See the module docstring."""

    @property
    def n_symbols(self) -> int:  # digits, then '+', '-', '*'
        return self.config.modulus + 3

    @property
    def n_classes(self) -> int:
        return self.config.modulus

    def valid(self, n: np.ndarray) -> np.ndarray:
        return (n >= 1) & (n % 2 == 1)

    def strings(self, n: np.ndarray, seq_len: int, rng: np.random.Generator) -> np.ndarray:
        m = self.config.modulus
        x = rng.integers(0, m, size=(n.size, seq_len))  # digits at even positions
        x[:, 1::2] = m + rng.integers(0, 3, size=(n.size, seq_len // 2))  # operators at odd positions
        return x

    def labels(self, x: np.ndarray, real: np.ndarray, n: np.ndarray) -> np.ndarray:
        m = self.config.modulus
        minus, times = m + 1, m + 2  # digits 0..m-1, then "+" m
        total = np.zeros(x.shape[0], dtype=np.int64)  # sum of the finished additive terms
        term = x[:, 0].astype(np.int64)  # the current signed product term
        for i in range(1, x.shape[1] - 1, 2):  # one (op, digit) pair per step, vectorized over B
            on = real[:, i + 1]
            op, d = x[:, i], x[:, i + 1]
            new_term = np.where(op == times, term * d, np.where(op == minus, -d, d)) % m
            total = np.where(on & (op != times), (total + term) % m, total)
            term = np.where(on, new_term, term)
        return (total + term) % m

    def label_dists(self, lengths: np.ndarray) -> np.ndarray:
        # exact: a Markov chain on the state (total, term), one step per uniform (op, digit) pair
        m = self.config.modulus
        step = np.zeros((m, m, m, m))  # step[total, term, total', term']
        for s in range(m):
            for t in range(m):
                for d in range(m):
                    step[s, t, (s + t) % m, d] += 1 / (3 * m)  # '+ d'
                    step[s, t, (s + t) % m, (-d) % m] += 1 / (3 * m)  # '- d'
                    step[s, t, s, (t * d) % m] += 1 / (3 * m)  # '* d'
        start = np.zeros((m, m))
        start[0, :] = 1 / m  # total 0, term = the first digit
        states = _chain(start.reshape(-1), step.reshape(m * m, m * m), (lengths - 1) // 2)  # (L, m*m)
        value = (np.arange(m)[:, None] + np.arange(m)[None, :]).reshape(-1) % m  # (m*m,): total + term
        return np.stack([states[:, value == c].sum(1) for c in range(m)], axis=1)  # (L, C)


def _chain(start: np.ndarray, step: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """(len(steps), S) distributions of a Markov chain (start (S,), step (S, S)) after each number of steps."""
    out = np.zeros((steps.size, start.size))
    p = start.copy()
    done = 0
    for i in np.argsort(steps, kind="stable"):
        for _ in range(int(steps[i]) - done):
            p = p @ step
        done = int(steps[i])
        out[i] = p
    return out
