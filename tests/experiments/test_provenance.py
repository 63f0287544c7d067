"""Provenance: the commit and whether the tracked files differ from it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sparsebrain.experiments.provenance import git_state

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(root: Path, *args: str) -> str:
    cmd = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def test_commit_and_dirty_flag_follow_the_tracked_files(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-q", "-m", "one")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert git_state(tmp_path) == (head, False)
    (tmp_path / "untracked.txt").write_text("not code\n")
    assert git_state(tmp_path) == (head, False)  # untracked files do not make it dirty
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_state(tmp_path) == (head, True)  # the commit no longer names the code


def test_outside_a_checkout_records_nothing(tmp_path: Path) -> None:
    assert git_state(tmp_path) == (None, None)


def test_source_hash_names_the_code_not_where_it_lives(tmp_path: Path) -> None:
    from sparsebrain.experiments.provenance import source_hash

    for where in ("a", "b"):
        (tmp_path / where / "sub").mkdir(parents=True)
        (tmp_path / where / "x.py").write_text("x = 1\n")
        (tmp_path / where / "sub" / "y.py").write_text("y = 2\n")
        (tmp_path / where / "notes.txt").write_text(where)  # not source: ignored
    assert source_hash(tmp_path / "a") == source_hash(tmp_path / "b")
    (tmp_path / "b" / "sub" / "y.py").write_text("y = 3\n")
    assert source_hash(tmp_path / "a") != source_hash(tmp_path / "b")
    (tmp_path / "b" / "sub" / "y.py").rename(tmp_path / "b" / "y2.py")  # same bytes elsewhere: other code
    (tmp_path / "a" / "sub" / "y.py").write_text("y = 3\n")
    assert source_hash(tmp_path / "a") != source_hash(tmp_path / "b")
