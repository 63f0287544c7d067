"""What the two 2:4 benchmarks share: their command line (layer shapes, tokens, timing, a LLaMA shape) and how they
read it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

import sparsebrain as sb


def parser(doc: str, shapes: str, model: str, out: str) -> argparse.ArgumentParser:
    """The shared options, with this benchmark's default ``shapes``, ``model`` and ``out``."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shapes", default=shapes, help="comma-separated in->out")
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--model", default=model, help="layers,dim,heads,intermediate,vocab; '' skips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="small shapes and model, few calls")
    p.add_argument("--out", type=Path, default=Path(out))
    return p


def make_tiny(args: argparse.Namespace) -> None:
    """``--tiny``: small shapes and model, few calls (a smoke run)."""
    args.shapes, args.tokens, args.calls, args.repeats = "64->128,128->64", 256, 3, 3
    args.batch, args.seq, args.model = 2, 32, "2,64,4,128,100"


def shapes(args: argparse.Namespace) -> list[tuple[int, int]]:
    """``--shapes`` as ``(in, out)`` pairs."""
    return [(int(a), int(b)) for a, b in (s.split("->") for s in args.shapes.split(",") if s)]


def llama(args: argparse.Namespace) -> tuple[sb.models.LlamaConfig, dict[str, Any]]:
    """``--model`` as a config for ``--seq`` tokens, and as the JSON's record of it."""
    layers, dim, heads, intermediate, vocab = (int(v) for v in args.model.split(","))
    config = sb.models.LlamaConfig(
        vocab_size=vocab, dim=dim, n_layers=layers, n_heads=heads, intermediate=intermediate, max_seq_len=args.seq
    )
    return config, {"n_layers": layers, "dim": dim, "n_heads": heads, "intermediate": intermediate, "vocab": vocab}
