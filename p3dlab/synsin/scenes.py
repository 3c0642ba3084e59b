"""Procedural RGB-D scenes for view synthesis (docs/synsin.md#the-scenes).

A scene is a checkered ground plane and back wall with two or three objects (spheres and boxes,
coloured by a procedural pattern) standing on the ground. It is rendered by the kit's mesh renderer
from a *source* camera, which gives the input image and its depth (the view Z of the nearest face,
``zbuf``), and from a *target* camera related to the source by a relative motion

    X_target = X_source R + T,   R = axis_angle_to_matrix((phi, theta, 0)),   T = (0, 0, t_z)

(row vectors, view coordinates: +X left, +Y up, +Z forward), the chapter's (theta, phi, t_z). The
target render is the exact ground truth of the novel view. Both cameras are pinhole cameras in NDC
(``PerspectiveCameras`` with focal length ``f = 1 / tan(fov / 2)``), shading is ambient + Lambert
under a light fixed in the world, so a surface point has one colour from every view.

Everything is deterministic given the seed: ``rgbd_pairs(n, seed)`` builds ``n`` scenes with seeds
``seed, seed + 1, ...``; train and held-out sets use disjoint seeds.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Tuple

import torch

from p3dlab.data import colored_cube, ico_sphere
from p3dlab.errors import P3DLabValueError
from p3dlab.renderer import (
    BlendParams,
    DirectionalLights,
    HardPhongShader,
    Materials,
    MeshRasterizer,
    MeshRendererWithFragments,
    PerspectiveCameras,
    RasterizationSettings,
    look_at_view_transform,
)
from p3dlab.structures import Meshes, join_meshes_as_scene
from p3dlab.structures.textures import TexturesVertex
from p3dlab.transforms import axis_angle_to_matrix

__all__ = ["RGBDPairs", "focal_from_fov", "relative_motion", "rgbd_pairs", "scene_mesh"]

GROUND_Y = -0.7
WALL_Z = -1.6


@dataclass
class RGBDPairs:
    """``n`` source/target pairs at ``S x S``: ``images`` and ``targets`` (n, S, S, 3) in [0, 1],
    ``depths`` (n, S, S) source view Z, ``target_depths`` likewise for the target view, ``R`` (n, 3, 3)
    and ``T`` (n, 3) the relative motions (``X_target = X_source R + T``), ``motions`` (n, 3) the
    (theta, phi, t_z) they came from, ``focal`` the NDC focal length of both cameras, ``seeds`` the
    scene seeds."""

    images: torch.Tensor
    depths: torch.Tensor
    targets: torch.Tensor
    target_depths: torch.Tensor
    R: torch.Tensor
    T: torch.Tensor
    motions: torch.Tensor
    focal: float
    seeds: Tuple[int, ...]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index) -> "RGBDPairs":
        idx = torch.as_tensor([index] if isinstance(index, int) else index, dtype=torch.long).reshape(-1)
        return RGBDPairs(
            self.images[idx],
            self.depths[idx],
            self.targets[idx],
            self.target_depths[idx],
            self.R[idx],
            self.T[idx],
            self.motions[idx],
            self.focal,
            tuple(self.seeds[i] for i in idx.tolist()),
        )


def focal_from_fov(fov_degrees: float) -> float:
    """The NDC focal length of a pinhole camera whose field of view spans [-1, 1]: ``1 / tan(fov / 2)``."""
    if not 1.0 <= fov_degrees <= 170.0:
        raise P3DLabValueError(f"fov must be between 1 and 170 degrees, got {fov_degrees}")
    return 1.0 / math.tan(math.radians(fov_degrees) / 2.0)


def relative_motion(theta, phi, t_z, dtype=torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
    """The chapter's relative camera motion as (R (n, 3, 3), T (n, 3)) for ``X_target = X_source R + T``:
    ``R = axis_angle_to_matrix((phi, theta, 0))`` (phi about X: up/down, theta about Y: left/right) and
    ``T = (0, 0, t_z)``. Scalars or 1-D tensors of one length."""
    theta, phi, t_z = (torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in (theta, phi, t_z))
    n = max(theta.numel(), phi.numel(), t_z.numel())
    try:
        theta, phi, t_z = (v.expand(n) for v in (theta, phi, t_z))
    except RuntimeError:
        raise P3DLabValueError(
            "relative_motion: theta, phi and t_z must be scalars or 1-D tensors of one length"
        ) from None
    if not all(bool(torch.isfinite(v).all()) for v in (theta, phi, t_z)):
        raise P3DLabValueError("relative_motion: theta, phi and t_z must be finite")
    R = axis_angle_to_matrix(torch.stack([phi, theta, torch.zeros_like(phi)], -1))
    T = torch.stack([torch.zeros_like(t_z), torch.zeros_like(t_z), t_z], -1)
    return R.to(dtype), T.to(dtype)


def _checker_plane(origin, u, v, cells: Tuple[int, int], cell_size: float, colours, dtype) -> Meshes:
    """A plane of ``cells`` squares from ``origin`` along ``u`` and ``v`` (unit vectors), each square
    its own four vertices so that it has one flat colour (a checkerboard of ``colours``)."""
    origin, u, v = (torch.as_tensor(a, dtype=torch.float64) for a in (origin, u, v))
    i, j = torch.meshgrid(torch.arange(cells[0]), torch.arange(cells[1]), indexing="ij")
    i, j = i.reshape(-1, 1).double(), j.reshape(-1, 1).double()  # one row per square
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    du, dv = (i + corners[:, 0]).reshape(-1, 1), (j + corners[:, 1]).reshape(-1, 1)  # (4 squares, 1)
    verts = origin + (du * u + dv * v) * cell_size
    base = 4 * torch.arange(cells[0] * cells[1])[:, None]
    faces = (base + torch.tensor([[0, 1, 2], [0, 2, 3]]).reshape(1, 6)).reshape(-1, 3)
    parity = ((i + j).reshape(-1).long() % 2).repeat_interleave(4)
    cols = torch.as_tensor(colours, dtype=torch.float64)[parity]
    return Meshes([verts.to(dtype)], [faces], textures=TexturesVertex([cols.to(dtype)]))


@functools.lru_cache(maxsize=1)
def _unit_sphere() -> Meshes:
    return ico_sphere(2, dtype=torch.float64)


def _object(kind: str, centre, size: float, colour, stripes: float, dtype) -> Meshes:
    """A sphere (radius ``size``) or a box (half side ``size``) at ``centre``, its colour modulated by
    horizontal stripes of frequency ``stripes`` (something for the model to carry across views)."""
    base = _unit_sphere() if kind == "sphere" else colored_cube(2.0, dtype=torch.float64)
    v = base.verts_packed() * size
    shade = 0.75 + 0.25 * torch.sin(stripes * v[:, 1:2] / size)
    tint = torch.as_tensor(colour, dtype=torch.float64)[None]
    if kind == "box":  # the cube's face colours, pulled towards the tint
        tint = 0.6 * tint + 0.4 * base.textures.verts_features_packed()
    cols = (tint * shade).clamp(0, 1)
    verts = v + torch.as_tensor(centre, dtype=torch.float64)
    return Meshes([verts.to(dtype)], base.faces_list(), textures=TexturesVertex([cols.to(dtype)]))


def scene_mesh(seed: int, dtype=torch.float32) -> Meshes:
    """One procedural scene as a single mesh: ground, back wall and 2-3 objects, chosen by ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))

    def uniform(lo, hi, n=1):
        return (lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)).tolist()

    def pastel():
        return uniform(0.35, 0.95, 3)

    parts = [
        _checker_plane((-6.0, GROUND_Y, WALL_Z), (1, 0, 0), (0, 0, 1), (24, 14), 0.5, (pastel(), pastel()), dtype),
        _checker_plane((-6.0, GROUND_Y, WALL_Z), (0, 1, 0), (1, 0, 0), (12, 24), 0.5, (pastel(), pastel()), dtype),
    ]
    n_objects = 2 + int(torch.randint(0, 2, (1,), generator=gen))
    slots = torch.randperm(3, generator=gen).tolist()  # left / middle / right, no two objects overlap
    for k in range(n_objects):
        kind = "sphere" if uniform(0, 1)[0] < 0.5 else "box"
        size = uniform(0.25, 0.45)[0]
        x = (slots[k] - 1) * 0.9 + uniform(-0.15, 0.15)[0]
        z = uniform(-0.8, 0.6)[0]
        colour = [c * 0.9 + 0.05 for c in uniform(0.0, 1.0, 3)]
        parts.append(_object(kind, (x, GROUND_Y + size, z), size, colour, uniform(2.0, 6.0)[0], dtype))
    # the planes face the camera (their winding does not matter: culling is off)
    return join_meshes_as_scene(parts)


