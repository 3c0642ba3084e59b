"""Fuzzing the readers: every case loads sane content or raises a FileFormatError that says where.

Inputs: structure-aware mutations of real and generated PLY and OBJ/MTL files (header counts and
types, list lengths, indices, numbers, keywords, separators, corner forms, the hostile tokens of
issue 34) on top of plain byte mutations, random bytes, random PLY headers, and a corpus of
hand-made hostile files (``HOSTILE_PLY``, ``HOSTILE_OBJ``), which also seed the mutations.

Every case must either load, with sane content (finite coordinates, indices in range; OBJ geometry
equal to what ``_reference_obj``, a line-by-line reading of the documented grammar, gives), or raise
a ``FileFormatError`` whose ``line`` or ``offset`` is set: any other exception, an error without a
place, content the grammar refuses, or a case over ``deadline`` fails. ``--hypothesis-show-statistics``
counts the outcomes.

CI runs 4 x 1,250 = 5,000 cases (fixed seed); ``make fuzz`` runs P3DLAB_FUZZ_EXAMPLES (default
50,000) each.
"""

import atexit
import io
import math
import os
import re
import shutil
import struct
import tempfile
import warnings
import zlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from p3dlab import data
from p3dlab.io import (
    IO,
    FileFormatError,
    load_mtl,
    load_obj,
    load_objs_as_meshes,
    load_ply,
    save_obj,
    save_ply,
)

EXAMPLES = int(os.environ.get("P3DLAB_FUZZ_EXAMPLES", "1250"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=10),  # a hang; the cases are a few kilobytes
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata"
XYZ = "property float x\nproperty float y\nproperty float z\n"


# ------------------------------------------------------------------ the hand-made corpus
def _ply(fmt: str, head: str, body: bytes = b"") -> bytes:
    return f"ply\nformat {fmt} 1.0\n{head}end_header\n".encode() + body


def _png(width: int, height: int) -> bytes:
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\0" + bytes(3 * width) for _ in range(height)) if width * height < 100 else b"\0")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


_V3 = "element vertex 3\n" + XYZ
_FACE = "element face 1\nproperty list uchar int vertex_indices\n"
_BIN_V3 = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], "<f4").tobytes()
_BIN_TRI = b"\x03" + np.array([0, 1, 2], "<i4").tobytes()

