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


def _load(*overrides: str):  # type: ignore[no-untyped-def]
    return load_config(None, parse_overrides(list(overrides)))


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("train.momentum", "-0.5", r"in \[0, 1\)"),
        ("train.momentum", "1.5", r"in \[0, 1\)"),
        ("train.weight_decay", "-1", ">= 0"),
    ],
)
def test_momentum_and_weight_decay_out_of_range_name_the_key_and_range(key: str, value: str, allowed: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}' must be .*{allowed}"):
        _load(f"--{key}", value)


@pytest.mark.parametrize("key", ["seed", "data.split_seed"])
@pytest.mark.parametrize("value", [str(2**63), "-1"])
def test_seeds_outside_the_int64_range_are_refused(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{key}' must be an integer in \[0, 2\^63 - 1\]"):
        _load(f"--{key}", value)
    cfg = _load(f"--{key}", str(2**63 - 1))  # the top of the range is fine
    assert (cfg.seed if key == "seed" else cfg.data.split_seed) == 2**63 - 1


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("train.lr", ".inf"),
        ("train.lr_end", ".inf"),
        ("train.grad_clip", ".inf"),
        ("train.momentum", ".nan"),
        ("train.weight_decay", ".inf"),
        ("train.weight_decay", ".nan"),
        ("model.dropout", ".nan"),
        ("sparsity.density", ".nan"),
        ("data.test_fraction", ".nan"),
        ("data.test_fraction", "-.inf"),
    ],
)
def test_non_finite_floats_are_refused_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}' must be a finite number"):
        _load(f"--{key}", value)


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        ("mlp", "{foo: 1}", r"unknown option 'foo' for model 'mlp'.*takes no options"),
        ("vit", "{dpth: 3}", r"unknown option 'dpth' for model 'vit'; valid options: depth, heads.*Did you mean"),
        ("llama", "{tie_embedding: true}", r"'tie_embedding' for model 'llama'.*Did you mean 'tie_embeddings'"),
        ("seq_sparse_transformer", "{windw: 3}", r"'windw' for model 'seq_sparse_transformer'.*budget.*dim.*window"),
        ("rsgn", "{num_node: 8}", r"option 'num_node' for model 'rsgn'.*Did you mean 'num_nodes'"),
        ("seq2seq", "{dim: 8, n_head: 2}", r"option 'n_head' for model 'seq2seq'.*Did you mean 'n_heads'"),
        ("minilm", "{paht: x}", r"option 'paht' for model 'minilm'; valid options: path\b"),
        ("mlp", "{device: cpu}", r"option 'device' for model 'mlp' is set from train.device"),
        ("seq_mlp", "{seq_len: 9}", r"option 'seq_len' for model 'seq_mlp' is set from the data set"),
    ],
)
def test_unknown_model_options_name_the_key_the_model_and_the_valid_options(
    model: str, options: str, message: str
) -> None:
    data = {
        "llama": "shakespeare",
        "seq2seq": "bible_en_es",
        "minilm": "shakespeare",
        "rsgn": "rsgn_hierarchical",
        "seq_sparse_transformer": "rsgn_hierarchical",
    }.get(model, "digits")
    hidden = ["--model.hidden", "[128]"] if model == "vit" else []
    with pytest.raises(ConfigError, match="config key 'model.options': .*" + message):
        _load("--model.name", model, "--data.name", data, "--model.options", options, *hidden)


def test_valid_model_options_pass() -> None:
    cfg = _load("--model.name", "seq_sparse_transformer", "--data.name", "rsgn_hierarchical",
                "--model.options", "{window: 3, dim: 16, budget: 1000}")  # fmt: skip
    assert cfg.model.options == {"window": 3, "dim": 16, "budget": 1000}
    vit = _load("--model.name", "vit", "--model.hidden", "[128]", "--model.options", "{depth: 2, patch: 4}")
    assert vit.model.options == {"depth": 2, "patch": 4}


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("mlp", r"a non-empty list of widths >= 1 \(the hidden layers of mlp\)"),
        ("vit", r"one width >= 1 for vit, e.g. \[128\]"),
    ],
)
def test_empty_hidden_is_refused_for_the_models_that_use_it(model: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"'model.hidden' must be {message}, got \\[\\]"):
        _load("--model.name", model, "--model.hidden", "[]")
    # models that take their widths elsewhere ignore model.hidden
    assert _load("--model.name", "rsgn", "--data.name", "rsgn_hierarchical", "--model.hidden", "[]").model.hidden == []


def test_malformed_yaml_in_an_override_is_one_line_naming_key_and_value() -> None:
    with pytest.raises(ConfigError) as e:
        parse_overrides(["--model.hidden", "[64,64"])
    msg = str(e.value)
    assert msg.startswith("override --model.hidden '[64,64' is not valid YAML: expected ',' or ']'"), msg
    assert "\n" not in msg
    with pytest.raises(ConfigError, match="--sparsity.options '{zeta: 0.1' is not valid YAML"):
        parse_overrides(["--sparsity.options={zeta: 0.1"])


def test_non_utf8_config_file_names_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sparsebrain.experiments.config import read_config_file

    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=f"config file '{bad}' must be UTF-8 text"):
        read_config_file(bad)


def test_mnist_idx_needs_data_path() -> None:
    from sparsebrain.data import load_mnist_idx

    with pytest.raises(ConfigError, match="config key 'data.path' must be set for data.name 'mnist_idx'"):
        _load("--data.name", "mnist_idx")
    with pytest.raises(TypeError, match="load_mnist_idx needs path=, a directory holding"):
        load_mnist_idx(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("epochs", "train.epochs"), ("lr", "train.lr"), ("density", "sparsity.density"), ("hiden", "model.hidden")],
)
def test_unknown_top_level_key_suggests_the_dotted_key(key: str, suggestion: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'.*Did you mean '{suggestion}'"):
        _load(f"--{key}", "3")
    # a close top-level key still wins
    with pytest.raises(ConfigError, match="Did you mean 'seed'"):
        _load("--sed", "3")


def test_derived_seeds_are_unchanged_for_ordinary_seeds_and_valid_for_the_largest() -> None:
    import torch

    from sparsebrain.experiments.tasks.base import derived_seed

    for seed, index in [(0, 0), (1, 5), (12345, 999), (2**40, 3)]:
        assert derived_seed(seed, index) == seed * 1_000_003 + index  # existing runs see the same batches
    for index in (0, 1, 10**6):
        s = derived_seed(2**63 - 1, index)
        assert 0 <= s < 2**63
        torch.Generator().manual_seed(s)
