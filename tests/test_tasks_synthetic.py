"""Synthetic tasks: an oracle that knows each rule scores 100%, a blind predictor scores chance.

Each oracle is written here from the task's documented definition: it reads only
`batch.inputs` and the task's params, never the targets. A perfect oracle score
proves every scored position carries the right target; a constant predictor
landing on the stated chance level proves the mask covers exactly the positions
that should be scored (no blanks or free positions counted in).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqbench import tasks
from seqbench.tasks import ConfigError


def one_hot_logits(pred: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(B, T) class ids -> (B, T, C) logits whose argmax is pred (negative ids -> class 0)."""
    return 10.0 * F.one_hot(pred.clamp(min=0), n_classes).float()


def constant_logits(batch: tasks.Batch, n_classes: int, cls: int) -> torch.Tensor:
    out = torch.zeros(batch.batch_size, batch.seq_len, n_classes)
    out[..., cls] = 1.0
    return out


def assert_near_chance(task: tasks.Task, predict, n_batches: int = 20, batch_size: int = 64, seq_len=None) -> None:
    """Token accuracy pooled over batches is within 4.5 binomial sd of task.chance()."""
    correct = total = 0
    for seed in range(n_batches):
        b = task.batch(batch_size, seq_len=seq_len, seed=seed, split="eval")
        out = predict(b)
        n = int(b.mask.sum())
        correct += task.score(out, b)["token_accuracy"] * n
        total += n
    p = task.chance(seq_len)
    sd = math.sqrt(p * (1 - p) / total)
    assert abs(correct / total - p) <= 4.5 * sd + 1e-9, (correct / total, p, total)


def assert_oracle_perfect(task: tasks.Task, oracle, batch_size: int = 16, seq_len=None, seeds=(0, 1, 2)) -> None:
    for seed in seeds:
        for split in ("train", "eval"):
            b = task.batch(batch_size, seq_len=seq_len, seed=seed, split=split)
            result = task.score(oracle(b), b)
            assert result["token_accuracy"] == 1.0 and result["sequence_accuracy"] == 1.0, result


# --- copy -----------------------------------------------------------------------------------


def copy_oracle(task: tasks.Task):
    """The first n_copy tokens, emitted at the last n_copy positions; blanks (0) elsewhere."""
    n, V = task.config.n_copy, task.config.vocab_size

    def predict(b: tasks.Batch) -> torch.Tensor:
        pred = torch.zeros_like(b.inputs)
        pred[:, -n:] = b.inputs[:, :n]
        return one_hot_logits(pred, V)

    return predict


@pytest.mark.parametrize("score_blanks", [False, True])
def test_copy_oracle_and_lengths(score_blanks):
    task = tasks.build("copy", vocab_size=10, n_copy=5, delay=20, score_blanks=score_blanks)
    assert task.seq_len == 5 + 20 + 1 + 5
    assert_oracle_perfect(task, copy_oracle(task))
    # a longer seq_len means a longer delay: the marker moves, the rule holds
    assert_oracle_perfect(task, copy_oracle(task), seq_len=101)
    b = task.batch(4, seq_len=101, seed=0)
    assert (b.inputs[:, 101 - 5 - 1] == 9).all()  # the marker (V - 1) right before the outputs
    assert b.src_len == (None if score_blanks else 96)
    with pytest.raises(ConfigError, match="seq_len"):
        task.batch(2, seq_len=10, seed=0)


