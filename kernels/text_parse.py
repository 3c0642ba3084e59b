"""Parsing integers out of text buffers (OBJ face indices), CPU only.

``parse_ints(buf)`` reads every integer of a uint8 buffer in which tokens are separated by spaces,
tabs, newlines or '/'; an empty field between two slashes ('//') reads as 0 (OBJ's "no index").
It returns ``(values, bad)`` where ``bad`` is -1, or the byte offset of the first character that is
not part of an integer (or of an integer longer than 18 digits).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_SPACE, _TAB, _NL, _SLASH, _PLUS, _MINUS, _ZERO, _NINE = 32, 9, 10, 47, 43, 45, 48, 57


@njit(cache=True)
def _scan(buf, out):
    """One pass over ``buf``: count the integers (``out`` is None-like: size 0) or write them."""
    n = buf.shape[0]
    count = 0
    i = 0
    prev_slash = False
    while i < n:
        c = buf[i]
        if c == _SPACE or c == _TAB or c == _NL:
            prev_slash = False
            i += 1
            continue
        if c == _SLASH:
            if prev_slash:  # '//': an empty field
                if out.shape[0] > 0:
                    out[count] = 0
                count += 1
            prev_slash = True
            i += 1
            continue
        prev_slash = False
        sign = 1
        if c == _PLUS or c == _MINUS:
            sign = -1 if c == _MINUS else 1
            i += 1
            if i >= n:
                return count, i - 1
            c = buf[i]
        if c < _ZERO or c > _NINE:
            return count, i
        value = 0
        digits = 0
        while i < n and _ZERO <= buf[i] <= _NINE:
            value = value * 10 + (buf[i] - _ZERO)
            digits += 1
            i += 1
        if digits > 18:
            return count, i - 1
        if i < n and not (buf[i] == _SPACE or buf[i] == _TAB or buf[i] == _NL or buf[i] == _SLASH):
            return count, i
        if out.shape[0] > 0:
            out[count] = sign * value
        count += 1
    return count, -1


def parse_ints(buf: np.ndarray):
    """All integers of a uint8 text buffer (see the module docstring): ``(int64 array, bad)``."""
    empty = np.zeros(0, np.int64)
    count, bad = _scan(buf, empty)
    if bad >= 0 or count == 0:
        return empty, bad
    out = np.empty(count, np.int64)
    _scan(buf, out)
    return out, -1
