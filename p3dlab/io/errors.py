"""Errors raised by the file readers: every one names the file and the line or byte offset.

Also the one way the readers open what they are given (``open_regular_file``, ``refuse_special_stream``):
only regular files are read. A device never ends (``/dev/zero``), a FIFO blocks until someone writes
to it and a directory is not a file; each is refused with a ``FileFormatError`` before a byte is read.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO, Optional

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


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular_file(path, error=FileFormatError, named_by=None, line: Optional[int] = None) -> BinaryIO:
    """``path`` opened for binary reading; anything but a regular file is refused with ``error``.

    The file is opened without blocking (a FIFO would otherwise wait for a writer) and checked on
    the open descriptor, so it cannot be swapped between the check and the read. Errors name
    ``named_by`` and ``line`` (the file that refers to ``path``) when given, else ``path`` itself.
    """
    where = named_by if named_by is not None else path
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise error(f"cannot open {path}: {e.strerror}", where, line=line) from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:  # pragma: no cover - fstat of an open descriptor does not fail in practice
        os.close(fd)
        raise error(f"cannot read {path}: {e.strerror}", where, line=line) from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise error(f"{path} is {_kind_of(mode)}: only regular files are read", where, line=line)
    return os.fdopen(fd, "rb")


def refuse_special_stream(f, error=FileFormatError) -> None:
    """Refuse a file object whose descriptor is a device, FIFO or socket (``open("/dev/zero", "rb")``);
    in-memory streams (``BytesIO``, ``StringIO``) and regular files pass."""
    try:
        mode = os.fstat(f.fileno()).st_mode
    except (AttributeError, OSError, ValueError):  # no descriptor: an in-memory stream
        return
    if not stat.S_ISREG(mode):
        name = getattr(f, "name", None)
        raise error(f"the stream is {_kind_of(mode)}: only regular files and in-memory streams are read", name)