def test_copy_chance_and_memoryless_baseline():
    task = tasks.build("copy", vocab_size=10, n_copy=10, delay=40)
    assert_near_chance(task, lambda b: constant_logits(b, 10, 3))
    assert task.chance() == pytest.approx(1 / 8)
    assert task.memoryless_loss() == pytest.approx(math.log(8))

    # Arjovsky et al. 2016: 10 symbols from 8, T - 1 blanks, marker, 10 outputs: 10 log 8 / (T + 20)
    T = 41
    full = tasks.build("copy", vocab_size=10, n_copy=10, delay=T - 1, score_blanks=True)
    assert full.seq_len == T + 20
    assert full.memoryless_loss() == pytest.approx(10 * math.log(8) / (T + 20))
    b = full.batch(32, seed=0)
    start = b.seq_len - 10
    # memoryless predictor: certain blank before the outputs, uniform over the 8 symbols after
    out = torch.zeros(b.batch_size, b.seq_len, 10)
    out[:, :start, 1:] = -100.0
    out[:, start:, 0] = -100.0
    out[:, start:, 9] = -100.0
    assert full.score(out, b)["loss"] == pytest.approx(10 * math.log(8) / (T + 20), rel=1e-4)

    def blind(b: tasks.Batch) -> torch.Tensor:  # blank before the outputs, symbol 1 on them
        pred = torch.zeros_like(b.inputs)
        pred[:, -10:] = 1
        return one_hot_logits(pred, 10)

    assert_near_chance(full, blind)


# --- selective_copy -----------------------------------------------------------------------


def test_selective_copy_oracle_and_chance():
    task = tasks.build("selective_copy", vocab_size=8, n_copy=6, seq_len=64)
    n = 6

    def oracle(b: tasks.Batch) -> torch.Tensor:
        pred = torch.zeros_like(b.inputs)
        for i in range(b.batch_size):
            marker = int((b.inputs[i] == 7).nonzero()[0])
            data = b.inputs[i, :marker]
            data = data[data != 0]  # non-noise tokens, in order
            assert data.numel() == n
            pred[i, marker + 1: marker + 1 + n] = data
        return one_hot_logits(pred, 8)

    assert_oracle_perfect(task, oracle)
    assert_oracle_perfect(task, oracle, seq_len=200)
    b = task.batch(8, seed=0)
    assert b.src_len == 64 - n and (b.inputs[:, b.src_len - 1] == 7).all()
    assert_near_chance(task, lambda b: constant_logits(b, 8, 2))
    # the data positions really are scattered, not a fixed block
    first = [int((b.inputs[i] != 0).nonzero()[0]) for i in range(8)]
    assert len(set(first)) > 1


# --- associative_recall (MQAR) ---------------------------------------------------------------


def mqar_oracle(task: tasks.Task):
    """Key-value table from the first 2N tokens; at every position answer table[token]."""
    V, N = task.config.vocab_size, task.config.num_kv_pairs

    def predict(b: tasks.Batch) -> torch.Tensor:
        table = torch.zeros(b.batch_size, V, dtype=torch.long)
        table.scatter_(1, b.inputs[:, 0:2 * N:2], b.inputs[:, 1:2 * N:2])
        return one_hot_logits(torch.gather(table, 1, b.inputs), V)

    return predict


