"""The compositional generator: object fields placed by box transforms, a background, feature
volume rendering and a 2D neural renderer (docs/giraffe.md#the-model).

``GiraffeModel`` renders a batch of scenes, each given by its objects' codes and box transforms,
from a batch of cameras:

1. rays through the centres of an h × w feature image, ``n_samples`` points between near and far;
2. every object's field at its points' box coordinates ``u = world_to_object(x)`` (only points inside
   the box are evaluated: outside, σ is 0), and the background field;
3. the composition operator (``composite_fields``) and quadrature volume rendering of the features
   (last step infinite, so every ray ends in the background) -> a feature image (N, C, h, w);
4. the neural renderer upsamples it to RGB (N, H, W, 3), H = h · 2^n_upsample.

As an auto-decoder it also holds one learned shape and appearance code per object of the training
scenes (``shape_codes``, ``appearance_codes``: (S, K, D)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError
from p3dlab.giraffe.boxes import world_to_object
from p3dlab.giraffe.fields import BackgroundFeatureField, ObjectFeatureField, composite_fields
from p3dlab.ops.pixels import pixel_centres
from p3dlab.renderer.raymarching import QuadratureRaymarcher
from p3dlab.renderer.raysampling import ray_bundle_to_ray_points, rays_from_xy


@dataclass
class SceneRender:
    """What ``GiraffeModel.render`` returns: ``rgb`` (N, H, W, 3) from the neural renderer, the
    volume-rendered ``features`` (N, C, h, w), the objects' opacity ``object_opacity`` (N, h, w)
    (``1 - exp(-Σ_i Σ_k σ_k δ_i)``, the background left out) and each object's own opacity
    ``per_object_opacity`` (N, K, h, w)."""

    rgb: torch.Tensor
    features: torch.Tensor
    object_opacity: torch.Tensor
    per_object_opacity: torch.Tensor


class NeuralRenderer(torch.nn.Module):
    """Feature image (N, C, h, w) -> RGB (N, 3, h·2^n, w·2^n), GIRAFFE's 2D renderer in small:
    a 3×3 stem, then n blocks of (×2 nearest upsampling, 3×3 convolution, leaky ReLU 0.2) whose width
    halves at every level (``n_hidden``, ``n_hidden/2``, ..., at least 8), and an RGB skip path: each
    level adds its 1×1-convolution RGB to the bilinearly upsampled RGB of the level below; a sigmoid
    at the end."""

    def __init__(self, n_features: int = 16, n_hidden: int = 32, n_upsample: int = 2, seed: int = 2):
        super().__init__()
        if n_features < 1 or n_hidden < 1 or not 0 <= n_upsample <= 4:
            raise P3DLabValueError("NeuralRenderer: need n_features, n_hidden >= 1 and 0 <= n_upsample <= 4")
        g = torch.Generator().manual_seed(seed)
        widths = [n_hidden] + [max(n_hidden // 2 ** (k + 1), 8) for k in range(n_upsample)]
        self.stem = torch.nn.Conv2d(n_features, widths[0], 3, padding=1)
        self.blocks = torch.nn.ModuleList(
            [torch.nn.Conv2d(widths[k], widths[k + 1], 3, padding=1) for k in range(n_upsample)]
        )
        self.to_rgb = torch.nn.ModuleList(
            [torch.nn.Conv2d(n_features, 3, 1)] + [torch.nn.Conv2d(w, 3, 1) for w in widths[1:]]
        )
        with torch.no_grad():
            for conv in [self.stem, *self.blocks, *self.to_rgb]:
                fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                conv.bias.zero_()
            for conv in self.to_rgb:
                conv.weight.mul_(0.1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        rgb = self.to_rgb[0](features)
        h = F.leaky_relu(self.stem(features), 0.2)
        for block, to_rgb in zip(self.blocks, self.to_rgb[1:]):
            h = F.leaky_relu(block(F.interpolate(h, scale_factor=2, mode="nearest")), 0.2)
            rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False) + to_rgb(h)
        return torch.sigmoid(rgb)


class GiraffeModel(torch.nn.Module):
    """Compositional feature fields with learned per-object codes (an auto-decoder).

    Args:
        n_scenes, n_objects: the training scenes and objects per scene (one shape and one appearance
            code each, initialised N(0, 0.1²) from ``seed``).
        n_features: C, the feature channels; feature_size: h = w of the volume-rendered image;
            n_upsample: ×2 steps of the neural renderer (image size ``feature_size · 2^n_upsample``).
        n_samples: points per ray between ``near`` and ``far`` (the rig's camera sits at distance 4).
    """

    def __init__(
        self,
        n_scenes: int,
        n_objects: int = 2,
        n_features: int = 16,
        shape_dim: int = 16,
        appearance_dim: int = 16,
        n_hidden: int = 64,
        feature_size: int = 16,
        n_upsample: int = 2,
        n_samples: int = 24,
        near: float = 2.3,
        far: float = 6.6,
        seed: int = 0,
    ):
        super().__init__()
        if n_scenes < 1 or n_objects < 1 or not 2 <= feature_size <= 256 or n_samples < 2 or not 0 < near < far:
            raise P3DLabValueError(
                "GiraffeModel: need n_scenes, n_objects >= 1, 2 <= feature_size <= 256, n_samples >= 2, 0 < near < far"
            )
        g = torch.Generator().manual_seed(seed)
        self.shape_codes = torch.nn.Parameter(0.1 * torch.randn(n_scenes, n_objects, shape_dim, generator=g))
        self.appearance_codes = torch.nn.Parameter(0.1 * torch.randn(n_scenes, n_objects, appearance_dim, generator=g))
        self.object_field = ObjectFeatureField(n_features, shape_dim, appearance_dim, n_hidden, seed=seed + 1)
        self.background = BackgroundFeatureField(n_features, seed=seed + 2)
        self.neural_renderer = NeuralRenderer(n_features, 32, n_upsample, seed=seed + 3)
        self.feature_size, self.n_samples, self.near, self.far = feature_size, n_samples, float(near), float(far)
        self.n_objects = n_objects

    @property
    def image_size(self) -> int:
        return self.feature_size * 2 ** len(self.neural_renderer.blocks)

    def render(
        self,
        cameras,
        shape_codes: torch.Tensor,
        appearance_codes: torch.Tensor,
        angles: torch.Tensor,
        translations: torch.Tensor,
        scales: torch.Tensor,
        stratified: bool = False,
        generator: Optional[torch.Generator] = None,
    ) -> SceneRender:
        """Render N scenes of K objects: codes (N, K, D), ``angles`` (N, K) radians about +Y,
        ``translations`` and ``scales`` (N, K, 3), one camera per scene (``len(cameras) == N``)."""
        N, K = angles.shape[:2] if angles.dim() == 2 else (None, None)
        if N is None or len(cameras) != N:
            raise P3DLabValueError(f"GiraffeModel.render: angles must be (N, K) with N = {len(cameras)} cameras")
        expected = {
            "shape_codes": (shape_codes, (N, K, self.object_field.shape_dim)),
            "appearance_codes": (appearance_codes, (N, K, self.object_field.appearance_dim)),
            "translations": (translations, (N, K, 3)),
            "scales": (scales, (N, K, 3)),
        }
        for name, (value, shape) in expected.items():
            if tuple(value.shape) != shape:
                raise P3DLabValueError(f"GiraffeModel.render: {name} must be {shape}, got {tuple(value.shape)}")
        s = self.feature_size
        x, y = pixel_centres(s, s, torch.float32)
        xy = torch.stack([x, y], -1).reshape(1, -1, 2).expand(N, -1, -1)
        bundle = rays_from_xy(
            cameras, xy, self.n_samples, self.near, self.far, stratified=stratified, generator=generator
        )
        points = ray_bundle_to_ray_points(bundle)  # (N, R, P, 3)
        R, P = points.shape[1:3]
        C = self.object_field.n_features
        sky_sigma, sky_f = self.background(points, bundle.directions)
        densities, features = [sky_sigma], [sky_f]
        for k in range(K):
            u = world_to_object(points, angles[:, k], translations[:, k], scales[:, k])
            inside = (u.abs() <= 1.0).all(-1).reshape(-1)  # only these points can have density
            idx = inside.nonzero()[:, 0]
            scene = idx // (R * P)
            sigma_in, f_in = self.object_field(u.reshape(-1, 3)[idx], shape_codes[scene, k], appearance_codes[scene, k])
            sigma = torch.zeros(N * R * P, 1, dtype=points.dtype).index_put((idx,), sigma_in)
            f = torch.zeros(N * R * P, C, dtype=points.dtype).index_put((idx,), f_in)
            densities.append(sigma.reshape(N, R, P, 1))
            features.append(f.reshape(N, R, P, C))
        sigma, f = composite_fields(torch.stack(densities), torch.stack(features))
        marcher = QuadratureRaymarcher(last_delta="inf")
        result = marcher.march(sigma, f, lengths=bundle.lengths, directions=bundle.directions)
        feats = result.features.reshape(N, s, s, C).permute(0, 3, 1, 2)
        # the objects' own opacities, from their optical depth (the background left out)
        step = bundle.lengths[..., 1:] - bundle.lengths[..., :-1]
        delta = torch.cat([step, step[..., -1:]], -1) * bundle.directions.norm(dim=-1, keepdim=True)
        tau = torch.stack([(d[..., 0] * delta).sum(-1) for d in densities[1:]], 1)  # (N, K, R)
        per_object = (1.0 - torch.exp(-tau)).reshape(N, K, s, s)
        objects = (1.0 - torch.exp(-tau.sum(1))).reshape(N, s, s)
        rgb = self.neural_renderer(feats).permute(0, 2, 3, 1)
        return SceneRender(rgb, feats, objects, per_object)

    def render_training_scenes(self, cameras, scenes: torch.Tensor, layout, **kwargs) -> SceneRender:
        """Render training scenes ``scenes`` (N,) (indices into the codes) with their true box
        transforms from ``layout`` (a ``SceneLayout``), one camera each."""
        return self.render(
            cameras,
            self.shape_codes[scenes],
            self.appearance_codes[scenes],
            layout.angles[scenes],
            layout.translations[scenes],
            layout.scales[scenes],
            **kwargs,
        )
