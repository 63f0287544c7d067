"""Which code produced a result: the checkout's commit, and whether its tracked files differ from that commit."""

from __future__ import annotations

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