def test_associative_recall_oracle_layout_and_chance():
    task = tasks.build("associative_recall", vocab_size=64, num_kv_pairs=6, seq_len=48)
    V, N = 64, 6
    assert_oracle_perfect(task, mqar_oracle(task))
    assert_oracle_perfect(task, mqar_oracle(task), seq_len=96)
    b = task.batch(32, seed=0)
    keys, values = b.inputs[:, 0:2 * N:2], b.inputs[:, 1:2 * N:2]
    assert ((keys >= 1) & (keys < V // 2)).all() and ((values >= V // 2) & (values < V)).all()
    assert all(len(set(row.tolist())) == N for row in keys)  # distinct keys per sequence
    # every key queried exactly once, at an even offset of the query region
    assert (b.mask.sum(1) == N).all()
    pos = b.mask.nonzero()[:, 1]
    assert ((pos >= 2 * N) & ((pos - 2 * N) % 2 == 0)).all()
    assert_near_chance(task, lambda b: constant_logits(b, V, V // 2 + 3))


def test_associative_recall_power_law_gaps():
    """With one pair the query slot g = 0..space-1 follows p(g) ∝ (g + 1)^(a - 1)."""
    a, space = 0.5, 8
    task = tasks.build("associative_recall", vocab_size=16, num_kv_pairs=1, seq_len=2 + 2 * space, power_a=a)
    slots = np.concatenate([
        (task.batch(500, seed=s).mask.nonzero()[:, 1].numpy() - 2) // 2 for s in range(8)
    ])
    p = np.arange(1, space + 1) ** (a - 1.0)
    p /= p.sum()
    freq = np.bincount(slots, minlength=space) / slots.size
    assert np.abs(freq - p).max() < 4.5 * np.sqrt(p * (1 - p) / slots.size).max()


# --- induction_heads ------------------------------------------------------------------------


def induction_pred(b: tasks.Batch, special: int) -> torch.Tensor:
    """(B, T) predictions: at the last position, the token after the first special token."""
    first = (b.inputs == special).int().argmax(1)  # (B,) first special token
    pred = torch.zeros_like(b.inputs)
    pred[:, -1] = b.inputs[torch.arange(b.batch_size), first + 1]
    return pred


def test_induction_heads_oracle_chance_and_long_lengths():
    task = tasks.build("induction_heads", vocab_size=16, seq_len=64)

    def oracle(b: tasks.Batch) -> torch.Tensor:
        return one_hot_logits(induction_pred(b, 15), 16)

    assert_oracle_perfect(task, oracle)
    b = task.batch(64, seed=0)
    assert ((b.inputs == 15).sum(1) == 2).all() and (b.inputs[:, -1] == 15).all()
    assert (b.mask.sum(1) == 1).all() and b.mask[:, -1].all()
    assert_near_chance(task, lambda b: constant_logits(b, 16, 4), n_batches=10, batch_size=256)
    # test lengths far beyond the training length: 2^16 at batch 2, 2^20 at batch 1
    assert_oracle_perfect(task, oracle, batch_size=2, seq_len=2 ** 16, seeds=(0,))
    big = task.batch(1, seq_len=2 ** 20, seed=0, split="eval")
    assert big.inputs.shape == (1, 2 ** 20) and int(big.mask.sum()) == 1
    tail = tasks.Batch(big.inputs[:, -4:], big.targets[:, -4:], big.mask[:, -4:])
    logits = one_hot_logits(induction_pred(big, 15)[:, -4:], 16)
    assert task.score(logits, tail)["token_accuracy"] == 1.0


# --- long_range_recall ----------------------------------------------------------------------


def test_long_range_recall_oracle_distances_and_chance():
    distances = (3, 10, 40, 90)
    task = tasks.build("long_range_recall", vocab_size=32, num_kv_pairs=5, distances=distances, seq_len=100)
    V = 32

    def oracle(b: tasks.Batch) -> torch.Tensor:
        pred = torch.zeros_like(b.inputs)
        for i in range(b.batch_size):
            query = b.inputs[i, -1]
            hits = (b.inputs[i, :-1] == query).nonzero()[:, 0]
            assert hits.numel() == 1  # each key appears once before its query
            j = int(hits[0])
            # the key sits exactly `distance` positions before the query
            assert b.seq_len - 1 - j == int(b.meta["distance"][i, -1])
            pred[i, -1] = b.inputs[i, j + 1]
        return one_hot_logits(pred, V)

    assert_oracle_perfect(task, oracle)
    b = task.batch(40, seed=5, split="eval")
    result = task.score(oracle(b), b)
    assert set(result["by_distance"]) == set(distances)
    assert all(acc == 1.0 for acc in result["by_distance"].values())
    assert (b.meta["distance"][~b.mask] == -1).all()
    # distractors: num_kv_pairs distinct keys (tokens < V/4) per sequence, each followed by a value
    is_key = b.inputs[:, :-1] < V // 4
    assert (is_key.sum(1) == 5).all()
    at = is_key.nonzero()
    follower = b.inputs[at[:, 0], at[:, 1] + 1]
    assert ((follower >= V // 4) & (follower < V // 2)).all()
    # distances do not scale with seq_len
    long = task.batch(8, seq_len=1000, seed=0)
    assert set(long.meta["distance"][:, -1].tolist()) == set(distances)
    assert_oracle_perfect(task, oracle, seq_len=1000, batch_size=8, seeds=(0,))
    with pytest.raises(ConfigError, match="max\\(distances\\)"):
        task.batch(2, seq_len=90, seed=0)
    assert_near_chance(task, lambda b: constant_logits(b, V, V // 4 + 1), n_batches=10, batch_size=256)


# --- adding ---------------------------------------------------------------------------------


def test_adding_oracle_and_chance():
    task = tasks.build("adding", seq_len=50)
    b = task.batch(64, seed=0)
    assert b.inputs.shape == (64, 50, 2) and b.targets.shape == (64, 50, 1)
    assert b.inputs.dtype == torch.float32 and b.mask.dtype == torch.bool
    values, marker = b.inputs[..., 0], b.inputs[..., 1]
    assert (marker.sum(1) == 2).all()
    assert (marker[:, :25].sum(1) == 1).all()  # one marker in each half
    assert ((values >= 0) & (values < 1)).all()
    assert (b.mask.sum(1) == 1).all() and b.mask[:, -1].all()
    for split in ("train", "eval"):
        b = task.batch(64, seed=1, split=split)
        oracle = (b.inputs[..., 0] * b.inputs[..., 1]).sum(1)  # (B,)
        out = oracle[:, None, None].expand(-1, 50, 1)
        assert task.score(out, b)["mse"] == pytest.approx(0.0, abs=1e-12)
    # constant 1.0 over 4096 sequences: sd of (S - 1)^2 is sqrt(1/15 - 1/36) ≈ 0.197
    errs = []
    for seed in range(64):
        b = task.batch(64, seed=seed, split="eval")
        errs.append(task.score(torch.ones(64, 50, 1), b)["mse"])
    assert np.mean(errs) == pytest.approx(task.chance(), abs=5 * 0.197 / math.sqrt(4096))


def test_adding_chance_formula():
    scipy_integrate = pytest.importorskip("scipy.integrate")
    # E[(X1 + X2 - c)^2] over the unit square, minimized at c = 1
    value, _ = scipy_integrate.dblquad(lambda y, x: (x + y - 1.0) ** 2, 0, 1, 0, 1)
    assert tasks.build("adding").chance() == pytest.approx(value) == pytest.approx(1 / 6)
    off, _ = scipy_integrate.dblquad(lambda y, x: (x + y - 0.9) ** 2, 0, 1, 0, 1)
    assert off > value


# --- reverse --------------------------------------------------------------------------------


def test_reverse_oracle_lengths_and_chance():
    task = tasks.build("reverse", vocab_size=12, n_tokens=10)
    assert task.seq_len == 21

    def oracle(b: tasks.Batch) -> torch.Tensor:
        n = (b.seq_len - 1) // 2
        pred = torch.zeros_like(b.inputs)
        pred[:, n + 1:] = b.inputs[:, :n].flip(1)
        return one_hot_logits(pred, 12)

    assert_oracle_perfect(task, oracle)
    assert_oracle_perfect(task, oracle, seq_len=61)
    b = task.batch(4, seed=0)
    assert b.src_len == 11 and (b.inputs[:, 10] == 11).all() and not b.mask[:, :11].any()
    with pytest.raises(ConfigError, match="odd"):
        task.batch(2, seq_len=20, seed=0)
    assert_near_chance(task, lambda b: constant_logits(b, 12, 5))


@pytest.mark.parametrize(
    "name, params",
    [
        ("copy", {"n_copy": 0}),
        ("selective_copy", {"n_copy": 20, "seq_len": 30}),
        ("associative_recall", {"num_kv_pairs": 40, "seq_len": 128}),
        ("associative_recall", {"power_a": 0.0}),
        ("induction_heads", {"vocab_size": 2}),
        ("long_range_recall", {"distances": (4, 300)}),
        ("long_range_recall", {"distances": ()}),
        ("adding", {"seq_len": 1}),
        ("reverse", {"n_tokens": 0}),
    ],
)
def test_bad_params_raise_config_error(name, params):
    with pytest.raises(ConfigError, match=name):
        tasks.build(name, **params)
