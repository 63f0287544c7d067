"""Causal language modelling with a LLaMA-style decoder on an offline corpus (validation perplexity)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Task, derived_seed, tokenizer_path

__all__ = ["LanguageModelTask"]


class LanguageModelTask(Task):
    """Random windows of ``data.seq_len`` tokens from the training split; perplexity on the validation split.

    One "epoch" here is as many steps as it takes to draw as many tokens as the training split holds; runs are
    usually sized in steps (``train.steps``) at an equal token budget across methods.
    """

    metric = "val_ppl"
    # no test split: the best evaluation is picked on the validation split that is also the headline
    selection_metric = "val_ppl"
    higher_is_better = False

    def __init__(self, cfg: Any, device: torch.device, run_dir: Path) -> None:
        from ...data.text import build_lm_data
        from ...models.llama import LlamaLM

        self.cfg = cfg
        self.device = device
        self.tokenizer_path = tokenizer_path(cfg, run_dir)
        self.data, _ = build_lm_data(cfg.data.name, cfg.data.vocab_size, self.tokenizer_path)
        self.seq_len = cfg.data.seq_len
        self.batch = cfg.train.batch_size
        options = {"dropout": cfg.model.dropout, **cfg.model.options}
        self.model = LlamaLM.from_name(
            cfg.model.size or "llama-tiny", vocab_size=self.data.vocab_size, max_seq_len=self.seq_len, **options
        ).to(device)
        self.steps_per_epoch = max(1, self.data.num_tokens("train") // (self.batch * self.seq_len))
        self.total_steps = cfg.train.steps or self.steps_per_epoch * cfg.train.epochs

    splits_batches = True

    def loss(self, step: int, part: int = 0, parts: int = 1) -> Tensor:
        gen = torch.Generator().manual_seed(derived_seed(self.cfg.seed, step))  # batches are a function of the step
        x, y = self.data.get_batch("train", self.batch, self.seq_len, generator=gen, device=self.device)  # (B, T)
        if parts > 1:
            x, y = x.tensor_split(parts)[part], y.tensor_split(parts)[part]
        logits = self.model(x)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())

    def evaluate(self) -> dict[str, float]:
        nll, n = 0.0, 0
        for x, y in self.data.iter_eval("valid", self.batch, self.seq_len):
            x, y = x.to(self.device), y.to(self.device)
            logits = self.model(x)  # (B, T, V)
            nll += float(F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum"))
            n += y.numel()
        loss = nll / n
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0))}

    def per_step(self) -> tuple[int, str]:
        return self.batch * self.seq_len, "tokens"

    def describe(self) -> dict[str, Any]:
        return {
            "corpus": self.cfg.data.name,
            "train_tokens": self.data.num_tokens("train"),
            "valid_tokens": self.data.num_tokens("valid"),
            "vocab_size": self.data.vocab_size,
            "tokenizer": str(self.tokenizer_path),
            "tokens_per_step": self.batch * self.seq_len,
        }
