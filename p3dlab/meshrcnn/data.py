"""Procedural stand-in for Mesh R-CNN's data (docs/meshrcnn.md#the-data): single shapes of a few
classes with random proportions and orientation, rendered in grey by p3dlab's rasterizer, with their
ground-truth meshes and voxel occupancy in one camera-aligned frame.

**The frame.** Everything (meshes, voxels, image features) lives in the *image-aligned frame*:
``x`` to the right of the image, ``y`` down the image, ``z`` away from the camera, each in [-1, 1].
It is the view frame of the camera (+X left, +Y up, +Z forward) turned by 180 degrees about the view
axis, so a vertex (x, y, z) is seen at ``grid_sample`` coordinates (x, y) of any feature map of the
image (``vert_align`` reads it directly) and voxel ``[d, h, w]`` of a grid of S cells has its centre
at ``(2 (w + 1/2)/S - 1, 2 (h + 1/2)/S - 1, 2 (d + 1/2)/S - 1)``, the convention of
``cubify(..., align="corner")``. The camera is orthographic (``FoVOrthographicCameras`` over
[-1, 1]²), so image row h and voxel row h look at the same strip of space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

import torch
import torch.nn.functional as F

from p3dlab.data import cube, cylinder, ico_sphere, torus
from p3dlab.errors import P3DLabValueError
from p3dlab.structures import Meshes
from p3dlab.structures.textures import TexturesVertex

#: The shape classes, in label order.
SHAPE_CLASSES: Tuple[str, ...] = ("box", "ellipsoid", "cylinder", "torus")

_CAMERA_DISTANCE = 3.0
_BOUNDING_RADIUS = 0.85  # every shape fits in this sphere, so it stays inside the [-1, 1]^3 grid


@dataclass
class ShapeSplit:
    """One split of the procedural shapes.

    images (N, 1, H, W) grey shading in [0, 1] on a black background; voxels (N, S, S, S) occupancy
    (0 or 1) indexed ``[d, h, w]`` = (z, y, x); meshes: the ground-truth ``Meshes`` (N); labels (N,)
    class indices into ``SHAPE_CLASSES``; rotations (N, 3, 3) and sizes (N, 3) the shapes' poses and
    proportions (object frame -> aligned frame: ``p = q @ R``)."""

    images: torch.Tensor
    voxels: torch.Tensor
    meshes: Meshes
    labels: torch.Tensor
    rotations: torch.Tensor
    sizes: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index) -> "ShapeSplit":
        idx = torch.as_tensor([index] if isinstance(index, int) else index, dtype=torch.long)
        return ShapeSplit(
            self.images[idx],
            self.voxels[idx],
            Meshes([self.meshes.verts_list()[i] for i in idx], [self.meshes.faces_list()[i] for i in idx]),
            self.labels[idx],
            self.rotations[idx],
            self.sizes[idx],
        )


def random_rotation(generator: torch.Generator) -> torch.Tensor:
    """A uniformly random rotation (3, 3) from a normalised Gaussian quaternion (w, x, y, z)."""
    q = torch.randn(4, generator=generator, dtype=torch.float64)
    w, x, y, z = q / q.norm()
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)]),
            torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)]),
            torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]),
        ]
    )


def _random_sizes(label: int, generator: torch.Generator) -> torch.Tensor:
    """The proportions of one shape, scaled so that it fits in a sphere of ``_BOUNDING_RADIUS``:
    box half-extents; ellipsoid semi-axes; cylinder (radius, half-height, 0); torus (major, minor, 0)."""
    u = torch.rand(3, generator=generator, dtype=torch.float64)
    if label == 0:  # box
        s = 0.2 + 0.45 * u
        return s * min(1.0, _BOUNDING_RADIUS / float(s.norm()))
    if label == 1:  # ellipsoid
        return 0.3 + 0.5 * u
    if label == 2:  # cylinder about the object's y axis
        r, h = 0.2 + 0.35 * u[0], 0.25 + 0.5 * u[1]
        scale = min(1.0, _BOUNDING_RADIUS / math.hypot(float(r), float(h)))
        return torch.stack([r * scale, h * scale, torch.zeros((), dtype=torch.float64)])
    major = 0.45 + 0.2 * u[0]  # torus about the object's y axis
    minor = (0.12 + 0.12 * u[1]).clamp(max=0.6 * major)
    scale = min(1.0, _BOUNDING_RADIUS / float(major + minor))
    return torch.stack([major * scale, minor * scale, torch.zeros((), dtype=torch.float64)])


def _object_mesh(label: int, sizes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The shape's surface in its object frame (float64 vertices, faces)."""
    if label == 0:
        m = cube(size=2.0, dtype=torch.float64)
        return m.verts_packed() * sizes, m.faces_packed()
    if label == 1:
        m = ico_sphere(3, dtype=torch.float64)
        return m.verts_packed() * sizes, m.faces_packed()
    if label == 2:
        m = cylinder(radius=float(sizes[0]), height=2 * float(sizes[1]), n=32, dtype=torch.float64)
        return m.verts_packed(), m.faces_packed()
    m = torus(float(sizes[0]), float(sizes[1]), n_major=32, n_minor=12, dtype=torch.float64)
    return m.verts_packed(), m.faces_packed()


