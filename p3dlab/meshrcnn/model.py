"""Mesh R-CNN's mesh head at CPU size (docs/meshrcnn.md#the-model): a small CNN backbone, a voxel
branch, ``cubify`` and refinement stages of ``vert_align`` + ``GraphConv`` + bounded vertex offsets.

All geometry is in the image-aligned frame of ``p3dlab.meshrcnn.data`` (x right, y down, z away from
the camera, [-1, 1]³), so a vertex's (x, y) are its ``grid_sample`` coordinates on every feature map.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from p3dlab.errors import P3DLabValueError
from p3dlab.ops import GraphConv, vert_align
from p3dlab.structures import Meshes
from p3dlab.structures.cubify import cubify


class Backbone(nn.Module):
    """Four 3x3 conv layers (ReLU), the last three with stride 2: feature maps at 1/2, 1/4 and 1/8 of
    the image with ``width``, 2 ``width`` and 4 ``width`` channels (a stand-in for ResNet-50 + FPN)."""

    def __init__(self, in_channels: int = 1, width: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.down = nn.ModuleList(
            [
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1),
                nn.Conv2d(4 * width, 8 * width, 3, stride=2, padding=1),
            ]
        )
        self.channels = [2 * width, 4 * width, 8 * width]

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        x = F.relu(self.stem(images))
        maps = []
        for conv in self.down:
            x = F.relu(conv(x))
            maps.append(x)
        return maps


class VoxelHead(nn.Module):
    """Occupancy logits (N, D, S, S) of a camera-aligned grid: like Mesh R-CNN's voxel branch, each
    output pixel predicts the whole column of D depth cells behind it (depth is the channel axis).

    The 1/4 and (upsampled) 1/8 maps are concatenated, passed through two 3x3 convs, upsampled to S x S
    and mapped to D = S channels by a 1x1 conv."""

    def __init__(self, channels: List[int], voxel_size: int = 24, hidden: int = 64):
        super().__init__()
        self.voxel_size = voxel_size
        self.convs = nn.ModuleList(
            [nn.Conv2d(channels[1] + channels[2], hidden, 3, padding=1), nn.Conv2d(hidden, hidden, 3, padding=1)]
        )
        self.predict = nn.Conv2d(hidden, voxel_size, 1)
        # start from the prior "about 5% of the cells are occupied" (logit -3), not from p = 0.5 everywhere
        # (which cubify at 0.2 would turn into one full block)
        nn.init.constant_(self.predict.bias, -3.0)

    def forward(self, maps: List[torch.Tensor]) -> torch.Tensor:
        mid, coarse = maps[1], maps[2]
        x = torch.cat([mid, F.interpolate(coarse, size=mid.shape[-2:], mode="bilinear", align_corners=False)], 1)
        for conv in self.convs:
            x = F.relu(conv(x))
        x = F.interpolate(x, size=(self.voxel_size,) * 2, mode="bilinear", align_corners=False)
        return self.predict(x)  # (N, D, H, W): channel d is depth slice d


class MeshRefinementStage(nn.Module):
    """One refinement stage: ``f = ReLU(W_b vert_align(maps, v))``, then ``num_convs`` times
    ``f = ReLU(GraphConv([f, v]))``, and the vertices move by ``tanh(W_o [f, v])`` (at most 1 per
    coordinate, half the grid). Features of the previous stage, if any, are concatenated to the
    first GraphConv's input. The offset layer starts at zero, so an untrained stage is the identity."""

    def __init__(self, image_channels: int, hidden: int = 64, num_convs: int = 3, previous_channels: int = 0):
        super().__init__()
        self.bottleneck = nn.Linear(image_channels, hidden)
        dims = [hidden + 3 + previous_channels] + [hidden + 3] * (num_convs - 1)
        self.gconvs = nn.ModuleList([GraphConv(d, hidden) for d in dims])
        # PyTorch's default init instead of GraphConv's N(0, 0.01²): graph features start at their inputs' scale
        for conv in self.gconvs:
            conv.w0.reset_parameters()
            conv.w1.reset_parameters()
        self.offset = nn.Linear(hidden + 3, 3)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def forward(
        self, meshes: Meshes, maps: List[torch.Tensor], previous: Optional[torch.Tensor] = None
    ) -> Tuple[Meshes, torch.Tensor]:
        verts = meshes.verts_packed()
        edges = meshes.edges_packed()
        image_feats = vert_align(maps, meshes, return_packed=True, padding_mode="border", align_corners=False)
        f = F.relu(self.bottleneck(image_feats))
        f = torch.cat([f, verts] + ([previous] if previous is not None else []), 1)
        for conv in self.gconvs:
            f = F.relu(conv(f, edges))
            f = torch.cat([f, verts], 1)
        offsets = torch.tanh(self.offset(f))
        return meshes.offset_verts(offsets), f[:, :-3]


