"""Shaders: fragments + meshes -> images (N, H, W, 4), PyTorch3D's classes and defaults.

Every shader takes ``cameras``, ``lights``, ``materials`` and ``blend_params`` at construction and
accepts overrides at call time (``cameras=``, ``lights=``, ``R=``, ``T=``, ...). Defaults:
``PointLights()``, ``Materials()``, ``BlendParams()``; cameras must be given (or come from the
``MeshRenderer``, which always passes its rasterizer's cameras).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.interpolate import interpolate_face_attributes
from p3dlab.renderer.blending import BlendParams, hard_rgb_blend, sigmoid_alpha_blend, softmax_rgb_blend
from p3dlab.renderer.lighting import Materials, PointLights
from p3dlab.renderer.mesh_rasterizer import Fragments
from p3dlab.renderer.shading import (
    flat_face_attributes,
    flat_lighting,
    gouraud_face_colors,
    phong_face_attributes,
    phong_lighting,
)
from p3dlab.runtime.heap import release_free_heap


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


#: Renders of up to this many face-slots (N·H·W·K) are shaded in one pass (about 400 bytes a slot
#: while autograd records: 0.8 GB at most) ...
SHADE_SLOTS_AT_ONCE = 2**21
#: ... larger ones in bands of rows of at most this many slots.
SHADE_SLOTS_PER_BAND = 2**18


def shade_in_bands(shade, fragments):
    """``shade(fragments) -> (N, H, W, C)``; beyond ``SHADE_SLOTS_AT_ONCE`` face-slots computed in
    bands of image rows of at most ``SHADE_SLOTS_PER_BAND`` face-slots each, then joined: shading and
    blending are per pixel, so the image is the same. While autograd records, each band is
    checkpointed: its forward keeps only the band's image, and the backward recomputes that band's
    shading before differentiating it. Shading then holds one band's intermediates (a dozen
    (N, H_band, W, K, 3) tensors) instead of every face-slot's, and the fragments' gradients are
    written band by band into one set of buffers (``_BandGradients``): a large render's memory per
    face-slot is close to the rasterizer's, PyTorch3D's model
    (docs/conventions.md#shader-memory)."""
    n, h, w, k = fragments.pix_to_face.shape
    rows = max(1, SHADE_SLOTS_PER_BAND // max(1, n * w * k))
    if n * h * w * k <= SHADE_SLOTS_AT_ONCE or rows >= h:
        return shade(fragments)
    starts = range(0, h, rows)
    if not torch.is_grad_enabled():
        images = []
        for r in starts:
            images.append(shade(Fragments(*(t[:, r : r + rows] for t in fragments))))
            release_free_heap()
        return torch.cat(images, 1)

    gradients = _BandGradients(len(starts))

    def shade_band(*band):
        return shade(Fragments(*band))

    images = []
    for r in starts:
        zbuf, bary, dists = _RowBand.apply(gradients, r, r + rows, *fragments[1:])
        band = (fragments.pix_to_face[:, r : r + rows], zbuf, bary, dists)
        images.append(checkpoint(shade_band, *band, use_reentrant=False, preserve_rng_state=False))
        release_free_heap()
    return torch.cat(images, 1)


class _BandGradients:
    """The fragments' gradients of one backward pass, gathered band by band. ``torch.split`` would
    hold every band's gradient until the last band is done and then concatenate them: twice the
    gradients' memory. Here each band writes its rows into full-size buffers as soon as its backward
    runs, and the last band to run hands the buffers on (autograd runs the rasterizer's backward only
    after every band's)."""

    def __init__(self, n_bands: int):
        self.n_bands = n_bands
        self.pending = n_bands
        self.buffers = None

    def add(self, r0: int, r1: int, layouts, grads):
        """Write one band's gradients (rows ``r0:r1``); ``layouts``: (shape, dtype, device) of the full
        tensors. Returns the full gradients from the last band of the pass, Nones before."""
        if self.buffers is None:  # the first band of this backward pass
            self.buffers = [None] * len(grads)
        for i, g in enumerate(grads):
            if g is not None:
                if self.buffers[i] is None:
                    shape, dtype, device = layouts[i]
                    self.buffers[i] = torch.zeros(shape, dtype=dtype, device=device)
                self.buffers[i][:, r0:r1] = g
        self.pending -= 1
        release_free_heap()  # the band's recomputed shading, freed
        if self.pending:
            return (None,) * len(grads)
        full, self.buffers, self.pending = tuple(self.buffers), None, self.n_bands  # ready for another pass
        return full


class _RowBand(torch.autograd.Function):
    """Rows ``r0:r1`` of ``zbuf``, ``bary_coords`` and ``dists`` (views); backward: ``_BandGradients``."""

    @staticmethod
    def forward(ctx, gradients, r0, r1, *tensors):
        ctx.gradients, ctx.r0, ctx.r1 = gradients, r0, r1
        ctx.layouts = [(t.shape, t.dtype, t.device) for t in tensors]
        ctx.set_materialize_grads(False)
        return tuple(t[:, r0:r1] for t in tensors)

    @staticmethod
    def backward(ctx, *grads):
        return (None, None, None) + ctx.gradients.add(ctx.r0, ctx.r1, ctx.layouts, grads)


def nearest_fragments(fragments) -> Fragments:
    """Slot 0 of every pixel, the only one a hard blend reads: a hard shader shades K = 1, not K."""
    return Fragments(*(t[:, :, :, :1] for t in fragments))


class HardPhongShader(ShaderBase):
    """Per-pixel Phong lighting of the nearest face; hard edges."""

    def forward(self, fragments, meshes, **kwargs):
        cameras, lights, materials, blend = self._parts(kwargs)
        face_points, face_normals = phong_face_attributes(meshes)
        extra = self._extra(kwargs)

        def shade(part):
            texels = meshes.sample_textures(part)
            colors = phong_lighting(part, face_points, face_normals, texels, lights, cameras, materials, **extra)
            return hard_rgb_blend(colors, part, blend)

        return shade_in_bands(shade, nearest_fragments(fragments))


class SoftPhongShader(ShaderBase):
    """Per-pixel Phong lighting blended over K faces with ``softmax_rgb_blend``."""

    def forward(self, fragments, meshes, **kwargs):
        cameras, lights, materials, blend = self._parts(kwargs)
        face_points, face_normals = phong_face_attributes(meshes)
        znear, zfar = _znear_zfar(cameras, kwargs)
        extra = self._extra(kwargs)

        def shade(part):
            texels = meshes.sample_textures(part)
            colors = phong_lighting(part, face_points, face_normals, texels, lights, cameras, materials, **extra)
            return softmax_rgb_blend(colors, part, blend, znear=znear, zfar=zfar)

        return shade_in_bands(shade, fragments)


class HardGouraudShader(ShaderBase):
    """Per-vertex lighting interpolated across faces; hard edges."""

    def forward(self, fragments, meshes, **kwargs):
        cameras, lights, materials, blend = self._parts(kwargs)
        face_colors = gouraud_face_colors(meshes, lights, cameras, materials, **self._extra(kwargs))

        def shade(part):
            colors = interpolate_face_attributes(part.pix_to_face, part.bary_coords, face_colors)
            return hard_rgb_blend(colors, part, blend)

        return shade_in_bands(shade, nearest_fragments(fragments))


class SoftGouraudShader(ShaderBase):
    """Per-vertex lighting blended over K faces with ``softmax_rgb_blend``."""

    def forward(self, fragments, meshes, **kwargs):
        cameras, lights, materials, blend = self._parts(kwargs)
        face_colors = gouraud_face_colors(meshes, lights, cameras, materials, **self._extra(kwargs))
        znear, zfar = _znear_zfar(cameras, kwargs)

        def shade(part):
            colors = interpolate_face_attributes(part.pix_to_face, part.bary_coords, face_colors)
            return softmax_rgb_blend(colors, part, blend, znear=znear, zfar=zfar)

        return shade_in_bands(shade, fragments)


class HardFlatShader(ShaderBase):
    """One colour per face: its normal, lit at its centroid; hard edges."""

    def forward(self, fragments, meshes, **kwargs):
        cameras, lights, materials, blend = self._parts(kwargs)
        face_centroids, face_normals = flat_face_attributes(meshes)
        extra = self._extra(kwargs)

        def shade(part):
            texels = meshes.sample_textures(part)
            colors = flat_lighting(part, face_centroids, face_normals, texels, lights, cameras, materials, **extra)
            return hard_rgb_blend(colors, part, blend)

        return shade_in_bands(shade, nearest_fragments(fragments))


class SoftSilhouetteShader(ShaderBase):
    """Alpha only: ``sigmoid_alpha_blend``; RGB is 1 everywhere. No textures or lights needed.
    Like PyTorch3D's, its first argument is ``blend_params``."""

    def __init__(self, blend_params=None, **kwargs):
        super().__init__(blend_params=blend_params, **kwargs)

    def forward(self, fragments, meshes, **kwargs):
        blend = kwargs.get("blend_params", self.blend_params)

        def shade(part):
            d = part.dists
            ones = torch.ones(d.shape[:-1] + (1, 3), dtype=d.dtype, device=d.device)  # only slot 0's colour is read
            return sigmoid_alpha_blend(ones, part, blend)

        if fragments.dists.device.type == "cpu":  # the CPU's alpha kernel keeps no (N, H, W, K) intermediate
            return shade(fragments)
        return shade_in_bands(shade, fragments)


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