HOSTILE_PLY = {
    "count 2^63 without properties": _ply("binary_little_endian", f"element nothing {2**63}\n"),
    "count 2^63-1 without properties": _ply("binary_little_endian", f"element nothing {2**63 - 1}\n" + _V3, _BIN_V3),
    "count 2^63-1 with properties": _ply("ascii", f"element vertex {2**63 - 1}\n" + XYZ, b"0 0 0\n"),
    "count with underscore": _ply("ascii", "element vertex 1_0\n" + XYZ, b"0 0 0\n" * 10),
    "count in other digits": _ply("ascii", "element vertex \u0663\n" + XYZ, b"0 0 0\n" * 3),
    "count more than the data holds": _ply("binary_little_endian", _V3 + "element face 99\n" + _FACE[15:], _BIN_V3),
    "NUL in a property name": _ply("ascii", "element vertex 1\nproperty float x\0n\nproperty float y\n", b"0 0\n"),
    "duplicate property": _ply("ascii", "element vertex 1\nproperty float x\nproperty float x\n", b"0 0\n"),
    "vertical tab in the header": _ply("ascii", "element vertex 1\x0b3\n" + XYZ, b"0 0 0\n"),
    "non-ASCII property name": _ply("ascii", "element vertex 1\nproperty float \u00e9\n", b"0\n"),
    "list colours": _ply("ascii", "element vertex 1\n" + XYZ + "property list uchar uchar red\n"
                         "property uchar green\nproperty uchar blue\n", b"0 0 0 1 255 0 0\n"),
    "list normals": _ply("ascii", "element vertex 1\n" + XYZ + "property list uchar float nx\n"
                         "property float ny\nproperty float nz\n", b"0 0 0 1 1 0 0\n"),
    "list uvs": _ply("ascii", "element vertex 1\n" + XYZ + "property list uchar float u\nproperty float v\n",
                     b"0 0 0 2 1 1 0\n"),
    "list coordinates": _ply("ascii", "element vertex 1\nproperty list uchar float x\nproperty float y\n"
                             "property float z\n", b"1 0 0 0\n"),
    "float face indices ascii": _ply("ascii", _V3 + "element face 1\nproperty list uchar float vertex_indices\n",
                                     b"0 0 0\n1 0 0\n0 1 0\n3 0 1.7 2\n"),
    "float face indices binary": _ply("binary_little_endian", _V3 + "element face 1\n"
                                      "property list uchar float vertex_indices\n",
                                      _BIN_V3 + b"\x03" + np.array([0, 1.7, 2], "<f4").tobytes()),
    "float list count": _ply("ascii", _V3 + "element face 1\nproperty list float int vertex_indices\n",
                             b"0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n"),
    "index out of range ascii": _ply("ascii", _V3 + _FACE, b"0 0 0\n1 0 0\n0 1 0\n3 0 1 3\n"),
    "index out of range binary": _ply("binary_big_endian", _V3 + "element face 1\n"
                                      "property list uchar uint vertex_indices\n",
                                      np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], ">f4").tobytes() + b"\x03"
                                      + np.array([0, 1, 2**32 - 1], ">u4").tobytes()),
    "two corners": _ply("ascii", _V3 + _FACE, b"0 0 0\n1 0 0\n0 1 0\n2 0 1\n"),
    "polygon claiming 2M corners": _ply("binary_little_endian", _V3 + "element face 1\n"
                                        "property list int int vertex_indices\n",
                                        _BIN_V3 + np.array([2_000_000, 0, 1, 2], "<i4").tobytes()),
    "ragged polygons": _ply("binary_little_endian", _V3 + "element face 3\nproperty list uchar int vertex_indices\n",
                            _BIN_V3 + _BIN_TRI + b"\x04" + np.array([0, 1, 2, 1], "<i4").tobytes() + _BIN_TRI),
    "two lists per face": _ply("binary_little_endian", _V3 + "element face 2\n"
                               "property list uchar int vertex_indices\nproperty list uchar float texcoord\n",
                               _BIN_V3 + (_BIN_TRI + b"\x02" + np.zeros(2, "<f4").tobytes()) * 2),
    **{
        f"list count {k}": _ply("ascii", _V3 + _FACE, f"0 0 0\n1 0 0\n0 1 0\n{k} 0 1 2\n".encode())
        for k in ("inf", "nan", "-1", "2.5", "300", "1e30", "-inf")
    },
    **{
        f"value {t!r}": _ply("ascii", "element vertex 1\n" + XYZ, b"0 " + t + b" 0\n")
        for t in (b"1e39", b"1_0", "\u0661".encode(), b"1\x0b2", b"1\x0c", b"0x10", b"nan", b"inf", b"\xff", b"\0")
    },
    "NaN coordinates binary": _ply("binary_little_endian", "element vertex 1\n" + XYZ,
                                   np.array([np.nan, 0, 0], "<f4").tobytes()),
    "inf normal": _ply("ascii", "element vertex 1\n" + XYZ + "property float nx\nproperty float ny\n"
                       "property float nz\n", b"0 0 0 inf 0 0\n"),
    "NaN colour": _ply("ascii", "element vertex 1\n" + XYZ + "property float red\nproperty float green\n"
                       "property float blue\n", b"0 0 0 nan 0 0\n"),
    "old Mac line ends": _ply("ascii", "element vertex 1\n" + XYZ, b"1 2 3\n").replace(b"\n", b"\r"),
    "UTF-8 comment": _ply("ascii", "comment d\u00e9j\u00e0\nelement vertex 1\n" + XYZ, b"1 2 3\n"),
    "no end_header": b"ply\nformat ascii 1.0\nelement vertex 1\n",
    "second format line": _ply("ascii", "format binary_little_endian 1.0\nelement vertex 0\n" + XYZ),
    "empty": b"",
    "many elements": _ply("ascii", "".join(f"element e{i} 0\n" for i in range(2000))),
    "many properties": _ply("binary_little_endian", "element v 1\n" + "".join(f"property uchar p{i}\n" for i in range(2000)),
                            bytes(2000)),
}  # fmt: skip

