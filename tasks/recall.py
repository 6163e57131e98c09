"""Recall probes: multi-query associative recall, induction heads, and recall at a set distance.

associative_recall — multi-query associative recall (MQAR) of Arora, Eyuboglu et
al. 2023, "Zoology: Measuring and Improving Recall in Efficient Language
Models", §3 and the zoology generator (zoology/data/multiquery_ar.py): keys from
the lower half of the vocabulary, values from the upper half, a key-value block,
then each key queried once at gaps drawn from a power law.

induction_heads — Olsson et al. 2022, "In-context Learning and Induction Heads";
the synthetic form of Gu & Dao 2023, "Mamba", §4.1.2 (train at 256, test up to
2^20): a special token followed by a target somewhere in a random sequence;
when the special token recurs at the end, predict the target.

long_range_recall — one key-value pair at a chosen distance d before its query,
filler and distractor pairs around it; d is independent of seq_len and accuracy
is reported per distance (Batch.meta["distance"]), the direct probe of how a
model's memory decays with dependency length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np

from seqbench.config import NONEMPTY, PosFloat, PosInt, Range
from seqbench.errors import ConfigError
from seqbench.tasks.base import IGNORE_INDEX, Batch, Task, token_batch
from seqbench.tasks.registry import register


def _distinct(rng: np.random.Generator, batch_size: int, low: int, high: int, k: int) -> np.ndarray:
    """(B, k) distinct ints from [low, high) per row, in random order."""
    return low + rng.random((batch_size, high - low)).argsort(axis=1)[:, :k]


# --- associative_recall (MQAR) -------------------------------------------------------------


@dataclass(frozen=True)
class AssociativeRecallConfig:
    vocab_size: int = 256  # keys in [1, V/2), values in [V/2, V); zoology uses 8192
    num_kv_pairs: PosInt = 8  # key-value pairs in the block, each queried once; zoology sweeps 4..64
    seq_len: int = 128  # kv block (2 * num_kv_pairs) + query region; zoology sweeps 64..512
    power_a: PosFloat = 0.01  # query gap g = 1..space drawn with p(g) ∝ g^(power_a - 1); 1.0 = uniform

    def __post_init__(self) -> None:
        if self.vocab_size // 2 - 1 < self.num_kv_pairs:
            raise ConfigError(
                f"vocab_size must be >= 2 * (num_kv_pairs + 1) = {2 * (self.num_kv_pairs + 1)} "
                f"for distinct keys, got {self.vocab_size}"
            )
        if self.seq_len < 4 * self.num_kv_pairs:
            raise ConfigError(f"seq_len must be >= 4 * num_kv_pairs = {4 * self.num_kv_pairs}, got {self.seq_len}")


@register("associative_recall", AssociativeRecallConfig)
class AssociativeRecall(Task):
    """MQAR: a block of key-value pairs, then every key queried once; predict its value at the query.

    Layout: positions 0..2N-1 hold k1 v1 k2 v2 ... (N = num_kv_pairs, keys
    distinct from [1, V/2), values distinct from [V/2, V)); the query region after
    it has `space` = (seq_len - 2N) // 2 even slots, key i is placed at slot g_i
    (slots drawn without replacement with p(g) ∝ (g + 1)^(power_a - 1), in draw
    order, as zoology does), and every other position holds a uniform random
    token from [0, V). The target at a query position is the key's value (the
    next token in zoology's language-model form). Longer seq_len at batch time
    widens the query region.

    Metric: token accuracy on the query positions; chance 1 / (V - V/2) (values
    are uniform over the upper half).

    Example (vocab_size=16, num_kv_pairs=2, seq_len=12; -100 unscored):
        inputs   2    12   5    9    5  3    4    14   2  0    7    11
        targets  -100 -100 -100 -100 9  -100 -100 -100 12 -100 -100 -100
    """

    metric = "token_accuracy"

    def chance(self, seq_len: int | None = None) -> float:
        V = self.config.vocab_size
        return 1.0 / (V - V // 2)

    def _batch(self, batch_size: int, seq_len: int, rng: np.random.Generator, split: str) -> Batch:
        V, N = self.config.vocab_size, self.config.num_kv_pairs
        if seq_len < 4 * N:
            raise ConfigError(f"associative_recall: seq_len must be >= 4 * num_kv_pairs = {4 * N}, got {seq_len}")
        keys = _distinct(rng, batch_size, 1, V // 2, N)  # (B, N)
        values = _distinct(rng, batch_size, V // 2, V, N)  # (B, N)
        space = (seq_len - 2 * N) // 2
        a = self.config.power_a
        log_p = (a - 1.0) * np.log(np.arange(1, space + 1))  # (space,) unnormalized
        # Gumbel top-k = sequential sampling without replacement, in draw order
        gaps = np.argsort(-(log_p + rng.gumbel(size=(batch_size, space))), axis=1)[:, :N]  # (B, N)
        qpos = 2 * N + 2 * gaps  # (B, N) query positions
        inputs = rng.integers(0, V, size=(batch_size, seq_len))  # (B, T) random non-queries
        inputs[:, 0:2 * N:2] = keys
        inputs[:, 1:2 * N:2] = values
        np.put_along_axis(inputs, qpos, keys, axis=1)
        targets = np.full((batch_size, seq_len), IGNORE_INDEX, dtype=np.int64)  # (B, T)
        np.put_along_axis(targets, qpos, values, axis=1)
        return token_batch(inputs, targets)


# --- induction_heads ----------------------------------------------------------------------


@dataclass(frozen=True)
class InductionHeadsConfig:
    vocab_size: Annotated[int, Range(ge=3)] = 16  # ordinary tokens 0..V-2, special token V-1; Mamba uses 16
    # training length; any seq_len >= 3 at batch time (Mamba tests up to 2^20)
    seq_len: Annotated[int, Range(ge=3)] = 256


@register("induction_heads", InductionHeadsConfig)
class InductionHeads(Task):
    """Induction heads: uniform random tokens, the special token once at position p followed by
    the target, and the special token again at the last position, where the target is scored.

    p is uniform in [0, seq_len - 3]; ordinary tokens never equal the special one.
    Generation is one vectorized draw, so seq_len 2^16 at batch 32 and 2^20 at
    batch 1 are cheap (tests/test_tasks_synthetic.py builds the latter).

    Metric: token accuracy at the last position (one per sequence); chance 1 / (V - 1).

    Example (vocab_size=6, seq_len=8; 5 is the special token, -100 unscored):
        inputs   3    0    5    2    4    1    3    5
        targets  -100 -100 -100 -100 -100 -100 -100 2
    """

    metric = "token_accuracy"
    sequence_level = True

    @property
    def special(self) -> int:
        return self.config.vocab_size - 1

    def chance(self, seq_len: int | None = None) -> float:
        return 1.0 / (self.config.vocab_size - 1)

    def _batch(self, batch_size: int, seq_len: int, rng: np.random.Generator, split: str) -> Batch:
        if seq_len < 3:
            raise ConfigError(f"induction_heads: seq_len must be >= 3, got {seq_len}")
        rows = np.arange(batch_size)
        inputs = rng.integers(0, self.special, size=(batch_size, seq_len))  # (B, T)
        p = rng.integers(0, seq_len - 2, size=batch_size)  # (B,) first special token
        inputs[rows, p] = self.special
        inputs[:, -1] = self.special
        targets = np.full((batch_size, seq_len), IGNORE_INDEX, dtype=np.int64)  # (B, T)
        targets[:, -1] = inputs[rows, p + 1]
        return token_batch(inputs, targets)


# --- long_range_recall --------------------------------------------------------------------


@dataclass(frozen=True)
class LongRangeRecallConfig:
    vocab_size: Annotated[int, Range(ge=8)] = 64  # keys [0, V/4), values [V/4, V/2), filler [V/2, V)
    # pairs in a sequence: the queried one plus num_kv_pairs - 1 distractors; at most vocab_size // 4
    num_kv_pairs: PosInt = 4
    # key-to-query distances, each >= 2 and distinct, at least one, e.g. [4, 16, 64]; each sequence draws one
    distances: Annotated[tuple[Annotated[int, Range(ge=2)], ...], NONEMPTY] = (4, 16, 64, 192)
    seq_len: int = 256  # any seq_len > max(distances) at batch time; distances do not scale with it

    def __post_init__(self) -> None:
        if self.num_kv_pairs > self.vocab_size // 4:
            raise ConfigError(
                f"num_kv_pairs must be in [1, vocab_size // 4 = {self.vocab_size // 4}] (distinct keys), "
                f"got {self.num_kv_pairs}"
            )
        if len(set(self.distances)) != len(self.distances):
            raise ConfigError(f"distances must be distinct, got {list(self.distances)}")
        _check_length(self.seq_len, self.distances, self.num_kv_pairs)


def _check_length(seq_len: int, distances: tuple[int, ...], num_kv_pairs: int) -> None:
    if seq_len <= max(distances):
        raise ConfigError(f"long_range_recall: seq_len must be > max(distances) = {max(distances)}, got {seq_len}")
    if num_kv_pairs - 1 > (seq_len - 4) // 2:
        raise ConfigError(
            f"long_range_recall: seq_len {seq_len} leaves no room for {num_kv_pairs - 1} distractor pairs; "
            f"use seq_len >= {2 * num_kv_pairs + 2}"
        )


@register("long_range_recall", LongRangeRecallConfig)
class LongRangeRecall(Task):
    """Recall at a set distance: the queried key sits exactly d positions before the query.

    Layout: filler tokens from [V/2, V) everywhere; the queried pair (k, v) at
    positions T-1-d, T-d; num_kv_pairs - 1 distractor pairs (distinct keys from
    [0, V/4), values from [V/4, V/2)) in random non-overlapping pair slots of
    the same parity; the last position holds k again and is scored with target
    v. d is drawn from `distances`, balanced within a batch (each distance gets
    batch_size / len(distances) rows, shuffled). Batch.meta["distance"] (B, T)
    holds d at the scored position and -1 elsewhere, so `tasks.base.score`
    reports accuracy per distance under "by_distance".

    Metric: token accuracy at the last position (one per sequence); chance 1 / (V/4).

    Example (vocab_size=16, num_kv_pairs=2, distances=(4,), seq_len=10; keys 0-3,
    values 4-7, filler 8-15, -100 unscored):
        inputs   11   1    4    15   14   2    7    9    10   2
        targets  -100 -100 -100 -100 -100 -100 -100 -100 -100 7
        (queried pair 2 7 at positions 5-6, d = 9 - 5 = 4; distractor pair 1 4 at 1-2)
        meta["distance"] is -1 everywhere except 4 at the last position.
    """

    metric = "token_accuracy"
    sequence_level = True

    def chance(self, seq_len: int | None = None) -> float:
        return 1.0 / (self.config.vocab_size // 4)

    def _batch(self, batch_size: int, seq_len: int, rng: np.random.Generator, split: str) -> Batch:
        cfg = self.config
        V, N, T = cfg.vocab_size, cfg.num_kv_pairs, seq_len
        _check_length(T, cfg.distances, N)
        rows = np.arange(batch_size)
        choice = rng.permutation(np.resize(np.arange(len(cfg.distances)), batch_size))  # (B,) balanced
        d = np.asarray(cfg.distances, dtype=np.int64)[choice]  # (B,)
        p = T - 1 - d  # (B,) position of the queried key
        keys = _distinct(rng, batch_size, 0, V // 4, N)  # (B, N); column 0 is queried
        values = rng.integers(V // 4, V // 2, size=(batch_size, N))  # (B, N)
        inputs = rng.integers(V // 2, V, size=(batch_size, T))  # (B, T) filler
        inputs[rows, p] = keys[:, 0]
        inputs[rows, p + 1] = values[:, 0]
        if N > 1:
            # pair slots (q + 2k, q + 2k + 1) of the queried pair's parity q, ending before T - 1
            q = p % 2  # (B,)
            n_slots = (T - 3 - q) // 2 + 1  # (B,)
            k = np.arange((T - 3) // 2 + 1)  # (K,)
            score = rng.random((batch_size, k.size))  # (B, K)
            score[(k[None] >= n_slots[:, None]) | (k[None] == (p // 2)[:, None])] = 2.0  # not free
            slot = score.argpartition(N - 2, axis=1)[:, :N - 1]  # (B, N-1) random free slots
            start = q[:, None] + 2 * slot  # (B, N-1)
            np.put_along_axis(inputs, start, keys[:, 1:], axis=1)
            np.put_along_axis(inputs, start + 1, values[:, 1:], axis=1)
        inputs[:, -1] = keys[:, 0]
        targets = np.full((batch_size, T), IGNORE_INDEX, dtype=np.int64)  # (B, T)
        targets[:, -1] = values[:, 0]
        distance = np.full((batch_size, T), -1, dtype=np.int64)  # (B, T)
        distance[:, -1] = d
        return token_batch(inputs, targets, distance=distance)
