"""Mesh rendering (PyTorch3D's ``pytorch3d.renderer.mesh`` names): rasterizer, renderer, shaders,
shading functions and textures, each also at the submodule path PyTorch3D has it at."""

from p3dlab.renderer.mesh.rasterize_meshes import rasterize_meshes
from p3dlab.renderer.mesh.rasterizer import Fragments, MeshRasterizer, RasterizationSettings
from p3dlab.renderer.mesh.renderer import MeshRenderer, MeshRendererWithFragments
from p3dlab.renderer.mesh.shader import (
    BlendParams,
    HardDepthShader,
    HardFlatShader,
    HardGouraudShader,
    HardPhongShader,
    SoftGouraudShader,
    SoftPhongShader,
    SoftSilhouetteShader,
)
from p3dlab.renderer.mesh.shading import flat_shading, gouraud_shading, phong_shading
from p3dlab.renderer.mesh.textures import TexturesAtlas, TexturesUV, TexturesVertex

__all__ = [
    "BlendParams",
    "Fragments",
    "HardDepthShader",
    "HardFlatShader",
    "HardGouraudShader",
    "HardPhongShader",
    "MeshRasterizer",
    "MeshRenderer",
    "MeshRendererWithFragments",
    "RasterizationSettings",
    "SoftGouraudShader",
    "SoftPhongShader",
    "SoftSilhouetteShader",
    "TexturesAtlas",
    "TexturesUV",
    "TexturesVertex",
    "flat_shading",
    "gouraud_shading",
    "phong_shading",
    "rasterize_meshes",
]
