"""The task contract, checked for every registered task (tasks.names()) at its default params.

Determinism (same seed -> same batch, different seed -> different), disjoint
train and eval streams, shapes and dtypes that agree with vocab_size / d_input /
n_outputs, targets in range, masks that agree with IGNORE_INDEX, and a
docstring with a worked example. A real task whose data package is missing is
skipped, not failed.
"""

from __future__ import annotations

import functools
import sys

import pytest
import torch

from seqbench import tasks
from seqbench.tasks import IGNORE_INDEX

MissingDataError = getattr(tasks.base, "MissingDataError", ImportError)


@functools.cache
def _load(name: str) -> tasks.Task | str:
    """The task with default params and its data loaded, or why it cannot be (skip reason)."""
    try:
        task = tasks.build(name)
        task.batch(1, seed=0)  # real tasks load their data lazily
    except (MissingDataError, ImportError) as exc:
        return f"{name}: data not available ({exc})"
    return task


def get(name: str) -> tasks.Task:
    task = _load(name)
    if isinstance(task, str):
        pytest.skip(task)
    return task


def rows(batch: tasks.Batch) -> set[bytes]:
    """One hashable key per sequence: its inputs and targets."""
    x = batch.inputs.reshape(batch.batch_size, -1).numpy()
    y = batch.targets.reshape(batch.batch_size, -1).numpy()
    return {a.tobytes() + b"|" + b.tobytes() for a, b in zip(x, y)}


def same_batch(a: tasks.Batch, b: tasks.Batch) -> bool:
    if a.src_len != b.src_len or set(a.meta) != set(b.meta):
        return False
    if not all(torch.equal(x, y) for x, y in ((a.inputs, b.inputs), (a.targets, b.targets), (a.mask, b.mask))):
        return False
    return all(
        torch.equal(a.meta[k], b.meta[k]) if isinstance(a.meta[k], torch.Tensor) else a.meta[k] == b.meta[k]
        for k in a.meta
    )


NAMES = tasks.names()


def test_registry_has_the_issue_tasks():
    expected = {"copy", "selective_copy", "associative_recall", "induction_heads", "long_range_recall",
                "adding", "reverse"}
    assert expected <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_batch_different_seed_different(name):
    task = get(name)
    for split in ("train", "eval"):
        assert same_batch(task.batch(8, seed=3, split=split), task.batch(8, seed=3, split=split))
    assert not same_batch(task.batch(8, seed=3), task.batch(8, seed=4))
    assert not same_batch(task.batch(8, seed=3, split="train"), task.batch(8, seed=3, split="eval"))


@pytest.mark.parametrize("name", NAMES)
def test_train_and_eval_streams_disjoint(name):
    task = get(name)
    if getattr(task, "low_entropy", False):
        pytest.skip(f"{name} declares low_entropy: its sequences repeat by design")
    train: set[bytes] = set()
    for seed in range(48):
        train |= rows(task.batch(32, seed=seed, split="train"))
    evals: set[bytes] = set()
    for seed in range(12):
        evals |= rows(task.batch(32, seed=seed, split="eval"))
    shared = len(train & evals)
    assert shared == 0, f"{shared} of {len(evals)} eval sequences also appear in train batches"


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_and_ranges(name):
    task = get(name)
    B = 6
    b = task.batch(B, seed=1, split="eval")
    T = task.seq_len
    assert b.batch_size == B and b.seq_len == T
    assert (task.vocab_size is None) != (task.d_input is None), "exactly one of vocab_size, d_input"
    if task.vocab_size is not None:
        assert b.inputs.shape == (B, T) and b.inputs.dtype == torch.int64
        assert int(b.inputs.min()) >= 0 and int(b.inputs.max()) < task.vocab_size
    else:
        assert b.inputs.shape == (B, T, task.d_input) and b.inputs.is_floating_point()
        assert torch.isfinite(b.inputs).all()
    assert b.mask.shape == (B, T) and b.mask.dtype == torch.bool
    assert b.mask.any(1).all(), "every sequence has at least one scored position"
    if task.regression:
        assert b.targets.shape == (B, T, task.n_outputs) and b.targets.is_floating_point()
        assert torch.isfinite(b.targets[b.mask]).all()
    else:
        assert b.targets.shape == (B, T) and b.targets.dtype == torch.int64
        assert torch.equal(b.mask, b.targets != IGNORE_INDEX)
        scored = b.targets[b.mask]
        assert int(scored.min()) >= 0 and int(scored.max()) < task.n_outputs
    if task.sequence_level:
        assert (b.mask.sum(1) == 1).all()
    if b.src_len is not None:
        assert 0 < b.src_len < T and not b.mask[:, : b.src_len].any(), "scored positions form a suffix"
    if "distance" in b.meta:
        d = b.meta["distance"]
        assert d.shape == (B, T) and d.dtype == torch.int64 and (d[~b.mask] == -1).all()
    chance = task.chance()
    assert isinstance(chance, float) and chance > 0
    if task.metric in ("token_accuracy", "sequence_accuracy"):
        assert chance <= 1


@pytest.mark.parametrize("name", NAMES)
def test_docstring_has_example_and_metric(name):
    cls = type(get(name))
    doc = (cls.__doc__ or "") + (sys.modules[cls.__module__].__doc__ or "")
    assert "example" in doc.lower(), f"{cls.__name__} (or its module) documents no worked example"
    assert "metric" in doc.lower(), f"{cls.__name__} (or its module) does not state its metric"
