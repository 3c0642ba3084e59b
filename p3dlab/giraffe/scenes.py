"""Procedural two-object scenes for compositional feature fields (docs/giraffe.md#the-data).

Every scene holds two primitives (cube, sphere, cylinder, octahedron) of their own colour, each
placed by a box transform (``p3dlab.giraffe.boxes``: rotation about +Y, translation in the ground
plane, per-axis scale), in front of a sky whose colour depends only on the viewing direction. Each
scene is rendered by the kit's mesh rasterizer (Lambert shading, antialiased) from a few cameras
around a fixed look-at point, like GIRAFFE's nearly fixed camera; the last views of every scene are
held out. Everything is drawn from one seeded generator: the same seed gives the same data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import torch

from p3dlab.data import cube, cylinder, ico_sphere, octahedron
from p3dlab.errors import P3DLabValueError
from p3dlab.giraffe.boxes import object_to_world
from p3dlab.ops.pixels import pixel_centres
from p3dlab.renderer import (
    FoVPerspectiveCameras,
    MeshRasterizer,
    RasterizationSettings,
    interpolate_face_attributes,
    look_at_view_transform,
)
from p3dlab.renderer.raysampling import rays_from_xy
from p3dlab.structures import Meshes
from p3dlab.structures.textures import TexturesVertex

SHAPES = ("cube", "sphere", "cylinder", "octahedron")
# The rig every scene is seen from: distance to the origin, elevation and field of view (degrees).
CAMERA_DISTANCE, CAMERA_ELEVATION, CAMERA_FOV = 4.0, 20.0, 40.0


def shape_mesh(name: str) -> Meshes:
    """The primitive ``name`` (one of ``SHAPES``) filling the box ``[-1, 1]³`` (max |coordinate| = 1)."""
    makers = {
        "cube": lambda: cube(2.0),
        "sphere": lambda: ico_sphere(2),
        "cylinder": lambda: cylinder(0.8, 2.0, 24),
        "octahedron": octahedron,
    }
    if name not in makers:
        raise P3DLabValueError(f"shape_mesh: unknown shape {name!r}, pick one of {SHAPES}")
    mesh = makers[name]()
    v = mesh.verts_packed()
    return Meshes([v / v.abs().max()], mesh.faces_list())


def sky_colour(directions: torch.Tensor) -> torch.Tensor:
    """The background (..., 3) seen along unit ``directions`` (..., 3): a blue sky above a warm ground
    with a faint band that varies with the azimuth, so the background field has something to learn."""
    d = torch.nn.functional.normalize(directions, dim=-1)
    up = (0.5 + 0.5 * d[..., 1:2]).clamp(0, 1)
    ground = torch.tensor([0.55, 0.45, 0.35], dtype=d.dtype)
    sky = torch.tensor([0.45, 0.65, 0.9], dtype=d.dtype)
    band = 0.08 * torch.sin(3.0 * torch.atan2(d[..., 0:1], d[..., 2:3]))
    return (ground + (sky - ground) * up + band).clamp(0, 1)


@dataclass
class SceneLayout:
    """What is in each of S scenes: ``shapes`` (S, 2) indices into ``SHAPES``, ``colours`` (S, 2, 3),
    the box transforms ``angles`` (S, 2) (radians about +Y), ``translations`` (S, 2, 3) and
    ``scales`` (S, 2, 3)."""

    shapes: torch.Tensor
    colours: torch.Tensor
    angles: torch.Tensor
    translations: torch.Tensor
    scales: torch.Tensor

    def __len__(self) -> int:
        return self.shapes.shape[0]


@dataclass
class SceneViews:
    """Renders of S scenes from V views each: ``images`` (S, V, H, W, 3), object coverage ``masks``
    (S, V, H, W) and the camera azimuths (S, V) in degrees; the elevation, distance and field of view
    are the rig's (``CAMERA_*``)."""

    images: torch.Tensor
    masks: torch.Tensor
    azimuths: torch.Tensor
    layout: SceneLayout

    def cameras(self, scene: torch.Tensor, view: torch.Tensor) -> FoVPerspectiveCameras:
        """The cameras of the (scene, view) pairs given by two index tensors of equal length."""
        return rig_cameras(self.azimuths[scene, view])