def _render(mesh: Meshes, R: torch.Tensor, T: torch.Tensor, focal: float, size: int):
    cameras = PerspectiveCameras(focal_length=focal, R=R, T=T)
    lights = DirectionalLights(
        ambient_color=((0.55,) * 3,),
        diffuse_color=((0.45,) * 3,),
        specular_color=((0.0,) * 3,),
        direction=((0.4, 1.0, 0.7),),
    )
    renderer = MeshRendererWithFragments(
        MeshRasterizer(cameras, RasterizationSettings(image_size=size, blur_radius=0.0, faces_per_pixel=1)),
        HardPhongShader(
            lights=lights,
            materials=Materials(specular_color=((0.0,) * 3,)),
            blend_params=BlendParams(background_color=(0.0,) * 3),
        ),
    )
    images, fragments = renderer(mesh, cameras=cameras)
    return images[0, ..., :3].clamp(0, 1), fragments.zbuf[0, ..., 0]


def rgbd_pairs(
    n: int,
    seed: int = 0,
    image_size: int = 64,
    fov: float = 60.0,
    max_theta: float = 0.15,
    max_phi: float = 0.1,
    max_t_z: float = 0.3,
    camera_distance: float = 2.8,
) -> RGBDPairs:
    """``n`` scenes (seeds ``seed ... seed + n - 1``), each rendered from a source camera that looks at
    the scene from a random azimuth (+-20 degrees) and elevation (5-20 degrees), and from a target camera
    moved by a random (theta, phi, t_z) in ``[-max, max]`` (``relative_motion``). Deterministic."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or n > 10000:
        raise P3DLabValueError(f"rgbd_pairs: n must be an integer in [1, 10000], got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise P3DLabValueError(f"rgbd_pairs: seed must be an integer >= 0, got {seed!r}")
    if not isinstance(image_size, int) or not 8 <= image_size <= 512:
        raise P3DLabValueError(f"rgbd_pairs: image_size must be an integer in [8, 512], got {image_size!r}")
    limits = (max_theta, max_phi, max_t_z)
    if not all(math.isfinite(m) and 0 <= m <= 0.5 for m in limits):
        raise P3DLabValueError(f"rgbd_pairs: max_theta, max_phi and max_t_z must be in [0, 0.5], got {limits}")
    focal = focal_from_fov(fov)
    out = {k: [] for k in ("images", "depths", "targets", "target_depths", "R", "T", "motions")}
    for s in range(seed, seed + n):
        gen = torch.Generator().manual_seed(10_000_019 * (s + 1))
        u = (2 * torch.rand(5, generator=gen, dtype=torch.float64) - 1).tolist()
        R_src, T_src = look_at_view_transform(
            camera_distance,
            torch.tensor([12.5 + 7.5 * u[0]], dtype=torch.float64),
            torch.tensor([20.0 * u[1]], dtype=torch.float64),
        )
        R_src, T_src = R_src.double(), T_src.double()
        motion = (max_theta * u[2], max_phi * u[3], max_t_z * u[4])
        R_rel, T_rel = relative_motion(*motion, dtype=torch.float64)
        # X_target = (X_world R_src + T_src) R_rel + T_rel
        R_tgt, T_tgt = R_src @ R_rel, (T_src[:, None] @ R_rel)[:, 0] + T_rel
        mesh = scene_mesh(s)
        image, depth = _render(mesh, R_src.float(), T_src.float(), focal, image_size)
        target, target_depth = _render(mesh, R_tgt.float(), T_tgt.float(), focal, image_size)
        for key, value in zip(
            out, (image, depth, target, target_depth, R_rel[0].float(), T_rel[0].float(), torch.tensor(motion))
        ):
            out[key].append(value)
    return RGBDPairs(*(torch.stack(out[k]).float() for k in out), focal=focal, seeds=tuple(range(seed, seed + n)))
