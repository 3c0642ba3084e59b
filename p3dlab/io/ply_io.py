"""PLY reading and writing (docs/conventions.md#file-formats): ASCII, binary little- and big-endian.

The reader keeps every element and property (``read_ply``), so colours, normals and UVs survive;
``load_ply`` returns PyTorch3D's ``(verts, faces)``. A file is data, never trusted: every size the
header declares is checked against the bytes actually present before anything is allocated, and
every failure is a ``PLYError`` naming the file and the line (header, ASCII data) or byte offset
(binary data).

What the reader accepts:

* Regular files and in-memory streams only: a device (``/dev/zero``), FIFO or directory is refused.
* The header: at most ``MAX_HEADER_BYTES``, ASCII except in ``comment`` and ``obj_info`` lines, no
  control characters but tabs, one ``format`` line, unique element names and unique property names
  within an element. Reading it takes time linear in its length.
* Sizes: an element count is ASCII digits and must fit what the rest of the file can hold (binary:
  count × the element's smallest record; ASCII: every value takes at least 2 bytes); a list length
  must be a non-negative integer of the list's count type that the remaining data holds. Memory is
  therefore proportional to the file: lists of different lengths are stored flat (``RaggedList``),
  and a polygon may have as many corners as the file has room for (its fan triangulation takes 24
  bytes per corner).
* ASCII data: decimal numbers (sign, digits, point, exponent; ``nan`` and ``inf`` read as such)
  separated by spaces, tabs and line ends. Anything else (``1_0``, non-ASCII digits, a vertical tab)
  is refused; integer properties take integral values within their type, float properties values
  within float32's range.
* ``load_ply`` and ``IO``: vertex coordinates, normals, colours and UVs must be finite scalar
  properties; face lists (``vertex_indices`` or ``vertex_index``) must have an integer item type,
  at least 3 corners and indices below the vertex count. Errors name the offending record.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import warnings
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from p3dlab.io.errors import PLYError, open_regular_file, refuse_special_stream

# PLY scalar types and their aliases -> numpy type codes
_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
MAX_HEADER_BYTES = 1 << 20
_MAX_COUNT = 2**63 - 1  # element counts are int64 indices


@dataclass
class PlyProperty:
    name: str
    dtype: str  # numpy code, e.g. "f4"
    count_dtype: Optional[str] = None  # set for list properties
    line: int = 0  # header line that declares it

    @property
    def is_list(self) -> bool:
        return self.count_dtype is not None


@dataclass
class PlyElement:
    name: str
    count: int
    properties: List[PlyProperty] = field(default_factory=list)
    line: int = 0


class RaggedList(Sequence):
    """The lists of one list property when their lengths differ, stored flat: list ``r`` is the
    view ``values[offsets[r]:offsets[r + 1]]``. Indexing and iterating give those arrays."""

    __slots__ = ("values", "offsets")

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        self.values, self.offsets = values, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, r):
        if isinstance(r, slice):
            return [self[i] for i in range(*r.indices(len(self)))]
        n = len(self)
        r = r + n if r < 0 else r
        if not 0 <= r < n:
            raise IndexError(f"list {r} of {n}")
        return self.values[self.offsets[r] : self.offsets[r + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __repr__(self) -> str:
        return f"RaggedList({len(self)} lists, {len(self.values)} values of {self.values.dtype})"


@dataclass
class PlyData:
    """A parsed PLY file: ``elements[name][prop]`` is an array (N,) for a scalar property, and for
    a list property either an (N, k) array (every list of length k) or a ``RaggedList`` of N arrays."""

    format: str
    header: List[PlyElement]
    elements: Dict[str, Dict[str, object]]
    comments: List[str]
    obj_info: List[str]
    _where: Optional["_Locator"] = field(default=None, repr=False, compare=False)


# ----------------------------------------------------------------------------- where things are
@dataclass
class _Records:
    """Where the records of one element start: record r at ``first + r * stride``, or at
    ``starts[r]`` when records differ in size. Bytes into the file (binary) or values into the data
    (ASCII)."""

    first: int
    stride: int = 0
    starts: Optional[np.ndarray] = None

    def start(self, r: int) -> int:
        return int(self.starts[r]) if self.starts is not None else self.first + r * self.stride


class _Locator:
    """Turns "record r of element e" into the line (ASCII data) or byte offset (binary data) that an
    error names; header problems name a header line."""

    def __init__(self, path, header_end_line: Optional[int], ascii_body: Optional[bytes] = None, first_line=0):
        self.path, self.header_end_line = path, header_end_line
        self.body, self.first_line = ascii_body, first_line
        self.records: Dict[str, _Records] = {}

    def value_line(self, index: int) -> int:
        return _line_of_value(self.body, index, self.first_line)

    def error(self, message: str, element: Optional[PlyElement] = None, record: Optional[int] = None) -> PLYError:
        if element is None:
            return PLYError(message, self.path, line=self.header_end_line)
        rec = self.records.get(element.name)
        if record is None or rec is None:
            return PLYError(message, self.path, line=element.line or None)
        if self.body is None:
            return PLYError(message, self.path, offset=rec.start(record))
        return PLYError(message, self.path, line=self.value_line(rec.start(record)))


def _line_breaks(text: bytes) -> int:
    return text.count(b"\n") + text.count(b"\r") - text.count(b"\r\n")


def _line_of_value(body: bytes, index: int, first_line: int) -> int:
    """Line (1-based, in the file) of value number ``index`` of the ASCII data; past the end, the
    line where the data ends."""
    if not body:
        return first_line
    b = np.frombuffer(body, np.uint8)
    space = (b == 32) | (b == 9) | (b == 10) | (b == 13)
    starts = np.flatnonzero(~space & np.concatenate([[True], space[:-1]]))
    byte = int(starts[index]) if index < len(starts) else len(body)
    return first_line + _line_breaks(body[:byte])


# ----------------------------------------------------------------------------- header
_END_HEADER = re.compile(rb"(?:\A|(?<=[\r\n]))end_header[ \t]*(?:\r\n|\n|\r)")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # every control character but the tab
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: int() would also take '1_0' and other scripts' digits


def _read_bytes(f) -> Tuple[bytes, object]:
    if isinstance(f, (str, os.PathLike)):
        path = os.fspath(f)
        with open_regular_file(path, PLYError) as fh:
            return fh.read(), path
    if hasattr(f, "read"):
        refuse_special_stream(f, PLYError)
        data = f.read()
        if isinstance(data, str):
            data = data.encode("utf-8")
        return data, getattr(f, "name", None)
    raise PLYError(f"expected a path or a binary file object, got {type(f).__name__}")


def _element_count(text: str, path, line: int) -> int:
    if not _DIGITS.fullmatch(text):
        raise PLYError(f"element count {text[:40]!r} is not a non-negative integer", path, line=line)
    if len(text) > 19 or int(text) > _MAX_COUNT:
        raise PLYError(f"element count {text[:40]} is too large", path, line=line)
    return int(text)


def _property(parts: List[str], path, line: int) -> PlyProperty:
    if len(parts) == 3 and parts[1] in _TYPES:
        return PlyProperty(parts[2], _TYPES[parts[1]], line=line)
    if len(parts) == 5 and parts[1] == "list" and parts[2] in _TYPES and parts[3] in _TYPES:
        if _TYPES[parts[2]][0] == "f":
            raise PLYError("a list count must have an integer type", path, line=line)
        return PlyProperty(parts[4], _TYPES[parts[3]], _TYPES[parts[2]], line=line)
    raise PLYError(f"malformed or unknown property {' '.join(parts)[:80]!r}", path, line=line)


def _parse_header(data: bytes, path):
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    if not data.startswith(b"ply", bom):
        raise PLYError("not a PLY file (it must start with 'ply')", path, line=1)
    head = data[bom : bom + MAX_HEADER_BYTES]
    m = _END_HEADER.search(head if len(data) - bom > MAX_HEADER_BYTES else head + b"\n")
    if m is None:
        raise PLYError(f"no 'end_header' line within the first {len(head)} bytes", path, offset=bom + len(head))
    lines = _LINE_BREAK.split(head[: m.start()])  # the last item is the empty text before end_header
    body_start = min(bom + m.end(), len(data))
    fmt, elements, comments, obj_info = None, [], [], []
    element_names, property_names = set(), set()
    for lineno, raw in enumerate(lines[:-1], start=1):
        bad = _CONTROL.search(raw)
        if bad:
            raise PLYError(f"control character {bad.group()!r} in the header", path, line=lineno)
        words = raw.split()
        if lineno == 1:
            if words != [b"ply"]:
                raise PLYError(f"first line must be 'ply', got {raw.strip()[:40]!r}", path, line=1)
            continue
        if not words:
            continue
        if words[0] in (b"comment", b"obj_info"):
            text = raw.strip()[len(words[0]) :].strip().decode("utf-8", errors="replace")
            (comments if words[0] == b"comment" else obj_info).append(text)
            continue
        if not raw.isascii():
            raise PLYError("non-ASCII byte in the header (only comments may have them)", path, line=lineno)
        parts = [w.decode("ascii") for w in words]
        key = parts[0]
        if key == "format":
            if fmt is not None:
                raise PLYError("a second 'format' line", path, line=lineno)
            if len(parts) != 3 or parts[1] not in _FORMATS:
                raise PLYError(f"unknown format line {raw.strip()[:80]!r}", path, line=lineno)
            if parts[2] != "1.0":
                raise PLYError(f"unsupported PLY version {parts[2][:20]!r}", path, line=lineno)
            fmt = parts[1]
        elif key == "element":
            if len(parts) != 3:
                raise PLYError(f"malformed element line {raw.strip()[:80]!r}", path, line=lineno)
            if parts[1] in element_names:
                raise PLYError(f"element {parts[1]!r} is declared twice", path, line=lineno)
            element_names.add(parts[1])
            property_names = set()
            elements.append(PlyElement(parts[1], _element_count(parts[2], path, lineno), line=lineno))
        elif key == "property":
            if not elements:
                raise PLYError("property before any element", path, line=lineno)
            prop = _property(parts, path, lineno)
            if prop.name in property_names:
                raise PLYError(f"property {prop.name!r} declared twice", path, line=lineno)
            property_names.add(prop.name)
            elements[-1].properties.append(prop)
        else:
            raise PLYError(f"unknown header keyword {key[:40]!r}", path, line=lineno)
    if fmt is None:
        raise PLYError("missing 'format' line", path, line=2)
    end_header_line = len(lines)
    return fmt, elements, comments, obj_info, body_start, end_header_line


# ----------------------------------------------------------------------------- shared by both encodings
def _min_record_size(el: PlyElement) -> int:
    return sum(np.dtype(p.count_dtype if p.is_list else p.dtype).itemsize for p in el.properties)


def _item_positions(first: np.ndarray, lengths: np.ndarray, step: int) -> np.ndarray:
    """Positions of every item of lists that start at ``first`` with ``lengths`` items ``step`` apart."""
    pos = np.arange(int(lengths.sum()), dtype=np.int64)
    pos *= step
    pos += np.repeat(first - (np.cumsum(lengths) - lengths) * step, lengths)
    return pos


def _as_lists(values: np.ndarray, lengths: np.ndarray):
    """An (N, k) array when every list has k items, else a ``RaggedList``."""
    if len(lengths) and (lengths == lengths[0]).all():
        return values.reshape(len(lengths), int(lengths[0]))
    return RaggedList(values, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def _empty_columns(el: PlyElement):
    return {p.name: (np.zeros((0, 0), p.dtype) if p.is_list else np.zeros(0, p.dtype)) for p in el.properties}


# ----------------------------------------------------------------------------- binary
def _read_binary(data: bytes, start: int, fmt: str, elements: List[PlyElement], where: _Locator):
    order = _FORMATS[fmt]
    pos = start
    out = {}
    for el in elements:
        if not el.properties:  # records of no bytes: nothing to read, however many
            out[el.name], where.records[el.name] = {}, _Records(pos)
        elif any(p.is_list for p in el.properties):
            out[el.name], where.records[el.name], pos = _binary_lists(data, pos, order, el, where.path)
        else:
            out[el.name], where.records[el.name], pos = _binary_scalars(data, pos, order, el, where.path)
    if pos != len(data):
        warnings.warn(f"{where.path}: {len(data) - pos} bytes after the last element are ignored", stacklevel=3)
    return out


def _binary_scalars(data: bytes, pos: int, order: str, el: PlyElement, path):
    dt = np.dtype([(f"p{i}", order + p.dtype) for i, p in enumerate(el.properties)])
    need = el.count * dt.itemsize
    if need > len(data) - pos:
        raise PLYError(
            f"element {el.name!r} declares {el.count} records of {dt.itemsize} bytes ({need} bytes) "
            f"but only {len(data) - pos} bytes remain",
            path,
            offset=pos,
        )
    arr = np.frombuffer(data, dtype=dt, count=el.count, offset=pos)
    cols = {p.name: arr[f"p{i}"].astype(p.dtype) for i, p in enumerate(el.properties)}
    return cols, _Records(pos, dt.itemsize), pos + need


def _binary_lists(data: bytes, pos: int, order: str, el: PlyElement, path):
    """Elements with list properties. Fast path: every list has the length of the first record's
    (checked on one strided view); otherwise ``_scan_binary_lists``."""
    remain = len(data) - pos
    least = el.count * _min_record_size(el)
    if least > remain:
        raise PLYError(
            f"element {el.name!r} declares {el.count} records needing at least {least} bytes but only {remain} remain",
            path,
            offset=pos,
        )
    if el.count == 0:
        return _empty_columns(el), _Records(pos), pos
    layout = _first_record_layout(data, pos, order, el, path)
    if el.count * layout.itemsize <= remain:
        arr = np.frombuffer(data, dtype=layout, count=el.count, offset=pos)
        lists = [(i, p) for i, p in enumerate(el.properties) if p.is_list]
        if all((arr[f"n{i}"] == layout[f"p{i}"].shape[0]).all() for i, _ in lists):
            cols = {p.name: arr[f"p{i}"].reshape(el.count, -1).astype(p.dtype) for i, p in lists}
            cols.update({p.name: arr[f"p{i}"].astype(p.dtype) for i, p in enumerate(el.properties) if not p.is_list})
            cols = {p.name: cols[p.name] for p in el.properties}  # declaration order
            return cols, _Records(pos, layout.itemsize), pos + el.count * layout.itemsize
    return _scan_binary_lists(data, pos, order, el, path)


def _first_record_layout(data: bytes, pos: int, order: str, el: PlyElement, path) -> np.dtype:
    """The record dtype with the first record's list lengths (fields n{i}: count, p{i}: values)."""
    fields = []
    for i, p in enumerate(el.properties):
        if p.is_list:
            cdt, idt = np.dtype(order + p.count_dtype), np.dtype(order + p.dtype)
            if pos + cdt.itemsize > len(data):
                raise PLYError(f"record 0 of {el.name!r} is truncated", path, offset=pos)
            k = int(np.frombuffer(data, cdt, 1, pos)[0])
            if k < 0 or pos + cdt.itemsize + k * idt.itemsize > len(data):
                raise PLYError(f"record 0 of {el.name!r}: a list of {k} items does not fit the file", path, offset=pos)
            fields += [(f"n{i}", cdt), (f"p{i}", idt, (k,))]
            pos += cdt.itemsize + k * idt.itemsize
        else:
            fields.append((f"p{i}", np.dtype(order + p.dtype)))
            pos += np.dtype(p.dtype).itemsize
    return np.dtype(fields)


