"""English -> Spanish translation of Bible verses with an encoder-decoder Transformer (BLEU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .base import Task, derived_seed, tokenizer_path

__all__ = ["TranslationTask"]


class TranslationTask(Task):
    """Label-smoothed cross-entropy on length-bucketed batches; greedy BLEU on the validation books at each
    evaluation and, once at the end, test BLEU with greedy decoding and with beam search (beam 2, as the papers).

    ``train.batch_size`` is a budget of padded tokens per side per batch (``max_tokens``), not a number of pairs.
    """

    metric = "valid_bleu"
    # the best evaluation is picked on the validation books; test BLEU is measured once, on the final model
    selection_metric = "valid_bleu"
    higher_is_better = True

    def __init__(self, cfg: Any, device: torch.device, run_dir: Path) -> None:
        from ...data.translation import build_translation_data
        from ...models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer

        self.cfg = cfg
        self.device = device
        self.tokenizer_path = tokenizer_path(cfg, run_dir)
        self.data, _ = build_translation_data(cfg.data.vocab_size, cfg.data.max_len, self.tokenizer_path)
        d = self.data
        self.max_tokens = max(cfg.train.batch_size, cfg.data.max_len)
        mc = Seq2SeqConfig(
            src_vocab=d.vocab_size,
            tgt_vocab=d.vocab_size,
            max_len=cfg.data.max_len,
            pad_id=d.pad_id,
            bos_id=d.bos_id,
            eos_id=d.eos_id,
            dropout=cfg.model.dropout,
            **cfg.model.options,
        )
        self.model = Seq2SeqTransformer(mc).to(device)
        self._epoch: tuple[int, list[tuple[Tensor, Tensor]]] | None = None
        self.steps_per_epoch = len(self._batches(0))
        self.total_steps = cfg.train.steps or self.steps_per_epoch * cfg.train.epochs

    def _batches(self, epoch: int) -> list[tuple[Tensor, Tensor]]:
        if self._epoch is None or self._epoch[0] != epoch:
            gen = torch.Generator().manual_seed(derived_seed(self.cfg.seed, epoch))  # the epoch's order
            batches = [
                (b.src, b.tgt)
                for b in self.data.batches("train", max_tokens=self.max_tokens, shuffle=True, generator=gen)
            ]
            self._epoch = (epoch, batches)
        return self._epoch[1]

    def loss(self, step: int, part: int = 0, parts: int = 1) -> Tensor:  # batches of a token budget: not split
        from ...models.seq2seq import label_smoothed_loss

        epoch, b = divmod(step, self.steps_per_epoch)
        src, tgt = self._batches(epoch)[b]
        src, tgt = src.to(self.device), tgt.to(self.device)
        logits = self.model(src, tgt[:, :-1])  # (B, T - 1, V)
        return label_smoothed_loss(logits.float(), tgt[:, 1:], self.data.pad_id, smoothing=0.1)

    def _bleu(self, split: str, beam: int) -> float:
        from ...metrics import bleu

        hyps: list[str] = []
        refs: list[str] = []
        for batch in self.data.batches(split, max_tokens=self.max_tokens * 2):
            src = batch.src.to(self.device)
            out = self.model.greedy_decode(src) if beam == 1 else self.model.beam_search(src, beam_size=beam)
            hyps += [self.data.decode(row) for row in out.cpu()]
            refs += batch.tgt_text
        return bleu(hyps, refs)

    def evaluate(self) -> dict[str, float]:
        from ...models.seq2seq import label_smoothed_loss

        loss_sum, n = 0.0, 0
        for batch in self.data.batches("valid", max_tokens=self.max_tokens * 2):
            src, tgt = batch.src.to(self.device), batch.tgt.to(self.device)
            logits = self.model(src, tgt[:, :-1])  # (B, T - 1, V)
            tokens = int((tgt[:, 1:] != self.data.pad_id).sum())
            loss_sum += float(label_smoothed_loss(logits.float(), tgt[:, 1:], self.data.pad_id, 0.1)) * tokens
            n += tokens
        return {"valid_loss": loss_sum / max(n, 1), "valid_bleu": self._bleu("valid", beam=1)}

    def final_metrics(self) -> dict[str, Any]:
        self.model.eval()
        with torch.no_grad():
            return {"test_bleu_greedy": self._bleu("test", beam=1), "test_bleu": self._bleu("test", beam=2)}

    def describe(self) -> dict[str, Any]:
        d = self.data
        return {
            "pairs": {s: d.num_examples(s) for s in d.splits},
            "dropped_longer_than_max_len": d.num_dropped,
            "vocab_size": d.vocab_size,
            "tokenizer": str(self.tokenizer_path),
            "max_tokens_per_batch": self.max_tokens,
        }
