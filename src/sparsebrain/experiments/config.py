"""Experiment configuration: typed dataclasses, read from YAML, overridden by dotted command-line keys.

Example:
    >>> cfg = load_config(None, ["--sparsity.method", "chts", "--seed", "1"])
    >>> cfg.sparsity.method, cfg.seed
    ('chts', 1)
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from .._validation import MAX_SEED

__all__ = [
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "ModelConfig",
    "SparsityConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
    "parse_overrides",
]


class ConfigError(ValueError):
    """A configuration problem: an unknown key, a wrong type or a bad value (the message says which)."""


@dataclass
class DataConfig:
    name: str = "digits"  # dataset name: digits, fashion_mnist, mnist_idx, mnist_subset, synthetic;
    # models rsgn and seq_*: rsgn_hierarchical or rsgn_long_range (generated from split_seed)
    path: str | None = None  # directory of IDX files (fashion_mnist, mnist_idx); None = the dataset's default;
    # minilm with name "file": a UTF-8 text file of sentences, one per line
    test_fraction: float = 0.2  # held-out share for sets without an official test split
    split_seed: int = 0  # seed of that split (kept apart from the training seed: every run sees the same split)
    # classification and sequence classification: share of each class of the training data held out as the
    # validation split that picks the best evaluation (drawn with split_seed; never trained on)
    val_fraction: float = 0.1
    vocab_size: int = 8000  # text tasks: BPE vocabulary trained on the training split
    seq_len: int = 256  # language modelling: tokens per training sequence
    max_len: int = 128  # translation: longest sentence kept, in tokens; minilm: tokens kept per sentence
    tokenizer: str | None = None  # text tasks: tokenizer file to reuse (default: trained and saved in the run dir)


@dataclass
class ModelConfig:
    name: str = "mlp"  # model name (sparsebrain.models)
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256])  # MLP hidden widths; papers: 1568 x 3
    dropout: float = 0.0
    size: str | None = None  # named size of a transformer, e.g. llama-60m
    options: dict[str, Any] = field(default_factory=dict)  # extra model arguments, e.g. {tie_embeddings: true}
    # a run directory or checkpoint whose model weights start this run, before sparsification (dense -> N:M retraining)
    init_from: str | None = None


OPTIMIZER_IMPLS = ("auto", "for", "foreach", "fused")


@dataclass
class TrainConfig:
    epochs: int = 30
    steps: int | None = None  # optimizer steps of the run; overrides epochs (language models count steps)
    eval_interval: int | None = None  # steps between evaluations; None = every eval_every epochs
    batch_size: int = 32  # the papers' MLP recipe
    optimizer: str = "sgd"  # sgd or adamw
    lr: float = 0.025  # start of the linear learning-rate decay
    lr_end: float = 0.00025  # end of it (papers: 0.025 -> 0.00025)
    lr_schedule: str = "linear"  # linear or cosine decay from lr to lr_end, after warmup_steps of linear warmup
    warmup_steps: int = 0
    restart_warmup: int = 0  # steps of warm restart after each topology update (Transformer/LLM code: 10-20)
    grad_clip: float | None = None  # max gradient norm
    amp: str = "none"  # bf16 autocast on CUDA: none, bf16 or auto (= bf16 on CUDA)
    momentum: float = 0.9
    weight_decay: float = 0.0005
    device: str = "auto"  # auto (cuda if available), cpu, cuda, cuda:1, ...
    eval_every: int = 1  # epochs between evaluations on the test set
    checkpoint_every: int = 1  # evaluations between checkpoints (one is also written at the end and on SIGINT/SIGTERM)
    threads: int | None = None  # torch CPU threads; None = torch's default
    # how the optimizer runs: auto (fused kernels on CUDA, torch's default elsewhere), for, foreach or fused;
    # rounding only, so a run may resume with another
    optimizer_impl: str = "auto"
    # torch.compile the model in place (its state dict keys stay); masks change in place at topology updates, so the
    # compiled graphs stay valid; semi_structured layers run eagerly between compiled parts. Rounding only, so a run
    # may resume with the other setting
    compile: bool = False
    # micro-batches per optimizer step: each step's batch (train.batch_size) is cut into this many equal slices, run
    # forward and backward one at a time, gradients summed; the same batches and the same step as without, at a
    # fraction of the activation memory. Rounding only, so a run may resume with another
    grad_accum: int = 1


@dataclass
class SparsityConfig:
    method: str = "chtss"  # see `sparsebrain list`
    density: float = 0.05  # fraction of links kept in the sparse layers
    update_interval: int | None = None  # steps between topology updates; None = once per epoch (the papers' MLPs)
    options: dict[str, Any] = field(default_factory=dict)  # any MethodConfig field, e.g. {regrowth: ch3_l3p}
    label: str | None = None  # name in reports (default: the method); e.g. "chts[regrowth=ch3_l3p]"


@dataclass
class ExperimentConfig:
    name: str = "default"  # experiment name: runs go to OUT_DIR/NAME/MODEL-METHOD_dDENSITY_sSEED
    seed: int = 0
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)

    def validate(self) -> ExperimentConfig:
        """Checks values that types alone do not (ranges, names), raising ``ConfigError`` naming the key."""
        from ..data import DATASETS
        from ..dst.methods import resolve_method
        from ..models import MODELS
        from .tasks.sequence import SEQUENCE_DATA, SEQUENCE_MODELS

        def need(ok: bool, key: str, what: str, value: Any) -> None:
            if not ok:
                raise ConfigError(f"config key {key!r} must be {what}, got {value!r}")

        t = self.train
        need(t.epochs >= 1, "train.epochs", "an integer >= 1", t.epochs)
        need(t.steps is None or t.steps >= 1, "train.steps", "null or an integer >= 1", t.steps)
        need(t.eval_interval is None or t.eval_interval >= 1, "train.eval_interval", "null or >= 1", t.eval_interval)
        need(t.lr_schedule in ("linear", "cosine"), "train.lr_schedule", "one of 'linear', 'cosine'", t.lr_schedule)
        need(t.warmup_steps >= 0, "train.warmup_steps", ">= 0", t.warmup_steps)
        need(t.restart_warmup >= 0, "train.restart_warmup", ">= 0", t.restart_warmup)
        need(t.grad_clip is None or t.grad_clip > 0, "train.grad_clip", "null or > 0", t.grad_clip)
        need(t.amp in ("none", "bf16", "auto"), "train.amp", "one of 'none', 'bf16', 'auto'", t.amp)
        need(t.optimizer_impl in OPTIMIZER_IMPLS, "train.optimizer_impl",
             f"one of {', '.join(map(repr, OPTIMIZER_IMPLS))}", t.optimizer_impl)  # fmt: skip
        need(isinstance(t.compile, bool), "train.compile", "true or false", t.compile)
        need(isinstance(t.grad_accum, int) and t.grad_accum >= 1, "train.grad_accum", "an integer >= 1", t.grad_accum)
        need(t.batch_size % t.grad_accum == 0, "train.grad_accum",
             f"a divisor of train.batch_size = {t.batch_size} (equal slices of each batch)", t.grad_accum)  # fmt: skip
        need(t.batch_size >= 1, "train.batch_size", "an integer >= 1", t.batch_size)
        need(t.lr > 0, "train.lr", "> 0", t.lr)
        need(t.lr_end >= 0, "train.lr_end", ">= 0", t.lr_end)
        # torch would refuse a negative momentum or weight decay only once the optimizer is built; momentum >= 1
        # makes SGD's velocity grow without bound
        need(0 <= t.momentum < 1, "train.momentum", "a number in [0, 1) (SGD's momentum)", t.momentum)
        need(t.weight_decay >= 0, "train.weight_decay", "a number >= 0", t.weight_decay)
        for key, seed in (("seed", self.seed), ("data.split_seed", self.data.split_seed)):
            need(0 <= seed <= MAX_SEED, key, "an integer in [0, 2^63 - 1]", seed)
        need(t.optimizer in ("sgd", "adamw"), "train.optimizer", "one of 'sgd', 'adamw'", t.optimizer)
        need(t.eval_every >= 1, "train.eval_every", "an integer >= 1", t.eval_every)
        need(t.checkpoint_every >= 1, "train.checkpoint_every", "an integer >= 1", t.checkpoint_every)
        need(t.threads is None or t.threads >= 1, "train.threads", "null or an integer >= 1", t.threads)
        need(0 < self.data.test_fraction < 1, "data.test_fraction", "in (0, 1)", self.data.test_fraction)
        need(0 < self.data.val_fraction < 1, "data.val_fraction", "in (0, 1)", self.data.val_fraction)
        hidden = self.model.hidden
        if self.model.name == "mlp":  # the other models take their widths from model.options or model.size
            need(len(hidden) >= 1 and all(h >= 1 for h in hidden), "model.hidden",
                 "a non-empty list of widths >= 1 (the hidden layers of mlp)", hidden)  # fmt: skip
        elif self.model.name == "vit":
            need(len(hidden) == 1 and hidden[0] >= 1, "model.hidden", "one width >= 1 for vit, e.g. [128]", hidden)
        else:
            need(all(h >= 1 for h in hidden), "model.hidden", "a list of positive widths", hidden)
        need(0 <= self.model.dropout < 1, "model.dropout", "in [0, 1)", self.model.dropout)
        s = self.sparsity
        need(0 < s.density <= 1, "sparsity.density", "in (0, 1]", s.density)
        need(
            s.update_interval is None or s.update_interval >= 1,
            "sparsity.update_interval",
            "null or an integer >= 1",
            s.update_interval,
        )
        try:
            MODELS.get(self.model.name)
        except ValueError as e:
            raise ConfigError(f"config key 'model.name': {e}") from None
        _check_model_options(self.model.name, self.model.options)
        need(
            not (self.data.name == "mnist_idx" and self.data.path is None),
            "data.path",
            "set for data.name 'mnist_idx' (a directory holding the four MNIST IDX files; there is no default)",
            self.data.path,
        )
        # the model decides the task, and the task which data sets fit it
        if self.model.name == "llama":
            from ..data import text

            data_registry = text.CORPORA
        elif self.model.name == "seq2seq":
            data_registry = {"bible_en_es"}  # the one parallel corpus we can have offline
        elif self.model.name == "minilm":
            from ..data.sentences import sentence_corpora

            data_registry = set(sentence_corpora())  # the text corpora, or "file" (data.path: one sentence a line)
        elif self.model.name in SEQUENCE_MODELS:
            data_registry = set(SEQUENCE_DATA)  # generated from data.split_seed, not loaded
        else:
            data_registry = DATASETS
        if isinstance(data_registry, set):
            need(
                self.data.name in data_registry,
                "data.name",
                f"one of {sorted(data_registry)} for {self.model.name}",
                self.data.name,
            )
        else:
            try:
                data_registry.get(self.data.name)
            except ValueError as e:
                raise ConfigError(f"config key 'data.name' (for model {self.model.name!r}): {e}") from None
        need(
            self.data.vocab_size >= 300,
            "data.vocab_size",
            "an integer >= 300 (256 bytes + specials)",
            self.data.vocab_size,
        )
        need(self.data.seq_len >= 2, "data.seq_len", "an integer >= 2", self.data.seq_len)
        need(self.data.max_len >= 4, "data.max_len", "an integer >= 4", self.data.max_len)
        try:
            method = resolve_method(s.method, **s.options)
        except (TypeError, ValueError) as e:  # TypeError: a number given as a string, e.g. {initial_density: "0.5"}
            raise ConfigError(f"config key 'sparsity': {e}") from None
        nm = method.nm if method.sparse else None
        if nm is not None and abs(s.density - nm[0] / nm[1]) > 1e-9:
            need(
                False, "sparsity.density", f"{nm[0] / nm[1]:g} for the {method.pattern} method {s.method!r}", s.density
            )
        return self


# ------------------------------------------------------------------------------------------------------------------
# model.options


def _keyword_names(fn: Any) -> tuple[set[str], bool]:
    """The parameters ``fn`` takes by keyword, and whether it also takes ``**kwargs`` that go nowhere we know.

    A class whose ``__init__`` passes ``**kwargs`` on to its base (``SparseTransformer`` -> ``SequenceTransformer``)
    takes the base's parameters too.
    """
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names: set[str] = set()
    for target in fn.__mro__ if inspect.isclass(fn) else (fn,):
        if inspect.isclass(target) and "__init__" not in vars(target):
            continue
        params = inspect.signature(target).parameters
        names |= {p for p, v in params.items() if v.kind in kinds}
        if not any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values()):
            return names, False
        if not inspect.isclass(target) or target.__module__.startswith("torch"):
            return names, True
    return names, True


def model_options(model: str) -> tuple[list[str], dict[str, str]] | None:
    """The keys ``model.options`` takes for ``model``, and the arguments its task sets itself (key -> from where).

    Read from the signatures of what the task builds with the options, so a new model argument is an option at
    once. None for a model whose task is not known here (its options are left to the model).

    Example:
        >>> model_options("vit")[0]
        ['depth', 'heads', 'image_size', 'input_shape', 'mlp_ratio', 'patch']
    """
    from ..models import MODELS, LlamaConfig, LlamaLM, Seq2SeqConfig

    data = "the data set"
    fixed = {"device": "train.device", "dtype": "train.device and train.amp"}
    if model in ("mlp", "vit"):
        chain: list[Any] = [MODELS.get(model)]
        fixed |= {"in_features": data, "out_features": data, "hidden": "model.hidden", "dropout": "model.dropout"}
    elif model == "llama":  # model.dropout is the default of options.dropout
        chain = [LlamaLM.from_name, LlamaConfig]
        fixed |= {"name": "model.size", "vocab_size": "data.vocab_size", "max_seq_len": "data.seq_len"}
    elif model == "seq2seq":
        chain = [Seq2SeqConfig]
        fixed |= dict.fromkeys(("src_vocab", "tgt_vocab"), "data.vocab_size") | {"max_len": "data.max_len"}
        fixed |= dict.fromkeys(("pad_id", "bos_id", "eos_id"), "the tokenizer") | {"dropout": "model.dropout"}
    elif model == "minilm":
        return ["path"], {}
    elif model == "rsgn" or model.startswith("seq_"):
        from ..models.sequence_baselines import build_sequence_baseline

        # the baselines are built by build_sequence_baseline (its budget), which passes the rest to the class
        chain = [MODELS.get(model)] if model == "rsgn" else [build_sequence_baseline, MODELS.get(model)]
        fixed |= {"name": "model.name", "input_dim": data, "num_classes": data, "seq_len": data}
    else:
        return None
    names: set[str] = set()
    for fn in chain:  # each one's **kwargs go to the next; the last one's would go nowhere we know
        more, open_ended = _keyword_names(fn)
        names |= more
    if open_ended:
        return None
    return sorted(names - set(fixed)), {k: v for k, v in fixed.items() if k in names}


def _check_model_options(model: str, options: dict[str, Any]) -> None:
    known = model_options(model)
    if known is None:
        return
    valid, fixed = known
    for key in options:
        if key in valid:
            continue
        if key in fixed:
            raise ConfigError(
                f"config key 'model.options': option {key!r} for model {model!r} is set from {fixed[key]}, "
                "not model.options"
            )
        msg = f"config key 'model.options': unknown option {key!r} for model {model!r}"
        if not valid:
            raise ConfigError(f"{msg}, which takes no options")
        close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
        hint = f". Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{msg}; valid options: {', '.join(valid)}{hint}")


# ------------------------------------------------------------------------------------------------------------------
# dict <-> dataclass with type checks


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Checks ``value`` against the annotation ``tp`` (int, float, str, bool, list[int], X | None, dict, dataclass)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping of {sorted(_field_names(tp))}, got {value!r}")
        return config_from_dict(value, tp, prefix=key + ".")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r} must be a list of {_type_name(item)}, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is float and isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-12 (no dot) as a string
    if (tp is int and isinstance(value, bool)) or not isinstance(value, tp):
        raise ConfigError(f"config key {key!r} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is float and not math.isfinite(value):
        # no float key has a use for NaN or infinity, and NaN passes no range check while inf passes many
        raise ConfigError(f"config key {key!r} must be a finite number, got {value!r}")
    return value


def _field_names(cls: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _unknown_key(key: str, valid: set[str], prefix: str) -> ConfigError:
    msg = f"unknown config key {prefix + key!r}; valid keys here: {', '.join(sorted(valid))}"
    close = [prefix + c for c in difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.5)]
    # a key of another section (--epochs for --train.epochs): its exact name wins over a near miss here
    elsewhere = _section_keys()
    dotted = [f"{section}.{key}" for section, names in elsewhere.items() if key in names]
    if not dotted and not close:
        every = sorted(f"{section}.{name}" for section, names in elsewhere.items() for name in names)
        by_name = {d.partition(".")[2]: d for d in every}
        dotted = [by_name[c] for c in difflib.get_close_matches(key, sorted(by_name), n=1, cutoff=0.6)]
    close = [d for d in dotted if d != prefix + key] or close
    if close:
        msg += ". Did you mean " + " or ".join(map(repr, close)) + "?"
    return ConfigError(msg)


def _section_keys() -> dict[str, set[str]]:
    """Each section of :class:`ExperimentConfig` (``data``, ``model``...) and its keys."""
    hints = typing.get_type_hints(ExperimentConfig)
    return {name: _field_names(tp) for name, tp in hints.items() if dataclasses.is_dataclass(tp)}


def config_from_dict(data: dict[str, Any], cls: Any = ExperimentConfig, prefix: str = "") -> Any:
    """Builds the dataclass ``cls`` from a nested dict, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = _field_names(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key(str(key), names, prefix)
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts (what ``config.yaml`` holds)."""
    return dataclasses.asdict(cfg)


# ------------------------------------------------------------------------------------------------------------------
# overrides and files


def yaml_problem(error: Exception) -> str:
    """The one-line reason of a YAML parser error (its own report is a multi-line excerpt with a caret).

    Example:
        >>> import yaml
        >>> try:
        ...     yaml.safe_load("[64, 64")
        ... except yaml.YAMLError as e:
        ...     print(yaml_problem(e))
        expected ',' or ']', but got '<stream end>'
    """
    return getattr(error, "problem", None) or str(error).splitlines()[0]


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Turns ``["--sparsity.density", "0.01", "--seed=1"]`` into ``{"sparsity.density": 0.01, "seed": 1}``.

    Values are read as YAML scalars or flow collections (``0.01``, ``null``, ``[512, 512]``, ``{zeta: 0.5}``).
    """
    import yaml

    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) <= 2:
            raise ConfigError(f"expected an override like --train.epochs 10, got {arg!r}")
        if "=" in arg:
            key, raw = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override {arg!r} needs a value")
            key, raw = arg[2:], args[i + 1]
            i += 2
        key = key.replace("-", "_")
        try:
            out[key] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(
                f"override --{key} {raw!r} is not valid YAML: {yaml_problem(e)} (write lists as [64, 64], mappings as "
                "{zeta: 0.1}, and quote the value in the shell)"
            ) from None
    return out


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Sets dotted keys in a nested dict (a copy); unknown keys are caught later by :func:`config_from_dict`."""
    import copy

    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"cannot set {dotted!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML config file, before overrides and validation (``{}`` for an empty file)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))  # not the locale's encoding: the same on every machine
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {str(p)!r} must be UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start} is not "
            "valid UTF-8)"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
    return loaded or {}


def load_config(path: str | Path | None, overrides: list[str] | dict[str, Any] | None = None) -> ExperimentConfig:
    """Reads a YAML config (None: the built-in defaults), applies overrides, checks types and values."""
    data = read_config_file(path) if path is not None else {}
    if overrides:
        data = apply_overrides(data, overrides if isinstance(overrides, dict) else parse_overrides(overrides))
    return config_from_dict(data).validate()


def dump_config(cfg: ExperimentConfig) -> str:
    """YAML text of the resolved config."""
    import yaml

    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
