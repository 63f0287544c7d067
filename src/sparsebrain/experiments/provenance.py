"""Which code produced a result: the checkout's commit, whether its tracked files differ from that commit, and a hash
of the library's source itself (which names the code even where a copied checkout's commit is stale)."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[3]  # the checkout holding src/sparsebrain


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)


def git_state(root: Path | None = None) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout at ``root`` (default: sparsebrain's own); ``(None, None)`` outside one.

    ``dirty`` is True when tracked files differ from the commit: the commit alone does not name the code that ran
    (a copy of a working tree whose ``.git`` was not refreshed reports an older commit, and is dirty).

    Example:
        >>> commit, dirty = git_state()
    """
    root = _ROOT if root is None else root
    try:
        head = _git(root, "rev-parse", "HEAD")
        sha = head.stdout.strip()
        # outside a git checkout rev-parse fails (and may echo its argument): record nothing rather than "HEAD"
        if head.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40}", sha):
            return None, None
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
        return sha, (bool(status.stdout.strip()) if status.returncode == 0 else None)
    except (OSError, subprocess.SubprocessError):
        return None, None


def source_hash(package: Path | None = None) -> str:
    """Hex SHA-256 over the relative path and bytes of every ``.py`` file of the package, in sorted order.

    Two copies of the same code give the same hash, whatever their ``.git`` says: compare it with
    ``python -c "from sparsebrain.experiments.provenance import source_hash; print(source_hash())"`` in a checkout of
    the commit in question.

    Example:
        >>> len(source_hash())
        64
    """
    root = Path(__file__).resolve().parents[1] if package is None else Path(package)  # src/sparsebrain
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()
