"""Procedural meshes, generated on the fly (nothing is downloaded).

Every closed mesh here is wound counter-clockwise seen from outside, so its face normals point
outward and its signed volume ``sum v0 . (v1 x v2) / 6`` is positive
(docs/conventions.md#structures-and-batching).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.mesh_ops import subdivide_faces
from p3dlab.structures import Meshes, TexturesUV, TexturesVertex

_PHI = (1.0 + math.sqrt(5.0)) / 2.0


def _mesh(verts, faces, textures=None, dtype=torch.float32, device=None) -> Meshes:
    v = torch.as_tensor(verts, dtype=dtype, device=device)
    f = torch.as_tensor(faces, dtype=torch.int64, device=device)
    return Meshes([v], [f], textures)


def signed_volume(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """``sum_f v0 . (v1 x v2) / 6``: the enclosed volume of a closed mesh, positive if wound outward."""
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return (v0 * torch.cross(v1, v2, dim=1)).sum() / 6.0


def _orient_convex_outward(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Flip faces of a convex polyhedron around the origin whose normal points towards it."""
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    n = torch.cross(v1 - v0, v2 - v0, dim=1)
    inward = (n * (v0 + v1 + v2)).sum(1) < 0
    faces = faces.clone()
    faces[inward] = faces[inward][:, [0, 2, 1]]
    return faces


def _faces_from_edge_length(verts: torch.Tensor, edge: float) -> torch.Tensor:
    """All triangles whose three sides have length ``edge`` (for regular deltahedra)."""
    d = torch.cdist(verts.double(), verts.double())
    adj = (d - edge).abs() < 1e-6
    n = verts.shape[0]
    tris = [
        (i, j, k)
        for i in range(n)
        for j in range(i + 1, n)
        if adj[i, j]
        for k in range(j + 1, n)
        if adj[i, k] and adj[j, k]
    ]
    return _orient_convex_outward(verts, torch.tensor(tris, dtype=torch.int64))


# --------------------------------------------------------------------------- platonic solids
def cube(size: float = 2.0, inverted: bool = False, dtype=torch.float32, device=None) -> Meshes:
    """Axis-aligned cube of side ``size`` centred at the origin: 8 vertices, 12 triangles.

    Wound outward. ``inverted=True`` returns the same cube wound inward, like the book's cube files
    (docs/errata.md#e8): a bug to find, with negative signed volume and normals pointing into the cube.
    """
    verts, faces = _box_faces(size / 2.0)
    if inverted:
        faces = faces[:, [0, 2, 1]]
    return _mesh(verts, faces, dtype=dtype, device=device)


