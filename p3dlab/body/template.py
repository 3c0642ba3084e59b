"""Building the body model's data, procedurally: the template mesh, skinning weights, the shape space
and the joint regressor (the recipe and its reasons: docs/body-models.md).

1. **Surface.** The body's signed distance is the smooth union of its parts' distances,
   ``d(p) = -k log sum_i exp(-d_i(p) / k)``; marching cubes extracts ``d = 0`` on a grid and a few
   Taubin smoothing steps even the triangles out. Marching cubes' vertices are shared between faces,
   so the mesh is closed.
2. **Skinning weights.** Part i's share of a vertex is ``softmax_i(-d_i / tau)``; a joint's weight
   is the sum of its parts' shares, diffused over the mesh a few steps, then cut to the
   ``MAX_INFLUENCES`` largest and renormalised to sum to 1.
3. **Shape space.** Procedural bodies (random ``Proportions``) are made by moving each template
   vertex with the parts it belongs to: along the bone to the same fraction of its new length, and
   out from the bone by the ratio of the new radius. All bodies share the template's triangles, so
   principal component analysis of their vertices gives a linear blend-shape basis:
   ``v(beta) = mean + sum_k beta_k sigma_k u_k``, with ``beta ~ N(0, I)`` for the bodies it came from.
4. **Joint regressor.** Each joint is a weighted sum of nearby template vertices, the weights
   (summing to 1) fitted by least squares so that the procedural bodies' vertices give their joints.
"""

from __future__ import annotations

import math
from typing import Dict, List, NamedTuple

import torch

from p3dlab.body.skeleton import NUM_JOINTS, PARENTS, Part, Proportions, body_parts, rest_joints
from p3dlab.errors import P3DLabValueError
from p3dlab.ops import marching_cubes

#: The smooth union's blend distance (metres): larger rounds the armpits and crotch more.
BLEND = 0.012
#: The softness (metres) of the part shares that skinning weights and shape deformations start from.
SKIN_SOFTNESS = 0.02
#: Bones that may move one vertex (SMPL: 4).
MAX_INFLUENCES = 4
#: The grid step of the marching cubes (metres): about 6400 vertices, close to SMPL's 6890.
GRID_STEP = 0.035


class BodyModelData(NamedTuple):
    """Everything a ``BodyModel`` needs, as float64 tensors (integer tensors for indices).

    ``v_template`` (V, 3) the mean body in the rest pose; ``faces`` (F, 3) outward-wound triangles;
    ``shapedirs`` (V, 3, B) the shape basis; ``J_regressor`` (J, V); ``weights`` (V, J) skinning
    weights; ``parents`` (J,); ``shape_std`` (B,) the standard deviations of the principal
    components (already folded into ``shapedirs``); ``proportions`` (N, 8) and ``betas_of_samples``
    (N, B) the procedural bodies and their coordinates in the shape space."""

    v_template: torch.Tensor
    faces: torch.Tensor
    shapedirs: torch.Tensor
    J_regressor: torch.Tensor
    weights: torch.Tensor
    parents: torch.Tensor
    shape_std: torch.Tensor
    proportions: torch.Tensor
    betas_of_samples: torch.Tensor


def _part_arrays(parts: List[Part]) -> Dict[str, torch.Tensor]:
    d = torch.float64
    return {
        "a": torch.tensor([p.a for p in parts], dtype=d),
        "b": torch.tensor([p.b for p in parts], dtype=d),
        "ra": torch.tensor([p.ra for p in parts], dtype=d),
        "rb": torch.tensor([p.rb for p in parts], dtype=d),
        "squash": torch.tensor([(1.0, p.flat, p.depth) for p in parts], dtype=d),
        "joint": torch.tensor([p.joint for p in parts]),
    }


