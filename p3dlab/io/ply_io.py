"""PLY reading and writing (docs/conventions.md#file-formats): ASCII, binary little- and big-endian.

The reader keeps every element and property (``read_ply``), so colours, normals and UVs survive;
``load_ply`` returns PyTorch3D's ``(verts, faces)``. A file is data, never trusted: header counts
are checked against the bytes actually present before anything is allocated, and every failure is
a ``PLYError`` naming the file and the line (header, ASCII data) or byte offset (binary data).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from p3dlab.io.errors import PLYError

# PLY scalar types and their aliases -> numpy type codes
_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
MAX_HEADER_BYTES = 1 << 20


@dataclass
class PlyProperty:
    name: str
    dtype: str  # numpy code, e.g. "f4"
    count_dtype: Optional[str] = None  # set for list properties

    @property
    def is_list(self) -> bool:
        return self.count_dtype is not None


@dataclass
class PlyElement:
    name: str
    count: int
    properties: List[PlyProperty] = field(default_factory=list)
    line: int = 0


@dataclass
class PlyData:
    """A parsed PLY file: ``elements[name][prop]`` is an array (N,) for a scalar property, and for
    a list property either an (N, k) array (every list of length k) or a list of N arrays."""

    format: str
    header: List[PlyElement]
    elements: Dict[str, Dict[str, object]]
    comments: List[str]
    obj_info: List[str]


def _read_bytes(f) -> Tuple[bytes, object]:
    if isinstance(f, (str, os.PathLike)):
        path = os.fspath(f)
        try:
            with open(path, "rb") as fh:
                return fh.read(), path
        except OSError as e:
            raise PLYError(f"cannot open: {e.strerror}", path) from None
    if hasattr(f, "read"):
        data = f.read()
        if isinstance(data, str):
            data = data.encode("utf-8")
        return data, getattr(f, "name", None)
    raise PLYError(f"expected a path or a binary file object, got {type(f).__name__}")


def _parse_header(data: bytes, path):
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        bom = 3
    else:
        bom = 0
    if not data.startswith(b"ply"):
        raise PLYError("not a PLY file (it must start with 'ply')", path, line=1)
    m = re.search(rb"^end_header[ \t]*(\r\n|\n|\r)", data[:MAX_HEADER_BYTES], flags=re.M)
    if m is None:
        raise PLYError(f"no 'end_header' line within the first {MAX_HEADER_BYTES} bytes", path)
    end = (m.start(), m.end() - m.start())
    header_text = data[: end[0]].decode("ascii", errors="replace")
    body_start = bom + end[0] + end[1]
    fmt, elements, comments, obj_info = None, [], [], []
    for lineno, raw in enumerate(header_text.splitlines(), start=1):
        parts = raw.split()
        if not parts:
            continue
        key = parts[0]
        if lineno == 1:
            if raw.strip() != "ply":
                raise PLYError(f"first line must be 'ply', got {raw.strip()!r}", path, line=1)
            continue
        if key == "format":
            if len(parts) != 3 or parts[1] not in _FORMATS:
                raise PLYError(f"unknown format line {raw.strip()!r}", path, line=lineno)
            if parts[2] != "1.0":
                raise PLYError(f"unsupported PLY version {parts[2]!r}", path, line=lineno)
            fmt = parts[1]
        elif key == "comment":
            comments.append(raw[len("comment") :].strip())
        elif key == "obj_info":
            obj_info.append(raw[len("obj_info") :].strip())
        elif key == "element":
            if len(parts) != 3:
                raise PLYError(f"malformed element line {raw.strip()!r}", path, line=lineno)
            try:
                count = int(parts[2])
            except ValueError:
                raise PLYError(f"element count {parts[2]!r} is not an integer", path, line=lineno) from None
            if count < 0:
                raise PLYError(f"negative element count {count}", path, line=lineno)
            if any(e.name == parts[1] for e in elements):
                raise PLYError(f"element {parts[1]!r} is declared twice", path, line=lineno)
            elements.append(PlyElement(parts[1], count, line=lineno))
        elif key == "property":
            if not elements:
                raise PLYError("property before any element", path, line=lineno)
            if len(parts) == 3 and parts[1] in _TYPES:
                prop = PlyProperty(parts[2], _TYPES[parts[1]])
            elif len(parts) == 5 and parts[1] == "list" and parts[2] in _TYPES and parts[3] in _TYPES:
                if _TYPES[parts[2]][0] == "f":
                    raise PLYError("a list count must have an integer type", path, line=lineno)
                prop = PlyProperty(parts[4], _TYPES[parts[3]], _TYPES[parts[2]])
            else:
                raise PLYError(f"malformed or unknown property {raw.strip()!r}", path, line=lineno)
            if any(p.name == prop.name for p in elements[-1].properties):
                raise PLYError(f"property {prop.name!r} declared twice", path, line=lineno)
            elements[-1].properties.append(prop)
        else:
            raise PLYError(f"unknown header keyword {key!r}", path, line=lineno)
    if fmt is None:
        raise PLYError("missing 'format' line", path, line=2)
    header_lines = header_text.count("\n") + 2
    return fmt, elements, comments, obj_info, body_start, header_lines


# ----------------------------------------------------------------------------- binary
def _read_binary(data: bytes, start: int, fmt: str, elements: List[PlyElement], path):
    order = _FORMATS[fmt]
    pos = start
    out = {}
    for el in elements:
        scalars_only = not any(p.is_list for p in el.properties)
        if scalars_only:
            dt = np.dtype([(p.name, order + p.dtype) for p in el.properties])
            need = el.count * dt.itemsize
            if need > len(data) - pos:
                raise PLYError(
                    f"element {el.name!r} declares {el.count} records of {dt.itemsize} bytes ({need} bytes) "
                    f"but only {len(data) - pos} bytes remain",
                    path,
                    offset=pos,
                )
            arr = np.frombuffer(data, dtype=dt, count=el.count, offset=pos)
            out[el.name] = {p.name: arr[p.name].astype(np.dtype(p.dtype).newbyteorder("=")) for p in el.properties}
            pos += need
        else:
            out[el.name], pos = _read_binary_lists(data, pos, order, el, path)
    if pos != len(data):
        warnings.warn(f"{path}: {len(data) - pos} bytes after the last element are ignored", stacklevel=3)
    return out


def _min_record_size(el: PlyElement) -> int:
    return sum(np.dtype(p.count_dtype if p.is_list else p.dtype).itemsize for p in el.properties)


def _read_binary_lists(data: bytes, pos: int, order: str, el: PlyElement, path):
    """Elements with list properties. Fast path: every list has the length of the first record's
    (checked with one strided view); otherwise a record-by-record scan."""
    remain = len(data) - pos
    if el.count * _min_record_size(el) > remain:
        raise PLYError(
            f"element {el.name!r} declares {el.count} records needing at least {el.count * _min_record_size(el)} bytes "
            f"but only {remain} remain",
            path,
            offset=pos,
        )
    if el.count == 0:
        return {p.name: (np.zeros((0, 0), p.dtype) if p.is_list else np.zeros(0, p.dtype)) for p in el.properties}, pos
    # lengths of the first record's lists -> a fixed record layout
    fields, q = [], pos
    for p in el.properties:
        if p.is_list:
            cdt = np.dtype(order + p.count_dtype)
            if q + cdt.itemsize > len(data):
                raise PLYError(f"truncated list count in element {el.name!r}", path, offset=q)
            k = int(np.frombuffer(data, cdt, 1, q)[0])
            if k < 0 or q + cdt.itemsize + k * np.dtype(p.dtype).itemsize > len(data):
                raise PLYError(
                    f"list of {k} items in element {el.name!r} runs past the end of the file", path, offset=q
                )
            fields += [(p.name + "\0n", cdt), (p.name, np.dtype(order + p.dtype), (k,))]
            q += cdt.itemsize + k * np.dtype(p.dtype).itemsize
        else:
            fields.append((p.name, np.dtype(order + p.dtype)))
            q += np.dtype(p.dtype).itemsize
    dt = np.dtype(fields)
    if el.count * dt.itemsize <= len(data) - pos:
        arr = np.frombuffer(data, dtype=dt, count=el.count, offset=pos)
        uniform = all(
            (arr[p.name + "\0n"] == (arr[p.name].shape[1] if arr[p.name].ndim == 2 else 0)).all()
            for p in el.properties
            if p.is_list
        )
        if uniform:
            res = {p.name: arr[p.name].astype(np.dtype(p.dtype).newbyteorder("=")) for p in el.properties}
            return res, pos + el.count * dt.itemsize
    return _scan_binary_lists(data, pos, order, el, path)


def _scan_binary_lists(data: bytes, pos: int, order: str, el: PlyElement, path):
    cols: Dict[str, list] = {p.name: [] for p in el.properties}
    mv = memoryview(data)
    for r in range(el.count):
        for p in el.properties:
            if p.is_list:
                cdt = np.dtype(order + p.count_dtype)
                if pos + cdt.itemsize > len(data):
                    raise PLYError(f"record {r} of {el.name!r} is truncated", path, offset=pos)
                k = int(np.frombuffer(mv, cdt, 1, pos)[0])
                pos += cdt.itemsize
                idt = np.dtype(order + p.dtype)
                if k < 0 or pos + k * idt.itemsize > len(data):
                    raise PLYError(f"record {r} of {el.name!r}: list of {k} items runs past the end", path, offset=pos)
                cols[p.name].append(np.frombuffer(mv, idt, k, pos).astype(idt.newbyteorder("=")))
                pos += k * idt.itemsize
            else:
                dt = np.dtype(order + p.dtype)
                if pos + dt.itemsize > len(data):
                    raise PLYError(f"record {r} of {el.name!r} is truncated", path, offset=pos)
                cols[p.name].append(np.frombuffer(mv, dt, 1, pos)[0])
                pos += dt.itemsize
    out = {}
    for p in el.properties:
        out[p.name] = cols[p.name] if p.is_list else np.array(cols[p.name], dtype=p.dtype)
    return out, pos


# ----------------------------------------------------------------------------- ascii
def _line_of_token(text: bytes, token_index: int, first_line: int) -> int:
    """Line number (1-based in the file) of the token with the given index in ``text``."""
    seen = 0
    for k, line in enumerate(text.split(b"\n")):
        n = len(line.split())
        if seen + n > token_index:
            return first_line + k
        seen += n
    return first_line + text.count(b"\n")


def _read_ascii(data: bytes, start: int, elements: List[PlyElement], path, first_line: int):
    body = data[start:]
    if b"\0" in body:
        raise PLYError("NUL byte in ASCII data", path, line=first_line + body[: body.index(b"\0")].count(b"\n"))
    min_tokens = sum(el.count * len(el.properties) for el in elements)
    # every token takes at least 2 bytes ("0 "); refuse counts the file cannot hold before parsing
    if min_tokens > (len(body) + 1) // 2:
        raise PLYError(
            f"the header declares at least {min_tokens} values but the data has only {len(body)} bytes",
            path,
            line=first_line,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            tokens = np.array(body.split(), dtype=np.float64)
    except (ValueError, DeprecationWarning):
        for k, line in enumerate(body.split(b"\n")):
            for t in line.split():
                try:
                    float(t)
                except ValueError:
                    raise PLYError(f"non-numeric value {t[:40]!r}", path, line=first_line + k) from None
        raise PLYError("unparsable ASCII data", path, line=first_line) from None
    pos = 0
    out = {}
    for el in elements:
        props = el.properties
        if not any(p.is_list for p in props):
            n = el.count * len(props)
            if pos + n > len(tokens):
                raise PLYError(
                    f"element {el.name!r} needs {n} values but only {len(tokens) - pos} remain",
                    path,
                    line=_line_of_token(body, len(tokens), first_line),
                )
            block = tokens[pos : pos + n].reshape(el.count, len(props))
            out[el.name] = {p.name: _cast(block[:, i], p, path, el, first_line) for i, p in enumerate(props)}
            pos += n
            continue
        out[el.name], pos = _ascii_lists(tokens, pos, el, path, body, first_line)
    if pos != len(tokens):
        raise PLYError(
            f"{len(tokens) - pos} values after the last declared element",
            path,
            line=_line_of_token(body, pos, first_line),
        )
    return out


def _cast(values: np.ndarray, p: PlyProperty, path, el, first_line):
    dt = np.dtype(p.dtype)
    if dt.kind in "iu":
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise PLYError(f"property {p.name!r} of {el.name!r} has non-integer values", path, line=el.line)
        info = np.iinfo(dt)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise PLYError(f"property {p.name!r} of {el.name!r} has values outside {p.dtype}", path, line=el.line)
    return values.astype(dt)


def _ascii_lists(tokens, pos, el, path, body, first_line):
    props = el.properties
    # fast path: single trailing list property, all lists the length of the first record's
    if el.count and sum(p.is_list for p in props) == 1 and props[-1].is_list:
        ns = len(props) - 1
        if pos + ns < len(tokens):
            k = tokens[pos + ns]
            width = ns + 1 + int(k) if k == int(k) and k >= 0 else -1
            if width > 0 and pos + width * el.count <= len(tokens):
                block = tokens[pos : pos + width * el.count].reshape(el.count, width)
                if np.all(block[:, ns] == k):
                    res = {p.name: _cast(block[:, i], p, path, el, first_line) for i, p in enumerate(props[:-1])}
                    res[props[-1].name] = _cast(block[:, ns + 1 :], props[-1], path, el, first_line)
                    return res, pos + width * el.count
    cols = {p.name: [] for p in props}
    for r in range(el.count):
        for p in props:
            if pos >= len(tokens):
                raise PLYError(
                    f"record {r} of {el.name!r} is missing", path, line=_line_of_token(body, pos, first_line)
                )
            if p.is_list:
                k = tokens[pos]
                if k != int(k) or k < 0 or pos + 1 + int(k) > len(tokens):
                    raise PLYError(
                        f"bad list length {k} in record {r} of {el.name!r}",
                        path,
                        line=_line_of_token(body, pos, first_line),
                    )
                k = int(k)
                cols[p.name].append(_cast(tokens[pos + 1 : pos + 1 + k], p, path, el, first_line))
                pos += 1 + k
            else:
                cols[p.name].append(tokens[pos])
                pos += 1
    res = {
        p.name: (cols[p.name] if p.is_list else _cast(np.array(cols[p.name]), p, path, el, first_line)) for p in props
    }
    return res, pos


def read_ply(f) -> PlyData:
    """Parse a PLY file (path or binary file object) into a :class:`PlyData`."""
    data, path = _read_bytes(f)
    fmt, elements, comments, obj_info, start, header_lines = _parse_header(data, path)
    if fmt == "ascii":
        body = _read_ascii(data, start, elements, path, header_lines)
    else:
        body = _read_binary(data, start, fmt, elements, path)
    return PlyData(fmt, elements, body, comments, obj_info)


# ----------------------------------------------------------------------------- meshes
def _faces_from_lists(lists, n_verts: int, path) -> np.ndarray:
    """Fan-triangulate polygons (v0, v_i, v_{i+1}) in PyTorch3D's order; check indices against the vertex count.

    PyTorch3D's ``load_ply`` orders the triangles in two ways, and face indices follow it exactly:
    when every polygon has the same number k of corners, fan triangle 1 of every polygon comes first,
    then fan triangle 2 of every polygon, ... (k - 2 blocks of F triangles); when the sizes are mixed,
    each polygon's triangles come together, polygon after polygon.
    """
    if not isinstance(lists, np.ndarray) and len(lists) and len({len(poly) for poly in lists}) == 1:
        lists = np.stack([np.asarray(poly) for poly in lists])
    if isinstance(lists, np.ndarray):
        if lists.ndim != 2:
            raise PLYError("malformed face list", path)
        k = lists.shape[1]
        if lists.shape[0] and k < 3:
            raise PLYError(f"faces with {k} vertices (at least 3 needed)", path)
        fans = [lists[:, [0, i, i + 1]] for i in range(1, k - 1)]
        tris = np.concatenate(fans, 0) if fans else np.zeros((0, 3), np.int64)
    else:
        out = []
        for r, poly in enumerate(lists):
            if len(poly) < 3:
                raise PLYError(f"face {r} has {len(poly)} vertices (at least 3 needed)", path)
            out += [[poly[0], poly[i], poly[i + 1]] for i in range(1, len(poly) - 1)]
        tris = np.array(out, dtype=np.int64).reshape(-1, 3)
    tris = tris.astype(np.int64)
    if tris.size and (tris.min() < 0 or tris.max() >= n_verts):
        bad = np.nonzero((tris < 0).any(1) | (tris >= n_verts).any(1))[0][0]
        raise PLYError(f"a face refers to vertex {tris[bad].tolist()} but there are {n_verts} vertices", path)
    return tris


def _face_list(el_props: Dict[str, object]):
    for name in ("vertex_indices", "vertex_index"):
        if name in el_props:
            return el_props[name]
    return None


def mesh_arrays(ply: PlyData, path=None):
    """(verts (V,3) float32, faces (F,3) int64, extras dict) from a parsed PLY."""
    v = ply.elements.get("vertex")
    if v is None:
        raise PLYError("no 'vertex' element", path)
    for c in ("x", "y", "z"):
        if c not in v or isinstance(v[c], list):
            raise PLYError(f"vertex element lacks scalar property {c!r}", path)
    verts = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float32)
    faces = np.zeros((0, 3), np.int64)
    if "face" in ply.elements:
        lists = _face_list(ply.elements["face"])
        if lists is not None:
            faces = _faces_from_lists(lists, len(verts), path)
    extras = {}
    if all(c in v for c in ("nx", "ny", "nz")):
        extras["normals"] = np.stack([v["nx"], v["ny"], v["nz"]], 1).astype(np.float32)
    if all(c in v for c in ("red", "green", "blue")):
        cols = np.stack([v["red"], v["green"], v["blue"]], 1)
        extras["colors"] = (cols / 255.0 if cols.dtype.kind in "iu" else cols).astype(np.float32)
    for a, b in (("u", "v"), ("s", "t"), ("texture_u", "texture_v")):
        if a in v and b in v:
            extras["verts_uvs"] = np.stack([v[a], v[b]], 1).astype(np.float32)
            break
    return verts, faces, extras


def load_ply(f) -> Tuple[torch.Tensor, torch.Tensor]:
    """PyTorch3D's ``load_ply``: ``(verts (V, 3) float32, faces (F, 3) int64)``; faces (0, 3) for
    a point cloud. Polygons are fan-triangulated in PyTorch3D's order (see ``_faces_from_lists``).
    Colours and normals: ``IO().load_mesh``."""
    data = read_ply(f)
    verts, faces, _ = mesh_arrays(data, getattr(f, "name", f if isinstance(f, (str, os.PathLike)) else None))
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