_TRI_OBJ = "v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nvn 0 0 1\n"
HOSTILE_OBJ = {
    "mixed corner forms": _TRI_OBJ + "f 1/1 2/2/1 3/3/1\n",
    "corner 1/2/3/4": _TRI_OBJ + "f 1/2/3/4 2 3\n",
    "four-part corners": _TRI_OBJ + "f 1/1/1/1 2/2/1/1 3/3/1/1\n",
    "texture index 0": _TRI_OBJ + "f 1/0 2/1 3/2\n",
    "normal index 0": _TRI_OBJ + "f 1//0 2//1 3//1\n",
    "vertex index 0": _TRI_OBJ + "f 0 1 2\n",
    "minus zero": _TRI_OBJ + "f -0 1 2\n",
    "underscore number": "v 1_0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n",
    "underscore index": _TRI_OBJ + "f 1 2 3_0\n",
    "other digits": "v \u0661 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n",
    "other digit index": _TRI_OBJ + "f 1 2 \u0663\n",
    "float index": _TRI_OBJ + "f 1 2 3.0\n",
    "1e39": "v 1e39 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n",
    "1e400": "v 1e400 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n",
    "nan vt": _TRI_OBJ + "vt nan 0\nf 1/4 2/1 3/2\n",
    "inf vn": _TRI_OBJ + "vn 0 inf 0\nf 1//2 2//1 3//1\n",
    "vertical tab in a keyword line": "v 0 0 0\nv 1 0 0\nv 0 1 0\x0bv 1 1 0\nf 1 2 3\n",
    "vertical tab and a non-ASCII comment": "# \u00e9\nv 0 0 0\nv 1 0 0\nv 0 1 0\x0bv 1 1 0\nf 1 2 3\n",
    "form feed after a keyword": _TRI_OBJ + "f\x0c1 2 3\n",
    "no-break space": _TRI_OBJ + "f\u00a01 2 3\n",
    "a huge polygon": "v 0 0 0\nv 1 0 0\nv 0 1 0\nf " + "1 2 3 " * 3000 + "\n",
    "mtllib 200 times": "mtllib case.mtl\n" * 200 + _TRI_OBJ + "usemtl red\nf 1 2 3\n",
    "many usemtl": _TRI_OBJ + "".join(f"usemtl m{i}\nf 1 2 3\n" for i in range(2000)),
    "mtllib outside": "mtllib ../outside.mtl\n" + _TRI_OBJ + "f 1 2 3\n",
    "mtllib absolute": "mtllib /dev/zero\n" + _TRI_OBJ + "f 1 2 3\n",
    "mtllib directory": "mtllib sub\n" + _TRI_OBJ + "f 1 2 3\n",
    "eps texture": "mtllib eps.mtl\n" + _TRI_OBJ + "usemtl m\nf 1/1 2/2 3/3\n",
    "bomb texture": "mtllib bomb.mtl\n" + _TRI_OBJ + "usemtl m\nf 1/1 2/2 3/3\n",
    "directory texture": "mtllib dir.mtl\n" + _TRI_OBJ + "usemtl m\nf 1/1 2/2 3/3\n",
    "non-finite material": "mtllib nan.mtl\n" + _TRI_OBJ + "usemtl m\nf 1 2 3\n",
    "several materials, no usemtl": "mtllib two.mtl\n" + _TRI_OBJ + "f 1 2 3\n",
    "NUL": _TRI_OBJ + "f 1 2 3\n\0",
    "CR line ends": _TRI_OBJ.replace("\n", "\r") + "f 1 2 3\r",
    "BOM and CRLF": "\ufeff" + _TRI_OBJ.replace("\n", "\r\n") + "f -3 -2 -1\r\n",
}

