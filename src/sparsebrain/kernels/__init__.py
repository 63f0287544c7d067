"""Fused GPU kernels (Triton, imported lazily), each beside the plain-torch computation it must equal.

Every function here picks the kernel only where it runs (a CUDA tensor and an importable Triton) and otherwise the
torch reference, so the library works, and gives the same numbers, without Triton.
"""

from .grad_mask import masked_grad, masked_grad_reference

__all__ = ["masked_grad", "masked_grad_reference"]
