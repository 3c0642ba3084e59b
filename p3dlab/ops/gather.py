"""Rows of a table gathered by an index tensor, with a backward that repeats bit for bit.

``values[index]`` (advanced indexing) computes the right rows, but its backward accumulates the
gradient with ``index_put_(accumulate=True)``, which on the CPU adds rows that share an index in an
order that depends on the threads: a mesh's vertex gradients then differed by up to 1e-4 from run to
run on the same inputs (8 runs, 2 threads). ``index_select``'s backward (``index_add_``) adds them in
the order of the index, so the gradients are the same in every run at a given thread count.
"""

from __future__ import annotations

import torch


def gather_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` for a (R, ...) table and an integer index of any shape: (*index.shape, ...).

    Same result as advanced indexing; its backward is deterministic (module docstring)."""
    rows = values.index_select(0, index.reshape(-1))
    return rows.view(*index.shape, *values.shape[1:])
