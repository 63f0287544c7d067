"""How large the reference RSGN's loss and Hebbian affinity step are in its first training steps (CPU, seconds).

Trains ``RSGN(variant="reference")`` on the hierarchical task with the paper's recipe (AdamW 1e-3, batch 64,
grad clip 1) and prints, every few steps, the cross-entropy and the mean absolute change of the affinity factor
``U`` made by ``hebbian_update(-loss)`` (beyond its decay). The numbers quoted in the README's notes on the
references come from this script.

Example:
    python scripts/rsgn_hebbian_step_size.py --steps 30 --seed 42
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from sparsebrain.data.rsgn_tasks import make_hierarchical
from sparsebrain.models import RSGN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--every", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    data = make_hierarchical(seed=42)
    model = RSGN(32, 20, variant="reference", num_nodes=256, steps=5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    for step in range(args.steps):
        idx = torch.randint(0, len(data.y_train), (64,))
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            before = model.affinity_u.clone()
            model.hebbian_update(-loss.item())
            step_size = (model.affinity_u - model.hebbian_decay * before).abs().mean().item()
        if step % args.every == 0:
            print(f"step {step:3d}  loss {loss.item():7.1f}  mean |Hebbian step of U| {step_size:.1e}")


if __name__ == "__main__":
    main()
