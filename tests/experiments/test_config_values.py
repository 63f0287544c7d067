"""Config values: how override strings become typed values."""

from __future__ import annotations

import pytest

from sparsebrain.experiments.config import ConfigError, load_config, parse_overrides


def test_exponent_floats_without_a_dot_are_floats_and_other_strings_still_fail() -> None:
    # YAML 1.1 reads "1e-12" as a string; float-typed keys accept it.
    cfg = load_config(None, parse_overrides(["--train.lr", "1e-12", "--train.lr_end", "+2E-13", "--train.epochs", "1"]))
    assert cfg.train.lr == 1e-12 and cfg.train.lr_end == 2e-13
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(None, parse_overrides(["--train.lr", "fast"]))
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, parse_overrides(["--train.epochs", "1e3"]))  # an int key stays strict
