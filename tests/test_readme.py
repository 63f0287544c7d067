"""The README runs as written: every python block, and every command of its bash blocks with tiny budgets.

Python blocks run one by one, each in a fresh namespace (so each must state its own imports). Bash blocks run
command by command, in order, in a fresh working directory holding a copy of ``configs/``: ``sparsebrain ...`` and
``python -m sparsebrain ...`` through the installed command line, with :data:`BUDGET` appended to the commands that
train (and ``--seeds 0`` to ``compare``) and Fashion-MNIST cut to :data:`FMNIST_SUBSET` examples. Installs, the test
suite itself and the NVIDIA MPS daemon are not run; any other command fails the test, so that the README cannot
gain a command that nothing checks.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# Two optimizer steps of 16 examples with a topology update after the first (a method whose density schedule moves
# needs one), then the final evaluation and summary.
BUDGET = ["--train.steps", "2", "--train.batch_size", "16", "--sparsity.update_interval", "1"]
FMNIST_SUBSET = (256, 128)  # training and test examples kept from Debian's Fashion-MNIST
MLP_HIDDEN = ["--model.hidden", "[128, 128, 128]"]  # the papers' 1568 x 3 makes each topology update cost seconds
NOT_RUN = {  # first words of a command -> why it is not run here
    ("python", "-m", "pip"): "an install (this environment is installed already)",
    ("pip",): "an install (this environment is installed already)",
    ("python", "-m", "pytest"): "the test suite itself",
    ("nvidia-cuda-mps-control",): "the NVIDIA MPS daemon (GPU machines only)",
}
TRAINING = {"train", "retrain", "compare"}


class Block(NamedTuple):
    line: int  # of the opening fence
    heading: str  # the nearest heading above it
    code: str


def _blocks(language: str) -> list[Block]:
    text = README.read_text()
    blocks = []
    for match in re.finditer(rf"^```{language}\n(.*?)^```", text, re.S | re.M):
        before = text[: match.start()]
        headings = re.findall(r"^#+ (.*)$", before, re.M)
        blocks.append(Block(before.count("\n") + 1, headings[-1] if headings else "", match.group(1)))
    return blocks


def _block_after(heading: str) -> str:
    text = README.read_text()
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


# ------------------------------------------------------------------------------------------------- python blocks


def _check_training_loop(namespace: dict[str, Any], out: str) -> None:
    sparsifier = namespace["sparsifier"]
    assert sparsifier.stats()["updates"] == 1
    assert abs(float(out.split()[0]) - sparsifier.stats()["density"]) < 1e-9


def _check_rule_registration(namespace: dict[str, Any], out: str) -> None:
    import sparsebrain as sb

    assert "my_rule" in sb.dst.REGROWTHS


def _check_rsgn(namespace: dict[str, Any], out: str) -> None:
    assert namespace["model"].temperature < namespace["ref"].temperature  # annealed over the two epochs


CHECKS: dict[str, Callable[[dict[str, Any], str], None]] = {  # text of a block -> what the block must have done
    "sparsifier.step()": _check_training_loop,
    "register_regrowth": _check_rule_registration,
    "hebbian_update": _check_rsgn,
}


@pytest.fixture
def registries():  # type: ignore[no-untyped-def]
    """Restores the rule registries after a block registered its own rules."""
    import sparsebrain as sb

    kept = [(r, dict(r._items)) for r in (sb.dst.REGROWTHS, sb.dst.REMOVALS, sb.topology.INITS)]
    yield
    for registry, items in kept:
        registry._items.clear()
        registry._items.update(items)


@pytest.mark.parametrize("block", _blocks("python"), ids=lambda b: f"README.md:{b.line}")
def test_readme_python_block_runs(block: Block, tmp_path: Path, monkeypatch, capsys, registries) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)  # whatever a block writes lands here
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    code = "\n" * (block.line) + block.code  # tracebacks point at the README's own line numbers
    exec(compile(code, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    for needle, check in CHECKS.items():
        if needle in block.code:
            check(namespace, out)


def test_readme_blocks_are_found() -> None:
    python, bash = _blocks("python"), _blocks("bash")
    assert len(python) >= 5 and len(bash) >= 2
    assert any(b.heading == "A training loop" for b in python)
    assert any("sparsebrain retrain" in b.code for b in bash)


# --------------------------------------------------------------------------------------------------- bash blocks


def _commands(block: str) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments dropped, split at ``&&``."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        for token in ("|", ";", "||", "&"):
            assert token not in words, f"README command {line!r}: this test runs simple commands joined by && only"
        command: list[str] = []
        for word in [*words, "&&"]:
            if word == "&&":
                if command:
                    commands.append(command)
                command = []
            else:
                command.append(word)
    return commands


def _sparsebrain_args(command: list[str]) -> list[str] | None:
    for prefix in (["sparsebrain"], ["python", "-m", "sparsebrain"]):
        if command[: len(prefix)] == prefix:
            return command[len(prefix) :]
    return None


def _option(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _config_name(args: list[str], cwd: Path, section: str) -> str | None:
    """``data.name`` or ``model.name`` of the config a train / retrain / compare command starts from.

    None when the config cannot be read yet (it is missing: the command itself will say so).
    """
    import yaml

    name = _option(args, f"--{section}.name")
    if name is not None:
        return name
    config = _option(args, "--config")
    if config is None and args[0] == "retrain" and _option(args, "--from") is not None:
        config = str(Path(_option(args, "--from")) / "config.yaml")  # type: ignore[arg-type]
    data = {}
    if config is not None:
        try:
            data = yaml.safe_load((cwd / config).read_text()) or {}
        except OSError:
            return None
    return (data.get(section) or {}).get("name", {"data": "digits", "model": "mlp"}[section])  # the main job's


def _write_idx(path: Path, array: Any) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype("uint8").tobytes())


@pytest.fixture(scope="module")
def fmnist_subset(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """The first examples of Debian's Fashion-MNIST, as the four IDX files (None when it is not installed)."""
    from sparsebrain.data.idx import read_idx
    from sparsebrain.data.images import FASHION_MNIST_DIR, IDX_FILES, _find_idx_files

    found, missing = _find_idx_files(FASHION_MNIST_DIR)
    if missing:
        return None
    out = tmp_path_factory.mktemp("fashion_mnist")
    sizes = (FMNIST_SUBSET[0], FMNIST_SUBSET[0], FMNIST_SUBSET[1], FMNIST_SUBSET[1])
    for stem, path, n in zip(IDX_FILES, found, sizes):
        _write_idx(out / stem, read_idx(path)[:n])
    return out


