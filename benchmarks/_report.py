"""What every benchmark JSON records (device, versions, commit, command) and its atomic write."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch

import sparsebrain as sb
from sparsebrain.experiments.provenance import git_state, source_hash


def write_report(name: str, device: torch.device, out: Path, **fields: Any) -> None:
    """Writes ``{"benchmark": name, command, device, versions, commit, **fields}`` to ``out`` atomically."""
    commit, dirty = git_state()
    report = {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "sparsebrain": sb.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "source_sha256": source_hash(),
        "python": platform.python_version(),
        **fields,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")
