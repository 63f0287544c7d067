"""Image classification with an MLP (the CHT papers' MLP experiments)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...data import ArrayDataset
from ...models import MODELS
from .base import Task, derived_seed

__all__ = ["ClassificationTask", "ShuffledMinibatches", "validation_split"]

_VAL_SEED_OFFSET = 7_919  # the validation draw's generator is seeded apart from the test split's (same split_seed)


def validation_split(y: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Stratified indices ``(train, val)`` into labels ``y``: ``round(fraction * n_c)`` examples of each class ``c``
    (of ``n_c``) go to validation, at least 1 and at most ``n_c - 1``, drawn by a generator seeded from ``seed``.

    Both index tensors are sorted; they are disjoint and together cover ``range(len(y))``. Every class present in
    ``y`` is on both sides, so the validation accuracy measures every class the model is trained on.

    Raises:
        ConfigError: naming ``data.val_fraction`` when ``fraction`` is outside (0, 1) or a class has fewer than 2
            examples (it cannot be on both sides).

    Example:
        >>> y = torch.tensor([0] * 20 + [1] * 10)
        >>> train, val = validation_split(y, 0.1, seed=0)
        >>> torch.bincount(y[val]).tolist(), len(train)
        ([2, 1], 27)
    """
    from ..config import ConfigError

    if not 0 < fraction < 1:
        raise ConfigError(f"config key 'data.val_fraction' must be in (0, 1), got {fraction!r}")
    y = y.cpu()
    gen = torch.Generator().manual_seed(derived_seed(seed, _VAL_SEED_OFFSET))
    classes, counts = torch.unique(y, return_counts=True)
    val = []
    for c, n in zip(classes.tolist(), counts.tolist()):
        if n < 2:
            raise ConfigError(
                f"config key 'data.val_fraction': class {c} has {n} training example, so it cannot be in both the "
                "training and the validation split; every class needs at least 2 training examples"
            )
        k = min(max(math.floor(fraction * n + 0.5), 1), n - 1)
        members = torch.nonzero(y == c).squeeze(1)  # (n,)
        val.append(members[torch.randperm(n, generator=gen)[:k]])
    val_idx = torch.cat(val).sort().values
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[val_idx] = False
    return torch.nonzero(keep).squeeze(1), val_idx


class ShuffledMinibatches:
    """Cross-entropy on minibatches of in-memory ``x_train``/``y_train``, reshuffled each epoch from the run's seed;
    evaluation on a validation split carved from the training data (``x_val``/``y_val``) and on the test split.

    A mixin for tasks that hold ``cfg``, ``model``, ``x_train``, ``y_train``, ``x_val``, ``y_val``, ``x_test``,
    ``y_test``, ``batch``, ``steps_per_epoch`` and ``_order`` (None at first; :meth:`_hold` sets all but ``model``);
    the last partial batch of an epoch is dropped. The best evaluation is the one of highest ``val_acc``
    (``selection_metric``); the test split never picks it.
    """

    cfg: Any
    model: torch.nn.Module
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    batch: int
    steps_per_epoch: int
    _order: tuple[int, Tensor] | None
    metric = "test_acc"
    selection_metric = "val_acc"
    higher_is_better = True

    def _hold(self, cfg: Any, data: Any, device: torch.device) -> None:
        """Holds ``data``'s training split, less the validation split of ``data.val_fraction`` (drawn with
        ``data.split_seed``: the same for every run of a sweep), both on ``device``, and its test split; sizes the
        epochs of ``cfg``."""
        self.cfg = cfg
        train_idx, val_idx = validation_split(data.y_train, cfg.data.val_fraction, cfg.data.split_seed)
        self.x_train, self.y_train = data.x_train[train_idx].to(device), data.y_train[train_idx].to(device)
        self.x_val, self.y_val = data.x_train[val_idx].to(device), data.y_train[val_idx].to(device)
        self.x_test, self.y_test = data.x_test.to(device), data.y_test.to(device)
        self.batch = min(cfg.train.batch_size, len(self.x_train))
        self.steps_per_epoch = len(self.x_train) // self.batch  # the last partial batch is dropped
        self.total_steps = cfg.train.steps or self.steps_per_epoch * cfg.train.epochs
        self._order = None

    def _pass(
        self, split: str, x_all: Tensor, y_all: Tensor, batch: int, after_forward: Callable[[], None] | None = None
    ) -> dict[str, float]:
        """``{split}_loss`` and ``{split}_acc`` over ``x_all`` in batches of ``batch``; ``after_forward`` runs after
        each forward."""
        loss_sum, correct, n = 0.0, 0, len(x_all)
        for i in range(0, n, batch):
            x, y = x_all[i : i + batch], y_all[i : i + batch]
            out = self.model(x)  # (b, C)
            loss_sum += float(F.cross_entropy(out.float(), y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            if after_forward is not None:
                after_forward()
        return {f"{split}_loss": loss_sum / n, f"{split}_acc": correct / n}

    def _eval_passes(self, batch: int, after_test_forward: Callable[[], None] | None = None) -> dict[str, float]:
        """Validation then test loss and accuracy; ``after_test_forward`` runs after each forward of the test pass."""
        return {
            **self._pass("val", self.x_val, self.y_val, batch),
            **self._pass("test", self.x_test, self.y_test, batch, after_test_forward),
        }

    def _split_sizes(self) -> dict[str, int]:
        return {"train_size": len(self.x_train), "val_size": len(self.x_val), "test_size": len(self.x_test)}

    def _permutation(self, epoch: int) -> Tensor:
        if self._order is None or self._order[0] != epoch:
            gen = torch.Generator().manual_seed(derived_seed(self.cfg.seed, epoch))
            self._order = (epoch, torch.randperm(len(self.x_train), generator=gen).to(self.x_train.device))
        return self._order[1]

    splits_batches = True

    def loss(self, step: int, part: int = 0, parts: int = 1) -> Tensor:
        epoch, b = divmod(step, self.steps_per_epoch)
        idx = self._permutation(epoch)[b * self.batch : (b + 1) * self.batch]
        if parts > 1:
            idx = idx.tensor_split(parts)[part]
        return F.cross_entropy(self.model(self.x_train[idx]), self.y_train[idx])


class ClassificationTask(ShuffledMinibatches, Task):
    """Cross-entropy on an in-memory :class:`~sparsebrain.data.ArrayDataset`; one epoch = one shuffled pass over its
    training split less the validation split (``data.val_fraction``)."""

    def __init__(self, cfg: Any, dataset: ArrayDataset, device: torch.device) -> None:
        self.dataset = dataset
        self._hold(cfg, dataset, device)
        self.model = MODELS.get(cfg.model.name)(
            dataset.num_features, cfg.model.hidden, dataset.num_classes, dropout=cfg.model.dropout, **cfg.model.options
        ).to(device)

    def evaluate(self) -> dict[str, float]:
        return self._eval_passes(2048)

    def describe(self) -> dict[str, Any]:
        return {**self._split_sizes(), "num_classes": self.dataset.num_classes}
