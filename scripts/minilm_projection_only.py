"""valid_cos of MiniLM projected onto N:M patterns by magnitude, with no retraining (the row 'projection only').

Usage: python scripts/minilm_projection_only.py [MODEL_PATH] > out.json
"""

from __future__ import annotations

import json
import sys

import torch

import sparsebrain as sb
from sparsebrain.data.sentences import load_sentences
from sparsebrain.models.minilm import encode, load_minilm


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else None
    torch.manual_seed(0)
    _, valid = load_sentences("bbc_news")
    model, tok = load_minilm(path, max_len=128)
    dense = encode(model, tok, valid, batch_size=64)
    out = {"valid_sentences": len(valid), "torch": torch.__version__}
    for pattern in ("2:4", "1:4"):
        model, tok = load_minilm(path, max_len=128)
        sb.sparsify_nm_(model, pattern, init="nm_magnitude")  # the model's sparse_filter: q, k, v, o, up, down
        cos = (encode(model, tok, valid, batch_size=64) * dense).sum(1)  # both unit norm
        out[pattern] = {"valid_cos": float(cos.mean()), "valid_cos_min": float(cos.min())}
        print(pattern, out[pattern], file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