def rig_cameras(azimuths: torch.Tensor) -> FoVPerspectiveCameras:
    """Cameras of the rig at ``azimuths`` (B,) degrees (float32)."""
    azimuths = torch.as_tensor(azimuths, dtype=torch.float32).reshape(-1)
    elev = torch.full_like(azimuths, CAMERA_ELEVATION)
    R, T = look_at_view_transform(CAMERA_DISTANCE, elev, azimuths)
    return FoVPerspectiveCameras(R=R, T=T, fov=CAMERA_FOV)


LIGHT_DIRECTION = (0.3, 1.0, 0.6)  # towards the light, fixed in the world
AMBIENT, DIFFUSE = 0.45, 0.6


def render_scene(mesh: Meshes, cameras, colours: torch.Tensor, image_size: int, supersample: int = 2):
    """Lambert-shaded renders (V, H, W, 3), premultiplied by coverage, and coverage masks (V, H, W) of
    one scene's mesh from every camera: the kit's rasterizer (one face per pixel), smooth normals
    interpolated from the vertices, ``colour · (AMBIENT + DIFFUSE · max(0, n · l))``, averaged over
    ``supersample``² samples per pixel (every view rasterized in one call). ``colours`` (F, 3) are per
    face."""
    size = image_size * supersample
    raster = MeshRasterizer(cameras, RasterizationSettings(image_size=size, blur_radius=0.0, faces_per_pixel=1))
    light = torch.nn.functional.normalize(torch.tensor(LIGHT_DIRECTION), dim=0)
    normals = mesh.verts_normals_packed()[mesh.faces_packed()]  # (F, 3, 3)
    frags = raster(mesh.extend(len(cameras)), cameras=cameras)  # every view in one call
    face = frags.pix_to_face[..., 0]  # (V, S, S), -1 where empty
    covered = (face >= 0).to(colours.dtype)
    n_faces = mesh.faces_packed().shape[0]
    normals = normals.repeat(len(cameras), 1, 1)
    n = interpolate_face_attributes(frags.pix_to_face, frags.bary_coords, normals)[..., 0, :]
    shade = AMBIENT + DIFFUSE * (torch.nn.functional.normalize(n, dim=-1) @ light).clamp(min=0)
    rgb = colours[face.clamp(min=0) % n_faces] * (shade * covered)[..., None]
    rgba = torch.cat([rgb, covered[..., None]], -1).permute(0, 3, 1, 2)
    pooled = torch.nn.functional.avg_pool2d(rgba, supersample).permute(0, 2, 3, 1)
    return pooled[..., :3].clamp(0, 1), pooled[..., 3]


def random_layout(n_scenes: int, generator: torch.Generator) -> SceneLayout:
    """Two objects per scene, of random shape, colour, angle, scale and ground-plane position, with
    boxes apart (their centres further apart than the sum of their half-diagonals in the plane)."""
    shapes = torch.randint(0, len(SHAPES), (n_scenes, 2), generator=generator)
    hue = torch.rand(n_scenes, 2, generator=generator) * 2 * math.pi
    colours = 0.5 + 0.4 * torch.stack([torch.cos(hue), torch.cos(hue - 2.1), torch.cos(hue + 2.1)], -1)
    angles = (torch.rand(n_scenes, 2, generator=generator) - 0.5) * math.pi
    scales = 0.3 + 0.2 * torch.rand(n_scenes, 2, 1, generator=generator) * torch.tensor([1.0, 1.0, 1.0])
    scales = scales * (0.85 + 0.3 * torch.rand(n_scenes, 2, 3, generator=generator))
    translations = torch.zeros(n_scenes, 2, 3)
    for s in range(n_scenes):
        reach = scales[s].norm(dim=-1)  # a bound on each box's extent in any direction
        for _ in range(10000):  # rejection sampling, bounded: large boxes need many tries
            xz = (torch.rand(2, 2, generator=generator) - 0.5) * torch.tensor([1.8, 1.2])
            if float((xz[0] - xz[1]).norm()) > float(reach.sum()):
                break
        else:  # unreachable in practice, but never loop forever
            raise P3DLabValueError("random_layout: could not place two boxes apart")
        translations[s, :, 0], translations[s, :, 2] = xz[:, 0], xz[:, 1]
        translations[s, :, 1] = scales[s, :, 1] - 0.5  # both stand on the plane y = -0.5
    return SceneLayout(shapes, colours.clamp(0.05, 0.95), angles, translations, scales)


