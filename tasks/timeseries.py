"""Real time series: UCR/UEA classification and next-step forecasting, from files installed packages ship.

timeseries_classification
    Dau et al. 2019, "The UCR Time Series Archive" (IEEE/CAA J. Autom. Sinica 6(6)); Bagnall et al. 2018,
    "The UEA multivariate time series classification archive" (arXiv:1811.00075). The sets sktime ships in
    sktime/datasets/data/ (with sktime 1.2: ACSF1, ArrowHead, BasicMotions, GunPoint, ItalyPowerDemand,
    JapaneseVowels, OSULeaf, PLAID and sktime's small UnitTest set) are read from their .ts files with
    sktime's own parser (`load_from_tsfile`, a local file read) with the published TRAIN/TEST splits, or
    any <dataset>_TRAIN.ts / <dataset>_TEST.ts pair in the directory `path`.
    Inputs (B, T, C) float32, z-normalized per channel with the mean and std of all train values.
    Variable-length sets (JapaneseVowels, PLAID) are zero-padded (zero = the train mean) to the longest
    series of either split: `pad="left"` (default) right-aligns every series so the label always sits at
    position T-1; `pad="right"` starts every series at 0 and puts the label at its last real position
    L-1. meta["lengths"] (B,) holds L, meta["valid"] (B, T) marks real positions, meta["index"] (B,) the
    row within the published TRAIN or TEST split (file order; "valid" rows are TRAIN rows). Validation: per class, in file order, the last `valid_fraction`
    of the published TRAIN series (at least one of a class with two or more; tasks.base.class_valid_split)
    are held out as "valid" (model selection); "eval"/"test" is the published TEST split.
    Metric: accuracy of the class predicted at the label position (`token_accuracy`, one scored position
    per sequence). Chance: the test-split frequency of the most frequent train class.

    Worked example (a univariate set, pad="left", T=4, a series of length 3, class index 1):
        series [0.5, -1.0, 2.0] (after z-normalization)
        inputs [[0.0], [0.5], [-1.0], [2.0]]    targets [-100, -100, -100, 1]    lengths [3]

forecasting
    Next-step prediction on one real series: co2 (Mauna Loa weekly CO2, 1958-2001, 2284 weeks, the 59
    missing weeks filled by linear interpolation; statsmodels), sunspots (yearly sunspot numbers
    1700-2008, 309 values; statsmodels) or airline (Box & Jenkins monthly airline passengers 1949-1960,
    144 values; sktime). The series is z-normalized with the mean and std of its train part. Train windows
    come from the first `train_fraction` (default 80%) of the series, eval/test windows from the rest; a
    window (input and its next value) never crosses the boundary. The last `valid_fraction` (default 20%)
    of the train part is the "valid" part (model selection; tasks.base.tail_split), windows never crossing
    into it either.
    Inputs (B, T, 1) = x[s : s+T], targets (B, T, 1) = x[s+1 : s+T+1]; scored positions are the last
    `horizon` positions (None = all T). meta["naive"] = the inputs (the last-value forecast).
    Metric: nmse = MSE / MSE of the naive last-value forecast on the same positions (below 1.0 beats
    naive). Chance: 1.0 (the naive forecast itself).

    Worked example (T=3, horizon=None): series ..., 0.1, 0.4, 0.2, 0.5, ...
        inputs [[0.1], [0.4], [0.2]]   targets [[0.4], [0.2], [0.5]]   naive = inputs
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch

from seqbench.config import PosInt, Range, did_you_mean
from seqbench.errors import ConfigError
from seqbench.tasks.base import (
    IGNORE_INDEX,
    Batch,
    MissingDataError,
    RealTask,
    class_valid_split,
    require,
    sha256_of,
    tail_split,
)
from seqbench.tasks.registry import register


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --- UCR/UEA classification ------------------------------------------------------------------


def _sktime_data_dir() -> Path | None:
    """sktime/datasets/data without importing sktime (None when sktime is not installed)."""
    try:
        spec = importlib.util.find_spec("sktime")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "datasets" / "data"


def _is_classification(ts_file: Path) -> bool:
    """True when the .ts header declares class labels (@classLabel true), not regression targets."""
    with open(ts_file, encoding="utf-8", errors="replace") as f:
        for line in f:
            low = line.strip().lower()
            if low.startswith("@data"):
                return False
            if low.startswith("@classlabel"):
                return low.split()[1:2] == ["true"]
    return False


@functools.cache
def shipped_datasets(folder: str | None = None) -> tuple[str, ...]:
    """Classification sets with a <name>_TRAIN.ts / <name>_TEST.ts pair in `folder` (default: sktime's)."""
    root = Path(folder) if folder else _sktime_data_dir()
    if root is None or not root.is_dir():
        return ()
    names = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        train, test = d / f"{d.name}_TRAIN.ts", d / f"{d.name}_TEST.ts"
        if train.is_file() and test.is_file() and _is_classification(train):
            names.append(d.name)
    return tuple(names)


@dataclass(frozen=True)
class TimeseriesClassificationConfig:
    dataset: str = "GunPoint"  # a UCR/UEA set shipped with sktime (see shipped_datasets()) or under `path`
    path: str | None = None  # directory with <dataset>_TRAIN.ts and _TEST.ts (or <dataset>/ holding them)
    pad: Literal["left", "right"] = "left"  # where variable-length series are zero-padded
    normalize: bool = True  # z-normalize each channel with train mean and std
    # share of each class's TRAIN series (the last ones, file order) held out for validation
    valid_fraction: Annotated[float, Range(gt=0, lt=1)] = 0.2

    def __post_init__(self) -> None:
        if self.path is not None:
            return  # checked when the files are read
        names = shipped_datasets()
        if names and self.dataset not in names:  # empty when sktime is missing: load() says what to install
            raise ConfigError(
                f"dataset {self.dataset!r} is not shipped with sktime{did_you_mean(self.dataset, names)}; "
                f"shipped: {', '.join(names)} (or pass path= to a directory of .ts files)"
            )


@dataclass(frozen=True)
class SeriesSet:
    """One loaded UCR/UEA set: per-split lists of (L_i, C) float32 series and class indices."""

    train: list[np.ndarray]  # each (L_i, C), normalized
    train_y: np.ndarray  # (N_train,) int64
    test: list[np.ndarray]  # each (L_i, C), normalized
    test_y: np.ndarray  # (N_test,) int64
    classes: tuple[str, ...]  # label strings, index = class id
    info: dict[str, Any]


def _class_order(labels: np.ndarray) -> tuple[str, ...]:
    """Sorted label strings: numerically when every label is a number, else alphabetically."""
    uniq = sorted({str(v) for v in labels})
    try:
        return tuple(sorted(uniq, key=float))
    except ValueError:
        return tuple(uniq)


def _to_arrays(frame: Any, name: str) -> list[np.ndarray]:
    """sktime's nested DataFrame (N rows, C columns of pd.Series) -> N arrays (L_i, C)."""
    out = []
    for i in range(len(frame)):
        channels = [np.asarray(frame.iloc[i, c], dtype=np.float64) for c in range(frame.shape[1])]
        if len({len(ch) for ch in channels}) != 1:
            raise MissingDataError(f"{name}: series {i} has channels of different lengths; not supported")
        x = np.stack(channels, axis=1)  # (L, C)
        if np.isnan(x).any():
            raise MissingDataError(f"{name}: series {i} has missing values; not supported")
        out.append(x)
    return out


def _resolve_ts(dataset: str, path: str | None) -> tuple[Path, Path]:
    if path is None:
        root = _sktime_data_dir()
        folder = root / dataset if root is not None else Path(dataset)
    else:
        folder = Path(path) / dataset if (Path(path) / dataset).is_dir() else Path(path)
    train, test = folder / f"{dataset}_TRAIN.ts", folder / f"{dataset}_TEST.ts"
    for f in (train, test):
        if not f.is_file():
            raise MissingDataError(f"timeseries_classification: {f} not found")
    return train, test


@functools.cache
def load_ucr(dataset: str, path: str | None = None, normalize: bool = True) -> SeriesSet:
    """Read <dataset>_TRAIN.ts and _TEST.ts with sktime's parser (cached per process; no network)."""
    datasets = require("sktime.datasets", "sktime", f"timeseries_classification dataset={dataset!r}")
    train_file, test_file = _resolve_ts(dataset, path)
    raws = [train_file.read_bytes(), test_file.read_bytes()]
    split = {}
    for key, f in (("train", train_file), ("test", test_file)):
        frame, y = datasets.load_from_tsfile(str(f), return_data_type="nested_univ")
        split[key] = (_to_arrays(frame, str(f)), np.asarray(y).astype(str))
    classes = _class_order(split["train"][1])
    unknown = set(split["test"][1]) - set(classes)
    if unknown:
        raise MissingDataError(f"{test_file}: test labels {sorted(unknown)} never occur in train")
    code = {c: i for i, c in enumerate(classes)}
    flat = np.concatenate(split["train"][0])  # (sum L, C)
    mean, std = (flat.mean(0), flat.std(0)) if normalize else (np.zeros(flat.shape[1]), np.ones(flat.shape[1]))
    std = np.where(std > 0, std, 1.0)
    lengths = [len(x) for part in ("train", "test") for x in split[part][0]]
    info = {
        "source": f"UCR/UEA {dataset}" + ("" if path else " shipped with sktime"),
        "package": "sktime",
        "version": _version("sktime"),
        "files": [{"path": str(f), "sha256": sha256_of(r)} for f, r in zip((train_file, test_file), raws)],
        "sha256": sha256_of(*raws),
        "split": "published TRAIN / TEST",
        "split_sizes": {"train": len(split["train"][0]), "test": len(split["test"][0])},
        "n_channels": int(flat.shape[1]),
        "n_classes": len(classes),
        "classes": list(classes),
        "length_range": [min(lengths), max(lengths)],
        "train_mean": mean.tolist(),
        "train_std": std.tolist(),
    }
    xs = {k: [((x - mean) / std).astype(np.float32) for x in split[k][0]] for k in split}
    ys = {k: np.array([code[v] for v in split[k][1]], dtype=np.int64) for k in split}
    return SeriesSet(xs["train"], ys["train"], xs["test"], ys["test"], classes, info)


def _pad(series: list[np.ndarray], T: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad N arrays (L_i, C) to (N, T, C); returns (padded, lengths (N,))."""
    out = np.zeros((len(series), T, series[0].shape[1]), dtype=np.float32)
    lengths = np.array([len(x) for x in series], dtype=np.int64)
    for i, x in enumerate(series):
        if side == "left":
            out[i, T - len(x) :] = x
        else:
            out[i, : len(x)] = x
    return out, lengths


@register("timeseries_classification", TimeseriesClassificationConfig)
class TimeseriesClassification(RealTask):
    metric = "token_accuracy"
    sequence_level = True
    extrapolates = False

    def __init__(self, config: TimeseriesClassificationConfig) -> None:
        super().__init__(config)
        self._padded: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _load(self) -> SeriesSet:
        c = self.config
        data = load_ucr(c.dataset, os.path.abspath(c.path) if c.path else None, c.normalize)
        T = max(len(x) for x in data.train + data.test)
        fit, valid = class_valid_split(data.train_y, c.valid_fraction)
        parts = {"train": fit, "valid": valid, "test": None}
        for split, rows in parts.items():
            xs, ys = (data.test, data.test_y) if rows is None else ([data.train[i] for i in rows], data.train_y[rows])
            self._padded[split] = (*_pad(xs, T, c.pad), ys, np.arange(len(ys)) if rows is None else rows)
        return data

    @property
    def vocab_size(self) -> int | None:
        return None

    @property
    def d_input(self) -> int:
        return int(self.load().info["n_channels"])

    @property
    def n_outputs(self) -> int:
        return len(self.load().classes)

    @property
    def seq_len(self) -> int:
        self.load()
        return int(self._padded["train"][0].shape[1])

    def chance(self, seq_len: int | None = None) -> float:
        d = self.load()
        majority = np.bincount(d.train_y, minlength=len(d.classes)).argmax()
        return float((d.test_y == majority).mean())

    def data_info(self) -> dict[str, Any]:
        info = self.load().info
        sizes = {k: len(v[2]) for k, v in self._padded.items()}
        return {**info, "split_sizes": sizes, "valid_fraction": self.config.valid_fraction,
                "seq_len": self.seq_len, "pad": self.config.pad}

    def _batch(self, batch_size: int, seq_len: int, rng: np.random.Generator, split: str) -> Batch:
        self.load()
        x, lengths, y, rows = self._padded["test" if split == "eval" else split]
        idx = rng.choice(len(x), size=batch_size, replace=batch_size > len(x))  # (B,)
        B, T = batch_size, x.shape[1]
        L = lengths[idx]  # (B,)
        pos = np.arange(T)[None, :]  # (1, T)
        valid = pos >= T - L[:, None] if self.config.pad == "left" else pos < L[:, None]  # (B, T)
        last = np.full(B, T - 1) if self.config.pad == "left" else L - 1  # (B,) label position
        targets = np.full((B, T), IGNORE_INDEX, dtype=np.int64)
        targets[np.arange(B), last] = y[idx]
        mask = torch.from_numpy(targets != IGNORE_INDEX)  # numpy: avoids torch's thread pool for a tiny op
        meta = {"lengths": torch.from_numpy(L), "valid": torch.from_numpy(valid), "index": torch.from_numpy(rows[idx])}
        return Batch(torch.from_numpy(x[idx]), torch.from_numpy(targets), mask, None, meta)


# --- forecasting -----------------------------------------------------------------------------

_SERIES = {  # name -> (package, file inside the package, value column, default seq_len)
    "co2": ("statsmodels", "datasets/co2/co2.csv", "co2", 64),
    "sunspots": ("statsmodels", "datasets/sunspots/sunspots.csv", "SUNACTIVITY", 32),
    "airline": ("sktime", "datasets/data/Airline/Airline.csv", "Passengers", 16),
}


@dataclass(frozen=True)
class ForecastingConfig:
    dataset: Literal["co2", "sunspots", "airline"] = "co2"  # which shipped series
    seq_len: PosInt | None = None  # window length; None = 64 (co2), 32 (sunspots), 16 (airline)
    horizon: PosInt | None = None  # score the last `horizon` positions of each window; None = all (every position)
    # leading share of the series for train windows; the rest is eval/test
    train_fraction: Annotated[float, Range(gt=0, lt=1)] = 0.8
    # share of the train part (its end) held out as the validation part
    valid_fraction: Annotated[float, Range(gt=0, lt=1)] = 0.2

    def __post_init__(self) -> None:
        if self.horizon is not None and self.seq_len is not None and self.horizon > self.seq_len:
            raise ConfigError(f"horizon ({self.horizon}) must be <= seq_len ({self.seq_len})")


@functools.cache
def load_series(dataset: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The raw series (N,) float64 parsed from the CSV file the package ships, and its provenance."""
    import pandas as pd

    package, rel, column, _ = _SERIES[dataset]
    module = require(package, package, f"forecasting dataset={dataset!r}")
    file = Path(module.__file__).parent / rel
    if not file.is_file():
        raise MissingDataError(f"{package} does not ship {file}; reinstall it: pip install {package}")
    raw = file.read_bytes()
    values = pd.read_csv(io.BytesIO(raw))[column].astype(float)
    n_missing = int(values.isna().sum())
    values = values.interpolate(method="linear", limit_direction="both").to_numpy()  # co2 has 59 gaps
    info = {
        "source": f"{package}: {rel}",
        "package": package,
        "version": _version(package),
        "files": [{"path": str(file), "sha256": sha256_of(raw)}],
        "sha256": sha256_of(raw),
        "length": len(values),
        "missing_filled": n_missing,
    }
    return values, info


@register("forecasting", ForecastingConfig)
class Forecasting(RealTask):
    metric = "nmse"
    regression = True
    extrapolates = True  # any window length that fits in both parts of the series

    def __init__(self, config: ForecastingConfig) -> None:
        super().__init__(config)
        self._info: dict[str, Any] = {}

    def _load(self) -> dict[str, np.ndarray]:
        values, info = load_series(self.config.dataset)
        n_train = int(self.config.train_fraction * len(values))
        mean, std = values[:n_train].mean(), values[:n_train].std()
        z = ((values - mean) / std).astype(np.float32)  # (N,)
        n_fit = tail_split(n_train, self.config.valid_fraction)
        self._info = {
            **info,
            "split": f"first {self.config.train_fraction:g} of the series train (its last "
                     f"{self.config.valid_fraction:g} valid), rest eval/test",
            "split_sizes": {"train": n_fit, "valid": n_train - n_fit, "test": len(values) - n_train},
            "train_mean": float(mean),
            "train_std": float(std),
        }
        return {"train": z[:n_fit], "valid": z[n_fit:n_train], "test": z[n_train:]}

    @property
    def vocab_size(self) -> int | None:
        return None

    @property
    def d_input(self) -> int:
        return 1

    @property
    def n_outputs(self) -> int:
        return 1

    @property
    def seq_len(self) -> int:
        return self.config.seq_len or _SERIES[self.config.dataset][3]

    def chance(self, seq_len: int | None = None) -> float:
        return 1.0

    def data_info(self) -> dict[str, Any]:
        self.load()
        return dict(self._info)

    def _batch(self, batch_size: int, seq_len: int, rng: np.random.Generator, split: str) -> Batch:
        part = self.load()["test" if split == "eval" else split]
        n_windows = len(part) - seq_len  # a window needs seq_len inputs and one more value
        if n_windows < 1:
            longest = min(len(p) for p in self.load().values()) - 1
            raise ConfigError(
                f"forecasting: seq_len={seq_len} needs {seq_len + 1} points but the {split} part of "
                f"{self.config.dataset!r} has {len(part)}; use seq_len <= {longest}"
            )
        horizon = self.config.horizon or seq_len
        if horizon > seq_len:
            raise ConfigError(f"forecasting: horizon ({horizon}) must be <= seq_len ({seq_len})")
        start = rng.integers(0, n_windows, size=batch_size)  # (B,)
        window = part[start[:, None] + np.arange(seq_len + 1)[None, :]]  # (B, T+1)
        inputs = torch.from_numpy(window[:, :-1, None].copy())  # (B, T, 1)
        targets = torch.from_numpy(window[:, 1:, None].copy())  # (B, T, 1)
        mask = torch.zeros(batch_size, seq_len, dtype=torch.bool)
        mask[:, seq_len - horizon :] = True
        return Batch(inputs, targets, mask, None, {"naive": inputs.clone(), "start": torch.from_numpy(start)})
