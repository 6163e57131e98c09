"""Character-level language modelling on a real corpus that every Python install carries.

The character-level LM benchmark of Graves 2013 ("Generating Sequences With Recurrent Neural Networks",
arXiv:1308.0850, Hutter Prize Wikipedia) and Mikolov et al. 2012 (Penn Treebank characters), with a
corpus that needs no download: by default the source of 23 pinned modules of the Python standard
library (present in CPython 3.10-3.14, read from the running interpreter's Lib/, concatenated in the
order of STDLIB_FILES), or any text file given by `path`. Each file's sha256 and the combined sha256 are
recorded in data_info() together with the Python version: another Python version gives another corpus
and another hash, which is recorded, not an error.

Vocabulary: `vocab="byte"` uses the 256 byte values of the UTF-8 file (bits per byte; the stdlib corpus
is nearly all ASCII, so one byte is one character); `vocab="char"` decodes UTF-8 and uses the characters
of the train split, sorted, plus one unknown id (the last) for characters seen only in eval.
Split: the first `train_fraction` (default 90%) of the corpus is train, the rest eval/test; the last
`valid_fraction` (default 10%) of train is the "valid" part (model selection); a window and its
next-character target never cross a boundary. Batches are windows at seeded random offsets.

Inputs (B, T) int64 = c[s : s+T]; targets (B, T) = c[s+1 : s+T+1], every position scored.
Metric: bits_per_char = mean cross-entropy / ln 2 over all positions. Chance: log2(V) (the uniform
predictor over the V output classes: 8 for bytes).

Worked example (byte vocab, T=4, text "def f():"):
    inputs  "def " = [100, 101, 102, 32]
    targets "ef f" = [101, 102, 32, 102]
meta["start"] (B,) is each window's offset within its split.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

from seqbench.config import PosInt, Range
from seqbench.errors import ConfigError
from seqbench.tasks.base import Batch, MissingDataError, RealTask, sha256_of, tail_split, token_batch
from seqbench.tasks.registry import register

STDLIB_FILES = (  # relative to the stdlib directory; all exist as plain .py in CPython 3.10-3.14
    "abc.py", "argparse.py", "bisect.py", "calendar.py", "collections/__init__.py", "contextlib.py",
    "copy.py", "csv.py", "dataclasses.py", "difflib.py", "fractions.py", "functools.py", "heapq.py",
    "json/decoder.py", "json/encoder.py", "operator.py", "queue.py", "random.py", "shlex.py",
    "textwrap.py", "tokenize.py", "weakref.py", "ast.py",
)


@dataclass(frozen=True)
class CharLMConfig:
    path: str | None = None  # a UTF-8 text file; None = the pinned standard-library corpus
    vocab: Literal["byte", "char"] = "byte"  # 256 byte values, or the train split's characters + unknown
    seq_len: PosInt = 256  # window length (any length that fits in the eval split)
    # leading share of the corpus for train; the rest is eval/test
    train_fraction: Annotated[float, Range(gt=0, lt=1)] = 0.9
    # share of the train part (its end) held out as the validation part
    valid_fraction: Annotated[float, Range(gt=0, lt=1)] = 0.1

    def __post_init__(self) -> None:
        if self.path is not None and not os.path.isfile(self.path):
            raise ConfigError(f"path {self.path!r} is not a file; pass a text file, or path=None for the stdlib corpus")


@dataclass(frozen=True)
class Corpus:
    train: np.ndarray  # (N_train,) int64 token ids (validation included)
    test: np.ndarray  # (N_test,) int64 token ids
    vocab_size: int
    info: dict[str, Any]


def stdlib_dir() -> Path:
    """The running interpreter's standard-library source directory (where os.py lives)."""
    return Path(os.__file__).resolve().parent