_STRUCT_CODES = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I"}


def _scan_binary_lists(data: bytes, pos: int, order: str, el: PlyElement, path):
    """Records whose lists differ in length: a loop reads only the list lengths (8 bytes kept per
    record and list), then NumPy gathers every value at once."""
    plan = []  # per property: its size in bytes (scalar), or (count reader, item size, list number)
    n_lists = 0
    for p in el.properties:
        if p.is_list:
            plan.append((struct.Struct(order + _STRUCT_CODES[p.count_dtype]), np.dtype(p.dtype).itemsize, n_lists))
            n_lists += 1
        else:
            plan.append(np.dtype(p.dtype).itemsize)
    starts, lengths = array("q"), [array("q") for _ in range(n_lists)]
    end = len(data)
    for r in range(el.count):
        starts.append(pos)
        for step in plan:
            if step.__class__ is int:
                pos += step
                continue
            count, item_size, j = step
            if pos + count.size > end:
                raise PLYError(f"record {r} of {el.name!r} is truncated", path, offset=pos)
            k = count.unpack_from(data, pos)[0]
            if k < 0 or pos + count.size + k * item_size > end:
                message = f"record {r} of {el.name!r}: a list of {k} items does not fit the file"
                raise PLYError(message, path, offset=pos)
            pos += count.size + k * item_size
            lengths[j].append(k)
        if pos > end:
            raise PLYError(f"record {r} of {el.name!r} is truncated", path, offset=starts[r])
    starts = np.frombuffer(starts, np.int64)
    at = starts.copy()  # where the next property of every record starts
    cols = {}
    for p, step in zip(el.properties, plan):
        if step.__class__ is int:
            cols[p.name] = _at_every_byte(data, order + p.dtype)[at].astype(p.dtype)
            at += step
        else:
            count, item_size, j = step
            k = np.frombuffer(lengths[j], np.int64)
            values = _at_every_byte(data, order + p.dtype)[_item_positions(at + count.size, k, item_size)]
            cols[p.name] = _as_lists(values.astype(p.dtype), k)
            at += count.size + k * item_size
    return cols, _Records(int(starts[0]), starts=starts), pos


