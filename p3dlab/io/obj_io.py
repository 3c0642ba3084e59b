"""OBJ + MTL reading and writing with PyTorch3D's return types (docs/conventions.md#file-formats).

Parsing is vectorised: the ``v``/``vt``/``vn``/``f`` lines are found with regular expressions over
the whole text and converted by NumPy in bulk, grouped by their shape (``v``, ``v/vt``, ``v//vn``,
``v/vt/vn``, polygon size), so a million-face file never goes through a Python loop per line.
OBJ indices are 1-based; negative ones count back from the last element defined before the face;
missing normal/UV indices become -1. Polygons are fan-triangulated.

Safety: ``mtllib`` and ``map_Kd`` paths that resolve outside the OBJ's folder are refused
(``UnsafePathError``) unless ``allow_outside_paths=True``; missing material or texture files only
warn. Every error names the file and line.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from typing import Dict, List, NamedTuple, Optional

import numpy as np
import torch

from p3dlab.io.errors import FileFormatError, OBJError, UnsafePathError
from p3dlab.io.texture_atlas import check_atlas_args, make_texture_atlas
from p3dlab.ops.text_parse import parse_ints


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


def _read_text(f):
    """The file as text lines (CRLF/CR normalised, BOM removed) and its path."""
    if isinstance(f, (str, os.PathLike)):
        path = os.fspath(f)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as e:
            raise OBJError(f"cannot open: {e.strerror}", path) from None
    elif hasattr(f, "read"):
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


def _classify_slow(text: str) -> Dict[str, tuple]:
    """Per keyword: line numbers (1-based) and the '\n'-joined line bodies (keyword and comments
    removed). Any text; a Python loop over the lines."""
    out = {k: ([], []) for k in _KEYS}
    for i, line in enumerate(text.split("\n")):
        parts = line.split(None, 1)
        if not parts or parts[0] not in out:
            continue
        body = parts[1] if len(parts) > 1 else ""
        nums, bodies = out[parts[0]]
        nums.append(i + 1)
        bodies.append(body.split("#", 1)[0])
    return {k: (np.array(v[0], np.int64), "\n".join(v[1])) for k, v in out.items()}


_CODES = {"v": 1, "vt": 2, "vn": 3, "f": 4}


def _classify(text: str) -> Dict[str, tuple]:
    """Like ``_classify_slow``, vectorised with NumPy over the bytes of an ASCII file whose lines
    start with their keyword: each line's kind comes from its first three bytes, keywords are
    blanked out, and each kind's lines are cut out of the buffer with one boolean mask."""
    raw = text.encode("ascii", errors="replace")
    if not raw.endswith(b"\n"):
        raw += b"\n"
    b = np.frombuffer(raw, np.uint8)
    if b.size <= 1 or not text.isascii():
        return _classify_slow(text)
    ends = np.flatnonzero(b == 10)
    starts = np.concatenate([[0], ends[:-1] + 1])

    def byte_at(k):
        idx = starts + k
        out = np.zeros(len(starts), np.uint8)
        ok = idx < ends
        out[ok] = b[idx[ok]]
        return out

    c0, c1, c2 = byte_at(0), byte_at(1), byte_at(2)
    if np.any((c0 == 32) | (c0 == 9)):
        return _classify_slow(text)  # indented keywords: rare, take the general path
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
            parts = raw[starts[i] : ends[i]].decode("ascii").split(None, 1)
            if parts and parts[0] == key:
                nums.append(i + 1)
                bodies.append(parts[1].split("#", 1)[0] if len(parts) > 1 else "")
        out[key] = (np.array(nums, np.int64), "\n".join(bodies))
    return out


