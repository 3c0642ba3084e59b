"""A Utah-style teapot tessellated from bicubic Bezier patches.

Newell's 1975 teapot is a set of bicubic Bezier patches: surfaces of revolution for the rim, body,
bottom and lid, and swept tubes for the handle and spout. p3dlab builds its teapot the same way,
from its own profile curves:

* a surface of revolution is a cubic profile curve (radius, height) swept around the axis as four
  quarter patches, each quarter circle drawn with the cubic Bezier weights (1, k), (k, 1),
  k = 4/3 tan(pi/8) ~ 0.5523;
* a tube is a cubic centre line in the x-z plane with an elliptic cross-section built the same way
  (half-widths along the in-plane normal and along y).

Every patch is evaluated on an (n+1) x (n+1) grid, ``S(u, v) = sum_ij B_i(u) B_j(v) P_ij`` with the
Bernstein polynomials B, split into triangles, then coincident vertices are welded and degenerate
triangles (at the poles) dropped. The data is z-up like Newell's; the returned mesh is +Y up with
the spout along +X, like the teapot of PyTorch3D's tutorials.
"""

from __future__ import annotations

import math

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.structures import Meshes

_K = 4.0 / 3.0 * math.tan(math.pi / 8.0)
_QUARTER = [(1.0, 0.0), (1.0, _K), (_K, 1.0), (0.0, 1.0)]  # cubic Bezier quarter circle

# Profiles (radius, height): each consecutive 4 points is one cubic segment, listed along the
# outer surface (rim lip -> body -> bottom -> axis; lid: axis -> outer edge).
_REVOLUTIONS = {
    "rim": [(1.4, 2.4), (1.3375, 2.53125), (1.4375, 2.53125), (1.5, 2.4)],
    "body": [(1.5, 2.4), (1.75, 1.875), (2.0, 1.35), (2.0, 0.9), (2.0, 0.9), (2.0, 0.45), (1.5, 0.225), (1.5, 0.15)],
    "bottom": [(1.5, 0.15), (1.5, 0.0), (0.8, 0.0), (0.0, 0.0)],
    "lid": [(0.0, 3.15), (0.8, 3.15), (0.0, 2.85), (0.2, 2.7), (0.2, 2.7), (0.4, 2.55), (1.3, 2.55), (1.3, 2.4)],
}

# Tubes: centre line (x, z) and half-widths (in-plane, along y) at each control point.
_TUBES = {
    "handle": (
        [
            (-1.6, 1.95),
            (-2.4, 1.95),
            (-2.95, 1.95),
            (-2.95, 1.55),
            (-2.95, 1.55),
            (-2.95, 1.2),
            (-2.6, 0.95),
            (-1.9, 0.8),
        ],
        [(0.1, 0.22)] * 8,
    ),
    "spout": (
        [(1.7, 1.275), (2.6, 1.275), (2.3, 1.95), (2.8, 2.25), (2.8, 2.25), (3.1, 2.45), (3.35, 2.45), (3.25, 2.25)],
        [(0.45, 0.62), (0.45, 0.62), (0.25, 0.28), (0.2, 0.22), (0.2, 0.22), (0.19, 0.22), (0.18, 0.22), (0.18, 0.22)],
    ),
}


def _bernstein(t: torch.Tensor) -> torch.Tensor:
    """(n,) parameters -> (n, 4) cubic Bernstein weights."""
    s = 1.0 - t
    return torch.stack([s**3, 3 * t * s**2, 3 * t**2 * s, t**3], 1)


def _eval_patch(ctrl: torch.Tensor, n: int) -> torch.Tensor:
    """(4, 4, 3) control net -> (n+1, n+1, 3) surface points."""
    B = _bernstein(torch.linspace(0.0, 1.0, n + 1, dtype=ctrl.dtype))
    return torch.einsum("ui,vj,ijc->uvc", B, B, ctrl)


def _revolution_patches(profile):
    """Four quarter patches per cubic profile segment: P[i, j] = (r_i a_j, r_i b_j, z_i) rotated."""
    out = []
    for s in range(0, len(profile), 4):
        seg = profile[s : s + 4]
        for q in range(4):
            c, si = round(math.cos(q * math.pi / 2)), round(math.sin(q * math.pi / 2))
            net = []
            for r, z in seg:
                row = []
                for a, b in _QUARTER:
                    x, y = r * a, r * b
                    row.append((c * x - si * y, si * x + c * y, z))
                net.append(row)
            out.append(torch.tensor(net, dtype=torch.float64))
    return out


