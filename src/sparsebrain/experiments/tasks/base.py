"""What the generic training loop needs from a task (classification, language modelling, translation)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Task", "autocast", "derived_seed", "tokenizer_path"]


class Task(ABC):
    """A task owns its data and model and turns a global step number into a training loss.

    Batches are a pure function of ``(seed, step)``, so a run resumed from a checkpoint sees exactly the batches an
    uninterrupted run would have seen, with no data-loader state to save.

    Attributes:
        model: the model being trained (on the task's device).
        steps_per_epoch: optimizer steps in one pass over the training data (or one evaluation period).
        total_steps: optimizer steps of the whole run.
        metric: the name of the headline evaluation metric, e.g. ``"test_acc"``; ``higher_is_better`` says which way.
        selection_metric: the evaluation value that picks the run's best evaluation, on a split that is neither
            trained on nor the test split where the task has one (``"val_acc"`` for classification); it points the
            same way as ``metric``. The summary reports ``metric`` at that evaluation, so a test metric is never
            its own selection rule. Tasks whose headline is already a validation metric select on it (the language
            model's ``"val_ppl"``).
    """

    model: nn.Module
    steps_per_epoch: int
    total_steps: int
    metric: str = "test_acc"
    selection_metric: str = "val_acc"
    higher_is_better: bool = True

    # whether loss() takes (part, parts): gradient accumulation over equal slices of each step's batch
    splits_batches: bool = False

    @abstractmethod
    def loss(self, step: int, part: int = 0, parts: int = 1) -> Tensor:
        """The training loss of the batch of global step ``step`` (0-based), differentiable; with ``parts > 1``
        (tasks whose ``splits_batches``), the loss of slice ``part`` of ``parts`` near-equal slices of that batch,
        whose mean over the parts is the batch's loss (for a batch size that ``parts`` divides)."""

    @abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Held-out metrics; must contain ``self.metric`` and ``self.selection_metric``. Called in eval mode under
        ``torch.no_grad``."""

    def after_step(self, loss: Tensor) -> None:  # noqa: B027  (optional hook, no-op by default)
        """Called right after each optimizer step with the step's detached loss (e.g. RSGN's Hebbian update).

        The loss stays a tensor so tasks that do not need its value cost no device sync.
        """

    def final_metrics(self) -> dict[str, Any]:
        """Extra metrics computed once at the end of training (e.g. test BLEU with beam search)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Facts about the data recorded in the summary (sizes, tokenizer path...)."""
        return {}

    def per_step(self) -> tuple[int, str] | None:
        """What one training step processes, for the progress line's throughput: ``(count, unit)``, e.g.
        ``(8192, "tokens")``; None where a step's size varies (the progress line then gives steps/s)."""
        batch = getattr(self, "batch", None)
        return (int(batch), "samples") if batch else None


def derived_seed(seed: int, index: int) -> int:
    """The seed of the generator for ``index`` (an epoch, a step) of a run seeded ``seed``.

    ``seed * 1_000_003 + index``, wrapped into [0, 2^63): unchanged for every seed below ~9.2e12 (so existing runs
    are bit-identical), and still a valid ``torch.Generator`` seed for the largest config seeds (2^63 - 1).

    Example:
        >>> derived_seed(1, 2), derived_seed(2**63 - 1, 0) < 2**63
        (1000005, True)
    """
    return (seed * 1_000_003 + index) % 2**63


def tokenizer_path(cfg: Any, run_dir: Path) -> Path:
    """The tokenizer file of a text task: ``data.tokenizer`` if given (shared across a sweep), else in the run dir."""
    from ..rundir import TOKENIZER

    return Path(cfg.data.tokenizer) if cfg.data.tokenizer else run_dir / TOKENIZER


def autocast(device: torch.device, amp: str) -> torch.autocast:
    """bf16 autocast on CUDA when ``amp`` is "bf16" or "auto"; a disabled context otherwise."""
    enabled = device.type == "cuda" and amp in ("bf16", "auto")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)
