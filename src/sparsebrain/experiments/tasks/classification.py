"""Image classification with an MLP (the CHT papers' MLP experiments)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...data import ArrayDataset
from ...models import MODELS
from .base import Task

__all__ = ["ClassificationTask", "ShuffledMinibatches"]


class ShuffledMinibatches:
    """Cross-entropy on minibatches of in-memory ``x_train``/``y_train``, reshuffled each epoch from the run's seed.

    A mixin for tasks that hold ``cfg``, ``model``, ``x_train``, ``y_train``, ``batch``, ``steps_per_epoch`` and
    ``_order`` (None at first; :meth:`_hold` sets all but ``model``); the last partial batch of an epoch is dropped.
    """

    cfg: Any
    model: torch.nn.Module
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    batch: int
    steps_per_epoch: int
    _order: tuple[int, Tensor] | None

    def _hold(self, cfg: Any, data: Any, device: torch.device) -> None:
        """Holds ``data``'s train and test split on ``device`` and sizes the epochs of ``cfg``."""
        self.cfg = cfg
        self.x_train, self.y_train = data.x_train.to(device), data.y_train.to(device)
        self.x_test, self.y_test = data.x_test.to(device), data.y_test.to(device)
        self.batch = min(cfg.train.batch_size, len(self.x_train))
        self.steps_per_epoch = len(self.x_train) // self.batch  # the last partial batch is dropped
        self.total_steps = cfg.train.steps or self.steps_per_epoch * cfg.train.epochs
        self._order = None

    def _test_pass(self, batch: int, after_forward: Callable[[], None] | None = None) -> dict[str, float]:
        """Test loss and accuracy over ``x_test`` in batches of ``batch``; ``after_forward`` runs after each forward."""
        loss_sum, correct, n = 0.0, 0, len(self.x_test)
        for i in range(0, n, batch):
            x, y = self.x_test[i : i + batch], self.y_test[i : i + batch]
            out = self.model(x)  # (b, C)
            loss_sum += float(F.cross_entropy(out.float(), y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            if after_forward is not None:
                after_forward()
        return {"test_loss": loss_sum / n, "test_acc": correct / n}

    def _permutation(self, epoch: int) -> Tensor:
        if self._order is None or self._order[0] != epoch:
            gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            self._order = (epoch, torch.randperm(len(self.x_train), generator=gen).to(self.x_train.device))
        return self._order[1]

    def loss(self, step: int) -> Tensor:
        epoch, b = divmod(step, self.steps_per_epoch)
        idx = self._permutation(epoch)[b * self.batch : (b + 1) * self.batch]
        return F.cross_entropy(self.model(self.x_train[idx]), self.y_train[idx])


class ClassificationTask(ShuffledMinibatches, Task):
    """Cross-entropy on an in-memory :class:`~sparsebrain.data.ArrayDataset`; one epoch = one shuffled pass."""

    metric = "test_acc"
    higher_is_better = True

    def __init__(self, cfg: Any, dataset: ArrayDataset, device: torch.device) -> None:
        self.dataset = dataset
        self._hold(cfg, dataset, device)
        self.model = MODELS.get(cfg.model.name)(
            dataset.num_features, cfg.model.hidden, dataset.num_classes, dropout=cfg.model.dropout, **cfg.model.options
        ).to(device)

    def evaluate(self) -> dict[str, float]:
        return self._test_pass(2048)

    def describe(self) -> dict[str, Any]:
        d = self.dataset
        return {"train_size": len(d.x_train), "test_size": len(d.x_test), "num_classes": d.num_classes}
