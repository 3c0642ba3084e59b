"""Textures held by ``Meshes``: per-vertex colours, UV maps and per-face atlases
(docs/conventions.md#textures).

Every texture class keeps one entry per mesh, follows the mesh batch through indexing, ``extend``
and joins, and turns rasterizer fragments into texels with ``sample_textures(fragments,
faces_packed)`` -> (N, H, W, K, C).
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.gather import gather_rows
from p3dlab.ops.interpolate import interpolate_face_attributes
from p3dlab.structures.utils import list_to_padded


def _to_list(x, name: str, ndim: int) -> tuple:
    """Accept a list of tensors or a batched tensor; returns (list, was_padded)."""
    if isinstance(x, torch.Tensor):
        if x.ndim != ndim + 1:
            raise P3DLabValueError(f"{name} must be a list of {ndim}-D tensors or one {ndim + 1}-D tensor")
        return list(x.unbind(0)), True
    if isinstance(x, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in x):
        if any(t.ndim != ndim for t in x):
            raise P3DLabValueError(f"every tensor of {name} must be {ndim}-D")
        return list(x), False
    raise P3DLabValueError(f"{name} must be a list of tensors or a tensor, got {type(x).__name__}")


class _TexturesBase:
    """Batch plumbing shared by the texture classes: subclasses list their per-mesh tensor lists
    in ``_fields`` and rebuild themselves with ``_new(**lists)``."""

    _fields: Sequence[str] = ()

    def __len__(self) -> int:
        return len(getattr(self, self._fields[0]))

    def _map(self, fn) -> "_TexturesBase":
        return self._new(**{f: [fn(t) for t in getattr(self, f)] for f in self._fields})

    def clone(self):
        return self._map(lambda t: t.clone())

    def detach(self):
        return self._map(lambda t: t.detach())

    def to(self, device):
        return self._map(lambda t: t.to(device))

    def __getitem__(self, index):
        from p3dlab.structures.meshes import _normalize_index

        idx = _normalize_index(index, len(self))
        return self._new(**{f: [getattr(self, f)[i] for i in idx] for f in self._fields})

    def extend(self, N: int):
        return self._new(**{f: [t.clone() for t in getattr(self, f) for _ in range(N)] for f in self._fields})

    def join_batch(self, others: Sequence["_TexturesBase"]):
        for o in others:
            if type(o) is not type(self):
                raise P3DLabValueError(f"cannot join {type(self).__name__} with {type(o).__name__}")
        return self._new(**{f: [t for x in [self, *others] for t in getattr(x, f)] for f in self._fields})


class TexturesVertex(_TexturesBase):
    """One feature vector (any C, usually RGB in [0, 1]) per vertex, interpolated barycentrically.

    Args:
        verts_features: list of (V_i, C) tensors or a padded (N, V, C) tensor.
    """

    _fields = ("_features",)

    def __init__(self, verts_features):
        feats, self._padded_input = _to_list(verts_features, "verts_features", 2)
        if len({t.shape[1] for t in feats}) > 1:
            raise P3DLabValueError("TexturesVertex: every mesh needs the same number of channels")
        self._features = feats

    def _new(self, _features):
        return TexturesVertex(_features)

    def check_shapes(self, n_meshes: int, num_verts: List[int], num_faces: List[int]) -> None:
        for i, (t, nv) in enumerate(zip(self._features, num_verts)):
            if t.shape[0] == nv:
                continue
            if self._padded_input and t.shape[0] > nv:
                self._features[i] = t[:nv]
            else:
                raise P3DLabValueError(f"TexturesVertex: mesh {i} has {nv} vertices but {t.shape[0]} feature rows")

    def verts_features_list(self) -> List[torch.Tensor]:
        return self._features

    def verts_features_packed(self) -> torch.Tensor:
        return torch.cat(self._features, 0)

    def verts_features_padded(self) -> torch.Tensor:
        return list_to_padded(self._features, pad_value=0.0)

    def faces_verts_textures_packed(self, faces_packed: torch.Tensor) -> torch.Tensor:
        """(F, 3, C) features of each packed face's vertices."""
        return gather_rows(self.verts_features_packed(), faces_packed)

    def sample_textures(self, fragments, faces_packed: torch.Tensor) -> torch.Tensor:
        return interpolate_face_attributes(
            fragments.pix_to_face, fragments.bary_coords, self.faces_verts_textures_packed(faces_packed)
        )

    def join_scene(self) -> "TexturesVertex":
        return TexturesVertex([self.verts_features_packed()])


