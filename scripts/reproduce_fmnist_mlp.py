"""Fashion-MNIST MLP reproduction on one GPU inside a fixed wall-clock budget.

Every method gets the same number of epochs. A one-epoch probe of the whole grid, run in parallel exactly like the
real one, measures how long an epoch takes under full load; the epoch count is then the largest that fits the
budget (at most --max-epochs, the papers' 100). Writes the runs, the report and a tarball of the small files.

    python scripts/reproduce_fmnist_mlp.py --data /usr/share/datasets/fashion-mnist --out runs/repro --budget-s 480
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

METHODS = "dense,static,set,rigl,mest,gmp,granet,cht,chts,chts[regrowth=ch3_l3p],chtss"


def compare(args: argparse.Namespace, out: Path, epochs: int, extra: list[str]) -> float:
    cmd = [
        sys.executable, "-m", "sparsebrain", "compare", "--config", args.config, "--methods", args.methods,
        "--seeds", args.seeds, "--jobs", str(args.jobs), "--out", str(out), "--train.epochs", str(epochs),
        "--published", args.published, *extra,
    ]  # fmt: skip
    if args.data:
        cmd += ["--data.path", args.data]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/fmnist_mlp.yaml")
    ap.add_argument("--published", default="configs/fmnist_mlp_published.yaml")
    ap.add_argument("--data", default=None, help="directory of the four Fashion-MNIST IDX files")
    ap.add_argument("--out", required=True)
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=33)
    ap.add_argument("--budget-s", type=float, default=480.0, help="wall-clock seconds for probe + runs")
    ap.add_argument("--max-epochs", type=int, default=100)
    args, extra = ap.parse_known_args()
    out = Path(args.out)
    start = time.perf_counter()
    probe_total = compare(args, out / "probe", 1, extra)
    walls = [json.loads(p.read_text())["wall_time_s"] for p in (out / "probe").glob("*/summary.json")]
    if not walls:
        sys.exit("the probe produced no finished run; see the train.log files under " + str(out / "probe"))
    per_epoch = max(walls)  # the slowest run sets the pace
    overhead = probe_total - per_epoch  # process start, CUDA init, data loading, report
    left = args.budget_s - (time.perf_counter() - start) - overhead - 30.0  # margin for the report and tarball
    epochs = max(1, min(args.max_epochs, int(left // (per_epoch * 1.1))))
    plan = {"probe_total_s": probe_total, "per_epoch_s": per_epoch, "overhead_s": overhead, "epochs": epochs}
    print("plan:", json.dumps(plan), flush=True)
    (out / "plan.json").write_text(json.dumps(plan, indent=2))
    total = compare(args, out / "fmnist_mlp", epochs, extra)
    print(f"grid of {epochs} epochs finished in {total:.0f} s", flush=True)
    with tarfile.open(out / "fmnist_mlp.tar.gz", "w:gz") as tar:
        for p in sorted((out / "fmnist_mlp").rglob("*")):
            if p.is_file() and p.suffix != ".pt":  # checkpoints stay behind; summaries, metrics, report travel
                tar.add(p, arcname=str(p.relative_to(out)))
        tar.add(out / "plan.json", arcname="plan.json")


if __name__ == "__main__":
    main()