def _numbers(joined: str, expected: int):
    """Parse whitespace-separated numbers in C; None when the count is not ``expected``."""
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
    """(n, width) float array of the numbers after one keyword; wider lines keep their extra
    columns (e.g. ``v x y z r g b``); narrower than ``width_min`` is an error."""
    n = len(line_nos)
    if n == 0:
        return np.zeros((0, width_keep), np.float64)
    first = block.split("\n", 1)[0]
    width = len(first.split())
    if width >= width_min:
        counts = _tokens_per_line(block, n)
        if (counts == width).all():
            vals = _numbers(block, n * width)
            if vals is not None:
                return vals.reshape(n, width)
    bodies = block.split("\n")
    rows = []
    for body, line in zip(bodies, line_nos):
        toks = body.split()
        if len(toks) < width_min:
            raise OBJError(f"'{kind}' line has {len(toks)} values, at least {width_min} needed", path, line=int(line))
        try:
            rows.append([float(t) for t in toks])
        except ValueError:
            bad = next(t for t in toks if not _is_float(t))
            raise OBJError(f"non-numeric value {bad[:40]!r} in a '{kind}' line", path, line=int(line)) from None
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _is_float(t: str) -> bool:
    try:
        float(t)
        return True
    except ValueError:
        return False


def _tokens_per_line(block: str, n: int, chars: bytes = b"") -> np.ndarray:
    """Whitespace-separated tokens on each of the n lines of ``block`` (vectorised)."""
    b = np.frombuffer(block.encode("utf-8", errors="replace") + b"\n", np.uint8)
    line_starts = np.concatenate([[0], np.flatnonzero(b == 10)[:-1] + 1])
    if len(line_starts) != n:
        raise ValueError("line count mismatch")
    ws = (b == 32) | (b == 9) | (b == 10)
    tok = ~ws & np.concatenate([[True], ws[:-1]])
    return np.add.reduceat(tok.astype(np.int32), line_starts)


def _face_signatures(block: str, n: int):
    """Per face line: number of corners, of '/' and of '//' (vectorised over the bytes)."""
    b = np.frombuffer(block.encode("utf-8", errors="replace") + b"\n", np.uint8)
    line_starts = np.concatenate([[0], np.flatnonzero(b == 10)[:-1] + 1])
    ws = (b == 32) | (b == 9) | (b == 10)
    tok = ~ws & np.concatenate([[True], ws[:-1]])
    slash = b == 47
    double = np.concatenate([slash[:-1] & slash[1:], [False]])
    count = lambda mask: np.add.reduceat(mask.astype(np.int32), line_starts)
    return count(tok), count(slash), count(double)


def _parse_faces(block: str, line_nos, path):
    """Raw OBJ indices (0 = missing) of every polygon corner, grouped by polygon shape and
    converted in bulk: (v, vt, vn) per corner, corners per polygon."""
    n = len(line_nos)
    if n == 0:
        z = np.zeros(0, np.int64)
        return z, z, z, z
    corners, slashes, doubles = _face_signatures(block, n)
    bodies = None
    if corners.min() < 3:
        bad = int(np.argmin(corners))
        raise OBJError(f"a face needs at least 3 vertices, got {corners[bad]}", path, line=int(line_nos[bad]))
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
        per_corner, rem = divmod(n_slash, k)
        if rem or per_corner > 2 or n_double not in (0, k) or (n_double and per_corner != 2):
            raise OBJError(
                "inconsistent face format (mixed 'v', 'v/vt', 'v//vn', 'v/vt/vn' in one face)",
                path,
                line=int(line_nos[idx[0]]),
            )
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
                    if not re.fullmatch(r"[+-]?\d+", t):
                        raise OBJError(f"non-integer index {t[:40]!r} in a face", path, line=int(line_nos[i]))
            raise OBJError("malformed face indices", path, line=int(line_nos[idx[0]]))
        vals = vals.reshape(len(idx), k, m)
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


def _check_inside(base_dir: str, ref: str, allow_outside: bool, path, line: int) -> str:
    target = os.path.realpath(os.path.join(base_dir, ref))
    root = os.path.realpath(base_dir)
    if not allow_outside and os.path.commonpath([root, target]) != root:
        raise UnsafePathError(
            f"refusing {ref!r}: it resolves outside {root} (pass allow_outside_paths=True to allow)", path, line=line
        )
    return target


