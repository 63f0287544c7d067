"""Tasks: what is trained on what data. The task follows from the model (mlp, vit: classification; rsgn, seq_*:
sequence classification)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .base import Task, autocast
from .classification import ClassificationTask

__all__ = ["ClassificationTask", "Task", "autocast", "build_task"]


def build_task(cfg: Any, device: torch.device, run_dir: Path, dataset: Any = None) -> Task:
    """The task of ``cfg`` with its data loaded and its model built on ``device``."""
    from ...data import load_dataset
    from ..config import ConfigError

    name = cfg.model.name
    if name in ("mlp", "vit"):
        if dataset is None:
            kwargs: dict[str, Any] = {}
            if cfg.data.name in ("fashion_mnist", "mnist_idx"):
                kwargs["path"] = cfg.data.path
            elif cfg.data.path is not None:
                raise ConfigError(f"config key 'data.path' is not used by dataset {cfg.data.name!r}; remove it")
            else:
                kwargs.update(test_fraction=cfg.data.test_fraction, seed=cfg.data.split_seed)
            dataset = load_dataset(cfg.data.name, **kwargs)
        return ClassificationTask(cfg, dataset, device)
    if name == "llama":
        from .language_model import LanguageModelTask

        return LanguageModelTask(cfg, device, run_dir)
    if name == "seq2seq":
        from .translation import TranslationTask

        return TranslationTask(cfg, device, run_dir)
    if name == "minilm":
        from .sentence_embedding import SentenceEmbeddingTask

        return SentenceEmbeddingTask(cfg, device, run_dir)
    if name in ("rsgn", "seq_mlp", "seq_transformer", "seq_sparse_transformer", "seq_bilstm"):
        from .sequence import SequenceClassificationTask

        return SequenceClassificationTask(cfg, device, dataset)
    raise ConfigError(f"config key 'model.name': no task is defined for model {name!r}")
