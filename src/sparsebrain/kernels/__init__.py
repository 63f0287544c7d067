"""Kernels of the layers that store only their links: plain-torch references beside the fast paths.

- :mod:`.csr_ops`: the products a compressed layer calls, dispatched to the device's kernels.
- :mod:`.csr_reference`: the plain-torch definitions every kernel is tested against.
- :mod:`.csr_triton`: the CUDA kernels (Triton; imported only when used).
"""
