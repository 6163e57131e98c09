"""Formal-language tasks: oracles written here from each task's definition, chance levels,
length extrapolation, the scoring mask and determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from seqbench import tasks
from seqbench.tasks import IGNORE_INDEX, ConfigError

NAMES = ("parity", "modular_arithmetic", "cycle_navigation", "even_pairs")


# --- oracles: read only the input tokens, per the documented encodings ------------------
def parity_rule(s: list[int]) -> int:
    return s.count(1) % 2


def even_pairs_rule(s: list[int]) -> int:
    pairs = sum(1 for a, b in itertools.pairwise(s) if a != b)  # 'ab' and 'ba' substrings
    return pairs % 2


def cycle_rule(s: list[int], cycle_len: int = 5) -> int:
    pos = 0
    for tok in s:
        pos = (pos + {0: -1, 1: 0, 2: 1}[tok]) % cycle_len
    return pos


def modular_rule(s: list[int], modulus: int = 5) -> int:
    ops = {modulus: "+", modulus + 1: "-", modulus + 2: "*"}
    text = "".join(str(t) if t < modulus else ops[t] for t in s)
    return eval(text) % modulus  # Python's precedence: '*' before '+'/'-', then left to right


RULES = {"parity": parity_rule, "modular_arithmetic": modular_rule, "cycle_navigation": cycle_rule,
         "even_pairs": even_pairs_rule}


def strings_of(batch: tasks.Batch, pad: int) -> list[list[int]]:
    """The unpadded strings: everything before the first pad."""
    out = []
    for row in batch.inputs.tolist():
        n = row.index(pad) if pad in row else len(row)
        assert all(t == pad for t in row[n:])
        out.append(row[:n])
    return out


def oracle_logits(task: tasks.Task, batch: tasks.Batch) -> torch.Tensor:
    """(B, T, C): the rule's answer at the last real position, a wrong class everywhere else."""
    B, T = batch.inputs.shape
    C = task.n_outputs
    pad = task.vocab_size - 1
    out = torch.zeros(B, T, C)
    for b, s in enumerate(strings_of(batch, pad)):
        out[b, :, (RULES[task.name](s) + 1) % C] = 1.0
        out[b, len(s) - 1] = 0.0
        out[b, len(s) - 1, RULES[task.name](s)] = 1.0
    return out


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seq_len", [None, 200])
def test_oracle_scores_100_percent(name: str, seq_len: int | None) -> None:
    task = tasks.build(name, seq_len=40)
    for seed in range(3):
        batch = task.batch(64, seq_len=seq_len, seed=seed, split="eval")
        result = task.score(oracle_logits(task, batch), batch)
        assert result[task.metric] == 1.0
        assert result["token_accuracy"] == 1.0



@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seq_len", [None, 120])
def test_constant_predictor_scores_stated_chance(name: str, seq_len: int | None, one_thread: None) -> None:
    task = tasks.build(name, seq_len=40)
    C = task.n_outputs
    correct = np.zeros(C)
    total = 0
    for seed in range(10):
        batch = task.batch(512, seq_len=seq_len, seed=seed)
        for c in range(C):
            out = torch.zeros(batch.batch_size, C)  # pooled (B, C): the scorer puts it at the label
            out[:, c] = 1.0
            correct[c] += task.score(out, batch)[task.metric] * batch.batch_size
        total += batch.batch_size
    best = correct.max() / total
    se = np.sqrt(0.25 / total)
    assert abs(best - task.chance(seq_len)) < 4 * se + 1e-9


def test_chance_values_from_independent_formulas() -> None:
    # parity: balanced at every length
    assert tasks.build("parity", seq_len=40).chance() == pytest.approx(0.5)
    # even_pairs over lengths 1..40: a single symbol is always class 0, otherwise 1/2
    assert tasks.build("even_pairs", seq_len=40).chance() == pytest.approx((1 + 39 * 0.5) / 40)
    assert tasks.build("even_pairs", seq_len=40).chance(seq_len=100) == pytest.approx(0.5)
    # cycle_navigation: enumerate every move string of a fixed length (test lengths are exact)
    cyc = tasks.build("cycle_navigation", seq_len=40)
    for n in range(1, 7):
        counts = np.bincount([cycle_rule(list(s)) for s in itertools.product(range(3), repeat=n)], minlength=5)
        assert cyc.chance(seq_len=n) == pytest.approx(counts.max() / 3**n)
    # cycle over lengths 1..4 (configured range): the average of the per-length class frequencies
    cyc4 = tasks.build("cycle_navigation", seq_len=4)
    freqs = [np.bincount([cycle_rule(list(s)) for s in itertools.product(range(3), repeat=n)], minlength=5) / 3**n
             for n in range(1, 5)]
    assert cyc4.chance() == pytest.approx(np.mean(freqs, axis=0).max())
    # modular_arithmetic: enumerate every expression of length 1, 3, 5, 7 (test length 8 -> 7)
    mod = tasks.build("modular_arithmetic", seq_len=40)
    for n in (1, 3, 5, 7):
        k = n // 2
        labels = [
            modular_rule([d[0]] + [t for pair in zip(ops, d[1:]) for t in pair])
            for d in itertools.product(range(5), repeat=k + 1)
            for ops in itertools.product((5, 6, 7), repeat=k)
        ]
        expected = np.bincount(labels, minlength=5).max() / len(labels)
        assert mod.chance(seq_len=n) == pytest.approx(expected)
        assert mod.chance(seq_len=n + 1) == pytest.approx(expected)  # even length: the odd one below


