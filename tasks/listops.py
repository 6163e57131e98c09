"""ListOps: nested list operations on digits, sequence classification into 10 classes.

Nangia & Bowman 2018, "ListOps: A Diagnostic Dataset for Latent Tree Learning";
the generator of Tay et al. 2021, "Long Range Arena" (lra_benchmarks/data/listops.py),
re-implemented here from its description:

  - a node at depth d (the root has depth 1) is an operator with probability
    op_prob = 0.25 (LRA's VALUE_P) when d < max_depth, else a digit 0..9 drawn uniformly;
    so operators nest at most max_depth - 1 deep and the tree has at most max_depth levels;
  - an operator takes 2..max_args arguments (uniform), each a fresh node at depth d + 1,
    and is drawn uniformly from MIN, MAX, MED, SM;
  - MIN, MAX as usual; SM = sum mod 10; MED = int(np.median(args)) as in LRA's code,
    i.e. the middle value for an odd count and the floor of the mean of the two middle
    values for an even count (MED 1 4 = 2; not the lower middle 1);
  - whole trees are rejection-sampled until their length (operators, digits and ']',
    the count LRA uses) lies in [min_len, max_len]. LRA keeps 500 < length < 2000,
    i.e. min_len=501, max_len=1999 here. LRA also drops duplicate trees from its
    fixed dataset; this stream does not (duplicates of long trees are vanishingly rare).

Tokens. LRA writes each tree with a parenthesis pair around every binary tuple of
its internal representation, e.g. "( ( ( [MIN 4 ) 7 ) ] )", and its input pipeline
then tokenizes with a tokenizer that drops every non-alphanumeric character,
which also loses the ']' that close the lists (the known LRA tokenizer bug). We
tokenize as the later LRA re-implementations do (e.g. S4's dataloader): drop the
parentheses, which carry no information, and keep ']' as its own token. Ids:

    '0'..'9' -> 0..9    '[MIN' 10   '[MAX' 11   '[MED' 12   '[SM' 13   ']' 14   PAD 15

Layout: right-padded with PAD to seq_len; the label sits at the last real position
(the final ']'), targets are IGNORE_INDEX everywhere else, so a causal model's
output there has read exactly the expression and a pooled (B, C) output is placed
there by the shared scorer. meta["length"] (B,) holds the expression lengths.
Metric: sequence_accuracy (one scored position per sequence). chance() is the
accuracy of the best constant predictor (the most frequent label), estimated once
from 2000 samples with a fixed seed and cached (about 0.17, +-0.01); the labels are far
from uniform (0 and 9 are the most common).

Cost: expressions are grown one by one in Python, about 12 ms of CPU time per batch of 32
at seq_len 512 (lengths 128..512) and 14 ms at LRA's 501..1999, against ~300 ms for one
training step of a one-layer d_model=64 LSTM on that batch (2-core CPU, one thread).

Worked example (seq_len=12): "[MAX 2 9 [MIN 4 7 ] 0 ]" = max(2, 9, min(4, 7), 0) = 9
(LRA's string: "( ( ( ( ( [MAX 2 ) 9 ) ( ( ( [MIN 4 ) 7 ) ] ) ) 0 ) ] )")

    inputs  [11, 2, 9, 10, 4, 7, 14, 0, 14, 15, 15, 15]
    targets [-100, -100, -100, -100, -100, -100, -100, -100, 9, -100, -100, -100]
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Annotated

import numpy as np

from seqbench.config import PosInt, Range
from seqbench.errors import ConfigError
from seqbench.tasks.base import IGNORE_INDEX, Batch, Task, token_batch
from seqbench.tasks.registry import register

TOKENS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "[MIN", "[MAX", "[MED", "[SM", "]", "<pad>")
MIN, MAX, MED, SM, END, PAD = 10, 11, 12, 13, 14, 15
OPERATORS = (MIN, MAX, MED, SM)
CHANCE_SAMPLES = 2000  # expressions used to estimate the majority-class rate


@dataclass(frozen=True)
class ListOpsConfig:
    # padded length T, >= 4 (the shortest expression, e.g. '[SM 1 2 ]'); LRA: 2000, S4 and later: 2048
    seq_len: Annotated[int, Range(ge=4)] = 2048
    min_len: int | None = None  # shortest expression in tokens; None = max(4, max_len // 4) (LRA: 501)
    max_len: int | None = None  # longest expression in tokens; None = seq_len (LRA: 1999)
    # levels of the tree, the root counting as 1, so >= 2 (the root operator and its digits); LRA: 10
    max_depth: Annotated[int, Range(ge=2)] = 10
    max_args: Annotated[int, Range(ge=2)] = 10  # arguments per operator are uniform in 2..max_args (LRA: 10)
    # probability that a node above max_depth is an operator (LRA's VALUE_P)
    op_prob: Annotated[float, Range(gt=0, lt=1)] = 0.25
    max_tries: PosInt = 100_000  # rejection-sampling attempts per expression before giving up

    def __post_init__(self) -> None:
        lo, hi = length_range(self)
        if not 4 <= lo <= hi <= self.seq_len:
            raise ConfigError(
                f"need 4 <= min_len <= max_len <= seq_len, got min_len={lo}, max_len={hi}, seq_len={self.seq_len}"
            )
        # the longest tree the depth and argument limits allow: max_args ** (max_depth - 1) leaves
        longest = _longest(self.max_depth, self.max_args)
        if longest < lo:
            raise ConfigError(
                f"min_len={lo} is longer than any tree with max_depth={self.max_depth}, "
                f"max_args={self.max_args} (at most {longest} tokens); lower min_len or raise the limits"
            )


def length_range(cfg: ListOpsConfig) -> tuple[int, int]:
    """(min_len, max_len) with the defaults resolved."""
    hi = cfg.seq_len if cfg.max_len is None else cfg.max_len
    return (max(4, hi // 4) if cfg.min_len is None else cfg.min_len), hi


def _longest(max_depth: int, max_args: int) -> int:
    """Length of the largest tree: full max_args-ary operators down to depth max_depth."""
    length = 1  # a digit at the deepest level
    for _ in range(max_depth - 1):
        length = 2 + max_args * length
    return length


def _operate(op: int, args: list[int]) -> int:
    if op == MIN:
        return min(args)
    if op == MAX:
        return max(args)
    if op == SM:
        return sum(args) % 10
    s = sorted(args)  # MED: int(np.median(args))
    k = len(s) // 2
    return s[k] if len(s) % 2 else (s[k - 1] + s[k]) // 2


class _TooLong(Exception):
    """Internal: the tree being grown passed max_len; the sample is rejected early."""


def _grow(rand: random.Random, cfg: ListOpsConfig, max_len: int) -> tuple[list[int], int]:
    """One LRA tree with an operator at the root, as (tokens, value); raises _TooLong as soon
    as it exceeds max_len. Leaves are expanded inline (3 in 4 nodes are digits), and every
    uniform choice is a scaled rand.random(), several times faster than randrange/choice."""
    tokens: list[int] = []
    u = rand.random

    def operator(depth: int) -> int:  # an operator node at `depth`; its arguments sit at depth + 1
        tokens.append(0)  # placeholder: LRA draws the operator after its arguments
        at = len(tokens) - 1
        args = []
        for _ in range(2 + int(u() * (cfg.max_args - 1))):  # uniform in 2..max_args
            if depth + 1 < cfg.max_depth and u() <= cfg.op_prob:
                args.append(operator(depth + 1))
            else:
                value = int(u() * 10)
                tokens.append(value)
                args.append(value)
        op = OPERATORS[int(u() * 4)]
        tokens[at] = op
        tokens.append(END)
        if len(tokens) > max_len:
            raise _TooLong
        return _operate(op, args)

    value = operator(1)
    return tokens, value


def sample_expression(rand: random.Random, cfg: ListOpsConfig, min_len: int, max_len: int) -> tuple[list[int], int]:
    """Rejection-sample one expression of length in [min_len, max_len]: (token ids, label)."""
    for _ in range(cfg.max_tries):
        # min_len >= 4 rejects a bare-digit root, so start at an operator: same accepted distribution
        try:
            tokens, value = _grow(rand, cfg, max_len)
        except _TooLong:
            continue
        if min_len <= len(tokens) <= max_len:
            return tokens, value
    raise ConfigError(
        f"listops: no expression of length in [{min_len}, {max_len}] after max_tries={cfg.max_tries} tries; "
        "widen the length range or change max_depth/max_args/op_prob"
    )


@functools.cache
def _majority_rate(cfg: ListOpsConfig) -> float:
    """Frequency of the most common label over CHANCE_SAMPLES expressions (fixed seed: a property of cfg)."""
    min_len, max_len = length_range(cfg)
    rand = random.Random(20210101)
    labels = [sample_expression(rand, cfg, min_len, max_len)[1] for _ in range(CHANCE_SAMPLES)]
    return float(np.bincount(labels, minlength=10).max() / CHANCE_SAMPLES)


@register("listops", ListOpsConfig)
class ListOps(Task):
    """LRA ListOps (Tay et al. 2021; Nangia & Bowman 2018). See the module docstring."""

    metric = "sequence_accuracy"
    sequence_level = True
    extrapolates = False  # LRA fixes the length range; build another task for other lengths

    def __init__(self, config: ListOpsConfig) -> None:
        super().__init__(config)
        self.min_len, self.max_len = length_range(config)

    @property
    def vocab_size(self) -> int:
        return len(TOKENS)

    @property
    def n_outputs(self) -> int:
        return 10

    def chance(self, seq_len: int | None = None) -> float:
        return _majority_rate(self.config)

    def _batch(self, batch_size: int, seq_len: int, rng: np.random.Generator, split: str) -> Batch:
        rand = random.Random(int(rng.integers(2**63)))  # a local stream seeded from the task's rng
        x = np.full((batch_size, seq_len), PAD, dtype=np.int64)  # (B, T)
        y = np.full((batch_size, seq_len), IGNORE_INDEX, dtype=np.int64)  # (B, T)
        n = np.zeros(batch_size, dtype=np.int64)  # (B,)
        for b in range(batch_size):
            tokens, value = sample_expression(rand, self.config, self.min_len, self.max_len)
            n[b] = len(tokens)
            x[b, : n[b]] = tokens
            y[b, n[b] - 1] = value
        return token_batch(x, y, length=n)
