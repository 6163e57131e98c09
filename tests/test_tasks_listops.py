"""ListOps: an evaluator written here parses every generated expression and recomputes its label,
and checks lengths, depth and argument counts against the configured limits."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch

from seqbench import tasks
from seqbench.tasks import IGNORE_INDEX, ConfigError

# The documented tokenization (tasks/listops.py docstring), written out independently.
VOCAB = [str(d) for d in range(10)] + ["[MIN", "[MAX", "[MED", "[SM", "]", "<pad>"]
PAD = 15


def evaluate(op: str, args: list[int]) -> int:
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[SM":
        return sum(args) % 10
    return int(statistics.median(args))  # LRA: int(np.median(...)), the mean of the middle pair truncated


class Parser:
    """Recursive descent over  expr := DIGIT | OP expr expr* ']'  recording depth and arity."""

    def __init__(self, words: list[str]) -> None:
        self.words, self.i = words, 0
        self.max_level = 0  # levels of the tree, the root at 1
        self.arities: list[int] = []
        self.value = -1

    def expr(self, level: int) -> int:
        self.max_level = max(self.max_level, level)
        w = self.words[self.i]
        self.i += 1
        if w.isdigit():
            return int(w)
        assert w.startswith("["), f"expected a digit or an operator at {self.i - 1}, got {w!r}"
        args = []
        while self.words[self.i] != "]":
            args.append(self.expr(level + 1))
        self.i += 1
        self.arities.append(len(args))
        return evaluate(w, args)


def parse(words: list[str]) -> Parser:
    p = Parser(words)
    p.value = p.expr(1)
    assert p.i == len(words), "trailing tokens after the expression"
    return p


def parse_text(text: str) -> Parser:
    return parse(text.split())


def check_batch(task: tasks.Task, batch: tasks.Batch, min_len: int, max_len: int, max_depth: int,
                max_args: int) -> tuple[int, int]:
    """Parse and verify every row; returns the deepest level and the largest arity seen."""
    deepest, widest = 0, 0
    for b, row in enumerate(batch.inputs.tolist()):
        n = row.index(PAD) if PAD in row else len(row)
        assert all(t == PAD for t in row[n:]) and PAD not in row[:n]
        assert min_len <= n <= max_len
        p = parse([VOCAB[t] for t in row[:n]])
        assert p.words[0].startswith("[") and p.words[-1] == "]"
        assert p.max_level <= max_depth
        assert all(2 <= a <= max_args for a in p.arities)
        mask = torch.zeros(len(row), dtype=torch.bool)
        mask[n - 1] = True
        assert torch.equal(batch.mask[b], mask)
        assert int(batch.targets[b, n - 1]) == p.value
        assert (batch.targets[b][~mask] == IGNORE_INDEX).all()
        assert int(batch.meta["length"][b]) == n
        deepest, widest = max(deepest, p.max_level), max(widest, max(p.arities))
    return deepest, widest


def test_tokens_match_the_documented_vocabulary() -> None:
    from seqbench.tasks import listops

    assert list(listops.TOKENS[:15]) == VOCAB[:15] and listops.PAD == PAD
    task = tasks.build("listops", seq_len=64)
    assert (task.vocab_size, task.n_outputs) == (16, 10)
    assert task.sequence_level and task.metric == "sequence_accuracy"


def test_parser_on_a_hand_written_expression() -> None:
    assert parse_text("[MAX 2 9 [MIN 4 7 ] 0 ]").value == 9
    assert parse_text("[MED 1 4 ]").value == 2  # (1 + 4) / 2 = 2.5 -> 2
    assert parse_text("[SM 9 8 [MED 3 1 7 ] ]").value == 0
    with pytest.raises(AssertionError):
        parse_text("[MAX 2 9 ] 3")


def test_every_label_recomputed_default_limits() -> None:
    task = tasks.build("listops", seq_len=256)  # lengths 64..256, max_depth 10, max_args 10
    labels = []
    for seed in range(4):
        batch = task.batch(32, seed=seed)
        assert batch.inputs.shape == (32, 256)
        check_batch(task, batch, 64, 256, 10, 10)
        labels += batch.targets[batch.mask].tolist()
    assert len(set(labels)) >= 8


def test_limits_are_reached_and_respected() -> None:
    # small limits so that trees hit them: max_depth 4, max_args 4 -> at most 2 + 4 * (2 + 4 * (2 + 4)) = 106 tokens
    task = tasks.build("listops", seq_len=48, min_len=10, max_len=40, max_depth=4, max_args=4)
    deepest, widest = 0, 0
    for seed in range(3):
        d, w = check_batch(task, task.batch(64, seed=seed, split="eval"), 10, 40, 4, 4)
        deepest, widest = max(deepest, d), max(widest, w)
    assert (deepest, widest) == (4, 4)


def test_lra_length_range() -> None:
    task = tasks.build("listops", seq_len=2048, min_len=501, max_len=1999)
    check_batch(task, task.batch(4, seed=0), 501, 1999, 10, 10)



def test_constant_predictor_scores_stated_chance(one_thread: None) -> None:
    task = tasks.build("listops", seq_len=64)
    counts = np.zeros(10)
    for seed in range(8):
        batch = task.batch(128, seed=seed)
        for c in range(10):
            out = torch.zeros(batch.batch_size, 10)  # pooled (B, C): the scorer puts it at the label
            out[:, c] = 1.0
            counts[c] += task.score(out, batch)["sequence_accuracy"] * batch.batch_size
    best = counts.max() / (8 * 128)
    se = np.sqrt(0.25 / (8 * 128))
    assert abs(best - task.chance()) < 4 * se


def test_determinism_and_disjoint_streams() -> None:
    task = tasks.build("listops", seq_len=128)
    a, b = task.batch(16, seed=7), task.batch(16, seed=7)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, task.batch(16, seed=8).inputs)
    train = {tuple(r) for s in range(4) for r in task.batch(32, seed=s).inputs.tolist()}
    evals = {tuple(r) for s in range(4) for r in task.batch(32, seed=s, split="eval").inputs.tolist()}
    assert not train & evals


@pytest.mark.parametrize(
    "params",
    [
        {"seq_len": 64, "max_len": 65},
        {"seq_len": 64, "min_len": 50, "max_len": 40},
        {"seq_len": 64, "min_len": 2},
        {"seq_len": 256, "min_len": 100, "max_depth": 3, "max_args": 3},  # longest tree: 2 + 3 * 5 = 17
        {"max_args": 1},
        {"op_prob": 1.5},
        {"max_dpeth": 3},
    ],
)
def test_bad_config_raises(params: dict) -> None:
    with pytest.raises(ConfigError):
        tasks.build("listops", **params)


def test_other_lengths_are_refused() -> None:
    task = tasks.build("listops", seq_len=64)
    with pytest.raises(ConfigError):
        task.batch(2, seq_len=128, seed=0)
