"""The two synthetic sequence tasks of the RSGN paper (seed 004), generated deterministically from a seed.

Both tasks are built as the paper (section VI.1) and the author's reference code describe them (see
``shared/reference/rsgn.md``); every random draw comes from one ``torch.Generator`` seeded with ``seed``, so the same
seed gives bit-identical tensors and the global RNG is never touched.

**Hierarchical classification** (20 classes, 5,000 sequences of length 64, feature dimension 32): every sequence is
background noise ``N(0, 0.3^2)`` plus three levels of class evidence, all drawn once per seed as class templates:

- level 1 (local): each class owns 8 random 5-step patterns ``(5, 32)`` of scale 0.15; a sequence gets 2 to 4 of its
  class's patterns (chosen uniformly, with replacement) added at uniformly random start positions in ``[0, 59]``
  (insertions may overlap; overlapping patterns add);
- level 2 (compositional): each class owns 4 markers ``(32,)`` of scale 0.10, marker ``q`` is added at one position
  near the start of quarter ``q`` of the sequence: ``q * 16 + offset`` with ``offset`` uniform in ``[0, 3]``
  (the text says only "near each quarter"; this is our reading);
- level 3 (global): each class owns a bias ``(32,)`` of scale 0.004 added at every position.

"Scale" means a standard normal draw multiplied by it. The split is 4,000 train / 1,000 test (the reference's
4000/1000 train/validation split), stratified so that each class has exactly 200 train and 50 test sequences.

**Long-range dependency** (10 classes, 3,000 sequences of length 128, feature dimension 32): noise ``N(0, 0.3^2)``
everywhere; each class owns a "start" pattern and an "end" pattern, both ``(8, 32)`` of scale 0.5, added at the
first 8 and at the last 8 positions; the 112 positions in between carry noise only. Neither the paper nor the
reference states the split; we use a stated, stratified 80/20 split: 2,400 train / 600 test (240 / 60 per class).
With ``require_both=True`` (our option, not the paper's) the start and end pattern ids ``(s, e)`` are drawn so that
``label = (s + e) mod num_classes`` with ``s`` uniform: neither end alone then says anything about the label, and a
model must really combine the two extremes.

Example:
    >>> ds = make_long_range(seed=0)
    >>> ds.x_train.shape, ds.x_test.shape, ds.num_classes
    (torch.Size([2400, 128, 32]), torch.Size([600, 128, 32]), 10)
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from .._validation import check_fraction, check_positive_int
from .images import ArrayDataset

__all__ = ["SequenceDataset", "make_hierarchical", "make_long_range"]


@dataclasses.dataclass(repr=False)
class SequenceDataset:
    """A sequence classification set in memory.

    Attributes:
        x_train: ``(N, T, D)`` float32 sequences.
        y_train: ``(N,)`` int64 labels.
        x_test: ``(M, T, D)`` float32 sequences.
        y_test: ``(M,)`` int64 labels.
        num_classes: number of classes.
        name: ``"rsgn_hierarchical"`` or ``"rsgn_long_range"``.
        templates: the class templates the data was built from (for analysis and tests), name -> tensor.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    name: str
    templates: dict[str, Tensor] = dataclasses.field(default_factory=dict)

    @property
    def seq_len(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[2])

    def as_array_dataset(self) -> ArrayDataset:
        """The same data flattened to ``(N, T * D)`` with ``input_shape=(T, D)``, for flat-input models (MLP)."""
        T, D = self.seq_len, self.input_dim
        return ArrayDataset(
            self.x_train.reshape(len(self.x_train), T * D),
            self.y_train,
            self.x_test.reshape(len(self.x_test), T * D),
            self.y_test,
            num_classes=self.num_classes,
            name=self.name,
            input_shape=(T, D),
        )

    def __repr__(self) -> str:
        return (
            f"SequenceDataset(name={self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
            f"seq_len={self.seq_len}, input_dim={self.input_dim}, num_classes={self.num_classes})"
        )


