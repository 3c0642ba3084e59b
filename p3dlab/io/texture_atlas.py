"""Per-face texture atlases for OBJ meshes (``load_obj(create_texture_atlas=True)``), in the layout
``TexturesAtlas`` reads (PyTorch3D's, after SoftRas).

Each face gets R × R colours, one per small triangle of its barycentric triangle (R² of them, see
``TexturesAtlas``). Entry (row y, column x) belongs to
- the lower-left half of square (i, j) = (x, y) when x + y < R: centroid (w0, w1) = ((x + 1/3)/R,
  (y + 1/3)/R);
- otherwise the upper-right half of square (R - 1 - x, R - 1 - y): centroid
  ((R - 1 - x + 2/3)/R, (R - 1 - y + 2/3)/R).

Its colour is the face's texture image at the centroid's uv, Σ_k w_k uv_k, read bilinearly like
``TexturesUV`` (v flipped, align_corners=True), or the material's diffuse colour Kd for a
material without an image, or white for a face without a material.
"""

from __future__ import annotations

import warnings
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError

MAX_ATLAS_SIZE = 64  # R: 64² colours per face is already 4 MB per 1000 faces
MAX_ATLAS_BYTES = 2**31  # F · R² · 3 float32 values


def check_atlas_args(size, wrap, where: str) -> None:
    if wrap not in ("repeat", "clamp", None):
        raise P3DLabValueError(f"{where}: texture_wrap must be 'repeat', 'clamp' or None, got {wrap!r}")
    if not (isinstance(size, int) and 1 <= size <= MAX_ATLAS_SIZE):
        raise P3DLabValueError(f"{where}: texture_atlas_size must be an int in [1, {MAX_ATLAS_SIZE}], got {size!r}")


def atlas_barycentrics(R: int) -> torch.Tensor:
    """(R, R, 3) barycentrics of the centroid each atlas entry stands for (module docstring)."""
    y, x = torch.meshgrid(torch.arange(R), torch.arange(R), indexing="ij")
    lower = (x + y) < R
    w0 = torch.where(lower, x + 1.0 / 3.0, R - 1 - x + 2.0 / 3.0) / R
    w1 = torch.where(lower, y + 1.0 / 3.0, R - 1 - y + 2.0 / 3.0) / R
    return torch.stack([w0, w1, 1.0 - w0 - w1], -1)


def make_texture_atlas(
    materials_idx: torch.Tensor,
    material_names: List[str],
    material_colors: Optional[Dict[str, Dict[str, torch.Tensor]]],
    texture_images: Optional[Dict[str, torch.Tensor]],
    faces_uvs: Optional[torch.Tensor],
    size: int,
    wrap: Optional[str],
    where: str = "<stream>",
) -> torch.Tensor:
    """(F, size, size, 3) float32 atlas.

    Args:
        materials_idx: (F,) index into ``material_names`` of each face's material, -1 for none.
        material_names: names in the order of ``materials_idx``.
        material_colors, texture_images: as ``load_mtl`` returns them (either may be None).
        faces_uvs: (F, 3, 2) uv of each face corner, NaN where the face has none; or None.
        size: R.
        wrap: for uv outside [0, 1]: "repeat" (keep the fractional part), "clamp", or None (read
            as is: outside the image the colour is 0).
    """
    check_atlas_args(size, wrap, where)
    n_faces = materials_idx.shape[0]
    if n_faces * size * size * 3 * 4 > MAX_ATLAS_BYTES:
        raise P3DLabValueError(f"{where}: a {size}² atlas for {n_faces} faces would need over 2 GB")
    device = materials_idx.device
    atlas = torch.ones(n_faces, size, size, 3, dtype=torch.float32, device=device)
    colors, images = material_colors or {}, texture_images or {}
    bary = atlas_barycentrics(size).to(device)
    for m, name in enumerate(material_names):
        faces = (materials_idx == m).nonzero()[:, 0]
        if not len(faces):
            continue
        kd = colors.get(name, {}).get("diffuse_color")
        if kd is not None:
            atlas[faces] = kd.to(device=device, dtype=torch.float32)
        image = images.get(name)
        if image is None or faces_uvs is None:
            continue
        uvs = faces_uvs[faces]
        has_uv = ~torch.isnan(uvs).any(-1).any(-1)
        faces, uvs = faces[has_uv], uvs[has_uv]
        if len(faces):
            atlas[faces] = _read_image(image.to(device), _wrap(uvs, wrap, where), bary)
    return atlas


def _wrap(uvs: torch.Tensor, wrap: Optional[str], where: str) -> torch.Tensor:
    outside = bool(((uvs < 0) | (uvs > 1)).any())
    if wrap == "repeat" and outside:
        warnings.warn(f"{where}: texture coordinates outside [0, 1] repeat the texture", stacklevel=4)
        return uvs % 1.0
    if wrap == "clamp":
        return uvs.clamp(0.0, 1.0)
    return uvs


def _read_image(image: torch.Tensor, uvs: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """(F, R, R, 3): ``image`` (H, W, ≥ 3) read bilinearly at uv = Σ_k bary_k uvs[:, k] with
    column u (W - 1) and row (1 - v)(H - 1)."""
    uv = torch.einsum("rsk,fkc->frsc", bary.to(uvs.dtype), uvs)  # (F, R, R, 2)
    grid = torch.stack([2.0 * uv[..., 0] - 1.0, 1.0 - 2.0 * uv[..., 1]], -1).reshape(1, -1, 1, 2)
    img = image[..., :3].permute(2, 0, 1)[None].to(uvs.dtype)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[0, :, :, 0].T.reshape(*uv.shape[:3], 3).float()