def shape_occupancy(label: int, sizes: torch.Tensor, rotation: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Inside test (bool, (P,)) of points (P, 3) of the aligned frame for one posed shape, from its
    implicit form in the object frame ``q = p @ R^T``: box ``max |q_i|/a_i <= 1``; ellipsoid
    ``sum (q_i/a_i)^2 <= 1``; cylinder ``q_x^2 + q_z^2 <= r^2, |q_y| <= h``; torus
    ``(sqrt(q_x^2 + q_z^2) - R)^2 + q_y^2 <= r^2``."""
    q = points.to(torch.float64) @ rotation.T
    if label == 0:
        return (q.abs() <= sizes).all(1)
    if label == 1:
        return ((q / sizes) ** 2).sum(1) <= 1
    radial = torch.sqrt(q[:, 0] ** 2 + q[:, 2] ** 2)
    if label == 2:
        return (radial <= sizes[0]) & (q[:, 1].abs() <= sizes[1])
    return (radial - sizes[0]) ** 2 + q[:, 1] ** 2 <= sizes[1] ** 2


def voxel_centres(resolution: int, dtype=torch.float32) -> torch.Tensor:
    """Centres (S, S, S, 3) of the cells of an S³ grid over [-1, 1]³, indexed [d, h, w] -> (x, y, z)."""
    c = (2 * torch.arange(resolution, dtype=dtype) + 1) / resolution - 1
    d, h, w = torch.meshgrid(c, c, c, indexing="ij")
    return torch.stack([w, h, d], -1)


def render_aligned(meshes: Meshes, image_size: int, supersample: int = 2) -> torch.Tensor:
    """Grey Lambert renders (N, 1, H, W) of meshes given in the aligned frame, seen by the
    orthographic camera of the module docstring (antialiased by ``supersample``² samples per pixel)."""
    from p3dlab.renderer import (
        BlendParams,
        DirectionalLights,
        FoVOrthographicCameras,
        HardPhongShader,
        Materials,
        MeshRasterizer,
        MeshRenderer,
        RasterizationSettings,
    )

    dt = meshes.verts_packed().dtype
    # view = world @ R + T with R = diag(-1, -1, 1): the aligned frame's x (right) is view -X and its
    # y (down) is view -Y; the camera sits at z = -3 looking along +z.
    R = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=dt))[None]
    T = torch.tensor([[0.0, 0.0, _CAMERA_DISTANCE]], dtype=dt)
    cameras = FoVOrthographicCameras(R=R, T=T, znear=0.5, zfar=10.0)
    lights = DirectionalLights(
        ambient_color=((0.3,) * 3,),
        diffuse_color=((0.7,) * 3,),
        specular_color=((0.0,) * 3,),
        direction=((-0.4, -0.7, -1.0),),  # towards the light: up-left of the image, towards the camera
    )
    renderer = MeshRenderer(
        MeshRasterizer(
            cameras, RasterizationSettings(image_size=image_size * supersample, blur_radius=0.0, faces_per_pixel=1)
        ),
        HardPhongShader(
            lights=lights,
            materials=Materials(specular_color=((0.0,) * 3,)),
            blend_params=BlendParams(background_color=(0.0, 0.0, 0.0)),
        ),
    )
    white = TexturesVertex([torch.ones_like(v) for v in meshes.verts_list()])
    lit = Meshes(meshes.verts_list(), meshes.faces_list(), textures=white)
    images = []
    for i in range(len(lit)):
        rgba = renderer(lit[i], cameras=cameras).clamp(0, 1)
        grey = rgba[..., :3].mean(-1)[:, None]  # (1, 1, H, W)
        images.append(F.avg_pool2d(grey, supersample))
    return torch.cat(images)


def make_shapes(
    n: int,
    seed: int = 0,
    image_size: int = 48,
    voxel_size: int = 24,
    classes: Tuple[str, ...] = SHAPE_CLASSES,
    dtype=torch.float32,
) -> ShapeSplit:
    """``n`` random shapes (classes in turn, random proportions and orientation), deterministic by ``seed``."""
    if n < 1 or image_size < 8 or voxel_size < 2:
        raise P3DLabValueError("make_shapes: need n >= 1, image_size >= 8 and voxel_size >= 2")
    if image_size > 512 or voxel_size > 128 or n > 100_000:
        raise P3DLabValueError("make_shapes: image_size <= 512, voxel_size <= 128 and n <= 100000 at most")
    unknown = [c for c in classes if c not in SHAPE_CLASSES]
    if unknown or not classes:
        raise P3DLabValueError(f"make_shapes: classes must be a non-empty subset of {SHAPE_CLASSES}, got {classes}")
    gen = torch.Generator().manual_seed(int(seed))
    centres = voxel_centres(voxel_size, torch.float64).reshape(-1, 3)
    labels, rotations, sizes, verts, faces, voxels = [], [], [], [], [], []
    for i in range(n):
        label = SHAPE_CLASSES.index(classes[i % len(classes)])
        size = _random_sizes(label, gen)
        rot = random_rotation(gen)
        v, f = _object_mesh(label, size)
        verts.append((v @ rot).to(dtype))
        faces.append(f)
        voxels.append(shape_occupancy(label, size, rot, centres).reshape(voxel_size, voxel_size, voxel_size))
        labels.append(label)
        rotations.append(rot)
        sizes.append(size)
    meshes = Meshes(verts, faces)
    return ShapeSplit(
        images=render_aligned(meshes, image_size).to(dtype),
        voxels=torch.stack(voxels).to(dtype),
        meshes=meshes,
        labels=torch.tensor(labels),
        rotations=torch.stack(rotations).to(dtype),
        sizes=torch.stack(sizes).to(dtype),
    )


def shape_dataset(
    n_train: int = 256, n_test: int = 32, seed: int = 0, image_size: int = 48, voxel_size: int = 24
) -> Tuple[ShapeSplit, ShapeSplit]:
    """A training and a held-out split drawn from different seeds (``seed`` and ``seed + 1000``)."""
    train = make_shapes(n_train, seed=seed, image_size=image_size, voxel_size=voxel_size)
    test = make_shapes(n_test, seed=seed + 1000, image_size=image_size, voxel_size=voxel_size)
    return train, test


def occupancy_meshes(voxels: torch.Tensor, thresh: float = 0.5) -> Meshes:
    """``cubify`` in the aligned frame (``align="corner"``): the meshes of occupancy grids (N, S, S, S)."""
    from p3dlab.structures.cubify import cubify

    return cubify(voxels, thresh, align="corner")


__all__: List[str] = [
    "SHAPE_CLASSES",
    "ShapeSplit",
    "make_shapes",
    "occupancy_meshes",
    "random_rotation",
    "render_aligned",
    "shape_dataset",
    "shape_occupancy",
    "voxel_centres",
]
