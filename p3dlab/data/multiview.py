"""Synthetic multi-view datasets rendered by p3dlab itself (nothing is downloaded;
docs/errata.md#e57, docs/errata.md#e58).

``multiview_dataset()`` renders a procedural coloured object from cameras on a sphere around it and
returns a training and a held-out split: images, masks (from the hard coverage, not a thresholded
soft silhouette) and the cameras. Shading is ambient + Lambertian under a light fixed in the world,
so every surface point has one colour from every view — the assumption of a voxel colour grid and of
a NeRF without view dependence.

Training azimuths are ``360 i / n`` (no duplicated end view, docs/errata.md#e57) with elevations spread by the golden
ratio over ``elevation_range``; held-out views sit between them at other elevations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError
from p3dlab.structures import Meshes
from p3dlab.structures.textures import TexturesVertex

_GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass
class MultiViewSplit:
    """Images (V, H, W, 3), masks (V, H, W) in [0, 1] (pixel coverage), cameras (V views) and the
    views' azimuths/elevations in degrees."""

    images: torch.Tensor
    masks: torch.Tensor
    cameras: object
    azimuths: torch.Tensor
    elevations: torch.Tensor
    distance: float

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index) -> "MultiViewSplit":
        idx = torch.as_tensor([index] if isinstance(index, int) else index, dtype=torch.long)
        return MultiViewSplit(
            self.images[idx],
            self.masks[idx],
            self.cameras[idx],
            self.azimuths[idx],
            self.elevations[idx],
            self.distance,
        )


def painted_teapot(dtype=torch.float32, device=None) -> Meshes:
    """The teapot scaled to max |coordinate| = 1 and centred, with smooth vertex colours that vary
    around and up the pot (something for a reconstruction to get right)."""
    from p3dlab.data.teapot import teapot

    mesh = teapot(normalize=True, dtype=torch.float64)
    v = mesh.verts_packed()
    v = v / v.abs().max()
    angle = torch.atan2(v[:, 2], v[:, 0])
    colours = torch.stack(
        [
            0.55 + 0.35 * torch.cos(angle),
            0.5 + 0.35 * torch.sin(3.0 * v[:, 1] + 1.0),
            0.5 + 0.35 * torch.sin(angle + 2.0 * v[:, 1] + 2.0),
        ],
        -1,
    ).clamp(0, 1)
    return Meshes(
        [v.to(dtype=dtype, device=device)],
        mesh.faces_list(),
        textures=TexturesVertex([colours.to(dtype=dtype, device=device)]),
    )


def view_angles(n: int, elevation_range: Tuple[float, float], offset: float = 0.0, phase: float = 0.0):
    """``n`` azimuths ``360 (i + offset)/n`` (endpoint excluded) and golden-ratio elevations."""
    lo, hi = elevation_range
    i = torch.arange(n, dtype=torch.float64)
    azim = 360.0 * (i + offset) / n
    elev = lo + (hi - lo) * torch.remainder(i * _GOLDEN + phase, 1.0)
    return azim, elev


def render_views(
    mesh: Meshes,
    azimuths: torch.Tensor,
    elevations: torch.Tensor,
    distance: float = 2.7,
    image_size: int = 64,
    fov: float = 60.0,
    supersample: int = 2,
    light_direction: Sequence[float] = (0.3, 1.0, 0.6),
    background: float = 0.0,
):
    """Hard-rasterised, Lambert-shaded renders (V, H, W, 3) and coverage masks (V, H, W), averaged
    over ``supersample``² samples per pixel (antialiased), and the ``FoVPerspectiveCameras``."""
    from p3dlab.renderer import (
        BlendParams,
        DirectionalLights,
        FoVPerspectiveCameras,
        HardPhongShader,
        Materials,
        MeshRasterizer,
        MeshRenderer,
        RasterizationSettings,
        look_at_view_transform,
    )

    dt = mesh.verts_packed().dtype
    R, T = look_at_view_transform(distance, elevations.to(dt), azimuths.to(dt))
    cameras = FoVPerspectiveCameras(R=R, T=T, fov=fov)
    lights = DirectionalLights(
        ambient_color=((0.45,) * 3,),
        diffuse_color=((0.6,) * 3,),
        specular_color=((0.0,) * 3,),
        direction=(tuple(float(x) for x in light_direction),),
    )
    size = image_size * supersample
    renderer = MeshRenderer(
        MeshRasterizer(cameras, RasterizationSettings(image_size=size, blur_radius=0.0, faces_per_pixel=1)),
        HardPhongShader(
            lights=lights,
            materials=Materials(specular_color=((0.0,) * 3,)),
            blend_params=BlendParams(background_color=(background,) * 3),
        ),
    )
    images, masks = [], []
    for v in range(len(cameras)):  # one view at a time keeps memory flat
        rgba = renderer(mesh, cameras=cameras[v]).clamp(0, 1)
        pooled = F.avg_pool2d(rgba.permute(0, 3, 1, 2), supersample).permute(0, 2, 3, 1)
        images.append(pooled[..., :3])
        masks.append(pooled[..., 3])
    return torch.cat(images), torch.cat(masks), cameras


def multiview_dataset(
    mesh: Optional[Meshes] = None,
    n_views: int = 20,
    n_test: int = 4,
    image_size: int = 64,
    distance: float = 2.7,
    elevation_range: Tuple[float, float] = (-15.0, 45.0),
    fov: float = 60.0,
    supersample: int = 2,
) -> Tuple[MultiViewSplit, MultiViewSplit]:
    """Render ``mesh`` (default ``painted_teapot()``) for training and held-out views.

    Returns ``(train, test)`` ``MultiViewSplit``s. Deterministic: no randomness is involved.
    """
    if n_views < 1 or n_test < 0 or image_size < 4 or image_size > 1024 or supersample < 1:
        raise P3DLabValueError(
            f"multiview_dataset: need n_views >= 1, n_test >= 0, 4 <= image_size <= 1024, supersample >= 1 "
            f"(got {n_views}, {n_test}, {image_size}, {supersample})"
        )
    mesh = painted_teapot() if mesh is None else mesh
    out = []
    for n, offset, phase in ((n_views, 0.0, 0.0), (n_test, 0.5, 0.31)):
        azim, elev = view_angles(n, elevation_range, offset, phase)
        if n == 0:
            empty = torch.zeros(0, image_size, image_size)
            out.append(
                MultiViewSplit(empty[..., None].expand(0, image_size, image_size, 3), empty, None, azim, elev, distance)
            )
            continue
        images, masks, cams = render_views(mesh, azim, elev, distance, image_size, fov, supersample)
        out.append(MultiViewSplit(images, masks, cams, azim, elev, distance))
    return out[0], out[1]