def _budget(args: list[str], cwd: Path, fmnist: Path | None) -> list[str]:
    """What is appended to a sparsebrain command: tiny budgets for training, the Fashion-MNIST subset."""
    if args[0] not in TRAINING:
        return []
    extra = list(BUDGET) + (["--seeds", "0"] if args[0] == "compare" else [])
    if _config_name(args, cwd, "model") == "mlp" and args[0] != "retrain":  # a retrained model keeps its shape
        extra += MLP_HIDDEN
    if _config_name(args, cwd, "data") == "fashion_mnist":
        if fmnist is None:
            pytest.skip("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist")
        extra += ["--data.path", str(fmnist)]
    return extra


def _failed_run_logs(cwd: Path) -> str:
    """The console output of the runs ``compare`` started that did not finish (it keeps each in train.log)."""
    logs = [log for log in sorted(cwd.rglob("train.log")) if not (log.parent / "summary.json").exists()]
    return "".join(f"\n{log.relative_to(cwd)}:\n{log.read_text()[-2000:]}" for log in logs)


@pytest.mark.slow
@pytest.mark.parametrize("block", _blocks("bash"), ids=lambda b: f"README.md:{b.line}")
def test_readme_commands_run(block: Block, tmp_path: Path, fmnist_subset: Path | None) -> None:
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    ran = 0
    for command in _commands(block.code):
        why_not = next((why for first, why in NOT_RUN.items() if tuple(command[: len(first)]) == first), None)
        if why_not is not None:
            continue
        args = _sparsebrain_args(command)
        assert args, f"README.md:{block.line}: {shlex.join(command)!r} is a command this test does not know to run"
        full = [*args, *_budget(args, tmp_path, fmnist_subset)]
        proc = subprocess.run(
            [sys.executable, "-m", "sparsebrain", *full], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, (
            f"README.md:{block.line}: `{shlex.join(command)}` (run with {shlex.join(full[len(args) :]) or 'nothing'} "
            f"appended) exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
            + _failed_run_logs(tmp_path)
        )
        ran += 1
    assert ran, f"README.md:{block.line}: no command of this block was run"


def test_commands_split_and_budgets() -> None:
    block = "python -m pip install -e '.[test]' && python -m pytest -q   # the suite\n"
    block += "sparsebrain compare \\\n  --seeds 0,1\n"
    assert _commands(block) == [
        ["python", "-m", "pip", "install", "-e", ".[test]"],
        ["python", "-m", "pytest", "-q"],
        ["sparsebrain", "compare", "--seeds", "0,1"],
    ]
    assert _sparsebrain_args(["python", "-m", "sparsebrain", "list"]) == ["list"]
    assert _sparsebrain_args(["nvidia-smi"]) is None
    # The last --seeds wins; the main job is an MLP on the digits.
    assert _budget(["compare", "--seeds", "0,1,2"], ROOT, None) == [*BUDGET, "--seeds", "0", *MLP_HIDDEN]
    assert _budget(["report", "runs/x"], ROOT, None) == []
    vit = ["train", "--config", "configs/fmnist_vit.yaml"]
    assert _config_name(vit, ROOT, "data") == "fashion_mnist" and _config_name(vit, ROOT, "model") == "vit"
    assert _config_name([*vit, "--data.name=digits"], ROOT, "data") == "digits"
    assert _budget([*vit, "--data.name", "digits"], ROOT, None) == BUDGET


# --------------------------------------------------------------------------------------------- what it describes


def test_readme_nm_table_gives_each_preset_its_layout() -> None:
    import torch

    import sparsebrain as sb
    from sparsebrain.dst.methods import resolve_method
    from sparsebrain.topology import is_rowwise, is_transposable

    text = README.read_text()
    section = text[text.index("### Hardware-shaped sparsity") : text.index("New rules are registered functions")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert {p for row in rows for p in re.findall(r"`(\w+)`", row.split("|")[1])} >= {"asp", "ste", "srste", "chts24"}
    for row in rows:
        presets, pattern = (cell.strip() for cell in row.strip("|").split("|")[:2])
        for name in re.findall(r"`(\w+)`", presets):
            cfg = resolve_method(name)
            assert cfg.pattern_layout in pattern and cfg.pattern in pattern, (name, pattern)
    (asp,) = [row for row in rows if row.startswith("| `asp` |")]
    assert "row-wise" in asp and 'pattern_layout="rowwise"' in asp  # ASP's own default, and how to get it

    assert resolve_method("asp").pattern_layout == "transposable"
    assert resolve_method("asp", pattern_layout="rowwise").pattern_layout == "rowwise"
    for layout, transposable in (("transposable", True), ("rowwise", False)):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        kwargs = {} if layout == "transposable" else {"pattern_layout": "rowwise"}
        sb.DynamicSparsifier(model, opt, method="asp", total_steps=10, **kwargs)
        mask = model[0].mask
        assert is_rowwise(mask, 2, 4) and is_transposable(mask, 2, 4) == transposable, layout


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return out


def test_lm_configs_are_the_paper_and_the_authors_code_readings() -> None:
    from sparsebrain.dst.methods import resolve_method
    from sparsebrain.experiments.config import config_to_dict, load_config

    paper = load_config(ROOT / "configs/lm_shakespeare_bbc.yaml")
    code = load_config(ROOT / "configs/lm_shakespeare_bbc_authors_code.yaml")
    a, b = _flat(config_to_dict(paper)), _flat(config_to_dict(code))
    differ = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    # The name too, so that the two readings' runs never share (and skip each other's) run directories.
    assert differ == {"name", "sparsity.options.regrowth_sampling", "sparsity.options.zeta_schedule"}
    assert code.name == "lm_shakespeare_bbc_authors_code"
    method = paper.sparsity.method
    soft, topk = resolve_method(method, **paper.sparsity.options), resolve_method(method, **code.sparsity.options)
    assert (soft.regrowth_sampling, soft.zeta_schedule) == ("multinomial", "constant")  # the papers' soft regrowth
    assert (topk.regrowth_sampling, topk.zeta_schedule) == ("topk", "cosine")  # the code's top-k, --adaptive_zeta
    differ_but = {k: v for k, v in dataclasses.asdict(soft).items() if dataclasses.asdict(topk)[k] != v}
    assert set(differ_but) == {"regrowth_sampling", "zeta_schedule"}
    text = README.read_text()
    assert "lm_shakespeare_bbc_authors_code.yaml" in text and "lm_shakespeare_bbc.yaml" in text