@functools.cache
def read_files(path: str | None) -> tuple[tuple[str, bytes], ...]:
    """(file, bytes) for `path`, or for every STDLIB_FILES entry; cached per process, no network."""
    if path is not None:
        return ((path, Path(path).read_bytes()),)
    root = stdlib_dir()
    missing = [f for f in STDLIB_FILES if not (root / f).is_file()]
    if missing:
        raise MissingDataError(
            f"char_lm: this Python has no source for {', '.join(missing)} under {root} "
            "(a stripped install?); pass path=<a text file> instead"
        )
    return tuple((str(root / f), (root / f).read_bytes()) for f in STDLIB_FILES)


@functools.cache
def load_corpus(path: str | None, vocab: str, train_fraction: float) -> Corpus:
    """Token ids of the train and eval parts, and provenance (per-file and combined sha256)."""
    files = read_files(path)
    raw = b"".join(data for _, data in files)
    info: dict[str, Any] = {
        "source": path or f"Python {platform.python_version()} standard library ({len(files)} files)",
        "package": None if path else "python",
        "version": None if path else sys.version.split()[0],
        "files": [{"path": name, "sha256": sha256_of(data)} for name, data in files],
        "sha256": sha256_of(raw),
        "vocab": vocab,
    }
    if vocab == "byte":
        ids = np.frombuffer(raw, dtype=np.uint8).astype(np.int64)  # (N,)
        vocab_size = 256
        n_train = int(train_fraction * len(ids))
        info["symbols_in_train"] = int(np.unique(ids[:n_train]).size)
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"char_lm: {path} is not UTF-8 ({exc}); use vocab='byte'") from None
        n_train = int(train_fraction * len(text))
        chars = sorted(set(text[:n_train]))
        code = {c: i for i, c in enumerate(chars)}
        unk = len(chars)  # characters that occur only in eval
        ids = np.array([code.get(c, unk) for c in text], dtype=np.int64)  # (N,)
        vocab_size = len(chars) + 1
        info["chars"] = "".join(chars)
        info["unknown_in_eval"] = int((ids[n_train:] == unk).sum())
    info["split"] = f"first {train_fraction:g} of the corpus train, rest eval/test"
    info["split_sizes"] = {"train": n_train, "test": len(ids) - n_train}
    info["vocab_size"] = vocab_size
    return Corpus(ids[:n_train], ids[n_train:], vocab_size, info)


@register("char_lm", CharLMConfig)
class CharLM(RealTask):
    metric = "bits_per_char"
    extrapolates = True  # any window length that fits in the eval split

    def _load(self) -> Corpus:
        c = self.config
        return load_corpus(os.path.abspath(c.path) if c.path else None, c.vocab, c.train_fraction)

    @property
    def vocab_size(self) -> int:
        return 256 if self.config.vocab == "byte" else self.load().vocab_size

    @property
    def n_outputs(self) -> int:
        return self.vocab_size

    def chance(self, seq_len: int | None = None) -> float:
        return math.log2(self.vocab_size)

    def data_info(self) -> dict[str, Any]:
        info = dict(self.load().info)
        n_train = info["split_sizes"]["train"]
        n_fit = tail_split(n_train, self.config.valid_fraction)
        info["split_sizes"] = {"train": n_fit, "valid": n_train - n_fit, "test": info["split_sizes"]["test"]}
        return info

    def _batch(self, batch_size: int, seq_len: int, rng: np.random.Generator, split: str) -> Batch:
        corpus = self.load()
        n_fit = tail_split(len(corpus.train), self.config.valid_fraction)
        part = {"train": corpus.train[:n_fit], "valid": corpus.train[n_fit:]}.get(split, corpus.test)
        n_windows = len(part) - seq_len  # a window needs seq_len inputs and one more target
        if n_windows < 1:
            longest = min(n_fit, len(corpus.train) - n_fit, len(corpus.test)) - 1
            raise ConfigError(
                f"char_lm: seq_len={seq_len} needs {seq_len + 1} characters but the {split} split has "
                f"{len(part)}; use seq_len <= {longest}"
            )
        start = rng.integers(0, n_windows, size=batch_size)  # (B,)
        window = part[start[:, None] + np.arange(seq_len + 1)[None, :]]  # (B, T+1)
        return token_batch(window[:, :-1], window[:, 1:], start=start)