@pytest.mark.parametrize("name", NAMES)
def test_mask_covers_exactly_the_label_position(name: str) -> None:
    task = tasks.build(name, seq_len=40)
    pad = task.vocab_size - 1
    batch = task.batch(256, seed=5)
    strings = strings_of(batch, pad)
    n = torch.tensor([len(s) for s in strings])
    assert torch.equal(n, batch.meta["length"])
    expected = torch.zeros_like(batch.mask)
    expected[torch.arange(len(n)), n - 1] = True
    assert torch.equal(batch.mask, expected)
    assert torch.equal(batch.targets == IGNORE_INDEX, ~expected)
    assert task.sequence_level and batch.mask.sum(1).eq(1).all()
    # string lengths cover the training range 1..40 (odd ones only for modular arithmetic)
    lengths = set(n.tolist())
    valid = set(range(1, 41, 2)) if name == "modular_arithmetic" else set(range(1, 41))
    assert lengths <= valid and len(lengths) > 0.8 * len(valid)
    # inputs use only the symbols, the pad, and the declared vocabulary
    assert int(batch.inputs.max()) == pad and int(batch.inputs.min()) >= 0
    assert int(batch.targets[batch.mask].max()) < task.n_outputs


@pytest.mark.parametrize("name", NAMES)
def test_longer_test_lengths_fill_the_sequence(name: str) -> None:
    task = tasks.build(name, seq_len=40)
    for L in (41, 200):
        batch = task.batch(32, seq_len=L, seed=1, split="eval")
        assert batch.inputs.shape == (32, L)
        want = L - 1 if name == "modular_arithmetic" and L % 2 == 0 else L
        assert batch.meta["length"].eq(want).all()


def test_min_max_len_and_padding() -> None:
    task = tasks.build("parity", seq_len=40, min_len=3, max_len=20)
    batch = task.batch(512, seed=0)
    n = batch.meta["length"]
    assert batch.inputs.shape == (512, 40)
    assert int(n.min()) == 3 and int(n.max()) == 20
    assert (batch.inputs[:, 20:] == 2).all()
    mod = tasks.build("modular_arithmetic", seq_len=40, min_len=10, max_len=15)
    assert set(mod.batch(256, seed=0).meta["length"].tolist()) == {11, 13, 15}


def test_pooled_output_is_scored_at_the_label() -> None:
    task = tasks.build("parity", seq_len=40)
    batch = task.batch(64, seed=2)
    pooled = oracle_logits(task, batch)[batch.mask]  # (B, C)
    assert task.score(pooled, batch)[task.metric] == 1.0


@pytest.mark.parametrize("name", NAMES)
def test_determinism_and_disjoint_streams(name: str) -> None:
    task = tasks.build(name, seq_len=40)
    a, b = task.batch(64, seed=3), task.batch(64, seed=3)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, task.batch(64, seed=4).inputs)
    train = {tuple(r) for s in range(5) for r in task.batch(64, seq_len=200, seed=s).inputs.tolist()}
    evals = {tuple(r) for s in range(5) for r in task.batch(64, seq_len=200, seed=s, split="eval").inputs.tolist()}
    assert not train & evals


def test_attributes() -> None:
    expect = {"parity": (3, 2), "even_pairs": (3, 2), "cycle_navigation": (4, 5), "modular_arithmetic": (9, 5)}
    for name, (vocab, classes) in expect.items():
        task = tasks.build(name)
        assert (task.vocab_size, task.n_outputs, task.seq_len) == (vocab, classes, 40)
        assert task.extrapolates and task.sequence_level
    assert tasks.build("modular_arithmetic", modulus=7).n_outputs == 7
    assert tasks.build("cycle_navigation", cycle_len=3).n_outputs == 3


@pytest.mark.parametrize(
    "name, params",
    [
        ("parity", {"min_len": 0}),
        ("parity", {"min_len": 10, "max_len": 5}),
        ("even_pairs", {"seq_len": 40, "max_len": 41}),
        ("cycle_navigation", {"cycle_len": 1}),
        ("modular_arithmetic", {"modulus": 1}),
        ("modular_arithmetic", {"min_len": 4, "max_len": 4}),
        ("parity", {"max_length": 4}),
    ],
)
def test_bad_config_raises(name: str, params: dict) -> None:
    with pytest.raises(ConfigError):
        tasks.build(name, **params)