def _balanced_split(n: int, classes: int, test_fraction: float, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Labels ``(n,)`` with ``n / classes`` of each class, and shuffled train / test index sets, stratified."""
    if n % classes:
        raise ValueError(f"n={n} must be a multiple of num_classes={classes} for balanced classes")
    per = n // classes
    n_test = round(test_fraction * per)
    if n_test == 0 or n_test == per:
        raise ValueError(f"test_fraction={test_fraction} leaves an empty split ({per} sequences per class)")
    y = torch.arange(classes).repeat_interleave(per)  # (n,) class blocks
    order = torch.stack([torch.randperm(per, generator=g) + c * per for c in range(classes)])  # (C, per)
    test_idx = order[:, :n_test].reshape(-1)
    train_idx = order[:, n_test:].reshape(-1)
    train_idx = train_idx[torch.randperm(len(train_idx), generator=g)]  # mix the classes
    test_idx = test_idx[torch.randperm(len(test_idx), generator=g)]
    return y, train_idx, test_idx


def _finish(x: Tensor, y: Tensor, tr: Tensor, te: Tensor, C: int, name: str, tpl: dict[str, Tensor]) -> SequenceDataset:
    return SequenceDataset(x[tr].contiguous(), y[tr].contiguous(), x[te].contiguous(), y[te].contiguous(), C, name, tpl)


def make_hierarchical(
    seed: int = 42,
    *,
    n: int = 5000,
    seq_len: int = 64,
    dim: int = 32,
    num_classes: int = 20,
    noise: float = 0.3,
    test_fraction: float = 0.2,
    patterns_per_class: int = 8,
    pattern_len: int = 5,
    pattern_scale: float = 0.15,
    insertions: tuple[int, int] = (2, 4),
    marker_scale: float = 0.10,
    bias_scale: float = 0.004,
) -> SequenceDataset:
    """The hierarchical 20-class task (module docstring); defaults are the paper's.

    Example:
        >>> ds = make_hierarchical(seed=0, n=200)
        >>> ds.x_train.shape
        torch.Size([160, 64, 32])
    """
    for v, name in ((n, "n"), (seq_len, "seq_len"), (dim, "dim"), (num_classes, "num_classes")):
        check_positive_int(v, name)
    check_fraction(test_fraction, "test_fraction", closed_low=False, closed_high=False)
    if seq_len < max(pattern_len, 8):
        raise ValueError(f"seq_len={seq_len} is too short for patterns of length {pattern_len} and 4 quarters")
    g = torch.Generator().manual_seed(seed)
    C, P, L, Q = num_classes, patterns_per_class, pattern_len, 4
    patterns = torch.randn(C, P, L, dim, generator=g) * pattern_scale  # (C, P, L, D) level 1
    markers = torch.randn(C, Q, dim, generator=g) * marker_scale  # (C, 4, D) level 2
    bias = torch.randn(C, dim, generator=g) * bias_scale  # (C, D) level 3
    y, tr, te = _balanced_split(n, C, test_fraction, g)

    x = torch.randn(n, seq_len, dim, generator=g) * noise  # (n, T, D)
    # Level 1: up to insertions[1] slots per sequence; slot s is used when s < count (counts in [lo, hi]).
    lo, hi = insertions
    count = torch.randint(lo, hi + 1, (n,), generator=g)  # (n,)
    which = torch.randint(0, P, (n, hi), generator=g)  # (n, S) pattern id per slot
    start = torch.randint(0, seq_len - L + 1, (n, hi), generator=g)  # (n, S)
    used = torch.arange(hi)[None, :] < count[:, None]  # (n, S)
    rows = torch.arange(n)
    for s in range(hi):
        pat = patterns[y, which[:, s]] * used[:, s, None, None]  # (n, L, D), zero in unused slots
        pos = start[:, s, None] + torch.arange(L)  # (n, L)
        x.index_put_((rows[:, None], pos), pat, accumulate=True)
    # Level 2: marker q near the start of quarter q.
    quarter = seq_len // Q
    offset = torch.randint(0, min(4, quarter), (n, Q), generator=g)  # (n, 4)
    mpos = torch.arange(Q) * quarter + offset  # (n, 4)
    x.index_put_((rows[:, None], mpos), markers[y], accumulate=True)
    # Level 3: a tiny global class bias at every position.
    x += bias[y][:, None, :]
    tpl = {"patterns": patterns, "markers": markers, "bias": bias}
    return _finish(x, y, tr, te, C, "rsgn_hierarchical", tpl)


def make_long_range(
    seed: int = 42,
    *,
    n: int = 3000,
    seq_len: int = 128,
    dim: int = 32,
    num_classes: int = 10,
    noise: float = 0.3,
    test_fraction: float = 0.2,
    pattern_len: int = 8,
    pattern_scale: float = 0.5,
    require_both: bool = False,
) -> SequenceDataset:
    """The long-range 10-class task (module docstring); defaults are the paper's.

    Example:
        >>> ds = make_long_range(seed=1, n=100)
        >>> ds.x_test.shape
        torch.Size([20, 128, 32])
    """
    for v, name in ((n, "n"), (seq_len, "seq_len"), (dim, "dim"), (num_classes, "num_classes")):
        check_positive_int(v, name)
    check_fraction(test_fraction, "test_fraction", closed_low=False, closed_high=False)
    if seq_len < 2 * pattern_len:
        raise ValueError(f"seq_len={seq_len} must hold two patterns of length {pattern_len}")
    g = torch.Generator().manual_seed(seed)
    C, L = num_classes, pattern_len
    start_pat = torch.randn(C, L, dim, generator=g) * pattern_scale  # (C, L, D)
    end_pat = torch.randn(C, L, dim, generator=g) * pattern_scale  # (C, L, D)
    y, tr, te = _balanced_split(n, C, test_fraction, g)
    x = torch.randn(n, seq_len, dim, generator=g) * noise  # (n, T, D)
    if require_both:
        s_id = torch.randint(0, C, (n,), generator=g)
        e_id = (y - s_id) % C  # label = (s + e) mod C
    else:
        s_id = e_id = y
    x[:, :L] += start_pat[s_id]
    x[:, -L:] += end_pat[e_id]
    return _finish(x, y, tr, te, C, "rsgn_long_range", {"start": start_pat, "end": end_pat})