def _at_every_byte(data: bytes, dtype: str) -> np.ndarray:
    """A read-only view of ``data`` whose item i is the value of type ``dtype`` starting at byte i:
    indexing it with byte positions gathers values without copying any other byte."""
    dt = np.dtype(dtype)
    return np.ndarray(shape=(max(len(data) - dt.itemsize + 1, 0),), dtype=dt, buffer=data, strides=(1,))


# ----------------------------------------------------------------------------- ascii
_TEXT_BYTES = bytes(range(0x20, 0x7F)) + b"\t\n\r"
_NOT_TEXT = re.compile(rb"[^\t\n\r\x20-\x7e]")
_DECIMAL = re.compile(rb"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:nan|inf|infinity)", re.I)


def _ascii_values(body: bytes, path, first_line: int) -> np.ndarray:
    """Every value of the ASCII data as float64, parsed in C (NumPy's parser takes exactly the
    decimal grammar, plus nan and inf); a byte or token outside it is refused with its line."""
    if body.translate(None, _TEXT_BYTES):
        at = _NOT_TEXT.search(body).start()
        what = "NUL byte" if body[at] == 0 else f"byte {body[at]:#04x} (a control character or non-ASCII)"
        raise PLYError(f"{what} in ASCII data", path, line=first_line + _line_breaks(body[:at]))
    if not body.strip():
        return np.zeros(0)  # (np.fromstring reads blank text as [-1.0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return np.fromstring(body, dtype=np.float64, sep=" ")
    except (ValueError, DeprecationWarning):
        pass
    for k, line in enumerate(_LINE_BREAK.split(body)):
        for token in line.split():
            if not _DECIMAL.fullmatch(token):
                raise PLYError(f"non-numeric value {token[:40]!r}", path, line=first_line + k) from None
    raise PLYError("unparsable ASCII data", path, line=first_line)