class MeshRCNNHead(nn.Module):
    """Image (N, 1, H, W) -> voxel logits (N, S, S, S) and a list of meshes: ``cubify`` of the
    predicted (or given) occupancy, then one mesh per refinement stage.

    Args:
        voxel_size: S, the grid's cells per side.
        cubify_thresh: occupancy probability above which a cell is kept (Mesh R-CNN: 0.2).
        num_stages, num_convs, hidden: refinement stages, GraphConvs per stage, their width.
        width: the backbone's first width.
    """

    def __init__(
        self,
        voxel_size: int = 24,
        cubify_thresh: float = 0.2,
        num_stages: int = 2,
        num_convs: int = 3,
        hidden: int = 64,
        width: int = 16,
    ):
        super().__init__()
        if voxel_size < 2 or num_stages < 0 or num_convs < 1 or hidden < 1 or width < 1:
            raise P3DLabValueError("MeshRCNNHead: need voxel_size >= 2, num_stages >= 0, num_convs, hidden, width >= 1")
        if not 0.0 < cubify_thresh < 1.0:
            raise P3DLabValueError(f"MeshRCNNHead: cubify_thresh must be in (0, 1), got {cubify_thresh}")
        self.voxel_size, self.cubify_thresh = voxel_size, cubify_thresh
        self.backbone = Backbone(1, width)
        self.voxel_head = VoxelHead(self.backbone.channels, voxel_size)
        image_channels = sum(self.backbone.channels)
        self.stages = nn.ModuleList(
            [
                MeshRefinementStage(image_channels, hidden, num_convs, previous_channels=hidden if i else 0)
                for i in range(num_stages)
            ]
        )

    def cubify_probabilities(self, probs: torch.Tensor) -> Meshes:
        """``cubify`` at ``cubify_thresh`` in the aligned frame; an empty prediction becomes the
        single central cell, so that every image gets a mesh to refine."""
        occ = probs.detach() > self.cubify_thresh
        empty = ~occ.flatten(1).any(1)
        if empty.any():
            c = self.voxel_size // 2
            occ = occ.clone()
            occ[empty, c, c, c] = True
        return cubify(occ.float(), 0.5, align="corner")

    def forward(self, images: torch.Tensor, voxels: Optional[torch.Tensor] = None):
        """Returns (voxel logits (N, S, S, S), [cubified mesh, stage 1 mesh, ...]). With ``voxels``
        (N, S, S, S) given, the refinement starts from their cubified mesh instead of the prediction."""
        if images.ndim != 4 or images.shape[1] != 1:
            raise P3DLabValueError(f"MeshRCNNHead: images must be (N, 1, H, W), got {tuple(images.shape)}")
        if images.shape[-1] < 8 or images.shape[-2] < 8:
            raise P3DLabValueError("MeshRCNNHead: images must be at least 8 x 8")
        maps = self.backbone(images)
        logits = self.voxel_head(maps)
        if voxels is not None:
            S = self.voxel_size
            if voxels.shape != (images.shape[0], S, S, S):
                raise P3DLabValueError(f"MeshRCNNHead: voxels must be (N, {S}, {S}, {S}), got {tuple(voxels.shape)}")
            start = self.cubify_probabilities(voxels.to(logits.dtype))
        else:
            start = self.cubify_probabilities(torch.sigmoid(logits))
        meshes, feats = [start], None
        for stage in self.stages:
            mesh, feats = stage(meshes[-1], maps, feats)
            meshes.append(mesh)
        return logits, meshes


__all__ = ["Backbone", "MeshRCNNHead", "MeshRefinementStage", "VoxelHead"]