def _tube_patches(centre, radii):
    """Four quarter patches per cubic centre-line segment; returns (patch, centre control points)."""
    out = []
    for s in range(0, len(centre), 4):
        seg = torch.tensor(centre[s : s + 4], dtype=torch.float64)
        rad = radii[s : s + 4]
        # In-plane normal at each control point: the control polygon's direction rotated by 90 deg.
        tangents = torch.stack([seg[1] - seg[0], seg[2] - seg[0], seg[3] - seg[1], seg[3] - seg[2]])
        tangents = tangents / tangents.norm(dim=1, keepdim=True)
        normals = torch.stack([-tangents[:, 1], tangents[:, 0]], 1)  # (x, z)
        for q in range(4):
            c, si = round(math.cos(q * math.pi / 2)), round(math.sin(q * math.pi / 2))
            net = []
            for i in range(4):
                (h, w), nrm = rad[i], normals[i]
                row = []
                for a, b in _QUARTER:
                    u, v = c * a - si * b, si * a + c * b  # rotated quarter-circle weights
                    x = seg[i, 0] + h * u * nrm[0]
                    z = seg[i, 1] + h * u * nrm[1]
                    row.append((float(x), w * v, float(z)))
                net.append(row)
            centre3 = torch.stack([seg[:, 0], torch.zeros(4, dtype=torch.float64), seg[:, 1]], 1)
            out.append((torch.tensor(net, dtype=torch.float64), centre3))
    return out


def _grid_triangles(n: int) -> torch.Tensor:
    idx = torch.arange((n + 1) ** 2).view(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    return torch.cat([torch.stack([a, b, c], -1).view(-1, 3), torch.stack([a, c, d], -1).view(-1, 3)], 0)


def _orient(points: torch.Tensor, tris: torch.Tensor, outward: torch.Tensor) -> torch.Tensor:
    """Flip the patch's triangles if their normals point against ``outward`` (per grid point)."""
    p = points.view(-1, 3)
    n = torch.cross(p[tris[:, 1]] - p[tris[:, 0]], p[tris[:, 2]] - p[tris[:, 0]], dim=1)
    score = (n * outward.view(-1, 3)[tris].mean(1)).sum()
    return tris if score >= 0 else tris[:, [0, 2, 1]]


def teapot(
    tessellation: int = 6, height: float = 1.0, normalize: bool = False, dtype=torch.float32, device=None
) -> Meshes:
    """The teapot as a triangle mesh: +Y up, spout along +X, base at y = 0.

    Args:
        tessellation: grid steps per patch edge (>= 1); faces ~ 80 * tessellation^2 before welding
            (6 gives about 2.8k faces, close to the tutorials' 2.5k-face teapot).
        height: the lid top's y (Newell's data is 3.15 high; the default 1.0 matches the extents of
            the teapot in PyTorch3D's tutorials, x in [-0.95, 1.09], z in [-0.64, 0.64]).
        normalize: instead centre the bounding box at the origin and scale the longest side to 2.
    """
    if not isinstance(tessellation, int) or not 1 <= tessellation <= 64:
        raise P3DLabValueError(f"teapot: tessellation must be an int in [1, 64], got {tessellation!r}")
    n = tessellation
    grid = _grid_triangles(n)
    B = _bernstein(torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64))
    # Orientation is fixed once on the body (normals away from the axis) and shared by every
    # revolution patch, whose profiles are all listed along the outer surface (see _REVOLUTIONS).
    body = _eval_patch(_revolution_patches(_REVOLUTIONS["body"])[0], n)
    radial = body.clone()
    radial[..., 2] = 0.0
    rev_grid = _orient(body, grid, radial)
    verts, faces, offset = [], [], 0
    for profile in _REVOLUTIONS.values():
        for ctrl in _revolution_patches(profile):
            pts = _eval_patch(ctrl, n)
            verts.append(pts.reshape(-1, 3))
            faces.append(rev_grid + offset)
            offset += pts.shape[0] * pts.shape[1]
    for centre, radii in _TUBES.values():
        for ctrl, centre3 in _tube_patches(centre, radii):
            pts = _eval_patch(ctrl, n)
            c_u = B @ centre3  # the centre line at the same u
            verts.append(pts.reshape(-1, 3))
            faces.append(_orient(pts, grid, pts - c_u[:, None, :]) + offset)
            offset += pts.shape[0] * pts.shape[1]
    v, f = torch.cat(verts, 0), torch.cat(faces, 0)
    v, f = _weld(v, f)
    # z-up -> y-up: (x, y, z) -> (x, z, -y), a proper rotation, so the winding is kept.
    v = torch.stack([v[:, 0], v[:, 2], -v[:, 1]], 1) * (height / 3.15)
    if normalize:
        lo, hi = v.min(0).values, v.max(0).values
        v = (v - (lo + hi) / 2) * (2.0 / (hi - lo).max())
    return Meshes([v.to(dtype=dtype, device=device)], [f.to(device=device)])


def _weld(v: torch.Tensor, f: torch.Tensor, tol: float = 1e-7):
    """Merge vertices closer than ``tol`` (rounding) and drop triangles that became degenerate."""
    key = torch.round(v / tol) + 0.0  # + 0.0 turns -0.0 into 0.0
    uniq, inv = torch.unique(key, dim=0, return_inverse=True)
    count = torch.zeros(uniq.shape[0], dtype=v.dtype).index_add_(0, inv, torch.ones_like(v[:, 0]))
    new_v = torch.zeros((uniq.shape[0], 3), dtype=v.dtype).index_add_(0, inv, v) / count[:, None]
    f = inv[f]
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    return new_v, f[keep]
