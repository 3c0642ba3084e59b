"""Surfaces of volumes as meshes: marching cubes on the densities, with vertex colours sampled from
the features."""

from __future__ import annotations

from typing import Optional

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.marching_cubes import marching_cubes
from p3dlab.ops.volume_sampling import sample_grid
from p3dlab.structures import Meshes
from p3dlab.structures.textures import TexturesVertex
from p3dlab.structures.volumes import Volumes


def isosurface(volumes: Volumes, isolevel: Optional[float] = None, colours: Optional[bool] = None) -> Meshes:
    """The surface where each volume's density crosses ``isolevel`` (``marching_cubes``: default
    halfway between the grid's minimum and maximum; inside is density > isolevel) as a ``Meshes``
    in world coordinates, faces wound outward.

    ``colours``: give every vertex the trilinear sample of the features at its position
    (``TexturesVertex``), so the mesh renders in the volume's colours. ``None`` (default): when the
    volumes have 3 feature channels; ``True`` without them raises. The colours are differentiable
    in the features; the vertices carry no gradient (marching cubes picks them discretely). A volume
    without a surface gives an empty mesh."""
    if not isinstance(volumes, Volumes):
        raise P3DLabValueError(f"isosurface: expected a Volumes, got {type(volumes).__name__}")
    feats = volumes.features()
    rgb = feats is not None and feats.shape[1] == 3
    if colours is None:
        colours = rgb
    if colours and not rgb:
        got = "none" if feats is None else f"{feats.shape[1]} channels"
        raise P3DLabValueError(f"isosurface: vertex colours need volumes with 3 feature channels, got {got}")
    # local coordinates in the align_corners=True convention of marching_cubes (grid index i <->
    # -1 + 2 i / (S - 1)), so the features are sampled at the vertices whatever the volumes' setting
    local, faces = marching_cubes(volumes.densities()[:, 0], isolevel, return_local_coords=True)
    verts, vert_colours = [], []
    for n, points in enumerate(local):
        points = points.to(volumes.densities().dtype)
        if not len(points):  # no surface: an empty mesh
            verts.append(points)
            vert_colours.append(feats.new_zeros(0, 3) if colours else None)
            continue
        verts.append(volumes[n].local_to_world_coords(points[None])[0])
        if colours:
            vert_colours.append(sample_grid(feats[n : n + 1], points[None].to(feats.dtype), align_corners=True)[0])
    return Meshes(verts, faces, textures=TexturesVertex(vert_colours) if colours else None)
