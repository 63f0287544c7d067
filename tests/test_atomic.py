"""The package's one atomic write: the old file or the new one, never a mix, no temporaries left, umask permissions."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from sparsebrain._atomic import atomic_write


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write(target, lambda f: f.write(b"old"))

    def half(f):  # type: ignore[no-untyped-def]
        f.write(b"new, but cut")
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        atomic_write(target, half)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_the_file_gets_the_umasks_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "r.md", lambda f: f.write(b"x"), fsync=False)
    finally:
        os.umask(old)
    assert (tmp_path / "r.md").stat().st_mode & 0o777 == 0o644  # readable by the group, as a shared report must be


def test_writers_of_one_file_at_once_each_write_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "shared.txt"
    contents = [bytes([65 + i]) * 200_000 for i in range(8)]
    threads = [threading.Thread(target=atomic_write, args=(target, lambda f, c=c: f.write(c))) for c in contents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_bytes() in contents
    assert [p.name for p in tmp_path.iterdir()] == ["shared.txt"]
