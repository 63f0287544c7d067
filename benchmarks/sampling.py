"""Soft removal and soft regrowth sampling on one large layer, as the engine runs them, against the target.

A random ``--density`` (0.3) mask on an ``--shape`` (8192 x 28672) layer with random weights. Soft removal is the
CHTs rule: Frechet keys of ``|w|`` on the active links (``soft_magnitude``), then the ``(1 - zeta)`` share kept
(``keep_top``). Soft regrowth is ``select_regrowth`` with ``"multinomial"`` sampling: as many links as were removed,
drawn among the non-links with probability proportional to random non-negative scores (``"uniform"``, the CHTs24
rule, is timed too). Each figure is the median wall time over ``--repeats`` calls after a warm-up, synchronised at
both ends; the target is 5 ms each. ``full_array_reference`` times the selection as it was written before (keys and
one top-k over every position), in the same run.

    python benchmarks/sampling.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from _report import write_report
from _timing import timed
from torch import Tensor

from sparsebrain.topology.sampling import frechet_scores, keep_top, regrowth_keys, select_regrowth

TARGET_MS = 5.0


def full_array_removal(w: Tensor, mask: Tensor, k: int, g: torch.Generator) -> Tensor:
    """The earlier soft removal: keys at every position, one top-k over all of them."""
    key = frechet_scores(w.abs() * mask, 1.0, g).masked_fill(~mask, -torch.inf)
    out = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
    out[torch.topk(key.view(-1), k, sorted=False).indices] = True
    return out.view_as(mask)


def full_array_regrowth(scores: Tensor, cand: Tensor, k: int, sampling: str, g: torch.Generator) -> Tensor:
    """The earlier soft regrowth: keys at every position (non-candidates -inf), one top-k over all of them."""
    s = scores.float().clamp_min(0.0)
    pos = regrowth_keys(s, sampling, g).clamp_min(torch.finfo(torch.float32).tiny)
    fill = -torch.rand(s.shape, generator=g, device=s.device)
    key = torch.where(cand & (s > 0), pos, torch.where(cand, fill, torch.full_like(s, -torch.inf)))
    out = torch.zeros(s.numel(), dtype=torch.bool, device=s.device)
    out[torch.topk(key.view(-1), k, sorted=False).indices] = True
    return out.view_as(s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shape", type=int, nargs=2, default=[8192, 28672], metavar=("OUT", "IN"))
    ap.add_argument("--density", type=float, default=0.3)
    ap.add_argument("--zeta", type=float, default=0.1, help="share of the links removed")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/sampling_<device>.json)")
    args = ap.parse_args()
    device = torch.device(args.device)
    g = torch.Generator(device=device).manual_seed(args.seed)
    shape = tuple(args.shape)
    mask = torch.rand(shape, generator=g, device=device) < args.density
    w = torch.randn(shape, generator=g, device=device) * mask
    scores = torch.rand(shape, generator=g, device=device) * ~mask
    n_active = int(mask.sum())
    n_remove = round(args.zeta * n_active)
    n_keep = n_active - n_remove

    def soft_removal() -> Tensor:  # the engine's removal step: the rule's keys, then the links kept
        return keep_top(frechet_scores(w.abs(), 1.0, g, where=mask), mask, n_keep)

    kept = soft_removal()
    assert int(kept.sum()) == n_keep and not bool((kept & ~mask).any())
    cases: dict[str, Callable[[], object]] = {
        "soft_removal": soft_removal,
        "soft_regrowth_multinomial": lambda: select_regrowth(scores, ~mask, n_remove, "multinomial", g),
        "soft_regrowth_uniform": lambda: select_regrowth(scores, ~mask, n_remove, "uniform", g),
        "full_array_reference_soft_removal": lambda: full_array_removal(w, mask, n_keep, g),
        "full_array_reference_soft_regrowth_multinomial": lambda: full_array_regrowth(
            scores, ~mask, n_remove, "multinomial", g
        ),
    }
    results = {}
    for name, fn in cases.items():
        times = [t * 1e3 for t in timed(fn, device, args.repeats, warmup=True)]
        row = {"ms_median": statistics.median(times), "ms_all": times}
        if not name.startswith("full_array"):
            row["target_ms"] = TARGET_MS
            row["met"] = row["ms_median"] <= TARGET_MS
        results[name] = row
        print(name, json.dumps(row), flush=True)
    out = Path(args.out or f"benchmarks/results/sampling_{device.type}.json")
    write_report(
        "sampling",
        device,
        out,
        settings={
            "shape": list(shape),
            "density": args.density,
            "zeta": args.zeta,
            "active_links": n_active,
            "removed_links": n_remove,
            "repeats": args.repeats,
            "seed": args.seed,
        },
        results=results,
    )


if __name__ == "__main__":
    main()