_SIDE_FILES = {  # beside every OBJ case
    "case.mtl": b"newmtl red\nKa 0.1 0.1 0.1\nKd 1 0 0\nKs 0 0 0\nNs 10\nmap_Kd ok.png\nnewmtl blue\nKd 0 0 1\n",
    "eps.mtl": b"newmtl m\nmap_Kd eps.png\n",
    "bomb.mtl": b"newmtl m\nmap_Kd bomb.png\n",
    "dir.mtl": b"newmtl m\nmap_Kd sub\n",
    "nan.mtl": b"newmtl m\nKd nan nan nan\n",
    "two.mtl": b"newmtl a\nnewmtl b\n",
    "ok.png": _png(4, 4),
    "eps.png": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n%%EOF\n",
    "bomb.png": _png(13000, 13000),
}
WORK = Path(tempfile.mkdtemp(prefix="p3dlab-fuzz-"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)
(WORK / "sub").mkdir()
for _name, _blob in _SIDE_FILES.items():
    (WORK / _name).write_bytes(_blob)


# ------------------------------------------------------------------ seeds
def _seed_files():
    m = data.colored_cube()
    out = {}
    for ascii_ in (False, True):
        buf = io.BytesIO()
        save_ply(
            buf,
            m.verts_packed(),
            m.faces_packed(),
            verts_normals=m.verts_normals_packed(),
            colors=m.textures.verts_features_packed(),
            ascii=ascii_,
        )
        out[f"ply_{ascii_}"] = buf.getvalue()
    t = io.StringIO()
    s = data.uv_sphere(3, 4, texture=data.uv_checker_texture(4))
    save_obj(
        t,
        s.verts_packed(),
        s.faces_packed(),
        normals=s.verts_normals_packed(),
        faces_normals_idx=s.faces_packed(),
        verts_uvs=s.textures.verts_uvs_list()[0],
        faces_uvs=s.textures.faces_uvs_list()[0],
    )
    out["obj"] = t.getvalue().encode() + b"f -1 -2 -3 -4\nf 1//1 2//2 3//3\n"
    out["obj_mtl"] = (
        "mtllib case.mtl\n" + _TRI_OBJ + "usemtl red\nf 1/1/1 2/2/1 3/3/1\nusemtl blue\nf 1 2 3\n"
    ).encode()
    for rel in (
        "book/chap1/ply_io/cube.ply",
        "book/chap1/ply_io/parallel_plane_color.ply",
        "book/chap1/obj_io/cube.obj",
        "book/chap2/data/dodecahedron.obj",
    ):
        p = TESTDATA / rel
        if p.is_file():
            out[rel] = p.read_bytes()
    return out


SEEDS = _seed_files()
PLY_SEEDS = [v for k, v in SEEDS.items() if "ply" in k] + [
    HOSTILE_PLY[k] for k in ("ragged polygons", "two lists per face", "old Mac line ends", "inf normal")
]
OBJ_SEEDS = [v for k, v in SEEDS.items() if "obj" in k] + [s.encode() for s in HOSTILE_OBJ.values() if len(s) < 4000]
MTL_SEEDS = [_SIDE_FILES["case.mtl"], b"newmtl a\nKd 0.5\nKs 1 1 1\nNs 2\n# c\nnewmtl b\nmap_Kd -s 1 1 1 ok.png\n"]

INTERESTING = [
    b"0",
    b"-1",
    b"4294967295",
    b"1e308",
    b"nan",
    b"-inf",
    b"999999999999",
    b"\0",
    b"\xff",
    b"/",
    b"//",
    b"\n",
    b"\r\n",
    b" ",
    b"end_header\n",
    b"element vertex 99999999\n",
    b"property list uchar int vertex_indices\n",
    b"f 1/2/3 4\n",
    b"mtllib ../../x.mtl\n",
]
NUMBERS = [
    b"0", b"-0", b"1", b"-1", b"+1", b"2", b"3", b"4", b"255", b"256", b"65536", b"2147483648", b"4294967295",
    b"9223372036854775807", b"9223372036854775808", b"99999999999999999999", b"1e39", b"-1e39", b"1e400", b"nan",
    b"-nan", b"inf", b"-Infinity", b"1_0", "\u0661".encode(), "\u0663".encode(), b"2.5", b"1.", b".5", b"0x10",
    b"1e", b"--1", b"1.5.2", b"", b"3.0", b"1e5",
]  # fmt: skip
SEPARATORS = [b"\t", b"  ", b"\x0b", b"\x0c", b"\x1c", b"\x00", "\u00a0".encode(), "\u2003".encode(), b"\r", b"#"]
PLY_TYPES = [b"char", b"uchar", b"short", b"ushort", b"int", b"uint", b"float", b"double", b"int8", b"float64",
             b"list", b"fancy", b""]  # fmt: skip
PLY_HEADER_LINES = [
    b"element extra 0", b"element extra 5", b"property float x", b"property list uchar int vertex_indices",
    b"property list float int n", b"property list uchar float vertex_indices", b"comment x\x00", b"comment d\xc3\xa9j",
    b"format ascii 1.0", b"element vertex 3", b"obj_info \xff", b"property uchar red", b"property float x\x00n",
    b"element e 9223372036854775807", b"property list uchar uchar red", b"\x0bproperty float y", b"  property int q",
    b"property list int int vertex_index", b"element face 1",
]  # fmt: skip
OBJ_LINES = [
    b"usemtl red", b"usemtl blue", b"usemtl nowhere", b"usemtl", b"mtllib case.mtl", b"mtllib case.mtl case.mtl",
    b"mtllib ../x.mtl", b"mtllib /dev/zero", b"mtllib sub", b"mtllib missing.mtl", b"mtllib eps.mtl",
    b"mtllib bomb.mtl", b"mtllib nan.mtl", b"mtllib two.mtl", b"vt nan 0", b"vn 0 0 inf", b"v 1e39 0 0",
    b"f 1/0 2/1 3/1", b"f 1 2 3 \\", b"g group", b"o thing", b"s off", b"# \xc3\xa9", b"  v 1 2 3", b"vt 0.5",
    b"v 1 2", b"f 1 2", b"vp 1 2 3", b"l 1 2",
]  # fmt: skip
BINARY_VALUES = [
    b"\x00", b"\x02", b"\x04", b"\xff", struct.pack("<i", -1), struct.pack(">i", -1), struct.pack("<I", 2**32 - 1),
    struct.pack("<i", 2**31 - 1), struct.pack(">i", 3), struct.pack("<H", 65535), struct.pack("<f", math.nan),
    struct.pack(">f", math.inf), struct.pack("<f", -math.inf), struct.pack("<f", 1.5), struct.pack("<d", 1e300),
]  # fmt: skip
MTL_LINES = [
    b"newmtl red", b"newmtl", b"Kd nan nan nan", b"Ka 1e39 0 0", b"Ks 1_0 0 0", b"Ns inf", b"Kd 1 2", b"Kd 0.5",
    b"map_Kd eps.png", b"map_Kd bomb.png", b"map_Kd sub", b"map_Kd ../outside.png", b"map_Kd /etc/passwd",
    b"map_Kd missing.png", b"map_Kd", b"Kd\x0b1 1 1", b"illum 2", b"d 0.5",
]  # fmt: skip


# ------------------------------------------------------------------ mutations
def _byte_op(draw, blob: bytearray) -> bytearray:
    op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice", "repeat"]))
    pos = draw(st.integers(0, max(len(blob) - 1, 0)))
    if op == "flip" and blob:
        blob[pos] = draw(st.integers(0, 255))
    elif op == "insert":
        blob[pos:pos] = draw(st.sampled_from(INTERESTING))
    elif op == "delete":
        del blob[pos : pos + draw(st.integers(1, 16))]
    elif op == "truncate":
        del blob[pos:]
    elif op == "splice":
        blob[pos : pos + draw(st.integers(0, 8))] = draw(st.binary(max_size=12))
    elif op == "repeat":
        blob[pos:pos] = blob[pos : pos + draw(st.integers(1, 64))] * draw(st.integers(1, 4))
    return blob


def _pick(draw, items):
    return draw(st.integers(0, len(items) - 1)) if items else None


def _replace_token(draw, line: bytes, choices) -> bytes:
    """One whitespace-separated token of ``line`` (not the keyword) replaced by one of ``choices``."""
    spans = [m.span() for m in re.finditer(rb"[^ \t]+", line)][1:]
    if not spans:
        return line
    a, b = spans[_pick(draw, spans)]
    return line[:a] + draw(st.sampled_from(choices)) + line[b:]


def _ply_header_op(draw, blob: bytes) -> bytes:
    end = blob.find(b"end_header")
    if end < 0:
        return blob
    lines, body = blob[:end].split(b"\n"), blob[end:]
    op = draw(st.sampled_from(["count", "type", "insert", "format", "drop", "swap"]))
    i = _pick(draw, lines)
    if op == "count":
        counts = [k for k, ln in enumerate(lines) if ln.startswith(b"element")]
        if counts:
            k = counts[_pick(draw, counts)]
            lines[k] = b" ".join(lines[k].split()[:2] + [draw(st.sampled_from(NUMBERS))])
    elif op == "type":
        props = [k for k, ln in enumerate(lines) if ln.startswith(b"property")]
        if props:
            k = props[_pick(draw, props)]
            lines[k] = _replace_token(draw, lines[k], PLY_TYPES)
    elif op == "insert":
        lines.insert(max(i, 2), draw(st.sampled_from(PLY_HEADER_LINES)))
    elif op == "format":
        fmt = draw(st.sampled_from([b"ascii", b"binary_little_endian", b"binary_big_endian"]))
        lines = [b"format " + fmt + b" 1.0" if ln.startswith(b"format") else ln for ln in lines]
    elif op == "drop" and len(lines) > 3:
        del lines[max(i, 2)]
    elif op == "swap" and len(lines) > 4:
        j = _pick(draw, lines)
        lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines) + body


