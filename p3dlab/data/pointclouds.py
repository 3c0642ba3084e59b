"""Procedural point clouds: noisy surface samples and a small articulated "figure"."""

from __future__ import annotations

import torch

from p3dlab.data.primitives import capsule, ico_sphere
from p3dlab.ops.sample_points import sample_points_from_meshes
from p3dlab.structures import Meshes, Pointclouds, join_meshes_as_scene
from p3dlab.transforms import RotateAxisAngle, Translate


def noisy_point_cloud(
    mesh: Meshes, num_points: int = 2000, noise_std: float = 0.0, seed: int = 0, with_normals: bool = False
) -> Pointclouds:
    """``num_points`` area-uniform samples on each mesh's surface plus isotropic Gaussian noise of
    standard deviation ``noise_std`` (deterministic for a given ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    pts, normals = sample_points_from_meshes(mesh, num_points, return_normals=True, generator=g)
    if noise_std > 0:
        pts = pts + noise_std * torch.randn(pts.shape, generator=g, dtype=pts.dtype).to(pts.device)
    return Pointclouds(pts, normals=normals if with_normals else None)


def _part(length: float, radius: float, angle_z: float, at) -> Meshes:
    """A capsule along +Y, tilted by ``angle_z`` degrees about Z, centred at ``at``."""
    m = capsule(radius=radius, length=length, n_around=12, n_cap=4)
    t = RotateAxisAngle(angle_z, "Z").compose(Translate(*at))
    return Meshes([t.transform_points(m.verts_packed())], [m.faces_packed()])


def figure_meshes() -> Meshes:
    """A stick figure about 1.8 units tall, +Y up, facing +Z: head, torso, two arms, two legs."""
    head = ico_sphere(2).scale_verts(0.12)
    head = head.offset_verts(torch.tensor([0.0, 1.62, 0.0]))
    parts = [
        head,
        _part(0.45, 0.16, 0.0, (0.0, 1.15, 0.0)),  # torso
        _part(0.5, 0.055, 20.0, (-0.3, 1.1, 0.0)),  # right arm (figure's right is -X)
        _part(0.5, 0.055, -20.0, (0.3, 1.1, 0.0)),  # left arm
        _part(0.7, 0.07, 5.0, (-0.11, 0.45, 0.0)),  # right leg
        _part(0.7, 0.07, -5.0, (0.11, 0.45, 0.0)),  # left leg
    ]
    return join_meshes_as_scene(parts)


def figure_point_cloud(num_points: int = 3000, noise_std: float = 0.005, seed: int = 0) -> Pointclouds:
    """A sparse, noisy point cloud of :func:`figure_meshes`: p3dlab's stand-in for the book's
    chapter-3 pedestrian scan (which is z-up; this one is +Y up like the renderer)."""
    return noisy_point_cloud(figure_meshes(), num_points, noise_std, seed)
