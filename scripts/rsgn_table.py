"""The markdown table of results/rsgn: the test accuracy at the best validation epoch, the final test accuracy,
parameters and the mean fraction of active nodes per input, over the seeds of every model on both tasks.

Summaries written before the validation split hold only ``best_test_acc``, the maximum of the test accuracy over
epochs (the paper's metric, selected on the test set): such a cell is marked with a dagger and a footnote.

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
HEADER = "| model | parameters | seeds | test acc at best val acc (%) | final test acc (%) | active nodes |"
TEST_SELECTED = "† the maximum of the test accuracy over epochs (summaries from before the validation split)"


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
    marked = False
    for task in TASKS:
        out += [f"### {task}", "", HEADER, "|---|---:|---:|---:|---:|---:|"]
        for group in sorted(p for p in (root / task).iterdir() if p.is_dir()):
            runs = [s for s in (_summary(r) for r in sorted(group.iterdir()) if r.is_dir()) if s]
            if not runs:
                continue
            selected = all("test_acc_at_best_val" in s["metrics"] for s in runs)
            key = "test_acc_at_best_val" if selected else "best_test_acc"
            best = [100 * s["metrics"][key] for s in runs]
            marked |= not selected
            final = [100 * s["metrics"]["test_acc"] for s in runs]
            active = [s["metrics"]["active_fraction"] for s in runs if "active_fraction" in s["metrics"]]
            shown = f"{100 * statistics.mean(active):.1f}%" if active else "-"
            out.append(
                f"| {runs[0]['method']} | {runs[0]['data']['parameters']:,} | {len(runs)} | {_mean_std(best)}"
                f"{'' if selected else ' †'} "
                f"| {_mean_std(final)} | {shown} |"
            )
        out.append("")
    if marked:
        out += [TEST_SELECTED, ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="directory with hierarchical/ and long_range/ compare outputs")
    print(table(parser.parse_args().root))


if __name__ == "__main__":
    main()
