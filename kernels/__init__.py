"""Numba kernels of p3dlab, installed as ``p3dlab.kernels``.

Kernels take and return NumPy (or CUDA device) arrays, never torch tensors; ``p3dlab.ops`` wraps
them in ``torch.autograd.Function``s. Each kernel's per-element math is a plain Python function
compiled twice, by ``numba.njit`` for the CPU and by ``numba.cuda.jit(device=True)`` for CUDA, so
there is one source for both. Everything CUDA-specific lives in ``p3dlab.kernels.cuda_adapter``.
"""

# No public names: the kernels are p3dlab's internals, reached through the torch operations of
# p3dlab.ops (tests/test_layering.py checks that nothing else imports them).
__all__: list = []
