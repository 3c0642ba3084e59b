"""Stratified jitter of ray sample lengths in one parallel pass (``p3dlab.kernels.stratified``):
each sample moves uniformly within ±half its ray's sample spacing, drawn from a counter-based hash
of one seed, so no (rays × samples) tensor of random numbers is built.

On the CPU an output of 1 MB or more reuses the memory of an earlier output of the same shape that
nothing refers to any more (``recycled``): a training loop that jitters its rays every step faults
in no fresh pages (docs/performance.md#other-operations). Smaller outputs come from the allocator's
heap without faults."""

from __future__ import annotations

import torch

from p3dlab.config import volume_buffer_bytes
from p3dlab.errors import P3DLabValueError
from p3dlab.ops.dispatch import cuda_kernels
from p3dlab.runtime import recycled

_RECYCLED_BYTES = 2**20


def stratified_jitter(lengths: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A jittered copy of ``lengths`` (..., P): ``t_i + (u_i - 1/2)(t_1 - t_0)`` per ray, u_i uniform
    in [0, 1). Rays with evenly spaced samples keep them ordered and within their intervals; rays
    whose samples coincide (e.g. rays that miss a box) do not move. One 32-bit seed is drawn from
    ``generator`` (the default generator when None), so the seed decides the result, on CPU and
    CUDA alike. Not differentiable (sample lengths carry no gradient in the renderers)."""
    if not torch.is_tensor(lengths) or not lengths.is_floating_point() or lengths.ndim < 1:
        raise P3DLabValueError(f"stratified_jitter: lengths must be a floating (..., P) tensor, got {lengths!r}")
    P = lengths.shape[-1]
    if P < 2:
        raise P3DLabValueError("stratified_jitter: rays need at least 2 samples to have a spacing")
    seed = int(torch.randint(0, 2**32, (1,), generator=generator))
    flat = lengths.detach().reshape(-1, P).contiguous()
    if flat.device.type == "cpu" and flat.numel() * flat.element_size() >= _RECYCLED_BYTES:
        out = recycled.empty(flat.shape, flat.dtype, volume_buffer_bytes() // 4)
    else:
        out = torch.empty_like(flat)
    if flat.shape[0]:
        gpu = cuda_kernels(flat, "stratified_jitter")
        if gpu:
            gpu.stratified_jitter_cuda(flat, seed, out)
        else:
            from p3dlab.kernels.stratified import stratified_jitter_cpu

            stratified_jitter_cpu(flat.numpy(), seed, out.numpy())
    return out.reshape(lengths.shape)
