"""Errors raised by the file readers: every one names the file and the line or byte offset."""

from __future__ import annotations

from typing import Optional

from p3dlab.errors import P3DLabError


class FileFormatError(P3DLabError, ValueError):
    """A malformed, truncated, inconsistent or refused file.

    Attributes ``path``, ``line`` (1-based, text formats) and ``offset`` (bytes, binary data) say
    where; the message repeats them.
    """

    def __init__(self, message: str, path=None, line: Optional[int] = None, offset: Optional[int] = None):
        where = [str(path) if path is not None else "<stream>"]
        if line is not None:
            where.append(f"line {line}")
        if offset is not None:
            where.append(f"byte {offset}")
        super().__init__(f"{', '.join(where)}: {message}")
        self.path, self.line, self.offset = path, line, offset


class PLYError(FileFormatError):
    """A problem in a PLY file."""


class OBJError(FileFormatError):
    """A problem in an OBJ or MTL file."""


class UnsafePathError(FileFormatError):
    """A referenced file (``mtllib``, ``map_Kd``) resolves outside the folder of the file that names it."""
