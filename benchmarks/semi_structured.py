"""2:4 inference on the sparse tensor cores: exported layers and a whole LLaMA forward pass against dense bf16.

Per layer shape (``--shapes``, ``in->out``; default the 4096 <-> 11008 pair, the llama-130m projections and the
1B-shaped ones), ``--tokens`` (16384) bf16 tokens, no bias: the dense ``nn.Linear``, the layer that
``sb.to_semi_structured`` exports (cuSPARSELt, compressed once, algorithm searched once) and, for comparison,
torch's ``to_sparse_semi_structured`` weight (a tensor subclass that prepares the product at every call). Each is
timed two ways: ``eager``, ``--calls`` (20) calls queued back to back between two synchronisations (as a model
runs them: the host prepares a call while the GPU runs the previous one), and ``graph``, the same calls captured in
one CUDA graph and replayed. The median over ``--repeats`` (10) rounds, divided by the calls, is the time per call.

Training on the sparse tensor cores is measured by ``semi_structured_training.py``.

Then a LLaMA-1B-shaped model (8 layers, dim 2048, intermediate 5504, vocabulary 32000) with all q/k/v/o/gate/up/down
transposable 2:4 (the chts24 preset's start) runs a prefill forward of ``--batch`` (8) x ``--seq`` (2048) tokens:
the masked dense model (the reference) against the exported one, eager and graphed, with the logits' largest
difference relative to their scale.

    python benchmarks/semi_structured.py --device cuda
    python benchmarks/semi_structured.py --tiny --device cpu   # smoke run: no sparse tensor cores, dense only
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from typing import Any

import _llama24
import torch
import torch.nn.functional as F
from _report import write_report
from _timing import per_call

import sparsebrain as sb
from sparsebrain.export import SEMI_STRUCTURED, SemiStructuredLinear
from sparsebrain.kernels import cusparselt
from sparsebrain.topology import best_transposable_mask

# bf16 products accumulate in float32 on both paths but round differently: through 8 blocks the logits stay within
# a few 1e-3 of their scale; 3e-2 would flag a misread layout (off by about 1) or a wrong algorithm
_LOGITS_RTOL = 3e-2
_SHAPES = "4096->11008,11008->4096,768->768,768->2048,2048->768,2048->2048,2048->5504,5504->2048"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _llama24.parser(__doc__, _SHAPES, "8,2048,16,5504,32000", "benchmarks/results/semi_structured.json")
    args = p.parse_args(argv)
    if args.tiny:
        _llama24.make_tiny(args)
    return args


def _sparse_cores(device: torch.device) -> bool:
    """Whether the run is on a CUDA device with cuSPARSELt (elsewhere only dense is timed)."""
    return device.type == "cuda" and cusparselt.available()


def graphed(fn: Callable[[], object], calls: int) -> Callable[[], object] | None:
    """A CUDA graph of ``calls`` calls of ``fn`` (its replay), or None where capture fails."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
    except RuntimeError as e:
        print(f"capture failed: {str(e).splitlines()[0]}")
        return None
    return graph.replay


def times(fn: Callable[[], object], device: torch.device, args: argparse.Namespace) -> dict[str, float | None]:
    out: dict[str, float | None] = {"eager_ms": per_call(fn, device, args.calls, args.repeats), "graph_ms": None}
    if device.type == "cuda":
        replay = graphed(fn, args.calls)
        if replay is not None:
            out["graph_ms"] = per_call(replay, device, 1, args.repeats) / args.calls
    return out


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.float() - ref.float()).abs().max() / ref.float().abs().max())


def ratios(dense: dict[str, float | None], other: dict[str, float | None]) -> dict[str, float | None]:
    """Dense time over the other's, per timing mode (above 1: faster than dense)."""
    out = {}
    for key in ("eager_ms", "graph_ms"):
        a, b = dense.get(key), other.get(key)
        out[key.removesuffix("_ms")] = a / b if a and b else None
    return out


