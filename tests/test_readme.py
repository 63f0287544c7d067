"""The README's training loop runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _block_after(heading: str) -> str:
    text = README.read_text()
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


def test_readme_training_loop_runs(capsys) -> None:  # type: ignore[no-untyped-def]
    code = _block_after("## A training loop")
    namespace: dict = {}  # type: ignore[type-arg]
    exec(compile(code, str(README), "exec"), namespace)
    sparsifier = namespace["sparsifier"]
    assert sparsifier.stats()["updates"] == 1
    density_line = capsys.readouterr().out.split()
    assert abs(float(density_line[0]) - sparsifier.stats()["density"]) < 1e-9


def test_readme_rule_registration_runs() -> None:
    import sparsebrain as sb

    code = _block_after("New rules are registered functions")
    namespace: dict = {"sb": sb, "torch": __import__("torch")}  # type: ignore[type-arg]
    try:
        exec(compile(code, str(README), "exec"), namespace)
        assert "my_rule" in sb.dst.REGROWTHS
    finally:
        sb.dst.REGROWTHS._items.pop("my_rule", None)
