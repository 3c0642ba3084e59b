"""Integers out of text, for the file readers: the entry point of the Numba text-parsing kernel
(``p3dlab.kernels.text_parse``), so that ``p3dlab.io`` reaches kernels through ops like every other
package."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from p3dlab.kernels.text_parse import parse_ints as _parse_ints_kernel


def parse_ints(text: str) -> Tuple[np.ndarray, int]:
    """Every integer of ``text``, whose tokens are separated by spaces, tabs, newlines or '/'
    (an empty field between two slashes reads as 0, OBJ's "no index").

    Returns ``(values, bad)``: the int64 values and -1, or an empty array and the byte offset (in
    the UTF-8 encoding of ``text``) of the first character that is not part of an integer.
    """
    return _parse_ints_kernel(np.frombuffer(text.encode("utf-8", errors="replace"), np.uint8))
