"""Kernels of the sparse layers: plain-torch references beside the fast paths.

- :mod:`.csr_ops`: the products a compressed layer calls, dispatched to the device's kernels.
- :mod:`.csr_reference`: the plain-torch definitions every kernel is tested against.
- :mod:`.csr_triton`: the CUDA kernels (Triton; imported only when used).
- :mod:`.cusparselt`: 2:4 products on the sparse tensor cores (inference export, and training's products).
- :mod:`.packed24`: training with a transposable 2:4 weight held compressed as ``W`` and ``W^T``.
- :mod:`.packed24_triton`: the CUDA kernels that refresh the compressed weights' values (Triton).
"""
