"""Shaders: fragments + meshes -> images (N, H, W, 4), PyTorch3D's classes and defaults.

Every shader takes ``cameras``, ``lights``, ``materials`` and ``blend_params`` at construction and
accepts overrides at call time (``cameras=``, ``lights=``, ``R=``, ``T=``, ...). Defaults:
``PointLights()``, ``Materials()``, ``BlendParams()``; cameras must be given (or come from the
``MeshRenderer``, which always passes its rasterizer's cameras).
"""

from __future__ import annotations

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.renderer.blending import BlendParams, hard_rgb_blend, sigmoid_alpha_blend, softmax_rgb_blend
from p3dlab.renderer.lighting import Materials, PointLights
from p3dlab.renderer.shading import flat_shading, gouraud_shading, phong_shading


class ShaderBase(torch.nn.Module):
    def __init__(self, device=None, cameras=None, lights=None, materials=None, blend_params=None):
        super().__init__()
        self.cameras = cameras
        self.lights = lights if lights is not None else PointLights(device=device)
        self.materials = materials if materials is not None else Materials(device=device)
        self.blend_params = blend_params if blend_params is not None else BlendParams()

    def to(self, device):
        for name in ("cameras", "lights", "materials"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, v.to(device))
        return self

    def _parts(self, kwargs):
        cameras = kwargs.get("cameras", self.cameras)
        if cameras is None:
            raise P3DLabValueError(f"{type(self).__name__} needs cameras (at construction or cameras=... at call time)")
        lights = kwargs.get("lights", self.lights)
        materials = kwargs.get("materials", self.materials)
        blend = kwargs.get("blend_params", self.blend_params)
        return cameras, lights, materials, blend

    @staticmethod
    def _extra(kwargs):
        return {
            k: v
            for k, v in kwargs.items()
            if k not in ("cameras", "lights", "materials", "blend_params", "raster_settings")
        }


def _znear_zfar(cameras, kwargs):
    znear = kwargs.get("znear", getattr(cameras, "znear", None))
    zfar = kwargs.get("zfar", getattr(cameras, "zfar", None))
    return (1.0 if znear is None else znear), (100.0 if zfar is None else zfar)


class HardPhongShader(ShaderBase):
    """Per-pixel Phong lighting of the nearest face; hard edges."""

    def forward(self, fragments, meshes, **kwargs):
        cameras, lights, materials, blend = self._parts(kwargs)
        texels = meshes.sample_textures(fragments)
        colors = phong_shading(meshes, fragments, lights, cameras, materials, texels, **self._extra(kwargs))
        return hard_rgb_blend(colors, fragments, blend)


class SoftPhongShader(ShaderBase):
    """Per-pixel Phong lighting blended over K faces with ``softmax_rgb_blend``."""

    def forward(self, fragments, meshes, **kwargs):
        cameras, lights, materials, blend = self._parts(kwargs)
        texels = meshes.sample_textures(fragments)
        colors = phong_shading(meshes, fragments, lights, cameras, materials, texels, **self._extra(kwargs))
        znear, zfar = _znear_zfar(cameras, kwargs)
        return softmax_rgb_blend(colors, fragments, blend, znear=znear, zfar=zfar)


class HardGouraudShader(ShaderBase):
    """Per-vertex lighting interpolated across faces; hard edges."""

    def forward(self, fragments, meshes, **kwargs):
        cameras, lights, materials, blend = self._parts(kwargs)
        colors = gouraud_shading(meshes, fragments, lights, cameras, materials, **self._extra(kwargs))
        return hard_rgb_blend(colors, fragments, blend)


class SoftGouraudShader(ShaderBase):
    """Per-vertex lighting blended over K faces with ``softmax_rgb_blend``."""

    def forward(self, fragments, meshes, **kwargs):
        cameras, lights, materials, blend = self._parts(kwargs)
        colors = gouraud_shading(meshes, fragments, lights, cameras, materials, **self._extra(kwargs))
        znear, zfar = _znear_zfar(cameras, kwargs)
        return softmax_rgb_blend(colors, fragments, blend, znear=znear, zfar=zfar)


class HardFlatShader(ShaderBase):
    """One colour per face: its normal, lit at its centroid; hard edges."""

    def forward(self, fragments, meshes, **kwargs):
        cameras, lights, materials, blend = self._parts(kwargs)
        texels = meshes.sample_textures(fragments)
        colors = flat_shading(meshes, fragments, lights, cameras, materials, texels, **self._extra(kwargs))
        return hard_rgb_blend(colors, fragments, blend)


class SoftSilhouetteShader(ShaderBase):
    """Alpha only: ``sigmoid_alpha_blend``; RGB is 1 everywhere. No textures or lights needed.
    Like PyTorch3D's, its first argument is ``blend_params``."""

    def __init__(self, blend_params=None, **kwargs):
        super().__init__(blend_params=blend_params, **kwargs)

    def forward(self, fragments, meshes, **kwargs):
        blend = kwargs.get("blend_params", self.blend_params)
        d = fragments.dists
        ones = torch.ones(d.shape[:-1] + (1, 3), dtype=d.dtype, device=d.device)  # only slot 0's colour is read
        return sigmoid_alpha_blend(ones, fragments, blend)


class HardDepthShader(ShaderBase):
    """View depth of the nearest face, ``zfar`` on the background. (N, H, W, 1)."""

    def forward(self, fragments, meshes, **kwargs):
        cameras = kwargs.get("cameras", self.cameras)
        _, zfar = _znear_zfar(cameras, kwargs) if cameras is not None else (1.0, kwargs.get("zfar", 100.0))
        zfar = torch.as_tensor(zfar, dtype=fragments.zbuf.dtype, device=fragments.zbuf.device)
        if zfar.ndim:
            zfar = zfar.view(-1, 1, 1)
        empty = fragments.pix_to_face[..., 0] < 0
        return torch.where(empty, zfar.expand_as(empty).to(fragments.zbuf), fragments.zbuf[..., 0])[..., None]