def _box_faces(h: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Vertices (8, 3) at +-h (index bits: 4 x, 2 y, 1 z) and 12 outward triangles."""
    verts = torch.tensor([[(i >> 2 & 1) * 2 - 1, (i >> 1 & 1) * 2 - 1, (i & 1) * 2 - 1] for i in range(8)]) * h
    faces = []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3  # e_u x e_v = e_axis
        for sign in (-1, 1):
            corners = []
            for cu, cv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):  # counter-clockwise around e_axis
                c = [0, 0, 0]
                c[axis], c[u], c[v] = sign, cu, cv
                corners.append(((c[0] > 0) << 2) | ((c[1] > 0) << 1) | int(c[2] > 0))
            if sign < 0:
                corners = corners[::-1]
            faces += [[corners[0], corners[1], corners[2]], [corners[0], corners[2], corners[3]]]
    return verts.float(), torch.tensor(faces)


_FACE_COLOURS = {  # (axis, sign) -> RGB, used by colored_cube
    (0, 1): (1.0, 0.1, 0.1), (0, -1): (0.1, 0.9, 0.9),
    (1, 1): (0.1, 0.8, 0.1), (1, -1): (0.9, 0.1, 0.9),
    (2, 1): (0.1, 0.2, 1.0), (2, -1): (1.0, 0.9, 0.1),
}  # fmt: skip


def colored_cube(size: float = 2.0, dtype=torch.float32, device=None) -> Meshes:
    """A cube whose six faces have their own colours (24 vertices, ``TexturesVertex``).

    +X red, -X cyan, +Y green, -Y magenta, +Z blue, -Z yellow: an orientation test object (seen
    from ``look_at_view_transform(2.7, 0, 0)``, red is on the right of the image).
    """
    h = size / 2.0
    verts, faces, cols = [], [], []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        for sign in (-1, 1):
            base = len(verts)
            quad = []
            for cu, cv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                c = [0.0, 0.0, 0.0]
                c[axis], c[u], c[v] = sign * h, cu * h, cv * h
                quad.append(c)
            if sign < 0:
                quad = quad[::-1]
            verts += quad
            cols += [_FACE_COLOURS[(axis, sign)]] * 4
            faces += [[base, base + 1, base + 2], [base, base + 2, base + 3]]
    tex = TexturesVertex([torch.tensor(cols, dtype=dtype, device=device)])
    return _mesh(verts, faces, tex, dtype, device)


def tetrahedron(dtype=torch.float32, device=None) -> Meshes:
    """Regular tetrahedron inscribed in the unit sphere: 4 vertices, 4 faces."""
    v = torch.tensor([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / math.sqrt(3.0)
    return _mesh(v, _faces_from_edge_length(v, math.sqrt(8.0 / 3.0)), dtype=dtype, device=device)


def octahedron(dtype=torch.float32, device=None) -> Meshes:
    """Regular octahedron with vertices at +-e_x, +-e_y, +-e_z: 6 vertices, 8 faces.

    Replaces the book's broken ``diamond.obj`` (docs/errata.md#e26).
    """
    v = torch.cat([torch.eye(3), -torch.eye(3)])
    return _mesh(v, _faces_from_edge_length(v, math.sqrt(2.0)), dtype=dtype, device=device)


def _icosahedron_verts() -> torch.Tensor:
    pts = []
    for a in (-1.0, 1.0):
        for b in (-_PHI, _PHI):
            pts += [[0.0, a, b], [a, b, 0.0], [b, 0.0, a]]
    return torch.tensor(pts)


def icosahedron(dtype=torch.float32, device=None) -> Meshes:
    """Regular icosahedron inscribed in the unit sphere: 12 vertices, 20 faces."""
    v = _icosahedron_verts()
    faces = _faces_from_edge_length(v, 2.0)
    return _mesh(v / v.norm(dim=1, keepdim=True), faces, dtype=dtype, device=device)


def dodecahedron(dtype=torch.float32, device=None) -> Meshes:
    """Regular dodecahedron inscribed in the unit sphere: 20 vertices, 12 pentagons as 36 triangles.

    Each pentagon is the set of 5 vertices furthest along one icosahedron vertex direction (the
    two solids are dual), sorted by angle and fan-triangulated.
    """
    s = 1.0 / _PHI
    pts = [[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)]
    for a in (-s, s):
        for b in (-_PHI, _PHI):
            pts += [[0.0, a, b], [a, b, 0.0], [b, 0.0, a]]
    v = torch.tensor(pts, dtype=torch.float64)
    faces = []
    for n in _icosahedron_verts()[:, [0, 2, 1]].double():  # face directions of the dual
        n = n / n.norm()
        d = v @ n
        ring = torch.nonzero((d - d.max()).abs() < 1e-6).flatten()
        centre = v[ring].mean(0)
        e1 = v[ring[0]] - centre
        e2 = torch.cross(n, e1, dim=0)
        ang = torch.atan2((v[ring] - centre) @ e2, (v[ring] - centre) @ e1)
        ring = ring[ang.argsort()]  # counter-clockwise around n
        faces += [[int(ring[0]), int(ring[i]), int(ring[i + 1])] for i in range(1, 4)]
    v = v / v.norm(dim=1, keepdim=True)
    return _mesh(v, faces, dtype=dtype, device=device)


# --------------------------------------------------------------------------- spheres
def ico_sphere(level: int = 0, dtype=torch.float32, device=None) -> Meshes:
    """Unit sphere from a subdivided icosahedron (PyTorch3D's ``ico_sphere``).

    Level L has ``10 * 4**L + 2`` vertices and ``20 * 4**L`` faces: level 4 gives 2562 / 5120.
    """
    if not isinstance(level, int) or not 0 <= level <= 8:
        raise P3DLabValueError(f"ico_sphere: level must be an int in [0, 8], got {level!r}")
    ico = icosahedron(dtype=torch.float64)
    v, f = ico.verts_list()[0], ico.faces_list()[0]
    for _ in range(level):
        v, f, _ = subdivide_faces(v, f)
        v = v / v.norm(dim=1, keepdim=True)
    return _mesh(v, f, dtype=dtype, device=device)


icosphere = ico_sphere


def _grid_faces(rows: int, cols: int, wrap_cols: bool) -> torch.Tensor:
    """Two triangles per cell of a (rows x cols) vertex grid, indices ``r * cols + c``.

    Counter-clockwise when the column index increases to the right and rows increase downward
    on the outward-facing side.
    """
    faces = []
    ncols = cols if wrap_cols else cols - 1
    for r in range(rows - 1):
        for c in range(ncols):
            c1 = (c + 1) % cols
            i00, i01, i10, i11 = r * cols + c, r * cols + c1, (r + 1) * cols + c, (r + 1) * cols + c1
            faces += [[i00, i10, i11], [i00, i11, i01]]
    return torch.tensor(faces, dtype=torch.int64)


def _revolve(profile: torch.Tensor, n_around: int, cap_top: bool, cap_bottom: bool):
    """Surface of revolution about +Y of a (radius, height) profile listed from top to bottom.

    Returns verts, faces (outward) and the ring index of every vertex. A profile point with radius
    0 becomes a single pole vertex when it is the first (top) or last (bottom) point.
    """
    theta = torch.arange(n_around, dtype=torch.float64) * (2 * math.pi / n_around)
    rings = []
    for r, y in profile.tolist():
        rings.append(torch.stack([r * torch.sin(theta), torch.full_like(theta, y), r * torch.cos(theta)], 1))
    verts = torch.cat(rings, 0)
    faces = _grid_faces(len(rings), n_around, wrap_cols=True)
    extra = []
    if cap_top:
        top = verts.shape[0] + len(extra)
        extra.append([0.0, float(profile[0, 1]), 0.0])
        faces = torch.cat([faces, torch.tensor([[top, c, (c + 1) % n_around] for c in range(n_around)])], 0)
    if cap_bottom:
        bot = verts.shape[0] + len(extra)
        extra.append([0.0, float(profile[-1, 1]), 0.0])
        base = (len(rings) - 1) * n_around
        faces = torch.cat(
            [faces, torch.tensor([[bot, base + (c + 1) % n_around, base + c] for c in range(n_around)])], 0
        )
    if extra:
        verts = torch.cat([verts, torch.tensor(extra, dtype=torch.float64)], 0)
    return verts, faces


def uv_sphere(
    n_lat: int = 16, n_lon: int = 32, radius: float = 1.0, texture: Optional[torch.Tensor] = None,
    dtype=torch.float32, device=None,
) -> Meshes:  # fmt: skip
    """Latitude-longitude sphere about +Y, closed (poles are single vertices).

    With ``texture`` (an (H, W, 3) image, e.g. :func:`uv_checker_texture`) the sphere gets a
    ``TexturesUV`` with u = longitude / 2 pi (seam on the +Z meridian, duplicated in UV space)
    and v = 1 at the north pole, 0 at the south pole.
    """
    if n_lat < 2 or n_lon < 3:
        raise P3DLabValueError("uv_sphere: need n_lat >= 2 and n_lon >= 3")
    lat = torch.linspace(0, math.pi, n_lat + 1, dtype=torch.float64)[1:-1]
    profile = torch.stack([radius * torch.sin(lat), radius * torch.cos(lat)], 1)
    verts, faces = _revolve(profile, n_lon, cap_top=True, cap_bottom=True)
    textures = None
    if texture is not None:
        textures = _sphere_uvs(n_lat, n_lon, faces, texture.to(dtype=dtype, device=device))
    return _mesh(verts, faces, textures, dtype, device)


def _sphere_uvs(n_lat: int, n_lon: int, faces: torch.Tensor, image: torch.Tensor) -> TexturesUV:
    """UVs for :func:`uv_sphere`: a (n_lat + 1) x (n_lon + 1) UV grid with the seam column doubled."""
    rings = n_lat - 1
    uv = torch.stack(
        torch.meshgrid(torch.linspace(0, 1, n_lon + 1), torch.linspace(1, 0, n_lat + 1), indexing="xy"),
        -1,
    ).reshape(-1, 2)  # row-major: row r = latitude r (0 = north), column c = longitude c
    cols = n_lon + 1

    def uv_index(vert: int, col_hint: int) -> int:
        if vert == rings * n_lon:  # north pole
            return col_hint
        if vert == rings * n_lon + 1:  # south pole
            return n_lat * cols + col_hint
        r, c = divmod(vert, n_lon)
        return (r + 1) * cols + c

    fuv = []
    for f in faces.tolist():
        ring_cols = [v % n_lon for v in f if v < rings * n_lon]
        wraps = max(ring_cols) - min(ring_cols) > 1
        hint = max(ring_cols) if wraps else min(ring_cols)
        row = []
        for v in f:
            idx = uv_index(v, hint)
            if wraps and v < rings * n_lon and v % n_lon == 0:
                idx += n_lon  # the seam: use the u = 1 copy
            row.append(idx)
        fuv.append(row)
    return TexturesUV([image], [torch.tensor(fuv)], [uv.to(image)])


def torus(
    major_radius: float = 1.0, minor_radius: float = 0.3, n_major: int = 32, n_minor: int = 16,
    dtype=torch.float32, device=None,
) -> Meshes:  # fmt: skip
    """Torus around +Y (genus 1, Euler characteristic 0): ``n_major * n_minor`` vertices."""
    if minor_radius <= 0 or major_radius <= minor_radius:
        raise P3DLabValueError("torus: need 0 < minor_radius < major_radius")
    u = torch.arange(n_major, dtype=torch.float64) * (2 * math.pi / n_major)
    v = torch.arange(n_minor, dtype=torch.float64) * (2 * math.pi / n_minor)
    vv, uu = torch.meshgrid(v, u, indexing="ij")  # rows: minor angle, cols: major angle
    r = major_radius + minor_radius * torch.cos(vv)
    verts = torch.stack([r * torch.sin(uu), minor_radius * torch.sin(vv), r * torch.cos(uu)], -1).reshape(-1, 3)
    faces = []
    for i in range(n_minor):
        for j in range(n_major):
            a, b = i * n_major + j, i * n_major + (j + 1) % n_major
            c, d = ((i + 1) % n_minor) * n_major + j, ((i + 1) % n_minor) * n_major + (j + 1) % n_major
            faces += [[a, b, d], [a, d, c]]
    return _mesh(verts, faces, dtype=dtype, device=device)


def cylinder(radius: float = 0.5, height: float = 2.0, n: int = 32, dtype=torch.float32, device=None) -> Meshes:
    """Closed cylinder about +Y, centred at the origin, with capped ends."""
    profile = torch.tensor([[radius, height / 2], [radius, -height / 2]], dtype=torch.float64)
    verts, faces = _revolve(profile, n, cap_top=True, cap_bottom=True)
    return _mesh(verts, faces, dtype=dtype, device=device)


def capsule(
    radius: float = 0.5, length: float = 1.0, n_around: int = 24, n_cap: int = 8, dtype=torch.float32, device=None
) -> Meshes:
    """A cylinder of ``length`` with hemispherical ends about +Y (total height length + 2 radius)."""
    a = torch.linspace(0, math.pi / 2, n_cap + 1, dtype=torch.float64)[1:]
    top = torch.stack([radius * torch.sin(a), length / 2 + radius * torch.cos(a)], 1)
    bottom = torch.stack([radius * torch.sin(a).flip(0), -length / 2 - radius * torch.cos(a).flip(0)], 1)
    profile = torch.cat([top, bottom], 0)
    verts, faces = _revolve(profile, n_around, cap_top=True, cap_bottom=True)
    verts[-2, 1], verts[-1, 1] = length / 2 + radius, -length / 2 - radius  # poles
    return _mesh(verts, faces, dtype=dtype, device=device)


def parallel_planes(colored: bool = True, dtype=torch.float32, device=None) -> Meshes:
    """Two parallel 2 x 2 squares at z = -1 (red) and z = +1 (blue): 8 vertices and 4 faces, as in
    the book's chapter-1 PLY example. Both are wound counter-clockwise seen from +Z (they face a
    camera on +Z); the book's file winds the second one the other way."""
    v = torch.tensor(
        [[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1], [-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]],
        dtype=torch.float64,
    )
    f = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    tex = None
    if colored:
        cols = torch.tensor([[1.0, 0, 0]] * 4 + [[0, 0, 1.0]] * 4, dtype=dtype, device=device)
        tex = TexturesVertex([cols])
    return _mesh(v, f, tex, dtype, device)


# --------------------------------------------------------------------------- textures
def uv_checker_texture(size: int = 256, checks: int = 8, dtype=torch.float32, device=None) -> torch.Tensor:
    """(size, size, 3) debug texture in [0, 1]: a checkerboard whose red grows with u (left to
    right) and green with v (bottom to top), so a flipped or mirrored mapping is visible at once."""
    t = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    u = t[None, :].expand(size, size)
    v = (1.0 - t)[:, None].expand(size, size)  # row 0 is the top: v = 1
    check = ((u * checks).floor() + (v * checks).floor()) % 2
    shade = 0.55 + 0.45 * check
    img = torch.stack([shade * (0.25 + 0.75 * u), shade * (0.25 + 0.75 * v), shade * 0.35], -1)
    return img.to(dtype=dtype, device=device)
