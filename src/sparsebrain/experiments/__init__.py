"""Experiments: configurations, the training runner, run directories and reports (tables, plots)."""

from .config import ExperimentConfig, load_config
from .report import build_report, collect_runs, markdown_table, summarize
from .trainer import train

__all__ = ["ExperimentConfig", "build_report", "collect_runs", "load_config", "markdown_table", "summarize", "train"]
