"""OBJ + MTL reading and writing with PyTorch3D's return types (docs/conventions.md#file-formats).

Parsing is vectorised: the ``v``/``vt``/``vn``/``f`` lines are found with regular expressions over
the whole text and converted by NumPy in bulk, grouped by their shape (``v``, ``v/vt``, ``v//vn``,
``v/vt/vn``, polygon size), so a million-face file never goes through a Python loop per line.
OBJ indices are 1-based; negative ones count back from the last element defined before the face;
missing normal/UV indices become -1. Polygons are fan-triangulated.

The grammar is enforced, not guessed at (an error names the file and line):

* Values are separated by spaces and tabs; any other control character (vertical tab, form feed,
  NUL, ...) anywhere in an OBJ or MTL file is refused.
* Numbers are ASCII decimals (sign, digits, point, exponent): no ``1_0``, no other scripts' digits.
  ``v``/``vt``/``vn`` values and ``Ka``/``Kd``/``Ks``/``Ns`` must be finite and within float32.
* Every corner of a face has the same form, one of ``v``, ``v/vt``, ``v//vn``, ``v/vt/vn``; an index
  is a non-zero integer within what is defined before the face.

Safety and limits: only regular files are read (a device, FIFO or directory is refused);
``mtllib`` and ``map_Kd`` paths that resolve outside the OBJ's folder are refused
(``UnsafePathError``) unless ``allow_outside_paths=True``; missing material or texture files only
warn. Each MTL file is read once however often it is named, and at most ``MAX_MTL_FILES`` of them.
Textures are decoded only as PNG, JPEG, BMP or TGA (``TEXTURE_FORMATS``: no format whose decoder
runs a program or is not a plain raster), each file once, and the pixels their headers declare must
fit ``max_texture_pixels()`` for all the textures of one call together, checked before decoding.
Work is linear in the file's size, however many ``usemtl`` and ``mtllib`` lines it has.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.io.errors import OBJError, UnsafePathError, open_regular_file, refuse_special_stream
from p3dlab.io.texture_atlas import check_atlas_args, make_texture_atlas
from p3dlab.ops.text_parse import parse_ints

TEXTURE_FORMATS = ("PNG", "JPEG", "BMP", "TGA")
# 8192 x 8192, the largest texture in common use: 768 MiB as the float32 RGB image load_obj returns
DEFAULT_MAX_TEXTURE_PIXELS = 2**26
MAX_MTL_FILES = 64


def max_texture_pixels() -> int:
    """How many pixels the textures of one ``load_obj``/``load_mtl`` call may have together:
    ``P3DLAB_MAX_TEXTURE_PIXELS``, default ``DEFAULT_MAX_TEXTURE_PIXELS`` (2**26). Pillow refuses
    images over twice its own ``Image.MAX_IMAGE_PIXELS`` whatever this says."""
    raw = os.environ.get("P3DLAB_MAX_TEXTURE_PIXELS", "").strip()
    if not raw:
        return DEFAULT_MAX_TEXTURE_PIXELS
    if not re.fullmatch(r"[0-9]{1,19}", raw) or int(raw) == 0:
        raise P3DLabValueError(f"P3DLAB_MAX_TEXTURE_PIXELS must be a positive integer, got {raw[:40]!r}")
    return int(raw)


class Faces(NamedTuple):
    verts_idx: torch.Tensor  # (F, 3) int64
    normals_idx: torch.Tensor  # (F, 3) int64, -1 where missing
    textures_idx: torch.Tensor  # (F, 3) int64, -1 where missing
    materials_idx: torch.Tensor  # (F,) int64, -1 where no material


class Properties(NamedTuple):
    normals: Optional[torch.Tensor]
    verts_uvs: Optional[torch.Tensor]
    material_colors: Optional[Dict[str, Dict[str, torch.Tensor]]]
    texture_images: Optional[Dict[str, torch.Tensor]]
    texture_atlas: Optional[torch.Tensor]


_KEYS = ("v", "vt", "vn", "f", "usemtl", "mtllib")


# ----------------------------------------------------------------------------- text and its grammar
def _read_text(f, named_by=None, line: Optional[int] = None):
    """The file as text lines (CRLF/CR normalised, BOM removed) and its path. ``named_by``/``line``:
    the file and line that refer to ``f`` (for an MTL file), named when ``f`` cannot be opened."""
    if isinstance(f, (str, os.PathLike)):
        path = os.fspath(f)
        with open_regular_file(path, OBJError, named_by, line) as fh:
            data = fh.read()
    elif hasattr(f, "read"):
        refuse_special_stream(f, OBJError)
        data, path = f.read(), getattr(f, "name", None)
    else:
        raise OBJError(f"expected a path or a file object, got {type(f).__name__}")
    if isinstance(data, bytes):
        if b"\0" in data:
            line = data[: data.index(b"\0")].count(b"\n") + 1
            raise OBJError("NUL byte: this is not a text OBJ file", path, line=line)
        text = data.decode("utf-8", errors="replace")
    else:
        text = data
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text, path


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f]")  # after line ends are normalised: all but tab and newline
_BLANKS = re.compile(r"[ \t]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")  # ASCII digits only
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?[0-9]+")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _refuse_control_characters(text: str, path) -> None:
    bad = _CONTROL.search(text)
    if bad:
        raise OBJError(
            f"control character {bad.group()!r}: values are separated by spaces and tabs only",
            path,
            line=text.count("\n", 0, bad.start()) + 1,
        )


def _fields(text: str) -> List[str]:
    """``text`` split at spaces and tabs (``str.split()`` would also split at other whitespace)."""
    return [t for t in _BLANKS.split(text) if t]


def _strict_float(token: str, what: str, path, line: int) -> float:
    """An ASCII decimal number; anything else, or a value that is not finite, is refused."""
    if _FLOAT.fullmatch(token):
        value = float(token)
        if math.isfinite(value):
            return value
    if _FLOAT.fullmatch(token) or _NON_FINITE.fullmatch(token):
        raise OBJError(f"non-finite value {token[:40]!r} in {what}", path, line=line)
    raise OBJError(f"non-numeric value {token[:40]!r} in {what}", path, line=line)


# ----------------------------------------------------------------------------- finding the lines
def _classify_slow(text: str, path) -> Dict[str, tuple]:
    """Per keyword: line numbers (1-based) and the '\n'-joined line bodies (keyword and comments
    removed). Any text; a Python loop over the lines."""
    _refuse_control_characters(text, path)
    out = {k: ([], []) for k in _KEYS}
    for i, line in enumerate(text.split("\n")):
        parts = _BLANKS.split(line.strip(" \t"), 1)
        if parts[0] not in out:
            continue
        body = parts[1] if len(parts) > 1 else ""
        nums, bodies = out[parts[0]]
        nums.append(i + 1)
        bodies.append(body.split("#", 1)[0])
    return {k: (np.array(v[0], np.int64), "\n".join(v[1])) for k, v in out.items()}


_CODES = {"v": 1, "vt": 2, "vn": 3, "f": 4}


def _classify(text: str, path) -> Dict[str, tuple]:
    """Like ``_classify_slow``, vectorised with NumPy over the bytes of an ASCII file whose lines
    start with their keyword: each line's kind comes from its first three bytes, keywords are
    blanked out, and each kind's lines are cut out of the buffer with one boolean mask."""
    raw = text.encode("ascii", errors="replace")
    if not raw.endswith(b"\n"):
        raw += b"\n"
    b = np.frombuffer(raw, np.uint8)
    if b.size <= 1 or not text.isascii():
        return _classify_slow(text, path)
    ends = np.flatnonzero(b == 10)
    if np.count_nonzero(b < 32) != len(ends):  # tabs, or control characters
        _refuse_control_characters(text, path)
    starts = np.concatenate([[0], ends[:-1] + 1])

    def byte_at(k):
        idx = starts + k
        out = np.zeros(len(starts), np.uint8)
        ok = idx < ends
        out[ok] = b[idx[ok]]
        return out

    c0, c1, c2 = byte_at(0), byte_at(1), byte_at(2)
    if np.any((c0 == 32) | (c0 == 9)):
        return _classify_slow(text, path)  # indented keywords: rare, take the general path
    ws1, ws2 = (c1 == 32) | (c1 == 9), (c2 == 32) | (c2 == 9)
    end1, end2 = ends == starts + 1, ends == starts + 2
    kind = np.zeros(len(starts), np.uint8)
    kind[(c0 == 118) & (ws1 | end1)] = 1  # "v "
    kind[(c0 == 118) & (c1 == 116) & (ws2 | end2)] = 2  # "vt "
    kind[(c0 == 118) & (c1 == 110) & (ws2 | end2)] = 3  # "vn "
    kind[(c0 == 102) & (ws1 | end1)] = 4  # "f "
    blank = b.copy()
    blank[starts[kind > 0]] = 32
    two = (kind == 2) | (kind == 3)
    blank[starts[two] + 1] = 32
    per_byte = np.repeat(kind, ends - starts + 1)
    out = {}
    for key, code in _CODES.items():
        lines = np.flatnonzero(kind == code)
        block = blank[per_byte == code].tobytes().decode("ascii")[:-1] if len(lines) else ""
        if "#" in block:
            block = "\n".join(line.split("#", 1)[0] for line in block.split("\n"))
        out[key] = (lines + 1, block)
    for key in ("usemtl", "mtllib"):
        nums, bodies = [], []
        for i in np.flatnonzero((c0 == ord(key[0])) & (c1 == ord(key[1]))).tolist():
            parts = _BLANKS.split(raw[starts[i] : ends[i]].decode("ascii"), 1)
            if parts[0] == key:
                nums.append(i + 1)
                bodies.append(parts[1].split("#", 1)[0] if len(parts) > 1 else "")
        out[key] = (np.array(nums, np.int64), "\n".join(bodies))
    return out