def _capsule_coordinates(points: torch.Tensor, P: Dict[str, torch.Tensor]):
    """For points (N, 3) and every part: the bone fraction ``t`` (N, P) in [0, 1], the radial offset
    (N, P, 3) from the bone's axis in the part's unsquashed frame, and the radius (N, P) at ``t``."""
    s = P["squash"]
    a, b = P["a"] / s, P["b"] / s
    q = points[:, None, :] / s - a  # (N, P, 3) in the part's unsquashed space
    ab = b - a
    t = ((q * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0.0, 1.0)
    radial = q - t[..., None] * ab
    radius = P["ra"] + t * (P["rb"] - P["ra"])
    return t, radial, radius


def part_distances(points: torch.Tensor, parts: List[Part]) -> torch.Tensor:
    """(N, P) approximate signed distances of points (N, 3) to each part (negative inside):
    ``|q - c(t)| - r(t)`` in the part's unsquashed space, times its smallest squash factor."""
    P = _part_arrays(parts)
    t, radial, radius = _capsule_coordinates(points.double(), P)
    return (radial.norm(dim=-1) - radius) * P["squash"].min(-1).values


def body_sdf(points: torch.Tensor, parts: List[Part], blend: float = BLEND) -> torch.Tensor:
    """(N,) the smooth union ``-k log sum_i exp(-d_i / k)`` of the parts' distances."""
    d = part_distances(points, parts)
    return -blend * torch.logsumexp(-d / blend, dim=-1)


def _edges(faces: torch.Tensor) -> torch.Tensor:
    """(E, 2) the mesh's undirected edges, each once (smaller index first)."""
    e = torch.sort(torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), dim=1).values
    n = int(faces.max()) + 1
    key = torch.unique(e[:, 0] * n + e[:, 1])
    return torch.stack([key // n, key % n], 1)


def _uniform_laplacian(verts: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """(V, 3) mean of each vertex's neighbours minus the vertex."""
    V = verts.shape[0]
    total = torch.zeros_like(verts)
    count = torch.zeros(V, dtype=verts.dtype)
    for i, j in ((0, 1), (1, 0)):
        total.index_add_(0, edges[:, i], verts[edges[:, j]])
        count.index_add_(0, edges[:, i], torch.ones(edges.shape[0], dtype=verts.dtype))
    return total / count.clamp_min(1)[:, None] - verts


def _drop_unused_and_degenerate(verts: torch.Tensor, faces: torch.Tensor, step: float):
    """Merge vertices closer than a hundredth of a grid step (marching cubes' crossings at a grid
    corner), drop the triangles that collapse and the vertices no triangle uses."""
    key = torch.round(verts / (step * 0.01)).long()
    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    faces = inverse[faces]
    ok = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    faces = faces[ok]
    # the first position of every merged vertex
    first = torch.full((int(inverse.max()) + 1,), -1, dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(inverse)), reduce="amin", include_self=False)
    verts = verts[first]
    used = torch.zeros(verts.shape[0], dtype=torch.bool)
    used[faces.reshape(-1)] = True
    remap = torch.cumsum(used.long(), 0) - 1
    return verts[used], remap[faces]


def build_surface(parts: List[Part], step: float = GRID_STEP, smoothing: int = 6):
    """The template surface: marching cubes of ``body_sdf`` on a grid of spacing ``step``, then
    ``smoothing`` Taubin steps (lambda 0.5, mu -0.53). Returns float64 verts (V, 3), faces (F, 3)."""
    if not (0.005 <= step <= 0.1):
        raise P3DLabValueError(f"build_surface: grid step must be in [0.005, 0.1] metres, got {step}")
    P = _part_arrays(parts)
    r = torch.maximum(P["ra"], P["rb"])[:, None] * 1.3
    lo = (torch.minimum(P["a"], P["b"]) - r).min(0).values - 2 * step
    hi = (torch.maximum(P["a"], P["b"]) + r).max(0).values + 2 * step
    n = ((hi - lo) / step).ceil().long() + 1
    axes = [lo[k] + step * torch.arange(int(n[k]), dtype=torch.float64) for k in range(3)]
    z, y, x = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    pts = torch.stack([x, y, z], -1).reshape(-1, 3)
    sdf = torch.cat([body_sdf(chunk, parts) for chunk in pts.split(200_000)])
    grid = (-sdf).reshape(1, int(n[2]), int(n[1]), int(n[0])).float()
    verts, faces = marching_cubes(grid, isolevel=0.0, return_local_coords=False)
    verts = lo + verts[0].double() * step
    verts, faces = _drop_unused_and_degenerate(verts, faces[0].long(), step)
    edges = _edges(faces)
    for _ in range(smoothing):
        verts = verts + 0.5 * _uniform_laplacian(verts, edges)
        verts = verts - 0.53 * _uniform_laplacian(verts, edges)
    return verts, faces


def part_shares(verts: torch.Tensor, parts: List[Part], softness: float = SKIN_SOFTNESS) -> torch.Tensor:
    """(V, P) each part's share of each vertex, ``softmax_i(-d_i / softness)``."""
    return torch.softmax(-part_distances(verts, parts) / softness, dim=-1)


def skinning_weights(verts, faces, parts, diffuse: int = 10, max_influences: int = MAX_INFLUENCES):
    """(V, J) skinning weights: joint shares, diffused ``diffuse`` steps over the mesh, cut to the
    ``max_influences`` largest per vertex (and below 1 %), renormalised to sum to 1."""
    shares = part_shares(verts, parts)
    joint_of_part = torch.tensor([p.joint for p in parts])
    W = torch.zeros(verts.shape[0], NUM_JOINTS, dtype=torch.float64)
    W.index_add_(1, joint_of_part, shares)
    edges = _edges(faces)
    for _ in range(diffuse):
        W = W + 0.5 * _uniform_laplacian(W, edges)
    top = torch.topk(W, max_influences, dim=1)
    keep = torch.zeros_like(W).scatter_(1, top.indices, 1.0).bool() & (W > 0.01)
    W = torch.where(keep, W, torch.zeros_like(W))
    return W / W.sum(1, keepdim=True)


def deform_to(verts: torch.Tensor, shares: torch.Tensor, prop: Proportions, _coords=None):
    """Move the mean body's vertices (V, 3) to the body with proportions ``prop``: each part carries a
    vertex to the same bone fraction of its new bone and scales its offset from the bone by the
    ratio of the radii (and squash factors); the parts' results are blended by ``shares`` (V, P).
    Returns the vertices (V, 3) and the new skeleton's joints (J, 3)."""
    P1 = _part_arrays(body_parts(prop))
    t, radial, radius = _coords if _coords is not None else _capsule_coordinates(verts, _part_arrays(body_parts()))
    radius1 = P1["ra"] + t * (P1["rb"] - P1["ra"])
    radial1 = radial * (radius1 / radius)[..., None]
    # back to world space in the new part's squash
    a1, b1 = P1["a"] / P1["squash"], P1["b"] / P1["squash"]
    moved = (a1 + t[..., None] * (b1 - a1) + radial1) * P1["squash"]  # (V, P, 3)
    out = (shares[..., None] * moved).sum(1)
    return out, torch.tensor(rest_joints(prop), dtype=torch.float64)


def random_proportions(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 8) random ``Proportions`` (log-normal around 1): height 5 %, girth 10 %, legs, arms and
    torso 5 %, shoulders 6 %, belly 15 %, head 5 %."""
    g = torch.Generator().manual_seed(seed)
    spread = torch.tensor([0.05, 0.10, 0.05, 0.05, 0.05, 0.06, 0.15, 0.05], dtype=torch.float64)
    return torch.exp(spread * torch.randn(n, 8, generator=g, dtype=torch.float64))


def fit_joint_regressor(bodies: torch.Tensor, joints: torch.Tensor, support: int = 48, ridge: float = 1e-4):
    """(J, V) joint regressor: joint j is ``sum_v w_jv v`` over its ``support`` nearest vertices of the
    mean body, with ``sum_v w_jv = 1`` and ``w`` the least-squares fit over the bodies (N, V, 3) and
    their joints (N, J, 3), pulled toward uniform weights by ``ridge``."""
    N, V, _ = bodies.shape
    mean_v, mean_j = bodies.mean(0), joints.mean(0)
    R = torch.zeros(NUM_JOINTS, V, dtype=torch.float64)
    for j in range(NUM_JOINTS):
        near = torch.cdist(mean_j[j : j + 1], mean_v)[0].topk(support, largest=False).indices
        # rows: every body's x, y, z; unknowns: w (support,); constraint 1^T w = 1 via w = u + N c
        A = bodies[:, near, :].permute(0, 2, 1).reshape(N * 3, support)  # (3N, S)
        y = joints[:, j, :].reshape(N * 3)
        u = torch.full((support,), 1.0 / support, dtype=torch.float64)
        # null space of 1^T: an orthonormal basis of vectors summing to zero
        Q = torch.linalg.qr(
            torch.cat([torch.ones(support, 1, dtype=torch.float64), torch.eye(support)[:, :-1].double()], 1)
        )[0]
        Nb = Q[:, 1:]
        M = A @ Nb
        rhs = y - A @ u
        scale = float((M * M).sum() / support)
        c = torch.linalg.solve(M.T @ M + ridge * scale * torch.eye(support - 1, dtype=torch.float64), M.T @ rhs)
        R[j, near] = u + Nb @ c
    return R


def build_body_model_data(num_betas: int = 8, num_samples: int = 64, step: float = GRID_STEP, seed: int = 0):
    """Build the body model's data (deterministic for a given ``seed``)."""
    if not (1 <= num_betas <= 8):
        raise P3DLabValueError(f"build_body_model_data: num_betas must be 1..8, got {num_betas}")
    if num_samples < 2 * num_betas:
        raise P3DLabValueError("build_body_model_data: num_samples must be at least twice num_betas")
    parts = body_parts()
    verts, faces = build_surface(parts, step)
    weights = skinning_weights(verts, faces, parts)
    shares = part_shares(verts, parts)
    props = random_proportions(num_samples, seed)
    coords = _capsule_coordinates(verts, _part_arrays(parts))
    bodies, skeletons = zip(*(deform_to(verts, shares, Proportions(*p.tolist()), coords) for p in props))
    bodies, skeletons = torch.stack(bodies), torch.stack(skeletons)
    mean = bodies.mean(0)
    X = (bodies - mean).reshape(num_samples, -1)
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    std = S[:num_betas] / math.sqrt(num_samples - 1)
    basis = Vh[:num_betas]  # (B, 3V) unit directions
    # a deterministic sign: the largest entry of each direction is positive
    sign = torch.sign(basis.gather(1, basis.abs().argmax(1, keepdim=True)))
    basis = basis * sign
    shapedirs = (basis * std[:, None]).T.reshape(-1, 3, num_betas)
    betas_of_samples = (X @ basis.T) / std
    J_regressor = fit_joint_regressor(bodies, skeletons)
    return BodyModelData(
        v_template=mean,
        faces=faces,
        shapedirs=shapedirs,
        J_regressor=J_regressor,
        weights=weights,
        parents=torch.tensor(PARENTS),
        shape_std=std,
        proportions=props,
        betas_of_samples=betas_of_samples,
    )
