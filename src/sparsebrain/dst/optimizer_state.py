"""Resetting an optimizer's per-parameter state where a sparse layer's links changed."""

from __future__ import annotations

import torch
from torch import Tensor

from ..nn.layer import StateMoved
from ..nn.sharding import full, is_sharded, local, local_view, write_full_

__all__ = ["reset_state_"]


@torch.no_grad()
def reset_state_(optimizer: torch.optim.Optimizer, param: Tensor, keep: Tensor | StateMoved) -> None:
    """Zeroes every state tensor of ``param`` shaped like ``param`` (momentum, Adam's moments...) where ``keep``
    is False; with :class:`~sparsebrain.nn.layer.StateMoved` (the parameter's entries moved), moves each state
    tensor of the old shape to the new entries, zero for new ones.

    This covers every optimizer whose per-parameter state has the parameter's shape: SGD, Adam, AdamW and their
    foreach and fused variants; scalar state (Adam's ``step``) is left alone. State sharded like its parameter
    (FSDP2) is reset on this rank's part.

    Example:
        >>> p = torch.nn.Parameter(torch.ones(2, 2)); opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
        >>> p.grad = torch.ones(2, 2); opt.step()
        >>> reset_state_(opt, p, torch.eye(2, dtype=torch.bool))
        >>> opt.state[p]["momentum_buffer"].tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    state = optimizer.state.get(param)
    if not state:
        return
    if isinstance(keep, StateMoved):
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == keep.old_shape and value.dim() > 0:
                if is_sharded(value):  # sharded like its parameter (FSDP2), whose shape stays: rewritten in place
                    write_full_(value, keep.apply(full(value)))
                else:
                    state[key] = keep.apply(value).view(param.shape)
        return
    for value in state.values():
        if torch.is_tensor(value) and value.shape == param.shape:
            local(value).mul_(local_view(value, keep))