# ----------------------------------------------------------------------------- v, vt, vn
def _numbers(joined: str, expected: int):
    """Parse whitespace-separated ASCII numbers in C; None when the count is not ``expected``.

    NumPy's parser takes exactly the decimal grammar (no '1_0', no hexadecimal, no other scripts'
    digits, a token never splits into two numbers) plus nan and inf, which ``_parse_floats`` refuses."""
    if not joined.strip():
        return np.zeros(0) if expected == 0 else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            vals = np.fromstring(joined, dtype=np.float64, sep=" ")
    except (ValueError, DeprecationWarning):
        return None
    return vals if vals.size == expected else None


def _parse_floats(block: str, line_nos, width_min: int, width_keep: int, kind: str, path):
    """(n, width) finite float array of the numbers after one keyword; wider lines keep their extra
    columns (e.g. ``v x y z r g b``; NaN pads the shorter lines there); narrower than ``width_min``
    is an error."""
    n = len(line_nos)
    if n == 0:
        return np.zeros((0, width_keep), np.float64)
    if block.isascii():
        width = len(_fields(block.split("\n", 1)[0]))
        if width >= width_min and (_tokens_per_line(block, n) == width).all():
            vals = _numbers(block, n * width)
            if vals is not None:
                vals = vals.reshape(n, width)
                if not np.isfinite(vals).all():
                    row = int(np.argmin(np.isfinite(vals).all(1)))
                    raise OBJError(f"non-finite value in a '{kind}' line", path, line=int(line_nos[row]))
                return vals
    rows = []
    for body, line in zip(block.split("\n"), line_nos.tolist()):
        toks = _fields(body)
        if len(toks) < width_min:
            raise OBJError(f"'{kind}' line has {len(toks)} values, at least {width_min} needed", path, line=line)
        rows.append([_strict_float(t, f"a '{kind}' line", path, line) for t in toks])
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _float32(values: np.ndarray, keep: int, line_nos, kind: str, path) -> np.ndarray:
    """The first ``keep`` columns as float32; a finite value beyond float32's range is refused."""
    with np.errstate(over="ignore"):
        out = values[:, :keep].astype(np.float32)
    if not np.isfinite(out).all():
        row = int(np.argmin(np.isfinite(out).all(1)))
        raise OBJError(f"'{kind}' values {values[row, :keep].tolist()} overflow float32", path, line=int(line_nos[row]))
    return out


