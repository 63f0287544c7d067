"""Kernels of the sparse layers: plain-torch references beside the fast paths.

- :mod:`.csr_ops`: the products a compressed layer calls, dispatched to the device's kernels.
- :mod:`.csr_reference`: the plain-torch definitions every kernel is tested against.
- :mod:`.csr_triton`: the CUDA kernels (Triton; imported only when used).
- :mod:`.cusparselt`: 2:4 products on the sparse tensor cores (inference export, transposable 2:4 training).
"""
