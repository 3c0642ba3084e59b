"""Errors raised by p3dlab. Every p3dlab-specific failure derives from :class:`P3DLabError`."""


class P3DLabError(Exception):
    """Base class of p3dlab's own errors."""


class P3DLabValueError(P3DLabError, ValueError):
    """Invalid argument values (shapes, dtypes, ranges). Also a ``ValueError``."""


class P3DLabDeviceError(P3DLabError, RuntimeError):
    """Tensors on a device p3dlab's kernels cannot run on here (a CUDA tensor without a usable CUDA
    target, an MPS tensor, ...). Also a ``RuntimeError``."""


class P3DLabMemoryError(P3DLabError, MemoryError):
    """An operation refused, before allocating anything, to allocate more memory than this process
    can still take (the machine's, the container's or the address-space limit). The message says
    how many bytes the operation needs, what is available, and which argument to lower. Also a
    ``MemoryError``."""


class P3DLabProcessError(P3DLabError, RuntimeError):
    """An operation that cannot run in this process as it was started: a child forked from a process
    whose own Numba code started GNU OpenMP before p3dlab's kernels were loaded (other forked children
    run serial builds of the kernels); the message says what to set instead."""
