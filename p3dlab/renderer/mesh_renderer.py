"""``MeshRenderer`` (and ``MeshRendererWithFragments``): a rasterizer and a shader called with the same
cameras, always."""

from __future__ import annotations

import torch


class MeshRenderer(torch.nn.Module):
    """``renderer(meshes, **kwargs)`` = ``shader(rasterizer(meshes, **kwargs), meshes, **kwargs)``.

    Call-time ``cameras=``, ``lights=``, ``R=``, ``T=`` reach both parts. Without ``cameras=`` the
    rasterizer's cameras are passed to the shader too, so replacing ``renderer.rasterizer.cameras``
    can never leave the shader lighting from a stale camera (the bug of the video article,
    docs/errata.md#e89).
    """

    def __init__(self, rasterizer, shader):
        super().__init__()
        self.rasterizer = rasterizer
        self.shader = shader

    def to(self, device):
        self.rasterizer.to(device)
        self.shader.to(device)
        return self

    def _render(self, meshes_world, **kwargs):
        if "cameras" not in kwargs and self.rasterizer.cameras is not None:
            kwargs["cameras"] = self.rasterizer.cameras
        fragments = self.rasterizer(meshes_world, **kwargs)
        return self.shader(fragments, meshes_world, **kwargs), fragments

    def forward(self, meshes_world, **kwargs) -> torch.Tensor:
        return self._render(meshes_world, **kwargs)[0]


class MeshRendererWithFragments(MeshRenderer):
    """``MeshRenderer`` that also returns the rasterizer's ``Fragments``: ``images, fragments =
    renderer(meshes)`` (PyTorch3D's class, for depth maps and face ids next to the image)."""

    def forward(self, meshes_world, **kwargs):
        return self._render(meshes_world, **kwargs)