def _bad_value(values: np.ndarray, dtype: str) -> Tuple[int, str]:
    """(index, reason) of the first value a property of type ``dtype`` cannot hold, or (-1, "")."""
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        ok = (values == np.round(values)) & (values >= info.min) & (values <= info.max)  # NaN fails all three
        reason = f"is not an integer within {dt.name}"
    elif dt.itemsize == 4:
        with np.errstate(over="ignore"):
            ok = np.isfinite(values.astype(np.float32)) | ~np.isfinite(values)
        reason = "overflows float32"
    else:
        return -1, ""
    if ok.all():
        return -1, ""
    i = int(np.argmin(ok))
    return i, f"value {float(values[i])!r} {reason}"


def _column(values: np.ndarray, positions: np.ndarray, p: PlyProperty, el: PlyElement, where: _Locator) -> np.ndarray:
    """``values[positions]`` as property ``p``'s type; a value the type cannot hold is refused with its line."""
    col = values[positions]
    i, reason = _bad_value(col.reshape(-1), p.dtype)
    if i >= 0:
        at = int(positions.reshape(-1)[i])
        raise PLYError(f"property {p.name!r} of {el.name!r}: {reason}", where.path, line=where.value_line(at))
    return col.astype(p.dtype)


def _read_ascii(data: bytes, start: int, elements: List[PlyElement], where: _Locator):
    body = data[start:]
    least = sum(el.count * len(el.properties) for el in elements)
    # every value takes at least 2 bytes ("0 "): refuse counts the data cannot hold before parsing
    if least > (len(body) + 1) // 2:
        raise PLYError(
            f"the header declares at least {least} values but the data has only {len(body)} bytes",
            where.path,
            line=where.first_line,
        )
    values = _ascii_values(body, where.path, where.first_line)
    pos = 0
    out = {}
    for el in elements:
        props = el.properties
        if not props:
            out[el.name], where.records[el.name] = {}, _Records(pos)
        elif any(p.is_list for p in props):
            out[el.name], where.records[el.name], pos = _ascii_lists(values, pos, el, where)
        else:
            width = len(props)
            n = el.count * width
            if pos + n > len(values):
                raise PLYError(
                    f"element {el.name!r} needs {n} values but only {len(values) - pos} remain",
                    where.path,
                    line=where.value_line(len(values)),
                )
            idx = np.arange(el.count, dtype=np.int64) * width + pos
            out[el.name] = {p.name: _column(values, idx + i, p, el, where) for i, p in enumerate(props)}
            where.records[el.name] = _Records(pos, width)
            pos += n
    if pos != len(values):
        extra = len(values) - pos
        raise PLYError(f"{extra} values after the last declared element", where.path, line=where.value_line(pos))
    return out


