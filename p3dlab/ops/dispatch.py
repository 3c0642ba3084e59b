"""Which kernels run an op: the CPU kernels for CPU tensors, the CUDA kernels for CUDA tensors.

Dispatch follows the tensor's device, never whether CUDA is available: under Numba's CUDA
simulator CUDA "is available" on any machine, and a CPU tensor must still take the CPU kernels.
"""

from __future__ import annotations

import torch

from p3dlab.errors import P3DLabDeviceError
from p3dlab.runtime.fork_safety import check_cpu_kernels


def cuda_kernels(tensor: torch.Tensor, op: str):
    """The CUDA launchers (``p3dlab.kernels.cuda_adapter``) when ``tensor`` is on a CUDA device,
    ``None`` when it is on the CPU (after ``check_cpu_kernels``: the CPU kernels run in forked
    children too, serially where the parent had started GNU OpenMP; only a child forked before the
    kernels were loaded into a parent running GNU OpenMP gets a ``P3DLabProcessError`` saying what
    to set). Raises ``P3DLabDeviceError``, naming ``op`` and what to install or do, for a CUDA tensor
    without a usable CUDA target and for any other device."""
    kind = tensor.device.type
    if kind == "cpu":
        check_cpu_kernels(op)
        return None
    if kind != "cuda":
        raise P3DLabDeviceError(
            f"{op}: p3dlab's kernels run on CPU and CUDA tensors, not on {tensor.device}; move the tensors "
            "with .cpu() (or .cuda() on an NVIDIA GPU)"
        )
    try:
        from p3dlab.kernels import cuda_adapter

        cuda_adapter.require_gpu()
    except Exception as error:  # no CUDA target, no GPU, or a driver the CUDA target fails on
        hint = "" if "pip install" in str(error) else "; p3dlab's CUDA kernels need pip install 'p3dlab[cuda]'"
        raise P3DLabDeviceError(f"{op}: {error}{hint}") from error
    return cuda_adapter