def _parse_mtl(mtl_path: str, base_dir: str, allow_outside_paths: bool):
    """Materials of an MTL file: ``({name: {colour keys}}, {name: (texture path, line)})``, in file order.

    The colour keys are PyTorch3D's: ``ambient_color`` (Ka), ``diffuse_color`` (Kd),
    ``specular_color`` (Ks) and ``shininess`` (Ns). Texture paths are checked for safety here, but
    the images are read only for the materials an OBJ uses.
    """
    text, _ = _read_text(mtl_path)
    materials: Dict[str, Dict[str, torch.Tensor]] = {}
    texture_refs: Dict[str, tuple] = {}
    current = None
    keys = {"Ka": "ambient_color", "Kd": "diffuse_color", "Ks": "specular_color"}
    for lineno, raw in enumerate(text.split("\n"), start=1):
        parts = raw.split("#", 1)[0].split()
        if not parts:
            continue
        key = parts[0]
        if key == "newmtl":
            current = " ".join(parts[1:]) or f"material_{len(materials)}"
            materials[current] = {}
            continue
        if current is None:
            continue
        try:
            if key in keys:
                vals = [float(x) for x in parts[1:4]]
                if len(vals) == 1:
                    vals = vals * 3
                if len(vals) != 3:
                    raise ValueError
                materials[current][keys[key]] = torch.tensor(vals, dtype=torch.float32)
            elif key == "Ns":
                materials[current]["shininess"] = torch.tensor([float(parts[1])], dtype=torch.float32)
            elif key == "map_Kd":
                ref = parts[-1]
                texture_refs[current] = (_check_inside(base_dir, ref, allow_outside_paths, mtl_path, lineno), lineno)
        except FileFormatError:
            raise
        except (ValueError, IndexError):
            raise OBJError(f"malformed {key!r} line", mtl_path, line=lineno) from None
    return materials, texture_refs


def _used_materials(material_names: List[str], materials: dict, where) -> List[str]:
    """PyTorch3D's rule for the materials an OBJ uses: those named by ``usemtl``; with no ``usemtl``,
    the only material of the MTL file (several are an error, as in PyTorch3D)."""
    if material_names or not materials:
        return list(material_names)
    if len(materials) > 1:
        raise OBJError(f"{len(materials)} materials but no usemtl declarations in the OBJ file", where)
    return [next(iter(materials))]


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
    materials, refs = _parse_mtl(f, base, allow_outside_paths)
    names = list(materials) if material_names is None else _used_materials(material_names, materials, f)
    dev = torch.device(device)
    colors = {n: {k: v.to(dev) for k, v in materials[n].items()} for n in names if n in materials}
    textures: Dict[str, torch.Tensor] = {}
    if load_textures:
        for n in names:
            if n in refs:
                image = _load_image(refs[n][0], f, refs[n][1])
                if image is not None:
                    textures[n] = image.to(dev)
    return colors, textures