def _tokens(block: str):
    """The bytes of ``block`` (plus a final newline), the bounds of its lines (line i is
    ``[bounds[i], bounds[i + 1])``) and the positions where its tokens start (vectorised)."""
    b = np.frombuffer(block.encode("utf-8", errors="replace") + b"\n", np.uint8)
    bounds = np.concatenate([[0], np.flatnonzero(b == 10) + 1])
    ws = (b == 32) | (b == 9) | (b == 10)
    starts = np.flatnonzero(~ws & np.concatenate([[True], ws[:-1]]))
    return b, bounds, starts


def _per_line(positions: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """How many of the sorted ``positions`` fall in each line."""
    return np.diff(np.searchsorted(positions, bounds))


def _tokens_per_line(block: str, n: int) -> np.ndarray:
    """Whitespace-separated tokens on each of the n lines of ``block``."""
    _, bounds, starts = _tokens(block)
    if len(bounds) != n + 1:
        raise ValueError("line count mismatch")
    return _per_line(starts, bounds)


# ----------------------------------------------------------------------------- faces
def _face_signatures(block: str):
    """Per face line: number of corners, of '/' and of '//'; and, when there are slashes, the
    number of '/' in each corner (None without slashes)."""
    b, bounds, corner_at = _tokens(block)
    slash_at = np.flatnonzero(b == 47)
    corners = _per_line(corner_at, bounds)
    if not len(slash_at):
        zero = np.zeros_like(corners)
        return corners, zero, zero, None
    doubles = _per_line(slash_at[:-1][np.diff(slash_at) == 1], bounds)
    per_corner = np.diff(np.searchsorted(slash_at, np.append(corner_at, len(b))))
    return corners, _per_line(slash_at, bounds), doubles, per_corner


_FORMS = "'v', 'v/vt', 'v//vn' or 'v/vt/vn'"


def _check_same_corner_forms(corners, slashes, slashes_of_corner, line_nos, path) -> None:
    """Every corner of a face has as many '/' as the others (so 'v/vt' never meets 'v/vt/vn')."""
    if slashes_of_corner is None:
        return
    mixed = slashes_of_corner != np.repeat(slashes // corners, corners)
    if mixed.any():
        line = np.repeat(line_nos, corners)[int(np.argmax(mixed))]
        raise OBJError(
            f"inconsistent face format: every corner must have the same form, one of {_FORMS}", path, line=int(line)
        )


def _refuse_written_zeros(vals: np.ndarray, empty_vt: bool, line_nos, path) -> None:
    """``vals`` (faces, corners, fields): a 0 written for vt or vn is no OBJ index. (The empty vt of
    'v//vn' reads as 0 and is fine; ``load_obj`` refuses a 0 for v.)"""
    m = vals.shape[2]
    if m == 1:
        return
    zero = vals[..., 2] == 0 if m == 3 else np.zeros(vals.shape[:2], bool)
    if not empty_vt:
        zero |= vals[..., 1] == 0
    if zero.any():
        line = line_nos[int(np.argmax(zero.any(1)))]
        raise OBJError("index 0 in a face: OBJ indices start at 1", path, line=int(line))


def _parse_faces(block: str, line_nos, path):
    """Raw OBJ indices (0 = missing) of every polygon corner, grouped by polygon shape and
    converted in bulk: (v, vt, vn) per corner, corners per polygon."""
    n = len(line_nos)
    if n == 0:
        z = np.zeros(0, np.int64)
        return z, z, z, z
    corners, slashes, doubles, slashes_of_corner = _face_signatures(block)
    bodies = None
    if corners.min() < 3:
        bad = int(np.argmin(corners))
        raise OBJError(f"a face needs at least 3 vertices, got {corners[bad]}", path, line=int(line_nos[bad]))
    _check_same_corner_forms(corners, slashes, slashes_of_corner, line_nos, path)
    v_all = np.zeros(int(corners.sum()), np.int64)
    t_all = np.zeros_like(v_all)
    n_all = np.zeros_like(v_all)
    first = np.concatenate([[0], np.cumsum(corners)[:-1]])
    sig = np.stack([corners, slashes, doubles], 1)
    if (sig == sig[0]).all():  # one polygon shape: no sort needed
        uniq, group = sig[:1], np.zeros(n, np.int64)
    else:
        uniq, group = np.unique(sig, axis=0, return_inverse=True)
        group = group.reshape(-1)
    for gi, (k, n_slash, n_double) in enumerate(uniq.tolist()):
        idx = np.nonzero(group == gi)[0]
        per_corner = n_slash // k
        if per_corner > 2 or n_double not in (0, k) or (n_double and per_corner != 2):
            raise OBJError(f"malformed face corners: each must be one of {_FORMS}", path, line=int(line_nos[idx[0]]))
        m = per_corner + 1
        if len(idx) < n:
            bodies = bodies if bodies is not None else block.split("\n")
            joined = "\n".join(bodies[i] for i in idx)
        else:
            joined = block
        vals, bad = parse_ints(joined)
        if bad >= 0 or vals.size != len(idx) * k * m:
            bodies = bodies if bodies is not None else block.split("\n")
            for i in idx:
                for t in bodies[i].replace("/", " ").split():
                    if not _INTEGER.fullmatch(t):
                        raise OBJError(f"non-integer index {t[:40]!r} in a face", path, line=int(line_nos[i]))
            raise OBJError(f"malformed face corners: each must be one of {_FORMS}", path, line=int(line_nos[idx[0]]))
        vals = vals.reshape(len(idx), k, m)
        _refuse_written_zeros(vals, bool(n_double), line_nos[idx], path)
        pos = (first[idx][:, None] + np.arange(k)[None]).reshape(-1)
        v_all[pos] = vals[..., 0].reshape(-1)
        if m >= 2:
            t_all[pos] = vals[..., 1].reshape(-1)
        if m == 3:
            n_all[pos] = vals[..., 2].reshape(-1)
    return v_all, t_all, n_all, corners


def _resolve(idx: np.ndarray, defined_before: np.ndarray, total: int, what: str, corner_lines, path):
    """1-based / negative OBJ indices -> 0-based, -1 where missing (0); range-checked."""
    out = np.where(idx > 0, idx - 1, np.where(idx < 0, idx + defined_before, -1))
    bad = (idx != 0) & ((out < 0) | (out >= total))
    if bad.any():
        corner = int(np.nonzero(bad)[0][0])
        raise OBJError(
            f"{what} index {int(idx[corner])} is out of range ({total} defined)", path, line=int(corner_lines[corner])
        )
    return out


# ----------------------------------------------------------------------------- materials and textures
def _check_inside(base_dir: str, ref: str, allow_outside: bool, path, line: int) -> str:
    target = os.path.realpath(os.path.join(base_dir, ref))
    root = os.path.realpath(base_dir)
    if not allow_outside and os.path.commonpath([root, target]) != root:
        raise UnsafePathError(
            f"refusing {ref!r}: it resolves outside {root} (pass allow_outside_paths=True to allow)", path, line=line
        )
    return target


class _Mtl(NamedTuple):
    """An MTL file's materials, in file order: colours ``{name: {key: floats}}`` (PyTorch3D's keys),
    textures ``{name: (image path, MTL path, line)}`` and the line of each ``newmtl``."""

    colors: Dict[str, Dict[str, List[float]]]
    textures: Dict[str, Tuple[str, str, int]]
    lines: Dict[str, int]


_COLOR_KEYS = {"Ka": "ambient_color", "Kd": "diffuse_color", "Ks": "specular_color"}


def _mtl_values(parts: List[str], counts, mtl_path, line: int) -> List[float]:
    """The numbers after an MTL keyword: finite ASCII decimals within float32, as many as ``counts`` allows."""
    if len(parts) - 1 not in counts:
        raise OBJError(
            f"malformed {parts[0]!r} line: {' or '.join(map(str, counts))} values expected", mtl_path, line=line
        )
    values = [_strict_float(t, f"a {parts[0]!r} line", mtl_path, line) for t in parts[1:]]
    if any(abs(x) > _FLOAT32_MAX for x in values):
        raise OBJError(f"{parts[0]!r} values {values} overflow float32", mtl_path, line=line)
    return values


def _parse_mtl(mtl_path: str, base_dir: str, allow_outside_paths: bool, named_by=None, named_at=None) -> _Mtl:
    """Materials of an MTL file (see ``_Mtl``) with PyTorch3D's colour keys: ``ambient_color`` (Ka),
    ``diffuse_color`` (Kd), ``specular_color`` (Ks) and ``shininess`` (Ns). Texture paths are
    checked for safety here, but the images are read only for the materials an OBJ uses."""
    text, _ = _read_text(mtl_path, named_by, named_at)
    _refuse_control_characters(text, mtl_path)
    mtl = _Mtl({}, {}, {})
    current = None
    for lineno, raw in enumerate(text.split("\n"), start=1):
        parts = _fields(raw.split("#", 1)[0])
        if not parts:
            continue
        key = parts[0]
        if key == "newmtl":
            current = " ".join(parts[1:]) or f"material_{len(mtl.colors)}"
            mtl.colors[current], mtl.lines[current] = {}, lineno
            mtl.textures.pop(current, None)
        elif current is None:
            continue
        elif key in _COLOR_KEYS:
            values = _mtl_values(parts, (1, 3), mtl_path, lineno)
            mtl.colors[current][_COLOR_KEYS[key]] = values * 3 if len(values) == 1 else values
        elif key == "Ns":
            mtl.colors[current]["shininess"] = _mtl_values(parts, (1,), mtl_path, lineno)
        elif key == "map_Kd":
            if len(parts) < 2:
                raise OBJError("malformed 'map_Kd' line: no file name", mtl_path, line=lineno)
            target = _check_inside(base_dir, parts[-1], allow_outside_paths, mtl_path, lineno)
            mtl.textures[current] = (target, mtl_path, lineno)
    return mtl


def _color_tensors(colors: Dict[str, Dict[str, List[float]]], names) -> Dict[str, Dict[str, torch.Tensor]]:
    return {n: {k: torch.tensor(v, dtype=torch.float32) for k, v in colors[n].items()} for n in names if n in colors}


def _used_materials(material_names: List[str], materials: dict, where, line: Optional[int]) -> List[str]:
    """PyTorch3D's rule for the materials an OBJ uses: those named by ``usemtl``; with no ``usemtl``,
    the only material of the MTL file (several are an error, as in PyTorch3D)."""
    if material_names or not materials:
        return list(material_names)
    if len(materials) > 1:
        raise OBJError(f"{len(materials)} materials but no usemtl declarations in the OBJ file", where, line=line)
    return [next(iter(materials))]


def _load_image(img_path: str, mtl_path, lineno: int, pixels_left: int, limit: int) -> Optional[np.ndarray]:
    """A texture as a (H, W, 3) float32 array in [0, 1], or None (with a warning) when missing.

    Only ``TEXTURE_FORMATS`` are tried, and the size the header declares must fit ``pixels_left``
    before a pixel is decoded."""
    from PIL import Image

    if not os.path.exists(img_path):
        warnings.warn(f"{mtl_path}, line {lineno}: texture {img_path} not found; continuing without it", stacklevel=4)
        return None
    with open_regular_file(img_path, OBJError, mtl_path, lineno) as fh:
        try:
            with warnings.catch_warnings():  # p3dlab's own budget below is the stricter check
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(fh, formats=TEXTURE_FORMATS)
        except Image.UnidentifiedImageError:
            raise OBJError(
                f"texture {img_path} is not a {', '.join(TEXTURE_FORMATS[:-1])} or {TEXTURE_FORMATS[-1]} image "
                "(no other format is read)",
                mtl_path,
                line=lineno,
            ) from None
        except Image.DecompressionBombError as e:  # over twice Pillow's own limit
            raise OBJError(
                f"texture {img_path} is too large: {e} (p3dlab's limit: {limit} pixels, P3DLAB_MAX_TEXTURE_PIXELS)",
                mtl_path,
                line=lineno,
            ) from None
        except Exception as e:  # Pillow raises many types for a damaged file
            raise OBJError(f"cannot read texture {img_path}: {e}", mtl_path, line=lineno) from None
        with im:
            w, h = im.size
            if w * h > pixels_left:
                also = "" if pixels_left == limit else f" ({limit - pixels_left} of them taken by other textures)"
                raise OBJError(
                    f"texture {img_path} declares {w} x {h} = {w * h} pixels, over the limit of {limit} pixels{also}; "
                    f"set P3DLAB_MAX_TEXTURE_PIXELS to raise it",
                    mtl_path,
                    line=lineno,
                )
            try:
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
            except Exception as e:
                raise OBJError(f"cannot decode texture {img_path}: {e}", mtl_path, line=lineno) from None
    return arr


def _read_textures(names, refs: Dict[str, Tuple[str, str, int]]) -> Dict[str, torch.Tensor]:
    """The images of the materials in ``names`` that have one, each file decoded once, all within
    one budget of ``max_texture_pixels()``."""
    limit = max_texture_pixels()
    left = limit
    by_file: Dict[str, Optional[torch.Tensor]] = {}
    images = {}
    for n in names:
        if n not in refs:
            continue
        img_path, mtl_path, line = refs[n]
        if img_path not in by_file:
            arr = _load_image(img_path, mtl_path, line, left, limit)
            by_file[img_path] = None if arr is None else torch.from_numpy(arr)
            left -= 0 if arr is None else arr.shape[0] * arr.shape[1]
        if by_file[img_path] is not None:
            images[n] = by_file[img_path]
    return images


def load_mtl(
    f,
    base_dir: Optional[str] = None,
    load_textures: bool = True,
    allow_outside_paths: bool = False,
    *,
    material_names: Optional[List[str]] = None,
    data_dir: Optional[str] = None,
    device="cpu",
    path_manager=None,
):
    """Parse an MTL file: ``({name: {ambient_color, diffuse_color, specular_color, shininess}},
    {name: (H, W, 3) float texture in [0, 1]})``.

    Accepts PyTorch3D's keyword call ``load_mtl(f, material_names=..., data_dir=...)`` too:
    ``data_dir`` is ``base_dir`` (default: the MTL file's folder). With ``material_names`` only those
    materials are returned (with an empty list, the file's only material, as PyTorch3D does);
    without it, every material of the file.
    """
    base = base_dir if base_dir is not None else data_dir
    if base is None:
        base = os.path.dirname(os.path.abspath(os.fspath(f)))
    mtl = _parse_mtl(f, base, allow_outside_paths)
    second = list(mtl.lines.values())[1] if len(mtl.lines) > 1 else None
    if material_names is None:
        names = list(mtl.colors)
    else:
        names = _used_materials(material_names, mtl.colors, getattr(f, "name", f), second)
    dev = torch.device(device)
    colors = {n: {k: v.to(dev) for k, v in c.items()} for n, c in _color_tensors(mtl.colors, names).items()}
    textures = {}
    if load_textures:
        textures = {n: image.to(dev) for n, image in _read_textures(names, mtl.textures).items()}
    return colors, textures


def _material_files(lines, bodies: str, base_dir: str, allow_outside: bool, path) -> List[Tuple[str, int]]:
    """The distinct MTL files an OBJ's ``mtllib`` lines name, as (resolved path, line of the first
    mention), each once however often it is named; missing ones warn, more than ``MAX_MTL_FILES`` is an error."""
    files, seen_refs, seen_paths = [], set(), set()
    for line, body in zip(lines.tolist(), bodies.split("\n")):
        for ref in _fields(body):
            if ref in seen_refs:
                continue
            seen_refs.add(ref)
            target = _check_inside(base_dir, ref, allow_outside, path, line)
            if target in seen_paths:
                continue
            seen_paths.add(target)
            if not os.path.exists(target):
                warnings.warn(
                    f"{path}, line {line}: material file {ref} not found; continuing without it", stacklevel=3
                )
                continue
            if len(files) == MAX_MTL_FILES:
                raise OBJError(f"more than {MAX_MTL_FILES} material files", path, line=line)
            files.append((target, line))
    return files


def load_obj(
    f,
    load_textures: bool = True,
    create_texture_atlas: bool = False,
    texture_atlas_size: int = 4,
    texture_wrap: Optional[str] = "repeat",
    device="cpu",
    path_manager=None,
    allow_outside_paths: bool = False,
):
    """Read an OBJ file: ``(verts (V, 3), Faces, Properties)`` like PyTorch3D's ``load_obj``.

    ``Properties.material_colors`` maps each material the OBJ uses to its PyTorch3D keys
    ``ambient_color``/``diffuse_color``/``specular_color``/``shininess`` (Ka/Kd/Ks/Ns);
    ``texture_images`` maps those with ``map_Kd`` to (H, W, 3) float images in [0, 1]. As in
    PyTorch3D both are dicts (possibly empty) once an MTL file is read, and None with
    ``load_textures=False`` or without a readable ``mtllib``. ``Faces.materials_idx`` indexes the
    materials in order of first ``usemtl``; -1 for faces before any ``usemtl``, except that an OBJ
    without ``usemtl`` whose MTL file defines one material gets 0 for every face (PyTorch3D's rule).
    With ``create_texture_atlas``, ``Properties.texture_atlas`` is an (F, R, R, 3) atlas for
    ``TexturesAtlas`` (R = ``texture_atlas_size`` ≤ 64; ``texture_wrap`` "repeat", "clamp" or
    None for uv outside [0, 1]; see ``p3dlab.io.texture_atlas``). What the reader refuses and its
    limits: the module docstring.
    """
    if create_texture_atlas:
        check_atlas_args(texture_atlas_size, texture_wrap, f if isinstance(f, str) else "<stream>")
    text, path = _read_text(f)
    base_dir = os.path.dirname(os.path.abspath(path)) if isinstance(path, (str, os.PathLike)) else os.getcwd()
    where = path if path is not None else "<stream>"
    found = _classify(text, path)
    v = _parse_floats(found["v"][1], found["v"][0], 3, 3, "v", path)
    vt = _parse_floats(found["vt"][1], found["vt"][0], 2, 2, "vt", path)
    vn = _parse_floats(found["vn"][1], found["vn"][0], 3, 3, "vn", path)
    v32 = _float32(v, 3, found["v"][0], "v", path)
    vt32 = _float32(vt, 2, found["vt"][0], "vt", path)
    vn32 = _float32(vn, 3, found["vn"][0], "vn", path)
    f_lines = found["f"][0]
    fv, ft, fn, corners = _parse_faces(found["f"][1], f_lines, path)
    corner_lines = np.repeat(f_lines, corners)

    def before(kind):
        return np.searchsorted(found[kind][0], corner_lines)

    vi = _resolve(fv, before("v"), len(v), "vertex", corner_lines, path)
    if (vi < 0).any():
        corner = int(np.nonzero(vi < 0)[0][0])
        raise OBJError("vertex index 0 in a face: OBJ indices start at 1", path, line=int(corner_lines[corner]))
    ti = _resolve(ft, before("vt"), len(vt), "texture", corner_lines, path)
    ni = _resolve(fn, before("vn"), len(vn), "normal", corner_lines, path)

    # fan triangulation: corner c of polygon p -> triangles (c0, c_i, c_{i+1})
    starts = np.concatenate([[0], np.cumsum(corners)[:-1]]).astype(np.int64)
    n_tris = corners - 2
    poly_of_tri = np.repeat(np.arange(len(corners)), n_tris)
    k_in_poly = np.arange(int(n_tris.sum())) - np.repeat(np.cumsum(n_tris) - n_tris, n_tris)
    c0 = starts[poly_of_tri]
    tri_corners = np.stack([c0, c0 + 1 + k_in_poly, c0 + 2 + k_in_poly], 1)

    # materials: the last 'usemtl' before each polygon, numbered in order of first use
    number: Dict[str, int] = {}
    use_lines, use_bodies = found["usemtl"]
    mat_of_use = (
        [number.setdefault(body.strip(" \t"), len(number)) for body in use_bodies.split("\n")] if len(use_lines) else []
    )
    names = list(number)
    which = np.searchsorted(use_lines, f_lines) - 1
    poly_mat = np.where(which >= 0, np.array(mat_of_use + [-1], np.int64)[which], -1)

    # PyTorch3D: no material data unless load_textures and an MTL file is read; then only the
    # materials the OBJ uses, and without usemtl the file's only material for every face
    material_colors = texture_images = None
    mtl_files = []
    if load_textures:
        mtl_files = _material_files(found["mtllib"][0], found["mtllib"][1], base_dir, allow_outside_paths, path)
    if mtl_files:
        colors, refs = {}, {}
        for mtl_path, line in mtl_files:
            mtl = _parse_mtl(mtl_path, os.path.dirname(mtl_path), allow_outside_paths, path, line)
            colors.update(mtl.colors)
            refs.update(mtl.textures)
        if not names:
            names = _used_materials(names, colors, where, mtl_files[0][1])
            poly_mat = np.maximum(poly_mat, 0) if names else poly_mat
        material_colors = _color_tensors(colors, names)
        texture_images = _read_textures(names, refs)
        missing = [n for n in names if n not in colors]
        if missing:
            shown = missing if len(missing) <= 10 else missing[:10] + [f"... {len(missing) - 10} more"]
            warnings.warn(f"{where}: materials {shown} are used but not defined", stacklevel=2)

    dev = torch.device(device)
    as_long = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(dev)
    faces = Faces(
        verts_idx=as_long(vi[tri_corners]).reshape(-1, 3),
        normals_idx=as_long(ni[tri_corners]).reshape(-1, 3),
        textures_idx=as_long(ti[tri_corners]).reshape(-1, 3),
        materials_idx=as_long(poly_mat[poly_of_tri]),
    )
    verts = torch.from_numpy(v32).to(dev)
    verts_uvs = torch.from_numpy(vt32).to(dev) if len(vt) else None
    if texture_images is not None and dev.type != "cpu":
        texture_images = {n: image.to(dev) for n, image in texture_images.items()}
    atlas = None
    if create_texture_atlas:
        faces_uvs = None
        if verts_uvs is not None:  # NaN for corners without a uv index
            idx = faces.textures_idx
            faces_uvs = torch.where((idx >= 0)[..., None], verts_uvs[idx.clamp(min=0)], torch.nan)
        atlas = make_texture_atlas(
            faces.materials_idx, names, material_colors, texture_images, faces_uvs, texture_atlas_size,
            texture_wrap, where,
        )  # fmt: skip
    props = Properties(
        normals=torch.from_numpy(vn32).to(dev) if len(vn) else None,
        verts_uvs=verts_uvs,
        material_colors=material_colors,
        texture_images=texture_images,
        texture_atlas=atlas,
    )
    return verts, faces, props


def save_obj(
    f,
    verts: torch.Tensor,
    faces: torch.Tensor,
    decimal_places: Optional[int] = None,
    normals: Optional[torch.Tensor] = None,
    faces_normals_idx: Optional[torch.Tensor] = None,
    verts_uvs: Optional[torch.Tensor] = None,
    faces_uvs: Optional[torch.Tensor] = None,
    texture_map: Optional[torch.Tensor] = None,
) -> None:
    """Write an OBJ (and, with ``texture_map`` (H, W, 3) in [0, 1], an MTL and a PNG beside it)."""
    verts = torch.as_tensor(verts).detach().cpu()
    faces = torch.as_tensor(faces).detach().cpu().long()
    if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError("save_obj: verts must be (V, 3) and faces (F, 3)")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= len(verts)):
        raise ValueError("save_obj: face indices out of range")
    fmt = f"%.{decimal_places}f" if decimal_places is not None else "%.9g"
    lines = []
    path = os.fspath(f) if isinstance(f, (str, os.PathLike)) else None
    if texture_map is not None:
        if path is None:
            raise ValueError("save_obj: a texture_map needs a file path (the MTL and PNG go beside it)")
        stem = os.path.splitext(os.path.basename(path))[0]
        lines += [f"mtllib {stem}.mtl", "usemtl mesh"]
        from PIL import Image

        tex = (torch.as_tensor(texture_map).detach().cpu().clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        Image.fromarray(tex[..., :3]).save(os.path.join(os.path.dirname(path), f"{stem}.png"))
        with open(os.path.join(os.path.dirname(path), f"{stem}.mtl"), "w") as fh:
            fh.write(f"newmtl mesh\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nNs 0\nd 1\nillum 1\nmap_Kd {stem}.png\n")

    def block(prefix, arr):
        buf = io.StringIO()
        np.savetxt(
            buf,
            np.asarray(arr, dtype=np.float64).reshape(len(arr), -1),
            fmt=f"{prefix} " + " ".join([fmt] * np.asarray(arr).shape[1]),
        )
        return [buf.getvalue().rstrip("\n")] if len(arr) else []

    lines += block("v", verts.numpy())
    if verts_uvs is not None:
        lines += block("vt", torch.as_tensor(verts_uvs).detach().cpu().numpy())
    if normals is not None:
        lines += block("vn", torch.as_tensor(normals).detach().cpu().numpy())
    cols = [faces.numpy() + 1]
    corner = "%d"
    if faces_uvs is not None and faces_normals_idx is not None:
        cols += [
            torch.as_tensor(faces_uvs).cpu().long().numpy() + 1,
            torch.as_tensor(faces_normals_idx).cpu().long().numpy() + 1,
        ]
        corner = "%d/%d/%d"
    elif faces_uvs is not None:
        cols.append(torch.as_tensor(faces_uvs).cpu().long().numpy() + 1)
        corner = "%d/%d"
    elif faces_normals_idx is not None:
        cols.append(torch.as_tensor(faces_normals_idx).cpu().long().numpy() + 1)
        corner = "%d//%d"
    if len(faces):
        table = np.stack(cols, 2).reshape(len(faces), -1)  # per corner: v, vt, vn
        buf = io.StringIO()
        np.savetxt(buf, table, fmt="f " + " ".join([corner] * 3))
        lines.append(buf.getvalue().rstrip("\n"))
    out = "\n".join(lines) + "\n"
    if path is not None:
        with open(path, "w") as fh:
            fh.write(out)
    else:
        f.write(out)


def load_objs_as_meshes(
    files,
    device="cpu",
    load_textures: bool = True,
    create_texture_atlas: bool = False,
    texture_atlas_size: int = 4,
    texture_wrap: Optional[str] = "repeat",
    allow_outside_paths: bool = False,
):
    """Load OBJ files into one ``Meshes`` batch; a mesh with a ``map_Kd`` texture and UVs gets a
    ``TexturesUV`` (v flipped: v = 0 is the bottom row of the image), or with
    ``create_texture_atlas`` every mesh gets a ``TexturesAtlas`` (see ``load_obj``)."""
    from p3dlab.structures import Meshes, TexturesAtlas, TexturesUV, join_meshes_as_batch

    meshes = []
    for f in files:
        verts, faces, aux = load_obj(
            f,
            load_textures=load_textures,
            create_texture_atlas=create_texture_atlas,
            texture_atlas_size=texture_atlas_size,
            texture_wrap=texture_wrap,
            device=device,
            allow_outside_paths=allow_outside_paths,
        )
        tex = None
        if create_texture_atlas:
            tex = TexturesAtlas([aux.texture_atlas])
        elif load_textures and aux.texture_images and aux.verts_uvs is not None:
            images = aux.texture_images
            if len(images) > 1:
                warnings.warn(f"{f}: {len(images)} textures; only the first is used", stacklevel=2)
            image = next(iter(images.values())).to(device)
            uvs = aux.verts_uvs
            fuv = faces.textures_idx
            if (fuv < 0).any():  # faces without UVs read the image's corner
                uvs = torch.cat([uvs, uvs.new_zeros(1, 2)])
                fuv = torch.where(fuv < 0, torch.full_like(fuv, uvs.shape[0] - 1), fuv)
            tex = TexturesUV([image], [fuv], [uvs])
        meshes.append(Meshes([verts], [faces.verts_idx], tex))
    return join_meshes_as_batch(meshes)
