"""Per-pixel colour of each fragment: flat, Gouraud and Phong shading
(docs/conventions.md#lights-and-materials).

Each shading splits in two: what belongs to a face (its corners' positions, normals or lit colours,
computed once per mesh) and what belongs to a fragment (interpolating those at the fragment's
barycentric coordinates, then lighting). The shaders compute the face part once and the fragment
part band by band (``p3dlab.renderer.shader.shade_in_bands``).
"""

from __future__ import annotations

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.gather import gather_rows
from p3dlab.ops.interpolate import interpolate_face_attributes
from p3dlab.renderer.lighting import apply_lighting


def phong_face_attributes(meshes):
    """World positions and vertex normals of each packed face's corners: two (F, 3, 3) tensors."""
    faces = meshes.faces_packed()
    return gather_rows(meshes.verts_packed(), faces), gather_rows(meshes.verts_normals_packed(), faces)


def phong_lighting(fragments, face_points, face_normals, texels, lights, cameras, materials, **kwargs):
    """Phong shading from :func:`phong_face_attributes`: interpolate the world position and the
    normal per fragment, then ``(ambient + diffuse) * texel + specular``. (N, H, W, K, 3)."""
    p2f, bary = fragments.pix_to_face, fragments.bary_coords
    points = interpolate_face_attributes(p2f, bary, face_points)
    pixel_normals = interpolate_face_attributes(p2f, bary, face_normals)
    ambient, diffuse, specular = apply_lighting(points, pixel_normals, lights, cameras, materials, **kwargs)
    return (ambient + diffuse) * texels + specular


def phong_shading(meshes, fragments, lights, cameras, materials, texels, **kwargs) -> torch.Tensor:
    """Interpolate world position and vertex normal per pixel, then light:
    ``(ambient + diffuse) * texel + specular``. (N, H, W, K, 3)."""
    face_points, face_normals = phong_face_attributes(meshes)
    return phong_lighting(fragments, face_points, face_normals, texels, lights, cameras, materials, **kwargs)


def flat_face_attributes(meshes):
    """Centroid and unit normal of each packed face: two (F, 3) tensors."""
    centroids = gather_rows(meshes.verts_packed(), meshes.faces_packed()).mean(1)
    return centroids, meshes.faces_normals_packed()


def flat_lighting(fragments, face_centroids, face_normals, texels, lights, cameras, materials, **kwargs):
    """Flat shading from :func:`flat_face_attributes`: every fragment lit with its face's normal at
    the face's centroid. (N, H, W, K, 3)."""
    p2f = fragments.pix_to_face.clamp(min=0)
    points, normals = gather_rows(face_centroids, p2f), gather_rows(face_normals, p2f)
    ambient, diffuse, specular = apply_lighting(points, normals, lights, cameras, materials, **kwargs)
    return (ambient + diffuse) * texels + specular


def flat_shading(meshes, fragments, lights, cameras, materials, texels, **kwargs) -> torch.Tensor:
    """Light each pixel with its face's normal at the face centroid. (N, H, W, K, 3)."""
    face_centroids, face_normals = flat_face_attributes(meshes)
    return flat_lighting(fragments, face_centroids, face_normals, texels, lights, cameras, materials, **kwargs)


def gouraud_face_colors(meshes, lights, cameras, materials, **kwargs) -> torch.Tensor:
    """Light every vertex with its vertex normal and colour,
    ``c_v = tex_v * (ambient + diffuse_v) + specular_v``, and gather them per packed face: (F, 3, 3).
    Needs ``TexturesVertex``."""
    tex = meshes.textures
    if tex is None or not hasattr(tex, "verts_features_padded"):
        raise P3DLabValueError("Gouraud shading needs TexturesVertex (per-vertex colours)")
    verts = meshes.verts_padded()
    normals = meshes.verts_normals_padded()
    colors = tex.verts_features_padded()
    ambient, diffuse, specular = apply_lighting(verts, normals, lights, cameras, materials, **kwargs)
    vcol = (ambient + diffuse) * colors + specular  # (N, V, 3)
    vcol = gather_rows(vcol.reshape(-1, vcol.shape[-1]), meshes.verts_padded_to_packed_idx())
    return gather_rows(vcol, meshes.faces_packed())


def gouraud_shading(meshes, fragments, lights, cameras, materials, **kwargs) -> torch.Tensor:
    """Light every vertex with its vertex normal and colour, then interpolate the colours:
    ``c_v = tex_v * (ambient + diffuse_v) + specular_v``. Needs ``TexturesVertex``."""
    face_colors = gouraud_face_colors(meshes, lights, cameras, materials, **kwargs)
    return interpolate_face_attributes(fragments.pix_to_face, fragments.bary_coords, face_colors)