def _ply_body_op(draw, blob: bytes) -> bytes:
    end = blob.find(b"end_header\n")
    if end < 0:
        return blob
    start = end + len(b"end_header\n")
    head, body = blob[:start], bytearray(blob[start:])
    if b"format ascii" in head:
        lines = bytes(body).split(b"\n")
        k = _pick(draw, lines)
        spans = [m.span() for m in re.finditer(rb"[^ \t\r]+", lines[k])]
        if spans:
            a, b = spans[_pick(draw, spans)]
            new = draw(st.sampled_from(NUMBERS + SEPARATORS))
            lines[k] = lines[k][:a] + new + lines[k][b:]
        return head + b"\n".join(lines)
    if body:
        pos = draw(st.integers(0, len(body) - 1))
        packed = draw(st.sampled_from(BINARY_VALUES))
        body[pos : pos + len(packed)] = packed
    return head + bytes(body)


@st.composite
def ply_case(draw):
    blob = draw(st.sampled_from(PLY_SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["header", "header", "body", "body", "bytes"]))
        if op == "header":
            blob = _ply_header_op(draw, blob)
        elif op == "body":
            blob = _ply_body_op(draw, blob)
        else:
            blob = bytes(_byte_op(draw, bytearray(blob)))
    return blob


def _corner(draw) -> bytes:
    a, b, c = (draw(st.sampled_from([b"1", b"2", b"3", b"-1", b"4"] + NUMBERS)) for _ in range(3))
    forms = [a, a + b"/" + b, a + b"//" + c, a + b"/" + b + b"/" + c, a + b"/" + b + b"/" + c + b"/" + a,
             a + b"/", b"/" + a, a + b"//", b"/" + b + b"/" + c]  # fmt: skip
    return draw(st.sampled_from(forms))