def layer_row(n_in: int, n_out: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    g = torch.Generator(device=device).manual_seed(args.seed)
    w = torch.randn(n_out, n_in, generator=g, device=device)
    w = (w * best_transposable_mask(w.abs(), 2, 4)).to(torch.bfloat16)
    x = torch.randn(args.tokens, n_in, generator=g, device=device).to(torch.bfloat16)
    row: dict[str, Any] = {"in": n_in, "out": n_out, "tokens": args.tokens}
    with torch.no_grad():
        reference = F.linear(x, w)
        row["dense"] = times(lambda: F.linear(x, w), device, args)
        if not _sparse_cores(device):
            row["exported"] = row["torch_semi_structured"] = None
            return row
        layer = SemiStructuredLinear.from_cusparselt(w, None, tokens=args.tokens)
        row["exported"] = {"alg_id": layer.alg_id, "rel_err": rel_err(layer(x), reference)}
        row["exported"].update(times(lambda: layer(x), device, args))
        row["exported"]["speedup"] = ratios(row["dense"], row["exported"])
        weight = torch.sparse.to_sparse_semi_structured(w)
        row["torch_semi_structured"] = {"rel_err": rel_err(F.linear(x, weight), reference)}
        row["torch_semi_structured"].update(times(lambda: F.linear(x, weight), device, args))
        row["torch_semi_structured"]["speedup"] = ratios(row["dense"], row["torch_semi_structured"])
    print(f"{n_in}->{n_out}: {row}")
    return row


def model_row(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    config, described = _llama24.llama(args)
    vocab = config.vocab_size
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = sb.models.LlamaLM(config)
    # the chts24 preset's start: every q/k/v/o/gate/up/down transposable 2:4
    sb.DynamicSparsifier(model, None, method="chts24", total_steps=100, update_interval=10, seed=args.seed)
    model = model.to(torch.bfloat16).eval()
    exported = copy.deepcopy(model)
    report = {}
    if _sparse_cores(device):  # the algorithm searched for the prefill's tokens
        report = sb.to_semi_structured(exported, strict=True, tokens=args.batch * args.seq)
    ids = torch.randint(0, vocab, (args.batch, args.seq), device=device)
    row: dict[str, Any] = {
        "config": described,
        "batch": args.batch,
        "seq": args.seq,
        "sparse_layers": len(report),
        "semi_structured_layers": sum(v == SEMI_STRUCTURED for v in report.values()),
    }
    with torch.no_grad():
        reference = model(ids)
        row["dense"] = times(lambda: model(ids), device, args)  # the masked model: dense products with zeros
        if report:
            err = rel_err(exported(ids), reference)
            row["exported"] = {"rel_err": err, "within_tolerance": err <= _LOGITS_RTOL}
            row["exported"].update(times(lambda: exported(ids), device, args))
            row["exported"]["speedup"] = ratios(row["dense"], row["exported"])
    print(f"model: {row}")
    return row


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    start = time.perf_counter()
    shapes = _llama24.shapes(args)
    rows = [layer_row(n_in, n_out, args, device) for n_in, n_out in shapes]
    model = model_row(args, device) if args.model else None
    targets = []
    for (n_in, n_out), need in (((4096, 11008), 1.2), ((11008, 4096), 1.2), ((768, 768), 1.0), ((768, 2048), 1.0),
                                ((2048, 768), 1.0)):  # fmt: skip
        row = next((r for r in rows if (r["in"], r["out"]) == (n_in, n_out)), None)
        got = row["exported"]["speedup"] if row and row.get("exported") else None
        targets.append({"layer": f"{n_in}->{n_out}", "tokens": args.tokens, "at_least": need, "measured": got})
    if model is not None:
        got = model.get("exported", {}).get("speedup")
        targets.append({"model": model["config"], "tokens": args.batch * args.seq, "at_least": 1.1, "measured": got})
    for t in targets:
        m = t["measured"]
        t["reached"] = {k: v >= t["at_least"] for k, v in m.items() if v is not None} if m else None
    write_report(
        "semi_structured",
        device,
        args.out,
        settings={**{k: v for k, v in vars(args).items() if k != "out"}, "seconds": time.perf_counter() - start},
        definitions={
            "eager_ms": "ms per call, --calls calls queued between two synchronisations (median of --repeats)",
            "graph_ms": "ms per call, the same calls replayed from one CUDA graph",
            "speedup": "dense ms / this one's ms, per mode (above 1: faster than dense)",
            "rel_err": "max |this - dense masked| / max |dense masked|, bf16",
        },
        cusparselt=_sparse_cores(device),
        targets=targets,
        layers=rows,
        model=model,
    )


if __name__ == "__main__":
    main()
