"""Layer tensors that may be sharded: FSDP2 (``fully_shard``) turns parameters into DTensors, each rank holding rows.

Sparse layers and the engine edit weights and optimizer state in place through :func:`local` (this rank's storage)
and :func:`local_view` (this rank's part of a full tensor such as a mask), so the same code serves a plain tensor and
a sharded one. A DTensor carries its own mesh and placements: nothing here needs to know the distribution strategy.

Example:
    >>> import torch
    >>> w = torch.ones(2, 3)
    >>> local(w) is w, local_view(w, torch.zeros(2, 3)).shape
    (True, torch.Size([2, 3]))
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["full", "is_sharded", "local", "local_view", "write_full_"]


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch builds without distributed, or before DTensor was public
        return None
    return DTensor


def is_sharded(t: object) -> bool:
    """Whether ``t`` is a DTensor (a parameter of a model sharded by FSDP2, say)."""
    cls = _dtensor_type()
    return cls is not None and isinstance(t, cls)


def local(t: Tensor) -> Tensor:
    """The storage this rank holds of ``t``: its local shard if ``t`` is a DTensor (a view: in-place edits stick)."""
    return t.to_local() if is_sharded(t) else t  # type: ignore[attr-defined]


def local_view(like: Tensor, whole: Tensor) -> Tensor:
    """The part of ``whole``, a full tensor shaped like ``like``, that this rank's shard of ``like`` holds.

    ``whole`` itself when ``like`` is a plain tensor. For a DTensor the local chunk is cut without communication, for
    any placements (even or uneven rows, or columns).
    """
    if not is_sharded(like):
        return whole
    from torch.distributed.tensor import distribute_tensor

    # src_data_rank=None: every rank cuts its own chunk of its own (identical) tensor; the default would scatter
    # rank 0's data, a collective
    return distribute_tensor(whole, like.device_mesh, like.placements, src_data_rank=None).to_local()  # type: ignore[attr-defined]


def full(t: Tensor) -> Tensor:
    """``t`` as a full tensor: a collective (all-gather) for a DTensor, which every rank must call in the same order."""
    return t.full_tensor() if is_sharded(t) else t  # type: ignore[attr-defined]


def write_full_(t: Tensor, whole: Tensor) -> None:
    """Writes ``whole``, a full tensor shaped like ``t``, into ``t`` in place: only this rank's part of a DTensor.

    Example:
        >>> import torch
        >>> w = torch.zeros(2); write_full_(w, torch.ones(2)); w.tolist()
        [1.0, 1.0]
    """
    local(t).copy_(local_view(t, whole))
