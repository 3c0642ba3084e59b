"""OBJ + MTL reading and writing with PyTorch3D's return types (conventions §16).

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

import os
import re
import warnings
from typing import Dict, List, NamedTuple, Optional

import numpy as np
import torch

from p3dlab.io.errors import FileFormatError, OBJError, UnsafePathError


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


_LINE = {key: re.compile(rf"^[ \t]*{key}[ \t]+([^\n]*)$", re.M) for key in ("v", "vt", "vn", "f", "usemtl", "mtllib")}


def _line_no(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _read_text(f):
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
            raise OBJError(
                "NUL byte: this is not a text OBJ file", path, line=data[: data.index(b"\0")].count(b"\n") + 1
            )
        text = data.decode("utf-8", errors="replace")
    else:
        text = data
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n"), path


def _parse_floats(matches, width_min: int, width_keep: int, kind: str, text: str, path):
    """Parse the captured rest-of-line strings of one keyword into an (n, width_keep) array.

    Returns (values, n_tokens_per_line) where lines may have more tokens than ``width_keep``
    (e.g. ``v x y z r g b``); the extra columns are returned in ``values`` too.
    """
    lines = [m.group(1).split("#", 1)[0] for m in matches]
    if not lines:
        return np.zeros((0, width_keep), np.float64), 0
    counts = np.fromiter((len(s.split()) for s in lines), dtype=np.int64, count=len(lines))
    width = int(counts.max())
    if counts.min() < width_min:
        bad = int(np.argmin(counts))
        raise OBJError(
            f"'{kind}' line has {counts[bad]} values, at least {width_min} needed",
            path,
            line=_line_no(text, matches[bad].start()),
        )
    try:
        if (counts == width).all():
            values = np.array(" ".join(lines).split(), dtype=np.float64).reshape(len(lines), width)
        else:  # mixed widths (e.g. some vertices with colours): pad per line
            values = np.full((len(lines), width), np.nan)
            for i, s in enumerate(lines):
                row = np.array(s.split(), dtype=np.float64)
                values[i, : len(row)] = row
    except ValueError:
        for m, s in zip(matches, lines):
            for t in s.split():
                try:
                    float(t)
                except ValueError:
                    raise OBJError(
                        f"non-numeric value {t[:40]!r} in a '{kind}' line", path, line=_line_no(text, m.start())
                    ) from None
        raise
    return values, width


def _parse_faces(matches, text: str, path):
    """Returns (verts_idx, uv_idx, normal_idx) as (P,) polygon-corner arrays, corners per polygon,
    and the polygons' text offsets. Indices are raw OBJ values (0 = missing)."""
    bodies = [m.group(1).split("#", 1)[0] for m in matches]
    n = len(bodies)
    if n == 0:
        z = np.zeros(0, np.int64)
        return z, z, z, z, z
    sig = [(len(b.split()), b.count("/"), b.count("//")) for b in bodies]
    corners = np.array([s[0] for s in sig], np.int64)
    if corners.min() < 3:
        bad = int(np.argmin(corners))
        raise OBJError(
            f"a face needs at least 3 vertices, got {corners[bad]}", path, line=_line_no(text, matches[bad].start())
        )
    groups: Dict[tuple, List[int]] = {}
    for i, s in enumerate(sig):
        groups.setdefault(s, []).append(i)
    v_all = np.zeros(int(corners.sum()), np.int64)
    t_all = np.zeros_like(v_all)
    n_all = np.zeros_like(v_all)
    starts = np.concatenate([[0], np.cumsum(corners)[:-1]])
    for (k, slashes, doubles), idx in groups.items():
        per_corner, rem = divmod(slashes, k)
        if rem or per_corner > 2 or doubles not in (0, k) or (doubles and per_corner != 2):
            raise OBJError(
                "inconsistent face format (mixed 'v', 'v/vt', 'v//vn', 'v/vt/vn' in one face)",
                path,
                line=_line_no(text, matches[idx[0]].start()),
            )
        joined = " ".join(bodies[i] for i in idx).replace("//", "/0/").replace("/", " ")
        try:
            vals = np.array(joined.split(), dtype=np.float64)
        except ValueError:
            for i in idx:
                for t in bodies[i].replace("/", " ").split():
                    if not re.fullmatch(r"[+-]?\d+", t):
                        raise OBJError(
                            f"non-integer index {t[:40]!r} in a face", path, line=_line_no(text, matches[i].start())
                        ) from None
            raise
        m = per_corner + 1
        if vals.size != len(idx) * k * m or not np.all(vals == np.round(vals)) or np.abs(vals).max(initial=0) > 2**62:
            bad = idx[0]
            raise OBJError("malformed face indices", path, line=_line_no(text, matches[bad].start()))
        vals = vals.astype(np.int64).reshape(len(idx), k, m)
        pos = (starts[np.array(idx)][:, None] + np.arange(k)[None]).reshape(-1)
        v_all[pos] = vals[..., 0].reshape(-1)
        if m >= 2:
            t_all[pos] = vals[..., 1].reshape(-1)
        if m == 3:
            n_all[pos] = vals[..., 2].reshape(-1)
    offsets = np.array([mm.start() for mm in matches], np.int64)
    return v_all, t_all, n_all, corners, offsets


