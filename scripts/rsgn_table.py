"""The markdown table of results/rsgn: best test accuracy (the paper's metric), final accuracy, parameters and the
mean fraction of active nodes per input, over the seeds of every model on both tasks.

Example:
    python scripts/rsgn_table.py results/rsgn
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
from pathlib import Path
from typing import Any

TASKS = ("hierarchical", "long_range")
HEADER = "| model | parameters | seeds | best test acc (%) | final test acc (%) | active nodes |"


def _summary(run: Path) -> dict[str, Any] | None:
    for name, opener in (("summary.json.gz", gzip.open), ("summary.json", open)):
        if (run / name).exists():
            with opener(run / name, "rt") as f:
                return json.load(f)
    return None


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def table(root: Path) -> str:
    """One markdown table per task; rows in the order of the directory names."""
    out = []
    for task in TASKS:
        out += [f"### {task}", "", HEADER, "|---|---:|---:|---:|---:|---:|"]
        for group in sorted(p for p in (root / task).iterdir() if p.is_dir()):
            runs = [s for s in (_summary(r) for r in sorted(group.iterdir()) if r.is_dir()) if s]
            if not runs:
                continue
            best = [100 * s["metrics"]["best_test_acc"] for s in runs]
            final = [100 * s["metrics"]["test_acc"] for s in runs]
            active = [s["metrics"]["active_fraction"] for s in runs if "active_fraction" in s["metrics"]]
            shown = f"{100 * statistics.mean(active):.1f}%" if active else "-"
            out.append(
                f"| {runs[0]['method']} | {runs[0]['data']['parameters']:,} | {len(runs)} | {_mean_std(best)} "
                f"| {_mean_std(final)} | {shown} |"
            )
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="directory with hierarchical/ and long_range/ compare outputs")
    print(table(parser.parse_args().root))


if __name__ == "__main__":
    main()
