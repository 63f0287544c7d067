"""Times one topology update of a 4096 x 11008 sparse layer per regrowth rule and density.

Writes a JSON file under benchmarks/results/ with the device, library versions, the command and, per rule and
density, the median wall time of (a) the regrowth score alone, on the mask before removal, and (b) a whole training
step with a ``DynamicSparsifier`` update (removal, regrowth scoring on the mask after removal, selection, weight and
optimizer-state reset). The update scores a mask with fewer links than (a) does, so for L3p (a) can be the longer.
Path-based predictors (CH2-L3p, CH3-L3p) are O(N d^3): they are timed on layers scaled down 16x, 8x, 4x, 2x per side
and then the full layer, stopping before a layer whose extrapolated time exceeds ``--l3p-budget`` seconds; the JSON
says which shapes were timed.

    python benchmarks/topology_update.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from _report import write_report
from _timing import timed

import sparsebrain as sb
from sparsebrain.dst.context import LayerView, UpdateContext
from sparsebrain.dst.regrowth import REGROWTHS

RULES = ["random", "gradient", "ch2_l3n", "ch3_l3n", "ch2_l3p", "ch3_l3p"]


def _setup(shape: tuple[int, int], density: float, rule: str, device: torch.device, seed: int):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(shape[1], shape[0], bias=False, device=device))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sp = sb.DynamicSparsifier(
        model,
        opt,
        method="set",
        density=density,
        filter_fn=lambda fqn, m: True,
        regrowth=rule,
        regrowth_sampling="multinomial" if rule.startswith("ch") else "topk",
        removal="soft_magnitude" if rule.startswith("ch") else "magnitude",
        update_interval=1,
        seed=seed,
    )
    x = torch.randn(64, shape[1], device=device)
    return model, opt, sp, x


def bench(  # type: ignore[type-arg]
    shape: tuple[int, int],
    density: float,
    rule: str,
    device: torch.device,
    repeats: int,
    seed: int,
    warmup: bool = True,
) -> dict:
    model, opt, sp, x = _setup(shape, density, rule, device, seed)
    layer = next(iter(sp.layers.values()))
    gen = torch.Generator(device=device).manual_seed(seed)
    ctx = UpdateContext(step=1, update_index=1, progress=0.0, zeta=0.3, temperature=1.0, generator=gen)

    def one_step() -> None:
        model(x).square().mean().backward()
        opt.step()
        sp.step()  # update_interval=1: every step is a topology update
        opt.zero_grad(set_to_none=True)

    def score_only() -> None:
        grad = torch.randn_like(layer.weight) if rule == "gradient" else None
        REGROWTHS.get(rule)(LayerView("0", layer, layer.mask, grad), ctx)

    if warmup:  # allocator and kernel start-up; skipped for the slow path-based rules, where it is negligible
        score_only()
        one_step()
    score_times = timed(score_only, device, repeats)
    update_times = timed(one_step, device, repeats)
    links = int(layer.mask.sum())
    assert links == round(density * layer.mask.numel()), "link count drifted"
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "rule": rule,
        "shape": list(shape),
        "density": density,
        "links": links,
        "score_seconds_median": statistics.median(score_times),
        "update_seconds_median": statistics.median(update_times),
        "update_seconds_all": update_times,
        "peak_gpu_memory_gib": peak,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shape", type=int, nargs=2, default=[4096, 11008], metavar=("OUT", "IN"))
    ap.add_argument("--densities", type=float, nargs="+", default=[0.05, 0.3])
    ap.add_argument("--rules", nargs="+", default=RULES)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--l3p-budget", type=float, default=60.0, help="seconds allowed for one L3p update")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/topology_update_<device>.json)")
    args = ap.parse_args()
    device = torch.device(args.device)
    shape = (args.shape[0], args.shape[1])
    results = []
    for density in args.densities:
        for rule in args.rules:
            if rule.endswith("_l3p"):
                # O(N d^3): time growing layers of the same aspect ratio; go to the next one only while the time
                # extrapolated from the last (N grows 2x, degrees 2x: about 16x) stays under the budget.
                done_full = False
                for div in (16, 8, 4, 2, 1):
                    sub = (max(1, shape[0] // div), max(1, shape[1] // div))
                    r = bench(sub, density, rule, device, 1, args.seed, warmup=False)
                    r["note"] = "path-based predictor" + ("" if div == 1 else f": layer scaled down {div}x per side")
                    results.append(r)
                    print(json.dumps(r), flush=True)
                    done_full = div == 1
                    if r["update_seconds_median"] * 16 > args.l3p_budget:
                        break
                if not done_full:
                    results[-1]["full_size_estimate_seconds"] = (
                        results[-1]["update_seconds_median"] * 16 ** ({16: 4, 8: 3, 4: 2, 2: 1}[div])
                    )
                continue
            r = bench(shape, density, rule, device, args.repeats, args.seed)
            results.append(r)
            print(json.dumps(r), flush=True)
    out = Path(args.out or f"benchmarks/results/topology_update_{device.type}.json")
    write_report("topology_update", device, out, results=results)


if __name__ == "__main__":
    main()
