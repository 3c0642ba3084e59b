"""Batches of triangle meshes with PyTorch3D's ``Meshes`` API.

A batch of N meshes can be read in three views (docs/conventions.md#structures-and-batching):

* list:   ``verts_list()[i]`` is (V_i, 3), ``faces_list()[i]`` is (F_i, 3) with indices into mesh i;
* padded: ``verts_padded()`` is (N, max V_i, 3) filled with 0, ``faces_padded()`` (N, max F_i, 3)
  filled with -1;
* packed: ``verts_packed()`` is (sum V_i, 3); ``faces_packed()`` (sum F_i, 3) indexes the packed
  vertices, i.e. mesh i's faces are offset by ``mesh_to_verts_packed_first_idx()[i]``.

Every view is computed from the list view on first use and cached. Construction validates its input
(shapes, dtypes, finite vertices, face indices in range, one device) so that no kernel downstream
ever sees an out-of-range index.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.gather import gather_rows
from p3dlab.structures.utils import list_to_padded, packed_to_list

_NORMAL_EPS = 1e-6


def _as_list(x, what: str) -> List[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        if x.ndim != 3:
            raise P3DLabValueError(f"Meshes: padded {what} must have shape (N, n, 3), got {tuple(x.shape)}")
        return list(x.unbind(0))
    if isinstance(x, (list, tuple)):
        return list(x)
    raise P3DLabValueError(f"Meshes: {what} must be a list of tensors or a padded tensor, got {type(x)}")


def _check_verts(i: int, v) -> torch.Tensor:
    if not isinstance(v, torch.Tensor):
        raise P3DLabValueError(f"Meshes: verts of mesh {i} must be a torch.Tensor, got {type(v).__name__}")
    if v.ndim != 2 or v.shape[1] != 3:
        raise P3DLabValueError(f"Meshes: verts of mesh {i} must have shape (V, 3), got {tuple(v.shape)}")
    if not v.is_floating_point():
        raise P3DLabValueError(f"Meshes: verts of mesh {i} must be floating point, got {v.dtype}")
    bad = ~torch.isfinite(v).all(dim=1)
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise P3DLabValueError(f"Meshes: mesh {i} has a non-finite vertex {k}: {v[k].tolist()}")
    return v


def _check_faces(i: int, f, num_verts: int) -> torch.Tensor:
    if not isinstance(f, torch.Tensor):
        raise P3DLabValueError(f"Meshes: faces of mesh {i} must be a torch.Tensor, got {type(f).__name__}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise P3DLabValueError(f"Meshes: faces of mesh {i} must have shape (F, 3), got {tuple(f.shape)}")
    if f.is_floating_point() or f.is_complex() or f.dtype == torch.bool:
        raise P3DLabValueError(f"Meshes: faces of mesh {i} must be an integer tensor, got {f.dtype}")
    f = f.to(torch.int64)
    if f.numel() > 0:
        bad = ((f < 0) | (f >= num_verts)).any(dim=1)
        if bool(bad.any()):
            j = int(bad.nonzero()[0, 0])
            raise P3DLabValueError(
                f"Meshes: mesh {i}, face {j} has vertex indices {f[j].tolist()} "
                f"outside [0, {num_verts - 1}] (the mesh has {num_verts} vertices)"
            )
    return f


def _unpad_faces(i: int, f: torch.Tensor) -> torch.Tensor:
    """The faces of mesh ``i`` of a padded (N, F, 3) tensor: its rows before the padding. A padding
    row is three -1 (what ``faces_padded()`` writes) and comes after every face; a row with another
    negative index, or a face after a padding row, is refused rather than dropped (PyTorch3D drops
    any row with a negative index)."""
    if f.numel() == 0 or f.is_floating_point() or f.is_complex() or f.dtype == torch.bool:
        return f  # _check_faces says what is wrong with the dtype
    padding = (f == -1).all(dim=1)
    bad = ((f < 0).any(dim=1) & ~padding).nonzero()
    if bad.numel():
        j = int(bad[0, 0])
        raise P3DLabValueError(
            f"Meshes: padded faces of mesh {i}, row {j} is {f[j].tolist()}: a row is a face (indices >= 0) "
            "or padding (-1, -1, -1)"
        )
    n_faces = int((~padding).sum())
    if bool(padding[:n_faces].any()):
        raise P3DLabValueError(
            f"Meshes: padded faces of mesh {i} have a face after padding (row {int(padding.nonzero()[0, 0])} is "
            "-1, -1, -1): padding must come after every face"
        )
    return f[:n_faces]


class Meshes:
    """A batch of triangle meshes, possibly of different sizes (PyTorch3D-compatible).

    Args:
        verts: list of (V_i, 3) float tensors, or a padded (N, V, 3) tensor (every mesh then has V
            vertices).
        faces: list of (F_i, 3) integer tensors, or a padded (N, F, 3) tensor in which rows
            containing -1 are padding.
        textures: optional ``TexturesVertex`` / ``TexturesUV`` / ``TexturesAtlas`` with batch size N.
        verts_normals: optional list of (V_i, 3) or padded (N, V, 3) vertex normals to use instead
            of the ones computed from the faces.
    """

    def __init__(self, verts, faces, textures=None, *, verts_normals=None, _validate: bool = True):
        padded_faces = isinstance(faces, torch.Tensor)
        verts_list = _as_list(verts, "verts")
        faces_list = _as_list(faces, "faces")
        if len(verts_list) != len(faces_list):
            raise P3DLabValueError(f"Meshes: got {len(verts_list)} vertex tensors but {len(faces_list)} face tensors")
        if padded_faces:
            faces_list = [_unpad_faces(i, f) for i, f in enumerate(faces_list)]
        if _validate:
            devices = {t.device for t in verts_list + faces_list if isinstance(t, torch.Tensor)}
            if len(devices) > 1:
                raise P3DLabValueError(
                    f"Meshes: all verts and faces must be on one device, got {sorted(map(str, devices))}"
                )
            verts_list = [_check_verts(i, v) for i, v in enumerate(verts_list)]
            faces_list = [_check_faces(i, f, v.shape[0]) for i, (f, v) in enumerate(zip(faces_list, verts_list))]
            dtypes = {v.dtype for v in verts_list}
            if len(dtypes) > 1:
                raise P3DLabValueError(f"Meshes: all verts must have one dtype, got {sorted(map(str, dtypes))}")
        self._verts_list: List[torch.Tensor] = verts_list
        self._faces_list: List[torch.Tensor] = faces_list
        self._N = len(verts_list)
        self.device = verts_list[0].device if self._N else torch.device("cpu")
        self._cache: dict = {}
        self._verts_normals_list = None
        if verts_normals is not None:
            normals = _as_list(verts_normals, "verts_normals")
            if len(normals) != self._N or any(n.shape != v.shape for n, v in zip(normals, verts_list)):
                raise P3DLabValueError("Meshes: verts_normals must match verts in number and shape")
            self._verts_normals_list = [n.to(v) for n, v in zip(normals, verts_list)]
        self.textures = None
        if textures is not None:
            self.textures = textures
            self._check_textures(textures)

    # ------------------------------------------------------------------ basics
    def _check_textures(self, textures) -> None:
        if len(textures) != self._N:
            raise P3DLabValueError(f"Meshes: textures have batch size {len(textures)}, meshes {self._N}")
        check = getattr(textures, "check_shapes", None)
        if check is not None:
            check(self._N, self.num_verts_per_mesh().tolist(), self.num_faces_per_mesh().tolist())

    def __len__(self) -> int:
        return self._N

    def __repr__(self) -> str:
        return (
            f"Meshes(N={self._N}, V={self.num_verts_per_mesh().tolist()}, "
            f"F={self.num_faces_per_mesh().tolist()}, device={self.device})"
        )

    @property
    def dtype(self) -> torch.dtype:
        return self._verts_list[0].dtype if self._N else torch.float32

    @property
    def equisized(self) -> bool:
        nv, nf = self.num_verts_per_mesh(), self.num_faces_per_mesh()
        return bool(self._N == 0 or ((nv == nv[0]).all() and (nf == nf[0]).all()))

    @property
    def valid(self) -> torch.Tensor:
        """(N,) bool: True for meshes with at least one face."""
        return self.num_faces_per_mesh() > 0

    def isempty(self) -> bool:
        """True when the batch has no mesh or no mesh has a vertex."""
        return self._N == 0 or int(self.num_verts_per_mesh().sum()) == 0

    # Views computed from the vertex values. They are cached only when no gradient can flow through
    # them: a cached tensor would tie every later use to the first autograd graph, and a second
    # backward through the same Meshes would fail. Topology-only views are always cached.
    _VALUE_KEYS = frozenset({"verts_packed", "verts_padded", "face_cross", "fn", "fa", "vn"})

    def _cached(self, key, fn):
        if key in self._VALUE_KEYS and torch.is_grad_enabled() and any(v.requires_grad for v in self._verts_list):
            return fn()
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def _replace(self, verts_list, faces_list=None, textures="same", verts_normals=None) -> "Meshes":
        """A new Meshes sharing this batch's faces (already validated) and textures."""
        return Meshes(
            verts_list,
            self._faces_list if faces_list is None else faces_list,
            self.textures if textures == "same" else textures,
            verts_normals=verts_normals,
            _validate=False,
        )

    # ------------------------------------------------------------------ list view
    def verts_list(self) -> List[torch.Tensor]:
        return self._verts_list

    def faces_list(self) -> List[torch.Tensor]:
        return self._faces_list

    def get_mesh_verts_faces(self, index: int):
        """``(verts (V, 3), faces (F, 3))`` of mesh ``index`` in the list view (PyTorch3D's method).

        As in PyTorch3D the index must be a Python int in [0, N); anything else is a ValueError.
        """
        if isinstance(index, bool) or not isinstance(index, int):
            raise P3DLabValueError(f"Meshes.get_mesh_verts_faces: the index must be an int, got {type(index).__name__}")
        if not 0 <= index < self._N:
            raise P3DLabValueError(f"Meshes.get_mesh_verts_faces: index {index} is outside [0, {self._N})")
        return self._verts_list[index], self._faces_list[index]

    def has_verts_normals(self) -> bool:
        """True when vertex normals are already there: given to the constructor, or computed and cached.

        PyTorch3D answers True once ``verts_normals_packed()`` (or a view of it) has run. Here a view
        computed from vertices that require grad is not cached, so it does not count.
        """
        return self._verts_normals_list is not None or "vn" in self._cache

    def submeshes(self, face_indices) -> "Meshes":
        """A batch of submeshes: each kept face subset of each mesh, with only the vertices it uses.

        ``face_indices`` has one entry per mesh (PyTorch3D's three forms): a list of index tensors,
        a (S_n, F') tensor, or one (N, S, F') tensor for the whole batch. Every index tensor selects
        faces of its mesh; an empty list gives no submesh of that mesh. The kept vertices keep their
        order (sorted by their old index) and the faces are renumbered accordingly; the result has
        ``sum(len(face_indices[n]))`` meshes, in order. ``TexturesVertex`` and ``TexturesAtlas``
        (and here also ``TexturesUV``) follow the selection. Vertex normals are recomputed from the
        kept faces, as in PyTorch3D.
        """
        if len(face_indices) != self._N:
            raise P3DLabValueError(
                f"Meshes.submeshes: give exactly one set of submeshes per mesh ({self._N}), got {len(face_indices)}"
            )
        verts, faces, sources, vert_ids, face_ids = [], [], [], [], []
        for n, selections in enumerate(face_indices):
            mesh_faces = self._faces_list[n]
            for k, sel in enumerate(selections):
                sel = torch.as_tensor(sel, device=mesh_faces.device)
                if sel.numel() == 0:  # torch.tensor([]) is float: an empty selection of any dtype
                    sel = sel.reshape(0).long()
                if sel.dtype == torch.bool:
                    if sel.shape != (mesh_faces.shape[0],):
                        raise P3DLabValueError(
                            f"Meshes.submeshes: mesh {n}, submesh {k}: a boolean selection needs shape "
                            f"({mesh_faces.shape[0]},), got {tuple(sel.shape)}"
                        )
                    sel = sel.nonzero()[:, 0]
                if sel.is_floating_point() or sel.ndim != 1:
                    raise P3DLabValueError(
                        f"Meshes.submeshes: mesh {n}, submesh {k}: face indices must be a 1-D integer tensor"
                    )
                nf = mesh_faces.shape[0]
                if sel.numel() and (int(sel.min()) < -nf or int(sel.max()) >= nf):
                    raise P3DLabValueError(
                        f"Meshes.submeshes: mesh {n}, submesh {k}: face indices outside [-{nf}, {nf}) for {nf} faces"
                    )
                kept = mesh_faces[sel.long()]
                used, renumbered = torch.unique(kept, sorted=True, return_inverse=True)
                verts.append(self._verts_list[n][used])
                faces.append(renumbered.reshape(-1, 3))
                sources.append(n)
                vert_ids.append(used)
                face_ids.append(sel.long())
        textures = None
        if self.textures is not None:
            textures = _sub_textures(self.textures, sources, vert_ids, face_ids)
        return Meshes(verts, faces, textures, _validate=False)

    def num_verts_per_mesh(self) -> torch.Tensor:
        return self._cached(
            "nv", lambda: torch.tensor([v.shape[0] for v in self._verts_list], dtype=torch.int64, device=self.device)
        )

    def num_faces_per_mesh(self) -> torch.Tensor:
        return self._cached(
            "nf", lambda: torch.tensor([f.shape[0] for f in self._faces_list], dtype=torch.int64, device=self.device)
        )

    # ------------------------------------------------------------------ packed view
    def verts_packed(self) -> torch.Tensor:
        def build():
            if self._N == 0:
                return torch.zeros((0, 3), device=self.device)
            return torch.cat(self._verts_list, 0)

        return self._cached("verts_packed", build)

    def mesh_to_verts_packed_first_idx(self) -> torch.Tensor:
        nv = self.num_verts_per_mesh()
        return self._cached("v_first", lambda: torch.cumsum(nv, 0) - nv)

    def mesh_to_faces_packed_first_idx(self) -> torch.Tensor:
        nf = self.num_faces_per_mesh()
        return self._cached("f_first", lambda: torch.cumsum(nf, 0) - nf)

    def verts_packed_to_mesh_idx(self) -> torch.Tensor:
        return self._cached(
            "v2m", lambda: torch.repeat_interleave(torch.arange(self._N, device=self.device), self.num_verts_per_mesh())
        )

    def faces_packed_to_mesh_idx(self) -> torch.Tensor:
        return self._cached(
            "f2m", lambda: torch.repeat_interleave(torch.arange(self._N, device=self.device), self.num_faces_per_mesh())
        )

    def faces_packed(self) -> torch.Tensor:
        def build():
            if self._N == 0:
                return torch.zeros((0, 3), dtype=torch.int64, device=self.device)
            first = self.mesh_to_verts_packed_first_idx().tolist()
            return torch.cat([f + o for f, o in zip(self._faces_list, first)], 0)

        return self._cached("faces_packed", build)

    # ------------------------------------------------------------------ padded view
    def verts_padded(self) -> torch.Tensor:
        def build():
            if self._N == 0:
                return torch.zeros((0, 0, 3), device=self.device)
            vmax = int(self.num_verts_per_mesh().max())
            return list_to_padded(self._verts_list, (vmax, 3), pad_value=0.0)

        return self._cached("verts_padded", build)

    def faces_padded(self) -> torch.Tensor:
        def build():
            if self._N == 0:
                return torch.zeros((0, 0, 3), dtype=torch.int64, device=self.device)
            fmax = int(self.num_faces_per_mesh().max())
            return list_to_padded(self._faces_list, (fmax, 3), pad_value=-1)

        return self._cached("faces_padded", build)

    def verts_padded_to_packed_idx(self) -> torch.Tensor:
        """Index into ``verts_padded().view(-1, 3)`` of every packed vertex."""

        def build():
            if self._N == 0:
                return torch.zeros((0,), dtype=torch.int64, device=self.device)
            vmax = self.verts_padded().shape[1]
            return torch.cat(
                [torch.arange(v.shape[0], device=self.device) + i * vmax for i, v in enumerate(self._verts_list)]
            )

        return self._cached("v_pad2pack", build)

    # ------------------------------------------------------------------ edges
    def _edges(self):
        def build():
            faces = self.faces_packed()
            n_faces = faces.shape[0]
            num_v = max(int(self.num_verts_per_mesh().sum()), 1)
            # Edge k of a face is the one opposite vertex k: (v1, v2), (v2, v0), (v0, v1).
            e = torch.cat([faces[:, [1, 2]], faces[:, [2, 0]], faces[:, [0, 1]]], 0)
            e, _ = e.sort(dim=1)
            key = e[:, 0] * num_v + e[:, 1]
            uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
            edges = torch.stack([uniq // num_v, uniq % num_v], 1)
            f2e = inverse.view(3, n_faces).t().contiguous()
            e2m = self.verts_packed_to_mesh_idx()[edges[:, 0]]
            ne = torch.bincount(e2m, minlength=self._N)
            return edges, f2e, e2m, ne

        return self._cached("edges", build)

    def edges_packed(self) -> torch.Tensor:
        """(E, 2) unique undirected edges of the packed faces, each with v0 < v1, sorted."""
        return self._edges()[0]

    def faces_packed_to_edges_packed(self) -> torch.Tensor:
        """(F, 3): column k is the packed edge opposite vertex k of the face."""
        return self._edges()[1]

    def edges_packed_to_mesh_idx(self) -> torch.Tensor:
        return self._edges()[2]

    def num_edges_per_mesh(self) -> torch.Tensor:
        return self._edges()[3]

    def mesh_to_edges_packed_first_idx(self) -> torch.Tensor:
        ne = self.num_edges_per_mesh()
        return torch.cumsum(ne, 0) - ne

    # ------------------------------------------------------------------ geometry
    def _face_cross(self) -> torch.Tensor:
        """(F, 3) unnormalised face normals ``(v1 - v0) x (v2 - v0)`` (twice the area vector)."""

        def build():
            v = self.verts_packed()
            f = self.faces_packed()
            v0, v1, v2 = gather_rows(v, f).unbind(1)
            return torch.cross(v1 - v0, v2 - v0, dim=1)

        return self._cached("face_cross", build)

    def faces_normals_packed(self) -> torch.Tensor:
        return self._cached("fn", lambda: F.normalize(self._face_cross(), dim=1, eps=_NORMAL_EPS))

    def faces_normals_list(self) -> List[torch.Tensor]:
        return packed_to_list(self.faces_normals_packed(), self.num_faces_per_mesh().tolist())

    def faces_normals_padded(self) -> torch.Tensor:
        return self._to_padded(self.faces_normals_list(), self.num_faces_per_mesh())

    def faces_areas_packed(self) -> torch.Tensor:
        return self._cached("fa", lambda: 0.5 * self._face_cross().norm(dim=1))

    def verts_normals_packed(self) -> torch.Tensor:
        """Area-weighted vertex normals: the normalised sum of adjacent faces' cross products."""

        def build():
            if self._verts_normals_list is not None:
                return torch.cat(self._verts_normals_list, 0) if self._N else self.verts_packed().clone()
            cross = self._face_cross()
            f = self.faces_packed()
            acc = torch.zeros_like(self.verts_packed())
            for k in range(3):
                acc = acc.index_add(0, f[:, k], cross)
            return F.normalize(acc, dim=1, eps=_NORMAL_EPS)

        return self._cached("vn", build)

    def verts_normals_list(self) -> List[torch.Tensor]:
        return packed_to_list(self.verts_normals_packed(), self.num_verts_per_mesh().tolist())

    def verts_normals_padded(self) -> torch.Tensor:
        return self._to_padded(self.verts_normals_list(), self.num_verts_per_mesh())

    def _to_padded(self, xs: List[torch.Tensor], counts: torch.Tensor) -> torch.Tensor:
        if self._N == 0:
            return torch.zeros((0, 0, 3), device=self.device)
        return list_to_padded(xs, (int(counts.max()), 3), pad_value=0.0)

    def laplacian_packed(self) -> torch.Tensor:
        """Uniform graph Laplacian as a sparse (V, V) tensor: ``L[i, j] = 1/deg(i)`` for each
        neighbour j, ``L[i, i] = -1``; so ``(L @ V)[i]`` is the neighbour centroid minus v_i."""

        def build():
            verts = self.verts_packed()
            num_v = verts.shape[0]
            e0, e1 = self.edges_packed().unbind(1)
            rows = torch.cat([e0, e1])
            cols = torch.cat([e1, e0])
            deg = torch.bincount(rows, minlength=num_v).to(verts.dtype)
            inv_deg = torch.where(deg > 0, 1.0 / deg.clamp(min=1), torch.zeros_like(deg))
            diag = torch.arange(num_v, device=self.device)
            idx = torch.stack([torch.cat([rows, diag]), torch.cat([cols, diag])])
            val = torch.cat([inv_deg[rows], -torch.ones(num_v, dtype=verts.dtype, device=self.device)])
            return torch.sparse_coo_tensor(idx, val, (num_v, num_v), check_invariants=True).coalesce()

        return self._cached("laplacian", build)

    def get_bounding_boxes(self) -> torch.Tensor:
        """(N, 3, 2): per mesh, the min (column 0) and max (column 1) of x, y, z; zeros if empty."""
        boxes = []
        for v in self._verts_list:
            if v.shape[0] == 0:
                boxes.append(v.new_zeros(3, 2))
            else:
                boxes.append(torch.stack([v.min(0).values, v.max(0).values], 1))
        return torch.stack(boxes, 0) if boxes else torch.zeros((0, 3, 2), device=self.device)

    # ------------------------------------------------------------------ updates
    def _offsets_packed(self, vert_offsets: torch.Tensor) -> torch.Tensor:
        total = int(self.num_verts_per_mesh().sum())
        if vert_offsets.shape == (3,):
            return vert_offsets.expand(total, 3)
        if vert_offsets.shape != (total, 3):
            raise P3DLabValueError(
                f"offset_verts: offsets must have shape (3,) or ({total}, 3), got {tuple(vert_offsets.shape)}"
            )
        return vert_offsets

    def offset_verts(self, vert_offsets_packed: torch.Tensor) -> "Meshes":
        """New meshes with ``verts_packed() + offsets``; offsets (sum V_i, 3) or (3,)."""
        new = self.verts_packed() + self._offsets_packed(vert_offsets_packed)
        return self._replace(packed_to_list(new, self.num_verts_per_mesh().tolist()))

    def offset_verts_(self, vert_offsets_packed: torch.Tensor) -> "Meshes":
        """In-place :meth:`offset_verts`."""
        new = self.offset_verts(vert_offsets_packed)
        self._verts_list, self._cache = new._verts_list, {}
        return self

    def scale_verts(self, scale) -> "Meshes":
        """New meshes with every vertex multiplied by ``scale`` (a scalar or one value per mesh)."""
        s = torch.as_tensor(scale, dtype=self.dtype, device=self.device)
        if s.ndim == 0:
            s = s.expand(self._N)
        if s.shape != (self._N,):
            raise P3DLabValueError(f"scale_verts: scale must be a scalar or have shape ({self._N},)")
        return self._replace([v * s[i] for i, v in enumerate(self._verts_list)])

    def scale_verts_(self, scale) -> "Meshes":
        new = self.scale_verts(scale)
        self._verts_list, self._cache = new._verts_list, {}
        return self

    def update_padded(self, new_verts_padded: torch.Tensor) -> "Meshes":
        """New meshes with the same faces and textures and vertices taken from a padded tensor."""
        expected = (self._N, self.verts_padded().shape[1], 3)
        if tuple(new_verts_padded.shape) != expected:
            raise P3DLabValueError(f"update_padded: expected shape {expected}, got {tuple(new_verts_padded.shape)}")
        verts = [new_verts_padded[i, :n] for i, n in enumerate(self.num_verts_per_mesh().tolist())]
        return self._replace(verts)

    # ------------------------------------------------------------------ copies and devices
    def clone(self) -> "Meshes":
        tex = self.textures.clone() if self.textures is not None else None
        normals = [n.clone() for n in self._verts_normals_list] if self._verts_normals_list else None
        return self._replace([v.clone() for v in self._verts_list], [f.clone() for f in self._faces_list], tex, normals)

    def detach(self) -> "Meshes":
        tex = self.textures.detach() if self.textures is not None else None
        normals = [n.detach() for n in self._verts_normals_list] if self._verts_normals_list else None
        return self._replace([v.detach() for v in self._verts_list], None, tex, normals)

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "Meshes":
        """Move to a device and/or cast the float tensors to ``dtype``."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        tex = self.textures.to(device) if self.textures is not None else None
        normals = (
            [n.to(device=device, dtype=dtype) for n in self._verts_normals_list] if self._verts_normals_list else None
        )
        return self._replace(
            [v.to(device=device, dtype=dtype) for v in self._verts_list],
            [f.to(device=device) for f in self._faces_list],
            tex,
            normals,
        )

    def cpu(self) -> "Meshes":
        return self.to("cpu")

    def cuda(self) -> "Meshes":
        return self.to("cuda")

    # ------------------------------------------------------------------ batching
    def __getitem__(self, index: Union[int, slice, Sequence[int], torch.Tensor]) -> "Meshes":
        idx = _normalize_index(index, self._N)
        tex = self.textures[idx] if self.textures is not None else None
        normals = [self._verts_normals_list[i] for i in idx] if self._verts_normals_list else None
        return self._replace([self._verts_list[i] for i in idx], [self._faces_list[i] for i in idx], tex, normals)

    def split(self, split_sizes: Sequence[int]) -> List["Meshes"]:
        if sum(split_sizes) != self._N:
            raise P3DLabValueError("Meshes.split: sizes must add up to the batch size")
        out, start = [], 0
        for s in split_sizes:
            out.append(self[list(range(start, start + s))])
            start += s
        return out

    def extend(self, N: int) -> "Meshes":
        """A batch of ``len(self) * N`` meshes: each mesh repeated N times in a row (copies)."""
        if not isinstance(N, int) or N < 1:
            raise P3DLabValueError("Meshes.extend: N must be a positive int")
        idx = [i for i in range(self._N) for _ in range(N)]
        tex = self.textures.extend(N) if self.textures is not None else None
        normals = [self._verts_normals_list[i].clone() for i in idx] if self._verts_normals_list else None
        return self._replace(
            [self._verts_list[i].clone() for i in idx], [self._faces_list[i].clone() for i in idx], tex, normals
        )

    def sample_textures(self, fragments):
        """Texels (N, H, W, K, C) for rasterizer fragments; needs ``textures``."""
        if self.textures is None:
            raise P3DLabValueError(
                "Meshes has no textures; e.g. pass textures=TexturesVertex(torch.ones_like(verts)[None])"
            )
        return self.textures.sample_textures(fragments, faces_packed=self.faces_packed())


def _sub_textures(textures, sources: List[int], vert_ids: List[torch.Tensor], face_ids: List[torch.Tensor]):
    """The textures of ``Meshes.submeshes``: submesh k comes from mesh ``sources[k]`` and keeps its
    vertices ``vert_ids[k]`` and faces ``face_ids[k]``."""
    from p3dlab.structures.textures import TexturesAtlas, TexturesUV, TexturesVertex

    if isinstance(textures, TexturesVertex):
        feats = textures.verts_features_list()
        return textures._new([feats[n][v] for n, v in zip(sources, vert_ids)])
    if isinstance(textures, TexturesAtlas):
        atlas = textures.atlas_list()
        return textures._new([atlas[n][f] for n, f in zip(sources, face_ids)])
    if isinstance(textures, TexturesUV):
        maps, fuv, vuv = textures.maps_list(), textures.faces_uvs_list(), textures.verts_uvs_list()
        return textures._new([maps[n] for n in sources], [fuv[n][f] for n, f in zip(sources, face_ids)],
                             [vuv[n] for n in sources])  # fmt: skip
    raise NotImplementedError(f"Meshes.submeshes: {type(textures).__name__} does not support submeshes")


def _normalize_index(index, n: int) -> List[int]:
    if isinstance(index, int):
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a batch of {n}")
        return [index % n]
    if isinstance(index, slice):
        return list(range(n))[index]
    if isinstance(index, torch.Tensor):
        if index.dtype == torch.bool:
            if index.shape != (n,):
                raise IndexError(f"boolean index must have shape ({n},)")
            return index.nonzero().flatten().tolist()
        index = index.flatten().tolist()
    if isinstance(index, (list, tuple)):
        out = []
        for i in index:
            i = int(i)
            if not -n <= i < n:
                raise IndexError(f"index {i} out of range for a batch of {n}")
            out.append(i % n)
        return out
    raise IndexError(f"unsupported index type {type(index).__name__}")


def join_meshes_as_batch(meshes: Sequence[Meshes], include_textures: bool = True) -> Meshes:
    """Concatenate batches of meshes into one batch (textures must be of one type)."""
    meshes = list(meshes)
    if not meshes or any(not isinstance(m, Meshes) for m in meshes):
        raise P3DLabValueError("join_meshes_as_batch: expected a non-empty list of Meshes")
    verts = [v for m in meshes for v in m.verts_list()]
    faces = [f for m in meshes for f in m.faces_list()]
    textures = None
    if include_textures:
        texs = [m.textures for m in meshes]
        if all(t is None for t in texs):
            textures = None
        elif any(t is None for t in texs):
            raise P3DLabValueError("join_meshes_as_batch: some meshes have textures and some do not")
        else:
            textures = texs[0].join_batch(texs[1:])
    devices = {v.device for v in verts}
    if len(devices) > 1:
        raise P3DLabValueError(f"join_meshes_as_batch: meshes on different devices {sorted(map(str, devices))}")
    return Meshes(verts, faces, textures, _validate=False)


def join_meshes_as_scene(meshes: Union[Meshes, Sequence[Meshes]], include_textures: bool = True) -> Meshes:
    """Merge all meshes (of a batch, or of a list of batches) into a single mesh."""
    if isinstance(meshes, Meshes):
        meshes = [meshes]
    batch = join_meshes_as_batch(meshes, include_textures)
    textures = batch.textures.join_scene() if batch.textures is not None else None
    if len(batch) == 0:
        raise P3DLabValueError("join_meshes_as_scene: no meshes to join")
    return Meshes([batch.verts_packed()], [batch.faces_packed()], textures, _validate=False)