class TexturesUV(_TexturesBase):
    """A texture image per mesh, addressed by per-vertex UV coordinates.

    The UV of a pixel is the barycentric blend of its face's three ``verts_uvs``; the map is then
    read like ``grid_sample`` at ``(2u - 1, 1 - 2v)``: **v is flipped**, v = 0 is the bottom row.
    With ``align_corners=True`` u = 0 and u = 1 hit the centres of the edge pixels.

    Args:
        maps: (N, H, W, C) tensor or list of (H_i, W_i, C) tensors.
        faces_uvs: (N, F, 3) or list of (F_i, 3) long indices into ``verts_uvs``.
        verts_uvs: (N, T, 2) or list of (T_i, 2) UV coordinates.
        padding_mode: "border" (default), "zeros" or "reflection", as in ``grid_sample``.
        align_corners: as in ``grid_sample`` (default True).
        sampling_mode: "bilinear" (default) or "nearest".
    """

    _fields = ("_maps", "_faces_uvs", "_verts_uvs")

    def __init__(self, maps, faces_uvs, verts_uvs, padding_mode="border", align_corners=True, sampling_mode="bilinear"):
        self._maps, _ = _to_list(maps, "maps", 3)
        self._faces_uvs, self._faces_padded = _to_list(faces_uvs, "faces_uvs", 2)
        self._verts_uvs, _ = _to_list(verts_uvs, "verts_uvs", 2)
        if not len(self._maps) == len(self._faces_uvs) == len(self._verts_uvs):
            raise P3DLabValueError("TexturesUV: maps, faces_uvs and verts_uvs need the same batch size")
        if padding_mode not in ("border", "zeros", "reflection"):
            raise P3DLabValueError(f"TexturesUV: unknown padding_mode {padding_mode!r}")
        if sampling_mode not in ("bilinear", "nearest"):
            raise P3DLabValueError(f"TexturesUV: unknown sampling_mode {sampling_mode!r}")
        for i, (fu, vu) in enumerate(zip(self._faces_uvs, self._verts_uvs)):
            if vu.shape[-1] != 2 or fu.shape[-1] != 3:
                raise P3DLabValueError(f"TexturesUV: mesh {i}: verts_uvs must be (T, 2) and faces_uvs (F, 3)")
            if fu.is_floating_point():
                raise P3DLabValueError(f"TexturesUV: faces_uvs of mesh {i} must be integer")
            valid = fu[(fu >= 0).all(1)] if self._faces_padded else fu
            if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= vu.shape[0]):
                raise P3DLabValueError(f"TexturesUV: faces_uvs of mesh {i} index outside the {vu.shape[0]} verts_uvs")
        self.padding_mode, self.align_corners, self.sampling_mode = padding_mode, align_corners, sampling_mode

    def _new(self, _maps, _faces_uvs, _verts_uvs):
        return TexturesUV(_maps, _faces_uvs, _verts_uvs, self.padding_mode, self.align_corners, self.sampling_mode)

    def check_shapes(self, n_meshes: int, num_verts: List[int], num_faces: List[int]) -> None:
        for i, (fu, nf) in enumerate(zip(self._faces_uvs, num_faces)):
            if fu.shape[0] == nf:
                continue
            if self._faces_padded and fu.shape[0] > nf:
                self._faces_uvs[i] = fu[:nf]
            else:
                raise P3DLabValueError(f"TexturesUV: mesh {i} has {nf} faces but {fu.shape[0]} faces_uvs rows")

    def maps_list(self) -> List[torch.Tensor]:
        return self._maps

    def maps_padded(self) -> torch.Tensor:
        return list_to_padded(self._maps, pad_value=0.0)

    def faces_uvs_list(self) -> List[torch.Tensor]:
        return self._faces_uvs

    def verts_uvs_list(self) -> List[torch.Tensor]:
        return self._verts_uvs

    def faces_uvs_padded(self) -> torch.Tensor:
        return list_to_padded([f.long() for f in self._faces_uvs], pad_value=-1)

    def verts_uvs_padded(self) -> torch.Tensor:
        return list_to_padded(self._verts_uvs, pad_value=0.0)

    def faces_verts_uvs_packed(self) -> torch.Tensor:
        """(F, 3, 2) UVs of each packed face's corners."""
        return torch.cat([gather_rows(vu, fu.long()) for fu, vu in zip(self._faces_uvs, self._verts_uvs)], 0)

    def sample_textures(self, fragments, faces_packed: torch.Tensor = None) -> torch.Tensor:
        p2f = fragments.pix_to_face
        uv = interpolate_face_attributes(p2f, fragments.bary_coords, self.faces_verts_uvs_packed())
        n, h, w, k, _ = uv.shape
        grid = torch.stack([2.0 * uv[..., 0] - 1.0, 1.0 - 2.0 * uv[..., 1]], -1)
        texels = []
        for i in range(n):
            img = self._maps[i].permute(2, 0, 1)[None].to(grid.dtype)  # (1, C, Ht, Wt)
            t = F.grid_sample(
                img,
                grid[i].reshape(1, h, w * k, 2),
                mode=self.sampling_mode,
                padding_mode=self.padding_mode,
                align_corners=self.align_corners,
            )
            texels.append(t[0].permute(1, 2, 0).reshape(h, w, k, -1))
        out = torch.stack(texels, 0)
        return out * (p2f >= 0)[..., None].to(out.dtype)

    def join_scene(self) -> "TexturesUV":
        """One texture: the maps side by side (top-aligned), UVs remapped into the combined map.

        Bilinear taps at a map's outer edge may touch its neighbour in the combined image.
        """
        heights = [m.shape[0] for m in self._maps]
        widths = [m.shape[1] for m in self._maps]
        hc, wc = max(heights), sum(widths)
        big = self._maps[0].new_zeros((hc, wc, self._maps[0].shape[2]))
        uvs, faces, x0, uv_offset = [], [], 0, 0
        for m, fu, vu in zip(self._maps, self._faces_uvs, self._verts_uvs):
            hi, wi = m.shape[:2]
            big[:hi, x0 : x0 + wi] = m
            u, v = vu[:, 0], vu[:, 1]
            if self.align_corners:
                u2 = (x0 + u * (wi - 1)) / max(wc - 1, 1)
                v2 = 1.0 - (1.0 - v) * (hi - 1) / max(hc - 1, 1)
            else:
                u2 = (x0 + u * wi) / wc
                v2 = 1.0 - (1.0 - v) * hi / hc
            uvs.append(torch.stack([u2, v2], 1))
            faces.append(fu.long() + uv_offset)
            x0 += wi
            uv_offset += vu.shape[0]
        return self._new([big], [torch.cat(faces, 0)], [torch.cat(uvs, 0)])