def _list_length(values: np.ndarray, at: int, p: PlyProperty, el: PlyElement, r: int, where: _Locator) -> int:
    """The list length stored at value ``at`` (record ``r``): an integer of the count type that the
    remaining values hold."""
    if at >= len(values):
        raise PLYError(f"record {r} of {el.name!r} is missing", where.path, line=where.value_line(at))
    k = values.item(at)
    limit = min(len(values) - at - 1, np.iinfo(p.count_dtype).max)
    if not (0 <= k <= limit and k == math.floor(k)):  # NaN and inf fail too
        raise PLYError(
            f"record {r} of {el.name!r}: list length {k!r} is not an integer in [0, {limit}]",
            where.path,
            line=where.value_line(at),
        )
    return int(k)


def _ascii_lists(values: np.ndarray, pos: int, el: PlyElement, where: _Locator):
    props = el.properties
    if el.count == 0:
        return _empty_columns(el), _Records(pos), pos
    # fast path: one trailing list property whose lists all have the first record's length
    if sum(p.is_list for p in props) == 1 and props[-1].is_list:
        ns = len(props) - 1
        k = _list_length(values, pos + ns, props[-1], el, 0, where)
        width = ns + 1 + k
        if pos + width * el.count <= len(values):
            first = np.arange(el.count, dtype=np.int64) * width + pos
            if (values[first + ns] == k).all():
                cols = {p.name: _column(values, first + i, p, el, where) for i, p in enumerate(props[:-1])}
                items = first[:, None] + (ns + 1 + np.arange(k))
                cols[props[-1].name] = _column(values, items, props[-1], el, where)
                return cols, _Records(pos, width), pos + width * el.count
    return _scan_ascii_lists(values, pos, el, where)


