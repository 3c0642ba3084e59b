"""Conversions between the three batch views: list, padded and packed.

* list:   ``[x_0 (n_0, D), x_1 (n_1, D), ...]``, one tensor per batch element;
* padded: ``(N, max n_i, D)``, short elements filled with ``pad_value``;
* packed: ``(sum n_i, D)``, all elements concatenated, with ``first_idx[i] = n_0 + ... + n_{i-1}``.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch


def list_to_padded(
    x: Sequence[torch.Tensor],
    pad_size: Optional[Sequence[int]] = None,
    pad_value: float = 0.0,
    equisized: bool = False,
) -> torch.Tensor:
    """Stack tensors of equal rank into one tensor padded with ``pad_value``.

    ``pad_size`` gives the padded size of every dimension (defaults to the maximum over the list).
    """
    if equisized:
        return torch.stack(list(x), 0)
    if len(x) == 0:
        raise ValueError("list_to_padded needs at least one tensor")
    ndim = x[0].ndim
    if any(t.ndim != ndim for t in x):
        raise ValueError("list_to_padded: all tensors must have the same number of dimensions")
    if pad_size is None:
        pad_size = [max(t.shape[d] for t in x) for d in range(ndim)]
    elif len(pad_size) != ndim:
        raise ValueError("list_to_padded: pad_size must have one entry per dimension")
    out = x[0].new_full((len(x), *pad_size), pad_value)
    for i, t in enumerate(x):
        if t.numel() > 0:
            out[(i,) + tuple(slice(0, s) for s in t.shape)] = t
    return out


def padded_to_list(x: torch.Tensor, split_size: Optional[Sequence] = None) -> List[torch.Tensor]:
    """Inverse of :func:`list_to_padded`; ``split_size[i]`` is an int (first dim) or a tuple."""
    out = list(x.unbind(0))
    if split_size is None:
        return out
    if len(split_size) != len(out):
        raise ValueError("padded_to_list: split_size must have one entry per batch element")
    for i, s in enumerate(split_size):
        s = (s,) if isinstance(s, int) else tuple(s)
        out[i] = out[i][tuple(slice(0, k) for k in s)]
    return out


def list_to_packed(x: Sequence[torch.Tensor]):
    """Concatenate along dim 0. Returns ``(packed, num_items, first_idx, packed_to_list_idx)``."""
    device = x[0].device
    num_items = torch.tensor([t.shape[0] for t in x], dtype=torch.int64, device=device)
    first_idx = torch.cumsum(num_items, 0) - num_items
    packed = torch.cat(list(x), 0)
    packed_to_list_idx = torch.repeat_interleave(torch.arange(len(x), device=device), num_items)
    return packed, num_items, first_idx, packed_to_list_idx


def packed_to_list(x: torch.Tensor, split_size) -> List[torch.Tensor]:
    """Split a packed tensor into a list; ``split_size`` is an int or a list of ints."""
    if isinstance(split_size, torch.Tensor):
        split_size = split_size.tolist()
    return list(x.split(split_size, dim=0))


def padded_to_packed(x: torch.Tensor, split_size: Sequence[int]) -> torch.Tensor:
    """Select the first ``split_size[i]`` rows of every batch element of a padded tensor."""
    if isinstance(split_size, torch.Tensor):
        split_size = split_size.tolist()
    if len(split_size) != x.shape[0]:
        raise ValueError("padded_to_packed: split_size must have one entry per batch element")
    return torch.cat([x[i, :n] for i, n in enumerate(split_size)], 0)