def _load_image(img_path: str, mtl_path, lineno: int) -> Optional[torch.Tensor]:
    from PIL import Image

    if not os.path.isfile(img_path):
        warnings.warn(f"{mtl_path}, line {lineno}: texture {img_path} not found; continuing without it", stacklevel=4)
        return None
    try:
        with Image.open(img_path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except Exception as e:  # Pillow raises many types, including DecompressionBombError
        raise OBJError(f"cannot read texture {img_path}: {e}", mtl_path, line=lineno) from None
    return torch.from_numpy(arr.copy())


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
    None for uv outside [0, 1]; see ``p3dlab.io.texture_atlas``).
    """
    if create_texture_atlas:
        check_atlas_args(texture_atlas_size, texture_wrap, f if isinstance(f, str) else "<stream>")
    text, path = _read_text(f)
    base_dir = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    where = path if path is not None else "<stream>"
    found = _classify(text)
    v = _parse_floats(found["v"][1], found["v"][0], 3, 3, "v", path)
    vt = _parse_floats(found["vt"][1], found["vt"][0], 2, 2, "vt", path)
    vn = _parse_floats(found["vn"][1], found["vn"][0], 3, 3, "vn", path)
    if v.size and not np.isfinite(v[:, :3]).all():
        bad = int(np.nonzero(~np.isfinite(v[:, :3]).all(1))[0][0])
        raise OBJError("non-finite vertex coordinate", path, line=int(found["v"][0][bad]))
    f_lines = found["f"][0]
    fv, ft, fn, corners = _parse_faces(found["f"][1], f_lines, path)
    corner_lines = np.repeat(f_lines, corners)

    def before(kind):
        return np.searchsorted(found[kind][0], corner_lines)

    vi = _resolve(fv, before("v"), len(v), "vertex", corner_lines, path)
    if (vi < 0).any():
        corner = int(np.nonzero(vi < 0)[0][0])
        raise OBJError("a face corner has no vertex index", path, line=int(corner_lines[corner]))
    ti = _resolve(ft, before("vt"), len(vt), "texture", corner_lines, path)
    ni = _resolve(fn, before("vn"), len(vn), "normal", corner_lines, path)

    # fan triangulation: corner c of polygon p -> triangles (c0, c_i, c_{i+1})
    starts = np.concatenate([[0], np.cumsum(corners)[:-1]]).astype(np.int64)
    n_tris = corners - 2
    poly_of_tri = np.repeat(np.arange(len(corners)), n_tris)
    k_in_poly = np.arange(int(n_tris.sum())) - np.repeat(np.cumsum(n_tris) - n_tris, n_tris)
    c0 = starts[poly_of_tri]
    tri_corners = np.stack([c0, c0 + 1 + k_in_poly, c0 + 2 + k_in_poly], 1)

    # materials: the last 'usemtl' before each polygon
    names: List[str] = []
    mat_of_use = []
    for body in found["usemtl"][1].split("\n") if len(found["usemtl"][0]) else []:
        name = body.strip()
        if name not in names:
            names.append(name)
        mat_of_use.append(names.index(name))
    which = np.searchsorted(found["usemtl"][0], f_lines) - 1
    poly_mat = np.where(which >= 0, np.array(mat_of_use + [-1], np.int64)[which], -1)

    # PyTorch3D: no material data unless load_textures and an MTL file is read; then only the
    # materials the OBJ uses, and without usemtl the file's only material for every face
    material_colors = texture_images = None
    mtl_paths = []
    if load_textures:
        for line, body in zip(found["mtllib"][0].tolist(), found["mtllib"][1].split("\n")):
            for ref in body.split():
                mtl_path = _check_inside(base_dir, ref, allow_outside_paths, path, line)
                if os.path.isfile(mtl_path):
                    mtl_paths.append(mtl_path)
                else:
                    warnings.warn(
                        f"{path}, line {line}: material file {ref} not found; continuing without it", stacklevel=2
                    )
    if mtl_paths:
        materials, refs, ref_file = {}, {}, {}
        for mtl_path in mtl_paths:
            mats, texs = _parse_mtl(mtl_path, os.path.dirname(mtl_path), allow_outside_paths)
            materials.update(mats)
            refs.update(texs)
            ref_file.update({n: mtl_path for n in texs})
        if not names:
            names = _used_materials(names, materials, where)
            poly_mat = np.maximum(poly_mat, 0) if names else poly_mat
        material_colors = {n: materials[n] for n in names if n in materials}
        texture_images = {}
        for n in names:
            if n in refs:
                image = _load_image(refs[n][0], ref_file[n], refs[n][1])
                if image is not None:
                    texture_images[n] = image
        missing = [n for n in names if n not in materials]
        if missing:
            warnings.warn(f"{where}: materials {missing} are used but not defined", stacklevel=2)

    dev = torch.device(device)
    as_long = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(dev)
    faces = Faces(
        verts_idx=as_long(vi[tri_corners]).reshape(-1, 3),
        normals_idx=as_long(ni[tri_corners]).reshape(-1, 3),
        textures_idx=as_long(ti[tri_corners]).reshape(-1, 3),
        materials_idx=as_long(poly_mat[poly_of_tri]),
    )
    verts = torch.from_numpy(v[:, :3].astype(np.float32)).to(dev)
    verts_uvs = torch.from_numpy(vt[:, :2].astype(np.float32)).to(dev) if len(vt) else None
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
        normals=torch.from_numpy(vn[:, :3].astype(np.float32)).to(dev) if len(vn) else None,
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