def _scan_ascii_lists(values: np.ndarray, pos: int, el: PlyElement, where: _Locator):
    """Records whose lists differ in length: a loop reads only the list lengths, then NumPy gathers
    every value at once (memory: 8 bytes per record and list, plus the values)."""
    props = el.properties
    list_no = {}
    for p in props:
        if p.is_list:
            list_no[p.name] = len(list_no)
    starts, lengths = array("q"), [array("q") for _ in list_no]
    for r in range(el.count):
        starts.append(pos)
        for p in props:
            if p.is_list:
                k = _list_length(values, pos, p, el, r, where)
                lengths[list_no[p.name]].append(k)
                pos += 1 + k
            else:
                pos += 1
        if pos > len(values):
            raise PLYError(f"record {r} of {el.name!r} is truncated", where.path, line=where.value_line(starts[r]))
    starts = np.frombuffer(starts, np.int64)
    at = starts.copy()
    cols = {}
    for p in props:
        if p.is_list:
            k = np.frombuffer(lengths[list_no[p.name]], np.int64)
            cols[p.name] = _as_lists(_column(values, _item_positions(at + 1, k, 1), p, el, where), k)
            at += 1 + k
        else:
            cols[p.name] = _column(values, at, p, el, where)
            at += 1
    return cols, _Records(int(starts[0]), starts=starts), pos


def read_ply(f) -> PlyData:
    """Parse a PLY file (path or binary file object) into a :class:`PlyData`."""
    data, path = _read_bytes(f)
    fmt, elements, comments, obj_info, start, end_header_line = _parse_header(data, path)
    if fmt == "ascii":
        where = _Locator(path, end_header_line, data[start:], end_header_line + 1)
        body = _read_ascii(data, start, elements, where)
    else:
        where = _Locator(path, end_header_line)
        body = _read_binary(data, start, fmt, elements, where)
    return PlyData(fmt, elements, body, comments, obj_info, where)