def _text_op(draw, blob: bytes, extra_lines) -> bytes:
    """One mutation of a line of an OBJ or MTL file; an operation that does not fit the line drawn
    becomes a byte mutation."""
    lines = blob.split(b"\n")
    k = _pick(draw, lines)
    op = draw(st.sampled_from(["number", "corner", "corners", "separator", "insert", "indent", "line ends", "bytes"]))
    line = lines[k]
    if op == "number":
        lines[k] = _replace_token(draw, line, NUMBERS)
    elif op == "corner" and line.startswith(b"f"):
        spans = [m.span() for m in re.finditer(rb"[^ \t]+", line)][1:]
        if spans:
            a, b = spans[_pick(draw, spans)]
            lines[k] = line[:a] + _corner(draw) + line[b:]
    elif op == "corners" and line.startswith(b"f"):
        parts = line.split()
        n = draw(st.sampled_from([0, 1, 2, 4, 300]))
        lines[k] = b" ".join(parts[: n + 1] if n < 3 else parts + parts[1:2] * (n - len(parts) + 1))
    elif op == "separator" and b" " in line:
        at = [m.start() for m in re.finditer(rb" ", line)]
        p = at[_pick(draw, at)]
        lines[k] = line[:p] + draw(st.sampled_from(SEPARATORS)) + line[p + 1 :]
    elif op == "insert":
        lines[k:k] = [draw(st.sampled_from(extra_lines))] * draw(st.sampled_from([1, 1, 2, 50]))
    elif op == "indent":
        lines[k] = draw(st.sampled_from([b" ", b"\t", b"  "])) + line
    elif op == "line ends":
        return b"\r\n".join(lines) if draw(st.booleans()) else b"\r".join(lines)
    else:
        return bytes(_byte_op(draw, bytearray(blob)))
    return b"\n".join(lines)


