"""Misuse of compare, report, retrain and list: one clear line and exit 2, never a traceback (in-process, fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sparsebrain as sb
from sparsebrain.cli import main


def _one_line_error(capsys, argv: list[str], *words: str) -> str:  # type: ignore[no-untyped-def]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sparsebrain: error: "), err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_malformed_method_variant_value_names_the_variant(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _one_line_error(capsys, ["compare", "--methods", "chts[zeta={a]", "--out", str(tmp_path)], "chts[zeta={a]", "zeta")


def test_a_variant_of_an_n_m_method_is_checked_at_the_grid_density(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The variant's own option is what is wrong, not the default density an N:M method would refuse."""
    argv = ["compare", "--methods", "chts24[storage=csr]", "--densities", "0.5", "--out", str(tmp_path / "grid")]
    line = _one_line_error(capsys, argv, "storage must be one of")
    assert "density" not in line and not (tmp_path / "grid").exists()


@pytest.mark.parametrize("seeds", ["-1", str(2**63), "0,1.5"])
def test_compare_checks_every_seed_before_running(capsys, tmp_path: Path, seeds: str) -> None:  # type: ignore[no-untyped-def]
    _one_line_error(capsys, ["compare", "--seeds", seeds, "--out", str(tmp_path / "grid")], "seed")
    assert not (tmp_path / "grid").exists()  # nothing ran, nothing was written


@pytest.mark.parametrize(
    ("content", "word"),
    [
        (b"chtss: [90.5", "YAML"),
        (b"chtss: \xff\xfe90", "UTF-8"),
        (b"- 90.5\n", "must map"),
        (None, "does not exist"),
    ],
)
def test_bad_published_file_is_one_line(capsys, tmp_path: Path, content: bytes | None, word: str) -> None:  # type: ignore[no-untyped-def]
    published = tmp_path / "published.yaml"
    if content is not None:
        published.write_bytes(content)
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "summary.json").write_text('{"status": "finished", "method": "set", "seed": 0, "density": 0.1}')
    _one_line_error(capsys, ["report", str(tmp_path / "runs"), "--published", str(published)], "--published", word)


def test_retrain_from_a_missing_run_says_it_does_not_exist(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "runs" / "fmnist_vit" / "vit-dense_d1_s0"
    _one_line_error(capsys, ["retrain", "--from", str(missing)], str(missing), "does not exist")


def test_list_names_the_regrowth_candidate_rules(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("regrowth candidates"))
    assert "absent" in line and "after_removal" in line


def test_loading_a_mask_of_the_wrong_shape_is_refused() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Linear(6, 2))
    sb.sparsify_(model, 0.5)
    state = model.state_dict()
    state["0.mask"] = torch.ones(6, 9, dtype=torch.bool)  # the weight keeps its shape: only the mask is wrong
    fresh = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Linear(6, 2))
    sb.sparsify_(fresh, 0.5)
    with pytest.raises(RuntimeError, match=r"'0'.*mask.*\(6, 9\).*\(6, 8\)"):
        fresh.load_state_dict(state)
    assert tuple(sb.sparse_layers(fresh)["0"].mask.shape) == (6, 8)
