"""A run directory: its name and the names of the files in it, in one place for the trainer, the CLI and the report.

The layout is defined in ``docs/run-directory.md``: ``config.yaml`` (the run's config), ``metrics.jsonl`` (one event
per line), ``checkpoint.pt`` (the state to resume from), ``summary.json`` (once finished), ``train.log`` (a run's
output under ``compare``) and, for text tasks without ``data.tokenizer``, ``tokenizer.json``. Torch-free: the report
reads run directories anywhere.

Example:
    >>> from pathlib import Path
    >>> Path("runs/x") / SUMMARY
    PosixPath('runs/x/summary.json')
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import ExperimentConfig

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "METRICS",
    "SUMMARY",
    "TOKENIZER",
    "TRAIN_LOG",
    "default_run_dir",
    "run_leaf",
    "run_name",
]

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"
TRAIN_LOG = "train.log"
TOKENIZER = "tokenizer.json"


def default_run_dir(cfg: ExperimentConfig) -> Path:
    """``OUT_DIR/NAME/`` :func:`run_leaf`, e.g. ``runs/default/mlp-chtss_d0.05_s0``."""
    return Path(cfg.out_dir) / cfg.name / run_leaf(cfg)


def run_leaf(cfg: ExperimentConfig) -> str:
    """The name of a run's directory: ``MODEL-METHOD_dDENSITY_sSEED``, METHOD being the label or else the method.

    ``train``'s default run directory and each run of ``compare`` are named by it, so that runs that differ in
    model, method, density or seed never share a directory. A method that sparsifies nothing (``dense``) is named at
    density 1, what it trains at and what its summary records, whatever ``sparsity.density`` says.

    Example:
        >>> from sparsebrain.experiments.config import load_config
        >>> run_leaf(load_config(None, {"model.name": "mlp", "sparsity.method": "set", "sparsity.density": 0.1}))
        'mlp-set_d0.1_s0'
        >>> run_leaf(load_config(None, {"model.name": "mlp", "sparsity.method": "dense", "sparsity.density": 0.1}))
        'mlp-dense_d1_s0'
    """
    from ..dst.methods import resolve_method

    s = cfg.sparsity
    density = s.density if resolve_method(s.method, **s.options).sparse else 1.0
    return f"{run_name(cfg.model.name)}-{run_name(s.label or s.method)}_d{density:g}_s{cfg.seed}"


def run_name(label: str) -> str:
    """A file-name-safe form of a method label: ``chts[regrowth=ch3_l3p]`` -> ``chts-regrowth-ch3_l3p``."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", label).strip("-")