def _resolve(idx: np.ndarray, defined_before: np.ndarray, total: int, what: str, text, matches, corners, path):
    """1-based / negative OBJ indices -> 0-based, -1 where missing (0); range-checked."""
    out = np.where(idx > 0, idx - 1, np.where(idx < 0, idx + defined_before, -1))
    bad = (idx != 0) & ((out < 0) | (out >= total) | ((idx < 0) & (out < 0)))
    if bad.any():
        corner = int(np.nonzero(bad)[0][0])
        poly = int(np.searchsorted(np.cumsum(corners), corner, side="right"))
        raise OBJError(
            f"{what} index {int(idx[corner])} is out of range ({total} defined)",
            path,
            line=_line_no(text, matches[poly].start()),
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


def load_mtl(mtl_path: str, base_dir: str, load_textures: bool = True, allow_outside_paths: bool = False):
    """Parse an MTL file: ``({name: {ambient_color, diffuse_color, specular_color, shininess,
    dissolve, ...}}, {name: (H, W, 3) float texture in [0, 1]})``."""
    text, _ = _read_text(mtl_path)
    materials: Dict[str, Dict[str, torch.Tensor]] = {}
    textures: Dict[str, torch.Tensor] = {}
    current = None
    keys = {"Ka": "ambient_color", "Kd": "diffuse_color", "Ks": "specular_color"}
    scalars = {"Ns": "shininess", "d": "dissolve", "Ni": "optical_density", "illum": "illum", "Tr": "transparency"}
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
            elif key in scalars:
                materials[current][scalars[key]] = torch.tensor([float(parts[1])], dtype=torch.float32)
            elif key == "map_Kd" and load_textures:
                ref = parts[-1]
                img_path = _check_inside(base_dir, ref, allow_outside_paths, mtl_path, lineno)
                image = _load_image(img_path, mtl_path, lineno)
                if image is not None:
                    textures[current] = image
        except FileFormatError:
            raise
        except (ValueError, IndexError):
            raise OBJError(f"malformed {key!r} line", mtl_path, line=lineno) from None
    return materials, textures


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

    ``Properties.material_colors`` maps each material to its Ka/Kd/Ks/Ns (and d, Ni, illum);
    ``texture_images`` maps materials with ``map_Kd`` to (H, W, 3) float images in [0, 1].
    """
    if create_texture_atlas:
        raise OBJError(
            "create_texture_atlas=True is not supported yet; use TexturesUV (the default)",
            f if isinstance(f, str) else None,
        )
    text, path = _read_text(f)
    base_dir = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    where = path if path is not None else "<stream>"
    found = {k: list(rx.finditer(text)) for k, rx in _LINE.items()}
    v, _ = _parse_floats(found["v"], 3, 3, "v", text, path)
    vt, _ = _parse_floats(found["vt"], 2, 2, "vt", text, path)
    vn, _ = _parse_floats(found["vn"], 3, 3, "vn", text, path)
    if v.size and not np.isfinite(v[:, :3]).all():
        bad = int(np.nonzero(~np.isfinite(v[:, :3]).all(1))[0][0])
        raise OBJError("non-finite vertex coordinate", path, line=_line_no(text, found["v"][bad].start()))
    fv, ft, fn, corners, f_off = _parse_faces(found["f"], text, path)
    per_corner_off = np.repeat(f_off, corners)

    def before(kind):
        offs = np.array([m.start() for m in found[kind]], np.int64)
        return np.searchsorted(offs, per_corner_off)

    vi = _resolve(fv, before("v"), len(v), "vertex", text, found["f"], corners, path)
    if (vi < 0).any():
        corner = int(np.nonzero(vi < 0)[0][0])
        poly = int(np.searchsorted(np.cumsum(corners), corner, side="right"))
        raise OBJError("a face corner has no vertex index", path, line=_line_no(text, found["f"][poly].start()))
    ti = _resolve(ft, before("vt"), len(vt), "texture", text, found["f"], corners, path)
    ni = _resolve(fn, before("vn"), len(vn), "normal", text, found["f"], corners, path)

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
    for m in found["usemtl"]:
        name = m.group(1).split("#", 1)[0].strip()
        if name not in names:
            names.append(name)
        mat_of_use.append(names.index(name))
    use_off = np.array([m.start() for m in found["usemtl"]], np.int64)
    which = np.searchsorted(use_off, f_off) - 1
    poly_mat = np.where(which >= 0, np.array(mat_of_use + [-1], np.int64)[which], -1)

    material_colors, texture_images = {}, {}
    for m in found["mtllib"]:
        for ref in m.group(1).split("#", 1)[0].split():
            line = _line_no(text, m.start())
            mtl_path = _check_inside(base_dir, ref, allow_outside_paths, path, line)
            if not os.path.isfile(mtl_path):
                warnings.warn(
                    f"{path}, line {line}: material file {ref} not found; continuing without it", stacklevel=2
                )
                continue
            mats, texs = load_mtl(mtl_path, os.path.dirname(mtl_path), load_textures, allow_outside_paths)
            material_colors.update(mats)
            texture_images.update(texs)
    missing = [n for n in names if n not in material_colors]
    if missing and found["mtllib"]:
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
    props = Properties(
        normals=torch.from_numpy(vn[:, :3].astype(np.float32)).to(dev) if len(vn) else None,
        verts_uvs=torch.from_numpy(vt[:, :2].astype(np.float32)).to(dev) if len(vt) else None,
        material_colors=material_colors or None,
        texture_images=texture_images or None,
        texture_atlas=None,
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
        return [prefix + " " + " ".join(fmt % x for x in row) for row in arr.tolist()]

    lines += block("v", verts.numpy())
    if verts_uvs is not None:
        lines += block("vt", torch.as_tensor(verts_uvs).detach().cpu().numpy())
    if normals is not None:
        lines += block("vn", torch.as_tensor(normals).detach().cpu().numpy())
    fi = faces.numpy() + 1
    ti = torch.as_tensor(faces_uvs).cpu().long().numpy() + 1 if faces_uvs is not None else None
    ni = torch.as_tensor(faces_normals_idx).cpu().long().numpy() + 1 if faces_normals_idx is not None else None
    for k in range(len(fi)):
        corners = []
        for c in range(3):
            s = str(fi[k, c])
            if ti is not None or ni is not None:
                s += "/" + (str(ti[k, c]) if ti is not None else "")
            if ni is not None:
                s += "/" + str(ni[k, c])
            corners.append(s)
        lines.append("f " + " ".join(corners))
    out = "\n".join(lines) + "\n"
    if path is not None:
        with open(path, "w") as fh:
            fh.write(out)
    else:
        f.write(out)


def load_objs_as_meshes(files, device="cpu", load_textures: bool = True, allow_outside_paths: bool = False):
    """Load OBJ files into one ``Meshes`` batch; a mesh with a ``map_Kd`` texture and UVs gets a
    ``TexturesUV`` (v flipped: v = 0 is the bottom row of the image)."""
    from p3dlab.structures import Meshes, TexturesUV, join_meshes_as_batch

    meshes = []
    for f in files:
        verts, faces, aux = load_obj(
            f, load_textures=load_textures, device=device, allow_outside_paths=allow_outside_paths
        )
        tex = None
        if load_textures and aux.texture_images and aux.verts_uvs is not None:
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