def scene_mesh(layout: SceneLayout, scene: int) -> Meshes:
    """One scene's two objects, placed by their box transforms, as one coloured mesh."""
    verts, faces, colours, offset = [], [], [], 0  # colours per vertex
    for k in range(2):
        base = shape_mesh(SHAPES[int(layout.shapes[scene, k])])
        u = base.verts_packed()
        x = object_to_world(
            u[None],
            layout.angles[scene, k : k + 1],
            layout.translations[scene, k : k + 1],
            layout.scales[scene, k : k + 1],
        )[0]
        verts.append(x)
        faces.append(base.faces_packed() + offset)
        colours.append(layout.colours[scene, k].expand(u.shape[0], 3))
        offset += u.shape[0]
    return Meshes([torch.cat(verts)], [torch.cat(faces)], textures=TexturesVertex([torch.cat(colours)]))


def two_object_scenes(
    n_scenes: int = 32,
    n_views: int = 4,
    n_test_views: int = 1,
    image_size: int = 64,
    azimuth_range: float = 40.0,
    seed: int = 0,
) -> Tuple[SceneViews, SceneViews]:
    """Render ``n_scenes`` random two-object scenes from ``n_views + n_test_views`` cameras each,
    at azimuths spread over ``±azimuth_range`` degrees (the held-out ones between the training ones).

    Returns ``(train, test)`` ``SceneViews`` sharing one ``SceneLayout``."""
    if not (1 <= n_scenes <= 4096 and 1 <= n_views <= 64 and 0 <= n_test_views <= 64 and 8 <= image_size <= 256):
        raise P3DLabValueError(
            "two_object_scenes: need 1 <= n_scenes <= 4096, 1 <= n_views <= 64, 0 <= n_test_views <= 64, "
            f"8 <= image_size <= 256 (got {n_scenes}, {n_views}, {n_test_views}, {image_size})"
        )
    if not 0 <= azimuth_range <= 90:
        raise P3DLabValueError(f"two_object_scenes: azimuth_range must be in [0, 90], got {azimuth_range}")
    gen = torch.Generator().manual_seed(seed)
    layout = random_layout(n_scenes, gen)
    n_all = n_views + n_test_views
    base = torch.linspace(-azimuth_range, azimuth_range, n_all) if n_all > 1 else torch.zeros(1)
    order = torch.cat([torch.arange(0, n_all, 2), torch.arange(1, n_all, 2)])  # even views train
    if n_test_views > n_all // 2:
        order = torch.arange(n_all)
    azim_all = base[order]
    jitter = (torch.rand(n_scenes, 1, generator=gen) - 0.5) * (2 * azimuth_range / max(n_all, 1))
    azimuths = azim_all[None] + jitter  # (S, V + T)
    # the sky behind every pixel depends on the view only
    H = W = image_size
    x, y = pixel_centres(H, W, torch.float32)
    xy = torch.stack([x, y], -1).reshape(1, -1, 2)
    images, masks = [], []
    for s in range(n_scenes):
        mesh = scene_mesh(layout, s)
        cams = rig_cameras(azimuths[s])
        face_colours = mesh.textures.verts_features_packed()[mesh.faces_packed()[:, 0]]
        rgb, cover = render_scene(mesh, cams, face_colours, image_size)
        rays = rays_from_xy(cams, xy.expand(n_all, -1, -1), 1, 1.0, 1.0)
        sky = sky_colour(rays.directions).reshape(n_all, H, W, 3)
        images.append(rgb + (1.0 - cover[..., None]) * sky)  # the renders are premultiplied by coverage
        masks.append(cover)
    images, masks = torch.stack(images).clamp(0, 1), torch.stack(masks)
    train_idx, test_idx = slice(0, n_views), slice(n_views, n_all)
    train = SceneViews(images[:, train_idx], masks[:, train_idx], azimuths[:, train_idx], layout)
    test = SceneViews(images[:, test_idx], masks[:, test_idx], azimuths[:, test_idx], layout)
    return train, test