class TexturesAtlas(_TexturesBase):
    """R x R colours per face, indexed by the first two barycentric coordinates (w0, w1) as in
    PyTorch3D.

    The face's triangle w0 + w1 ≤ 1 is cut into R² small triangles. The square i ≤ w0 R < i + 1,
    j ≤ w1 R < j + 1 is split by its anti-diagonal:
    - its lower-left half (w0 R - i + w1 R - j ≤ 1) reads ``atlas[f, j, i]`` (row from w1);
    - its upper-right half reads ``atlas[f, R - 1 - j, R - 1 - i]``, an entry no lower-left half
      uses.
    Barycentrics are clamped to [0, 1] first (pixels just outside a face, with blur).

    Args:
        atlas: (N, F, R, R, C) tensor or list of (F_i, R, R, C) tensors.
    """

    _fields = ("_atlas",)

    def __init__(self, atlas):
        self._atlas, self._padded_input = _to_list(atlas, "atlas", 4)
        for i, a in enumerate(self._atlas):
            if a.shape[1] != a.shape[2]:
                raise P3DLabValueError(f"TexturesAtlas: atlas of mesh {i} must be (F, R, R, C)")

    def _new(self, _atlas):
        return TexturesAtlas(_atlas)

    def check_shapes(self, n_meshes: int, num_verts: List[int], num_faces: List[int]) -> None:
        for i, (a, nf) in enumerate(zip(self._atlas, num_faces)):
            if a.shape[0] == nf:
                continue
            if self._padded_input and a.shape[0] > nf:
                self._atlas[i] = a[:nf]
            else:
                raise P3DLabValueError(f"TexturesAtlas: mesh {i} has {nf} faces but {a.shape[0]} atlas entries")

    def atlas_list(self) -> List[torch.Tensor]:
        return self._atlas

    def atlas_packed(self) -> torch.Tensor:
        return torch.cat(self._atlas, 0)

    def atlas_padded(self) -> torch.Tensor:
        return list_to_padded(self._atlas, pad_value=0.0)

    def sample_textures(self, fragments, faces_packed: torch.Tensor = None) -> torch.Tensor:
        atlas = self.atlas_packed()
        r = atlas.shape[1]
        p2f = fragments.pix_to_face
        w = fragments.bary_coords[..., :2].clamp(0.0, 1.0) * r  # (w0 R, w1 R)
        ij = w.long().clamp(0, r - 1)  # the square (i, j)
        lower = (w - ij).sum(-1) <= 1.0  # in its lower-left half
        i = torch.where(lower, ij[..., 0], r - 1 - ij[..., 0])
        j = torch.where(lower, ij[..., 1], r - 1 - ij[..., 1])
        texel = (p2f.clamp(min=0) * r + j) * r + i  # the (f, j, i) entry of the atlas, flattened
        out = gather_rows(atlas.reshape(-1, atlas.shape[-1]), texel)
        return out * (p2f >= 0)[..., None].to(out.dtype)

    def join_scene(self) -> "TexturesAtlas":
        return TexturesAtlas([self.atlas_packed()])
