"""Batches of point clouds with PyTorch3D's ``Pointclouds`` API (list, padded and packed views).

Each cloud i has points (P_i, 3), optional normals (P_i, 3) and optional features (P_i, C).
Padded views are filled with 0; packed views concatenate all clouds.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.structures.meshes import _normalize_index
from p3dlab.structures.utils import list_to_padded, packed_to_list


def _listify(x, name: str) -> Optional[List[torch.Tensor]]:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        if x.ndim != 3:
            raise P3DLabValueError(f"Pointclouds: padded {name} must be 3-D (N, P, D), got {tuple(x.shape)}")
        return list(x.unbind(0))
    if isinstance(x, (list, tuple)):
        return list(x)
    raise P3DLabValueError(f"Pointclouds: {name} must be a list of tensors or a tensor")


class Pointclouds:
    """A batch of point clouds of possibly different sizes.

    Args:
        points: list of (P_i, 3) float tensors or a padded (N, P, 3) tensor (every cloud then has P
            points).
        normals: optional, same layout with 3 channels.
        features: optional, same layout with C channels (e.g. RGB).
    """

    def __init__(self, points, normals=None, features=None, *, _validate: bool = True):
        pts = _listify(points, "points")
        nrm = _listify(normals, "normals")
        fts = _listify(features, "features")
        if _validate:
            for i, p in enumerate(pts):
                if not isinstance(p, torch.Tensor) or p.ndim != 2 or p.shape[1] != 3:
                    raise P3DLabValueError(f"Pointclouds: points of cloud {i} must be a (P, 3) tensor")
                if not p.is_floating_point():
                    raise P3DLabValueError(f"Pointclouds: points of cloud {i} must be floating point, got {p.dtype}")
                bad = ~torch.isfinite(p).all(1)
                if bool(bad.any()):
                    k = int(bad.nonzero()[0, 0])
                    raise P3DLabValueError(f"Pointclouds: cloud {i} has a non-finite point {k}: {p[k].tolist()}")
            for name, extra in (("normals", nrm), ("features", fts)):
                if extra is None:
                    continue
                if len(extra) != len(pts):
                    raise P3DLabValueError(f"Pointclouds: {len(extra)} {name} tensors for {len(pts)} clouds")
                for i, (e, p) in enumerate(zip(extra, pts)):
                    if e.ndim != 2 or e.shape[0] != p.shape[0] or (name == "normals" and e.shape[1] != 3):
                        raise P3DLabValueError(
                            f"Pointclouds: {name} of cloud {i} have shape {tuple(e.shape)} for {p.shape[0]} points"
                        )
            if fts is not None and len({f.shape[1] for f in fts}) > 1:
                raise P3DLabValueError("Pointclouds: every cloud needs the same number of feature channels")
            tensors = pts + (nrm or []) + (fts or [])
            devices = {t.device for t in tensors}
            if len(devices) > 1:
                raise P3DLabValueError(
                    f"Pointclouds: all tensors must be on one device, got {sorted(map(str, devices))}"
                )
        self._points, self._normals, self._features = pts, nrm, fts
        self._N = len(pts)
        self.device = pts[0].device if pts else torch.device("cpu")

    def __len__(self) -> int:
        return self._N

    def __repr__(self) -> str:
        return f"Pointclouds(N={self._N}, P={self.num_points_per_cloud().tolist()}, device={self.device})"

    def _new(self, pts, nrm="same", fts="same") -> "Pointclouds":
        return Pointclouds(
            pts, self._normals if nrm == "same" else nrm, self._features if fts == "same" else fts, _validate=False
        )

    def isempty(self) -> bool:
        return self._N == 0 or int(self.num_points_per_cloud().sum()) == 0

    # ------------------------------------------------------------------ views
    def num_points_per_cloud(self) -> torch.Tensor:
        return torch.tensor([p.shape[0] for p in self._points], dtype=torch.int64, device=self.device)

    def cloud_to_packed_first_idx(self) -> torch.Tensor:
        n = self.num_points_per_cloud()
        return torch.cumsum(n, 0) - n

    def packed_to_cloud_idx(self) -> torch.Tensor:
        return torch.repeat_interleave(torch.arange(self._N, device=self.device), self.num_points_per_cloud())

    def padded_to_packed_idx(self) -> torch.Tensor:
        pmax = int(self.num_points_per_cloud().max()) if self._N else 0
        return torch.cat([torch.arange(p.shape[0], device=self.device) + i * pmax for i, p in enumerate(self._points)])

    def points_list(self) -> List[torch.Tensor]:
        return self._points

    def normals_list(self) -> Optional[List[torch.Tensor]]:
        return self._normals

    def features_list(self) -> Optional[List[torch.Tensor]]:
        return self._features

    def points_packed(self) -> torch.Tensor:
        return torch.cat(self._points, 0) if self._N else torch.zeros((0, 3))

    def normals_packed(self) -> Optional[torch.Tensor]:
        return torch.cat(self._normals, 0) if self._normals is not None else None

    def features_packed(self) -> Optional[torch.Tensor]:
        return torch.cat(self._features, 0) if self._features is not None else None

    def _padded(self, xs):
        if xs is None:
            return None
        pmax = int(self.num_points_per_cloud().max())
        return list_to_padded(xs, (pmax, xs[0].shape[1]), pad_value=0.0)

    def points_padded(self) -> torch.Tensor:
        return self._padded(self._points)

    def normals_padded(self) -> Optional[torch.Tensor]:
        return self._padded(self._normals)

    def features_padded(self) -> Optional[torch.Tensor]:
        return self._padded(self._features)

    def get_bounding_boxes(self) -> torch.Tensor:
        """(N, 3, 2) per-cloud min and max; zeros for an empty cloud."""
        return torch.stack(
            [
                torch.stack([p.min(0).values, p.max(0).values], 1) if p.shape[0] else p.new_zeros(3, 2)
                for p in self._points
            ],
            0,
        )

    # ------------------------------------------------------------------ updates
    def offset(self, offsets_packed: torch.Tensor) -> "Pointclouds":
        """New clouds with ``points_packed() + offsets``; offsets (sum P_i, 3) or (3,)."""
        total = int(self.num_points_per_cloud().sum())
        if offsets_packed.shape not in ((3,), (total, 3)):
            raise P3DLabValueError(f"offset: offsets must have shape (3,) or ({total}, 3)")
        new = self.points_packed() + offsets_packed
        return self._new(packed_to_list(new, self.num_points_per_cloud().tolist()))

    def offset_(self, offsets_packed: torch.Tensor) -> "Pointclouds":
        self._points = self.offset(offsets_packed)._points
        return self

    def scale(self, s) -> "Pointclouds":
        s = torch.as_tensor(s, dtype=self._points[0].dtype, device=self.device)
        if s.ndim == 0:
            s = s.expand(self._N)
        return self._new([p * s[i] for i, p in enumerate(self._points)])

    def scale_(self, s) -> "Pointclouds":
        self._points = self.scale(s)._points
        return self

    def update_padded(self, new_points_padded, new_normals_padded=None, new_features_padded=None) -> "Pointclouds":
        counts = self.num_points_per_cloud().tolist()

        def cut(x, old):
            if x is None:
                return old
            return [x[i, :n] for i, n in enumerate(counts)]

        return Pointclouds(
            cut(new_points_padded, None),
            cut(new_normals_padded, self._normals),
            cut(new_features_padded, self._features),
        )

    def subsample(self, max_points: int, generator: Optional[torch.Generator] = None) -> "Pointclouds":
        """Keep at most ``max_points`` random points per cloud (without replacement)."""
        keep = []
        for p in self._points:
            if p.shape[0] <= max_points:
                keep.append(torch.arange(p.shape[0], device=self.device))
            else:
                keep.append(torch.randperm(p.shape[0], generator=generator)[:max_points].to(self.device))
        pick = lambda xs: None if xs is None else [x[k] for x, k in zip(xs, keep)]
        return Pointclouds(pick(self._points), pick(self._normals), pick(self._features), _validate=False)

    def estimate_normals(self, neighborhood_size: int = 16) -> torch.Tensor:
        """Padded (N, P, 3) normals from PCA of each point's k nearest neighbours (sign unoriented).

        Uses a dense distance matrix per cloud: meant for clouds of a few thousand points.
        """
        out = []
        for p in self._points:
            k = min(neighborhood_size, p.shape[0])
            if k < 3:
                raise P3DLabValueError("estimate_normals needs at least 3 points per cloud")
            nn = torch.cdist(p, p).topk(k, largest=False).indices  # (P, k)
            nb = p[nn]
            centred = nb - nb.mean(1, keepdim=True)
            cov = centred.transpose(1, 2) @ centred
            _, vecs = torch.linalg.eigh(cov)
            out.append(vecs[:, :, 0])
        return list_to_padded(out, pad_value=0.0)

    # ------------------------------------------------------------------ copies and batching
    def clone(self) -> "Pointclouds":
        c = lambda xs: None if xs is None else [x.clone() for x in xs]
        return Pointclouds(c(self._points), c(self._normals), c(self._features), _validate=False)

    def detach(self) -> "Pointclouds":
        d = lambda xs: None if xs is None else [x.detach() for x in xs]
        return Pointclouds(d(self._points), d(self._normals), d(self._features), _validate=False)

    def to(self, device=None, dtype=None) -> "Pointclouds":
        t = lambda xs: None if xs is None else [x.to(device=device, dtype=dtype) for x in xs]
        return Pointclouds(t(self._points), t(self._normals), t(self._features), _validate=False)

    def cpu(self) -> "Pointclouds":
        return self.to("cpu")

    def __getitem__(self, index) -> "Pointclouds":
        idx = _normalize_index(index, self._N)
        pick = lambda xs: None if xs is None else [xs[i] for i in idx]
        return Pointclouds(pick(self._points), pick(self._normals), pick(self._features), _validate=False)

    def extend(self, N: int) -> "Pointclouds":
        idx = [i for i in range(self._N) for _ in range(N)]
        rep = lambda xs: None if xs is None else [xs[i].clone() for i in idx]
        return Pointclouds(rep(self._points), rep(self._normals), rep(self._features), _validate=False)


def join_pointclouds_as_batch(clouds: Sequence[Pointclouds]) -> Pointclouds:
    """Concatenate batches of point clouds; normals/features must be present in all or none."""
    clouds = list(clouds)
    if not clouds:
        raise P3DLabValueError("join_pointclouds_as_batch: no point clouds given")

    def gather(attr):
        parts = [getattr(c, attr)() for c in clouds]
        if all(p is None for p in parts):
            return None
        if any(p is None for p in parts):
            raise P3DLabValueError(f"join_pointclouds_as_batch: {attr[:-5]} present in some clouds only")
        return [t for p in parts for t in p]

    return Pointclouds(gather("points_list"), gather("normals_list"), gather("features_list"))


def join_pointclouds_as_scene(clouds) -> Pointclouds:
    """Merge every cloud into a single cloud."""
    if isinstance(clouds, Pointclouds):
        clouds = [clouds]
    b = join_pointclouds_as_batch(clouds)
    wrap = lambda x: None if x is None else [x]
    return Pointclouds([b.points_packed()], wrap(b.normals_packed()), wrap(b.features_packed()), _validate=False)
