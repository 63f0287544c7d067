"""Experiments: configurations, the training runner, run directories and reports (tables, plots)."""