@st.composite
def obj_case(draw):
    obj = draw(st.sampled_from(OBJ_SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        obj = _text_op(draw, obj, OBJ_LINES)
    mtl = draw(st.sampled_from(MTL_SEEDS))
    if draw(st.booleans()):
        mtl = _text_op(draw, mtl, MTL_LINES)
    return obj, mtl


# ------------------------------------------------------------------ what every case must satisfy
def _event(text: str) -> None:
    try:
        event(text)  # counted by --hypothesis-show-statistics
    except InvalidArgument:  # outside a Hypothesis test: the corpus
        pass


def _outcome(fn, *args, **kwargs):
    """``fn``'s result, or None when it raised a FileFormatError that names a line or byte offset."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = fn(*args, **kwargs)
        except FileFormatError as e:
            assert e.line is not None or e.offset is not None, f"error without a place: {e}"
            _event(f"refused: {type(e).__name__}")
            return None
    _event("loaded")
    return out


def _check_ply_mesh(verts: torch.Tensor, faces: torch.Tensor):
    assert verts.ndim == 2 and verts.shape[1] == 3 and verts.dtype == torch.float32
    assert torch.isfinite(verts).all()
    assert faces.ndim == 2 and faces.shape[1] == 3 and faces.dtype == torch.int64
    if faces.numel():
        assert 0 <= int(faces.min()) and int(faces.max()) < verts.shape[0]


def _check_index(idx: torch.Tensor, values: torch.Tensor, missing_ok: bool):
    n = 0 if values is None else len(values)
    if idx.numel():
        assert int(idx.min()) >= (-1 if missing_ok else 0) and int(idx.max()) < n
    if values is not None:
        assert torch.isfinite(values).all()


def _check_obj(verts, faces, aux):
    assert torch.isfinite(verts).all()
    _check_index(faces.verts_idx, verts, missing_ok=False)
    _check_index(faces.textures_idx, aux.verts_uvs, missing_ok=True)
    _check_index(faces.normals_idx, aux.normals, missing_ok=True)
    assert faces.materials_idx.numel() == 0 or int(faces.materials_idx.min()) >= -1
    for colors in (aux.material_colors or {}).values():
        assert all(torch.isfinite(v).all() for v in colors.values())
    for image in (aux.texture_images or {}).values():
        assert torch.isfinite(image).all() and 0 <= float(image.min()) and float(image.max()) <= 1


_NUM = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INDEX = re.compile(r"[+-]?[0-9]{1,18}")


def _reference_obj(blob: bytes):
    """The geometry of an OBJ file read line by line by the documented grammar: (verts (V, 3)
    float32, per triangle corner (v, vt, vn) 0-based with -1 for missing), or None where the file
    breaks a rule. Slow and simple on purpose: the fuzz cases compare the real reader with it."""
    text = blob.decode("utf-8", errors="replace")
    text = text[1:] if text.startswith("\ufeff") else text
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if re.search(r"[\x00-\x08\x0b-\x1f]", text):
        return None
    found = {"v": [], "vt": [], "vn": []}
    faces = []  # (corner strings, how many v / vt / vn were defined before)
    for line in text.split("\n"):
        key, *body = re.split(r"[ \t]+", line.strip(" \t"), maxsplit=1)
        tokens = [t for t in re.split(r"[ \t]+", body[0].split("#", 1)[0]) if t] if body else []
        if key in found:
            need = {"v": 3, "vt": 2, "vn": 3}[key]
            if len(tokens) < need or not all(_NUM.fullmatch(t) and math.isfinite(float(t)) for t in tokens):
                return None
            values = [float(t) for t in tokens[:need]]
            with np.errstate(over="ignore"):
                if not np.isfinite(np.array(values, np.float32)).all():
                    return None
            found[key].append(values)
        elif key == "f":
            faces.append((tokens, len(found["v"]), len(found["vt"]), len(found["vn"])))
    counts = {k: len(v) for k, v in found.items()}
    corners_out = []
    for tokens, *before in faces:
        if len(tokens) < 3:
            return None
        forms = {(len(t.split("/")), t.split("/")[1] == "" if t.count("/") == 2 else None) for t in tokens}
        if len(forms) != 1:
            return None
        parts, empty_vt = forms.pop()
        if parts > 3 or (parts == 2 and any(t.split("/")[1] == "" for t in tokens)):
            return None
        resolved = []
        for t in tokens:
            fields = t.split("/")
            corner = []
            for j, (field, kind) in enumerate(zip(fields, ("v", "vt", "vn"))):
                if j == 1 and empty_vt:
                    corner.append(-1)
                    continue
                if not _INDEX.fullmatch(field) or int(field) == 0:
                    return None
                i = int(field)
                i = i - 1 if i > 0 else i + before[j]
                if not 0 <= i < counts[kind]:
                    return None
                corner.append(i)
            resolved.append(corner + [-1] * (3 - len(corner)))
        for i in range(1, len(resolved) - 1):
            corners_out.append([resolved[0], resolved[i], resolved[i + 1]])
    verts = np.array(found["v"], np.float32).reshape(-1, 3)
    return verts, np.array(corners_out, np.int64).reshape(-1, 3, 3)


# ------------------------------------------------------------------ the fuzz tests
@FUZZ
@given(ply_case())
def test_fuzz_ply_mutations(blob):
    out = _outcome(load_ply, io.BytesIO(blob))
    if out is not None:
        _check_ply_mesh(*out)
        path = WORK / "case.ply"
        path.write_bytes(blob)
        mesh = _outcome(IO().load_mesh, path)
        assert mesh is not None  # what load_ply takes, IO takes (colours, normals, UVs are checked too)
        if mesh.textures is not None:
            assert torch.isfinite(mesh.textures.verts_features_packed()).all()


@FUZZ
@given(obj_case(), st.sampled_from(["obj", "meshes", "mtl"]))
def test_fuzz_obj_and_mtl_mutations(case, then):
    obj, mtl = case
    reference = _reference_obj(obj)
    out = _outcome(load_obj, io.BytesIO(obj), load_textures=False)
    assert (out is None) == (reference is None), "the reader and the grammar disagree"
    if out is not None:
        verts, faces, aux = out
        _check_obj(verts, faces, aux)
        ref_verts, ref_corners = reference
        assert torch.equal(verts, torch.from_numpy(ref_verts))
        got = torch.stack([faces.verts_idx, faces.textures_idx, faces.normals_idx], -1)
        assert torch.equal(got, torch.from_numpy(ref_corners))
    (WORK / "case.obj").write_bytes(obj)
    (WORK / "case.mtl").write_bytes(mtl)
    if then == "obj":  # with its materials and textures
        full = _outcome(load_obj, WORK / "case.obj")
        if full is not None:
            _check_obj(*full)
    elif then == "meshes":
        meshes = _outcome(load_objs_as_meshes, [WORK / "case.obj"])
        if meshes is not None:
            assert torch.isfinite(meshes.verts_packed()).all()
    else:
        mats = _outcome(load_mtl, WORK / "case.mtl")
        if mats is not None:
            assert all(torch.isfinite(v).all() for c in mats[0].values() for v in c.values())


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(blob):
    out = _outcome(load_ply, io.BytesIO(blob))
    if out is not None:
        _check_ply_mesh(*out)
    out = _outcome(load_obj, io.BytesIO(blob), load_textures=False)
    assert (out is None) == (_reference_obj(blob) is None)
    if out is not None:
        _check_obj(*out)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["vertex", "face", "other", "vertex"]),
            st.sampled_from(["0", "1", "2", "3", "5", "-1", "1_0", "9223372036854775807", "9223372036854775808"]),
            st.lists(
                st.sampled_from(
                    [
                        "float x",
                        "float y",
                        "float z",
                        "float x\nproperty float y\nproperty double z",
                        "uchar red",
                        "double nx",
                        "list uchar int vertex_indices",
                        "list int float w",
                        "list uchar float vertex_indices",
                        "list char int vertex_index",
                        "list uchar uchar red",
                        "float x\0n",
                        "int64 q",
                    ]
                ),
                max_size=4,
            ),
        ),
        max_size=3,
    ),
    st.sampled_from(["ascii", "binary_little_endian", "binary_big_endian"]),
    st.one_of(
        st.binary(max_size=200),
        st.lists(st.sampled_from([b"0", b"1", b"2", b"3", b"-1", b"nan", b"1e39", b"0.5", b"\n"]), max_size=60).map(
            b" ".join
        ),
    ),
)
def test_fuzz_random_headers(elements, fmt, body):
    lines = ["ply", f"format {fmt} 1.0"]
    for name, count, props in elements:
        lines.append(f"element {name} {count}")
        lines += [f"property {p}" for p in props]
    lines.append("end_header")
    blob = ("\n".join(lines) + "\n").encode() + (body if fmt != "ascii" else body.replace(b"\0", b" "))
    out = _outcome(load_ply, io.BytesIO(blob))
    if out is not None:
        _check_ply_mesh(*out)


@pytest.mark.parametrize("name", sorted(HOSTILE_PLY))
def test_hostile_ply_corpus(name):
    blob = HOSTILE_PLY[name]
    out = _outcome(load_ply, io.BytesIO(blob))
    if out is not None:
        _check_ply_mesh(*out)


@pytest.mark.parametrize("name", sorted(HOSTILE_OBJ))
def test_hostile_obj_corpus(name):
    obj = HOSTILE_OBJ[name].encode()
    (WORK / "case.obj").write_bytes(obj)
    (WORK / "case.mtl").write_bytes(_SIDE_FILES["case.mtl"])
    out = _outcome(load_obj, WORK / "case.obj")
    if out is not None:
        _check_obj(*out)
    plain = _outcome(load_obj, io.BytesIO(obj), load_textures=False)
    assert (plain is None) == (_reference_obj(obj) is None)


def test_seed_files_are_valid():
    for name, blob in SEEDS.items():
        if "ply" in name:
            load_ply(io.BytesIO(blob))
        else:
            load_obj(io.BytesIO(blob), load_textures=False)
    assert torch.is_tensor(load_ply(io.BytesIO(PLY_SEEDS[0]))[0])
    assert _reference_obj(SEEDS["obj"]) is not None
