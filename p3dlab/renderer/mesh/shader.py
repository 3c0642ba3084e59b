"""PyTorch3D's ``pytorch3d.renderer.mesh.shader`` path: re-exports of the shaders in
``p3dlab.renderer.shader`` (and ``BlendParams``, which PyTorch3D's module also provides)."""

from p3dlab.renderer.blending import BlendParams
from p3dlab.renderer.shader import (
    HardDepthShader,
    HardFlatShader,
    HardGouraudShader,
    HardPhongShader,
    ShaderBase,
    SoftGouraudShader,
    SoftPhongShader,
    SoftSilhouetteShader,
)

__all__ = [
    "BlendParams",
    "HardDepthShader",
    "HardFlatShader",
    "HardGouraudShader",
    "HardPhongShader",
    "ShaderBase",
    "SoftGouraudShader",
    "SoftPhongShader",
    "SoftSilhouetteShader",
]
