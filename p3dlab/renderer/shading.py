"""Per-pixel colour of each fragment: flat, Gouraud and Phong shading
(docs/conventions.md#lights-and-materials)."""

from __future__ import annotations

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.gather import gather_rows
from p3dlab.ops.interpolate import interpolate_face_attributes
from p3dlab.renderer.lighting import apply_lighting


def phong_shading(meshes, fragments, lights, cameras, materials, texels, **kwargs) -> torch.Tensor:
    """Interpolate world position and vertex normal per pixel, then light:
    ``(ambient + diffuse) * texel + specular``. (N, H, W, K, 3)."""
    verts, faces = meshes.verts_packed(), meshes.faces_packed()
    normals = meshes.verts_normals_packed()
    p2f, bary = fragments.pix_to_face, fragments.bary_coords
    points = interpolate_face_attributes(p2f, bary, gather_rows(verts, faces))
    pixel_normals = interpolate_face_attributes(p2f, bary, gather_rows(normals, faces))
    ambient, diffuse, specular = apply_lighting(points, pixel_normals, lights, cameras, materials, **kwargs)
    return (ambient + diffuse) * texels + specular


def flat_shading(meshes, fragments, lights, cameras, materials, texels, **kwargs) -> torch.Tensor:
    """Light each pixel with its face's normal at the face centroid. (N, H, W, K, 3)."""
    verts, faces = meshes.verts_packed(), meshes.faces_packed()
    p2f = fragments.pix_to_face.clamp(min=0)
    points = gather_rows(gather_rows(verts, faces).mean(1), p2f)
    normals = gather_rows(meshes.faces_normals_packed(), p2f)
    ambient, diffuse, specular = apply_lighting(points, normals, lights, cameras, materials, **kwargs)
    return (ambient + diffuse) * texels + specular


def gouraud_shading(meshes, fragments, lights, cameras, materials, **kwargs) -> torch.Tensor:
    """Light every vertex with its vertex normal and colour, then interpolate the colours:
    ``c_v = tex_v * (ambient + diffuse_v) + specular_v``. Needs ``TexturesVertex``."""
    tex = meshes.textures
    if tex is None or not hasattr(tex, "verts_features_padded"):
        raise P3DLabValueError("Gouraud shading needs TexturesVertex (per-vertex colours)")
    verts = meshes.verts_padded()
    normals = meshes.verts_normals_padded()
    colors = tex.verts_features_padded()
    ambient, diffuse, specular = apply_lighting(verts, normals, lights, cameras, materials, **kwargs)
    vcol = (ambient + diffuse) * colors + specular  # (N, V, 3)
    vcol = gather_rows(vcol.reshape(-1, vcol.shape[-1]), meshes.verts_padded_to_packed_idx())
    face_colors = gather_rows(vcol, meshes.faces_packed())  # (F, 3, 3)
    return interpolate_face_attributes(fragments.pix_to_face, fragments.bary_coords, face_colors)