# ----------------------------------------------------------------------------- meshes
def _triangles(lists, n_verts: int, el: PlyElement, where: _Locator) -> np.ndarray:
    """Fan-triangulate polygons (v0, v_i, v_{i+1}) in PyTorch3D's order, after checking every
    polygon has 3 corners or more and indices below ``n_verts``.

    PyTorch3D's ``load_ply`` orders the triangles in two ways, and face indices follow it exactly:
    when every polygon has the same number k of corners, fan triangle 1 of every polygon comes first,
    then fan triangle 2 of every polygon, ... (k - 2 blocks of F triangles); when the sizes are mixed,
    each polygon's triangles come together, polygon after polygon.
    """
    if isinstance(lists, RaggedList):
        values, offsets = lists.values, lists.offsets
        corners = np.diff(offsets)
    else:
        values, k = lists.reshape(-1), lists.shape[1]
        offsets, corners = None, np.full(len(lists), k)
    if len(corners) and corners.min() < 3:
        r = int(np.argmin(corners))
        raise where.error(f"face {r} has {corners[r]} corners (at least 3 needed)", el, r)
    if values.size and (values.min() < 0 or values.max() >= n_verts):
        t = int(np.argmax((values < 0) | (values >= n_verts)))
        offsets = offsets if offsets is not None else np.arange(len(lists) + 1) * k
        r = int(np.searchsorted(offsets, t, side="right")) - 1
        poly = values[offsets[r] : offsets[r + 1]].tolist()
        shown = poly if len(poly) <= 8 else poly[:8] + ["..."]
        raise where.error(f"face {r} refers to vertex {shown} but there are {n_verts} vertices", el, r)
    if not len(corners):
        return np.zeros((0, 3), np.int64)
    if not isinstance(lists, RaggedList):  # k - 2 blocks of F triangles
        tris = np.empty((max(k - 2, 0), len(lists), 3), np.int64)
        tris[:, :, 0] = lists[:, 0]
        tris[:, :, 1] = lists[:, 1:-1].T
        tris[:, :, 2] = lists[:, 2:].T
        return tris.reshape(-1, 3)
    # polygon after polygon: triangle t of polygon r is (corner 0, t + 2r + 1, t + 2r + 2) in ``values``
    n_tris = corners - 2
    poly = np.repeat(np.arange(len(corners)), n_tris)
    second = np.arange(len(poly), dtype=np.int64)
    second += 2 * poly + 1
    del poly
    tris = np.empty((len(second), 3), np.int64)
    tris[:, 0] = np.repeat(values[offsets[:-1]], n_tris)
    tris[:, 1] = values[second]
    second += 1
    tris[:, 2] = values[second]
    return tris


def _vertex_vectors(ply: PlyData, el: PlyElement, names, what: str, where: _Locator, required=False):
    """(V, len(names)) stack of scalar vertex properties, or None when absent (refused if ``required``)."""
    props = {p.name: p for p in el.properties}
    if not all(n in props for n in names):
        if required:
            missing = next(n for n in names if n not in props)
            raise where.error(f"the vertex element lacks the scalar property {missing!r}", el)
        return None
    for n in names:
        if props[n].is_list:
            raise PLYError(f"{what} must be scalar properties, but {n!r} is a list", where.path, line=props[n].line)
    cols = ply.elements[el.name]
    return np.stack([cols[n] for n in names], 1)


def _finite32(values: np.ndarray, what: str, el: PlyElement, where: _Locator) -> np.ndarray:
    """``values`` as float32, refused (naming the first bad vertex) if any is not finite there."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = values.astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        r = int(np.argmin(np.isfinite(out).all(1)))
        raise where.error(f"vertex {r} has non-finite {what} {values[r].tolist()} (float32)", el, r)
    return out


def mesh_arrays(ply: PlyData, path=None):
    """(verts (V,3) float32, faces (F,3) int64, extras dict) from a parsed PLY; what a mesh needs
    (module docstring) is checked, and an error names the record's line or byte offset."""
    where = ply._where if ply._where is not None else _Locator(path, None)
    header = {el.name: el for el in ply.header}
    vel = header.get("vertex")
    if vel is None or "vertex" not in ply.elements:
        raise where.error("no 'vertex' element")
    verts = _finite32(_vertex_vectors(ply, vel, "xyz", "coordinates", where, required=True), "coordinates", vel, where)
    faces = np.zeros((0, 3), np.int64)
    fel = header.get("face")
    if fel is not None:
        names = {p.name: p for p in fel.properties}
        prop = names.get("vertex_indices", names.get("vertex_index"))
        if prop is not None:
            if not prop.is_list or np.dtype(prop.dtype).kind not in "iu":
                raise PLYError(
                    f"face property {prop.name!r} must be a list of integers", where.path, line=prop.line or None
                )
            faces = _triangles(ply.elements["face"][prop.name], len(verts), fel, where)
    extras = {}
    normals = _vertex_vectors(ply, vel, ("nx", "ny", "nz"), "normals", where)
    if normals is not None:
        extras["normals"] = _finite32(normals, "normal", vel, where)
    colors = _vertex_vectors(ply, vel, ("red", "green", "blue"), "colours", where)
    if colors is not None:
        colors = colors / 255.0 if colors.dtype.kind in "iu" else colors
        extras["colors"] = _finite32(colors, "colour", vel, where)
    for pair in (("u", "v"), ("s", "t"), ("texture_u", "texture_v")):
        uvs = _vertex_vectors(ply, vel, pair, "texture coordinates", where)
        if uvs is not None:
            extras["verts_uvs"] = _finite32(uvs, "texture coordinates", vel, where)
            break
    return verts, faces, extras


