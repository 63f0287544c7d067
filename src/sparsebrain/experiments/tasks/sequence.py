"""Sequence classification on the RSGN paper's synthetic tasks: RSGN and its four baselines.

The data is generated, not loaded: ``data.name`` picks the task (``rsgn_hierarchical`` or ``rsgn_long_range``) and
``data.split_seed`` seeds the generator, so every run of a sweep (every model, every training seed) sees the same
sequences, and the same validation split (``data.val_fraction`` of each class of the training sequences, held out
from training) that picks the best evaluation. ``model.name`` picks the model: ``rsgn`` (``model.options`` go to
:class:`~sparsebrain.models.RSGN`, e.g. ``variant``, ``num_nodes``, ``steps``) or a baseline ``seq_mlp``,
``seq_transformer``, ``seq_sparse_transformer``, ``seq_bilstm`` (``model.options`` go to
:func:`~sparsebrain.models.sequence_baselines.build_sequence_baseline`, ``budget`` included).

RSGN also learns slowly: after every optimizer step the task calls ``hebbian_update(-loss)`` (reward-modulated
affinity update plus threshold homeostasis; the sparse variant centres the reward on its running mean).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ...data.rsgn_tasks import SequenceDataset, make_hierarchical, make_long_range
from ...models import RSGN
from ...models.sequence_baselines import build_sequence_baseline, count_parameters
from .base import Task
from .classification import ShuffledMinibatches

__all__ = ["SEQUENCE_DATA", "SEQUENCE_MODELS", "SequenceClassificationTask"]

# data.name -> generator taking the seed (the paper's sizes).
SEQUENCE_DATA: dict[str, Callable[[int], SequenceDataset]] = {
    "rsgn_hierarchical": make_hierarchical,
    "rsgn_long_range": make_long_range,
}

# model.name -> baseline name in sequence_baselines.SEQUENCE_BASELINES (None: RSGN itself).
SEQUENCE_MODELS: dict[str, str | None] = {
    "rsgn": None,
    "seq_mlp": "mlp",
    "seq_transformer": "transformer",
    "seq_sparse_transformer": "sparse_transformer",
    "seq_bilstm": "bilstm",
}

_EVAL_BATCH = 512  # test sequences per forward in evaluate(): (512, 128, 32) inputs stay small


class SequenceClassificationTask(ShuffledMinibatches, Task):
    """Cross-entropy on ``(N, T, D)`` sequences; one epoch = one shuffled pass (the last partial batch dropped).

    Args:
        cfg: the experiment config (``data.name``, ``data.split_seed``, ``model.name``, ``model.options``,
            ``train.batch_size``, ``train.epochs`` / ``train.steps``, ``seed``).
        device: where data and model live.
        dataset: an already generated :class:`~sparsebrain.data.rsgn_tasks.SequenceDataset` (tests); default:
            generated from ``cfg.data``.

    Example:
        >>> from sparsebrain.experiments.config import load_config
        >>> cfg = load_config(None, {"model.name": "rsgn", "data.name": "rsgn_long_range", "sparsity.method": "dense",
        ...                          "model.options": {"num_nodes": 32, "hidden": 16, "num_neighbors": 4}})
        >>> task = SequenceClassificationTask(cfg, torch.device("cpu"))  # doctest: +SKIP
        >>> task.describe()["train_size"], task.describe()["val_size"]  # doctest: +SKIP
        (2160, 240)
    """

    def __init__(self, cfg: Any, device: torch.device, dataset: SequenceDataset | None = None) -> None:
        from ..config import ConfigError

        if cfg.data.name not in SEQUENCE_DATA:
            raise ConfigError(
                f"config key 'data.name' must be one of {sorted(SEQUENCE_DATA)} for model {cfg.model.name!r}, "
                f"got {cfg.data.name!r}"
            )
        if cfg.model.name not in SEQUENCE_MODELS:
            raise ConfigError(
                f"config key 'model.name' must be one of {sorted(SEQUENCE_MODELS)}, got {cfg.model.name!r}"
            )
        self.dataset = dataset if dataset is not None else SEQUENCE_DATA[cfg.data.name](cfg.data.split_seed)
        self._hold(cfg, self.dataset, device)  # x_train (N, T, D), y_train (N,), x_val, y_val, x_test (M, T, D)...
        self.model = self._build_model(cfg, self.dataset).to(device)
        self._step = 0  # the step of the last loss() call, for the end-of-epoch hook

    @staticmethod
    def _build_model(cfg: Any, d: SequenceDataset) -> nn.Module:
        baseline = SEQUENCE_MODELS[cfg.model.name]
        try:
            if baseline is None:
                return RSGN(d.input_dim, d.num_classes, **cfg.model.options)
            return build_sequence_baseline(baseline, d.input_dim, d.num_classes, d.seq_len, **cfg.model.options)
        except TypeError as e:  # an option the model does not take: say which config key holds it
            from ..config import ConfigError

            raise ConfigError(f"config key 'model.options' does not fit model {cfg.model.name!r}: {e}") from None

    @property
    def is_rsgn(self) -> bool:
        return isinstance(self.model, RSGN)

    def loss(self, step: int, part: int = 0, parts: int = 1) -> Tensor:
        if self.is_rsgn and part == 0:  # the epoch's soft-threshold temperature (a function of the step: resume-safe)
            self.model.start_epoch(step // self.steps_per_epoch)  # type: ignore[operator]
        self._step = step
        return super().loss(step, part, parts)

    def after_step(self, loss: Tensor) -> None:
        """RSGN's slow learning after each optimizer step: ``hebbian_update(reward=-loss)`` (one sync per step);
        at the end of each epoch, pruning and sprouting of the neighbour lists (``RSGN.end_epoch``)."""
        if self.is_rsgn:
            self.model.hebbian_update(-float(loss))  # type: ignore[operator]
            if (self._step + 1) % self.steps_per_epoch == 0:
                self.model.end_epoch()  # type: ignore[operator]

    def evaluate(self) -> dict[str, float]:
        if not self.is_rsgn:
            return self._eval_passes(_EVAL_BATCH)
        active: list[float] = []  # per test batch, the summed share of active nodes of its inputs

        def count_active() -> None:
            active.append(float(self.model.last_activity.sum()))  # type: ignore[union-attr]

        values = self._eval_passes(_EVAL_BATCH, count_active)
        values["active_fraction"] = sum(active) / len(self.x_test)  # mean share of nodes with alpha > 0.01 per input
        return values

    def describe(self) -> dict[str, Any]:
        d = self.dataset
        return {
            **self._split_sizes(),
            "seq_len": d.seq_len,
            "input_dim": d.input_dim,
            "num_classes": d.num_classes,
            "parameters": count_parameters(self.model),
        }