def load_ply(f) -> Tuple[torch.Tensor, torch.Tensor]:
    """PyTorch3D's ``load_ply``: ``(verts (V, 3) float32, faces (F, 3) int64)``; faces (0, 3) for
    a point cloud. Polygons are fan-triangulated in PyTorch3D's order (see ``_triangles``).
    Colours and normals: ``IO().load_mesh``."""
    verts, faces, _ = mesh_arrays(read_ply(f))
    return torch.from_numpy(verts), torch.from_numpy(faces)


def save_ply(
    f,
    verts: torch.Tensor,
    faces: Optional[torch.Tensor] = None,
    verts_normals: Optional[torch.Tensor] = None,
    ascii: bool = False,
    decimal_places: Optional[int] = None,
    colors: Optional[torch.Tensor] = None,
    colors_as_uint8: bool = True,
) -> None:
    """Write vertices (V, 3), optional triangles (F, 3), normals (V, 3) and colours (V, 3) in
    [0, 1] (stored as uchar unless ``colors_as_uint8=False``). Binary little-endian by default."""
    verts = torch.as_tensor(verts).detach().cpu()
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"save_ply: verts must be (V, 3), got {tuple(verts.shape)}")
    n = verts.shape[0]
    cols = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    values = [verts.float().numpy()]
    if verts_normals is not None:
        vn = torch.as_tensor(verts_normals).detach().cpu().float()
        if vn.shape != verts.shape:
            raise ValueError("save_ply: verts_normals must have the shape of verts")
        cols += [("nx", "f4"), ("ny", "f4"), ("nz", "f4")]
        values.append(vn.numpy())
    if colors is not None:
        c = torch.as_tensor(colors).detach().cpu().float()
        if c.shape != verts.shape:
            raise ValueError("save_ply: colors must have the shape of verts")
        if colors_as_uint8:
            cols += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
            values.append((c.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy())
        else:
            cols += [("red", "f4"), ("green", "f4"), ("blue", "f4")]
            values.append(c.numpy())
    fcs = None
    if faces is not None:
        fcs = torch.as_tensor(faces).detach().cpu().long()
        if fcs.ndim != 2 or fcs.shape[1] != 3:
            raise ValueError(f"save_ply: faces must be (F, 3), got {tuple(fcs.shape)}")
        if fcs.numel() and (int(fcs.min()) < 0 or int(fcs.max()) >= n):
            raise ValueError("save_ply: face indices out of range")
    names = {"f4": "float", "u1": "uchar"}
    header = ["ply", f"format {'ascii' if ascii else 'binary_little_endian'} 1.0", "comment written by p3dlab"]
    header.append(f"element vertex {n}")
    header += [f"property {names[t]} {name}" for name, t in cols]
    if fcs is not None:
        header += [f"element face {fcs.shape[0]}", "property list uchar int vertex_indices"]
    header.append("end_header")
    head = ("\n".join(header) + "\n").encode("ascii")
    if ascii:
        buf = io.StringIO()
        fmt_f = f"%.{decimal_places}f" if decimal_places is not None else "%.9g"
        row_fmt = " ".join(fmt_f if t == "f4" else "%d" for _, t in cols)
        table = np.concatenate([v.astype(np.float64) for v in values], 1)
        np.savetxt(buf, table, fmt=row_fmt)
        if fcs is not None and len(fcs):
            np.savetxt(buf, np.concatenate([np.full((len(fcs), 1), 3), fcs.numpy()], 1), fmt="%d")
        body = buf.getvalue().encode("ascii")
    else:
        rec = np.empty(n, dtype=[(name, "<" + t) for name, t in cols])
        k = 0
        for v in values:
            for j in range(v.shape[1]):
                rec[cols[k][0]] = v[:, j]
                k += 1
        body = rec.tobytes()
        if fcs is not None:
            frec = np.empty(len(fcs), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
            frec["n"] = 3
            frec["idx"] = fcs.numpy()
            body += frec.tobytes()
    if isinstance(f, (str, os.PathLike)):
        with open(f, "wb") as fh:
            fh.write(head + body)
    else:
        f.write(head + body)
