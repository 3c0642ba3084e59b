"""``IO``: one entry point for meshes and point clouds, dispatching on the file's format.

Formats are pluggable: ``IO().register_meshes_format(interpreter)`` adds an object with
``read(path, include_textures, device) -> Meshes | None`` and
``save(meshes, path, binary, include_textures) -> bool`` (None/False: "not my format").
"""

from __future__ import annotations

import os
from typing import List

import torch

from p3dlab.io.errors import FileFormatError
from p3dlab.io.obj_io import load_objs_as_meshes, save_obj
from p3dlab.io.ply_io import mesh_arrays, read_ply, save_ply


class MeshObjFormat:
    def read(self, path, include_textures=True, device="cpu", **kwargs):
        if not str(path).lower().endswith(".obj"):
            return None
        return load_objs_as_meshes([path], device=device, load_textures=include_textures, **kwargs)

    def save(self, meshes, path, binary=True, include_textures=True, **kwargs):
        if not str(path).lower().endswith(".obj"):
            return False
        tex = meshes.textures if include_textures else None
        if tex is not None and hasattr(tex, "maps_list"):
            save_obj(
                path,
                meshes.verts_list()[0],
                meshes.faces_list()[0],
                verts_uvs=tex.verts_uvs_list()[0],
                faces_uvs=tex.faces_uvs_list()[0],
                texture_map=tex.maps_list()[0],
            )
        else:
            save_obj(path, meshes.verts_list()[0], meshes.faces_list()[0])
        return True


class MeshPlyFormat:
    def read(self, path, include_textures=True, device="cpu", **kwargs):
        if not str(path).lower().endswith(".ply"):
            return None
        from p3dlab.structures import Meshes, TexturesVertex

        verts, faces, extras = mesh_arrays(read_ply(path), path)
        v = torch.from_numpy(verts).to(device)
        tex = None
        if include_textures and "colors" in extras:
            tex = TexturesVertex([torch.from_numpy(extras["colors"]).to(device)])
        normals = [torch.from_numpy(extras["normals"]).to(device)] if "normals" in extras else None
        return Meshes([v], [torch.from_numpy(faces).to(device)], tex, verts_normals=normals)

    def save(self, meshes, path, binary=True, include_textures=True, **kwargs):
        if not str(path).lower().endswith(".ply"):
            return False
        colors = None
        tex = meshes.textures
        if include_textures and tex is not None and hasattr(tex, "verts_features_list"):
            colors = tex.verts_features_list()[0][:, :3]
        save_ply(path, meshes.verts_list()[0], meshes.faces_list()[0], ascii=not binary, colors=colors, **kwargs)
        return True


class IO:
    """``IO().load_mesh(path)``, ``save_mesh(meshes, path)``, ``load_pointcloud``, ``save_pointcloud``."""

    def __init__(self):
        self._mesh_formats: List = [MeshObjFormat(), MeshPlyFormat()]

    def register_meshes_format(self, interpreter) -> None:
        self._mesh_formats.insert(0, interpreter)

    def load_mesh(self, path, include_textures: bool = True, device="cpu", **kwargs):
        path = os.fspath(path)
        for fmt in self._mesh_formats:
            out = fmt.read(path, include_textures=include_textures, device=device, **kwargs)
            if out is not None:
                return out
        raise FileFormatError("no registered mesh format reads this file (known: .obj, .ply)", path)

    def save_mesh(self, meshes, path, binary: bool = True, include_textures: bool = True, **kwargs) -> None:
        if len(meshes) != 1:
            raise FileFormatError(f"save_mesh writes one mesh, got a batch of {len(meshes)}", path)
        path = os.fspath(path)
        for fmt in self._mesh_formats:
            if fmt.save(meshes, path, binary=binary, include_textures=include_textures, **kwargs):
                return
        raise FileFormatError("no registered mesh format writes this file (known: .obj, .ply)", path)

    def load_pointcloud(self, path, device="cpu"):
        """A PLY's vertices as ``Pointclouds`` with normals and colour features when present."""
        from p3dlab.structures import Pointclouds

        path = os.fspath(path)
        if not path.lower().endswith(".ply"):
            raise FileFormatError("point clouds are read from .ply files", path)
        verts, _, extras = mesh_arrays(read_ply(path), path)
        wrap = lambda k: [torch.from_numpy(extras[k]).to(device)] if k in extras else None
        return Pointclouds([torch.from_numpy(verts).to(device)], normals=wrap("normals"), features=wrap("colors"))

    def save_pointcloud(self, cloud, path, binary: bool = True, **kwargs) -> None:
        if len(cloud) != 1:
            raise FileFormatError(f"save_pointcloud writes one cloud, got {len(cloud)}", path)
        feats = cloud.features_list()
        normals = cloud.normals_list()
        save_ply(
            path,
            cloud.points_list()[0],
            verts_normals=normals[0] if normals else None,
            colors=feats[0][:, :3] if feats else None,
            ascii=not binary,
            **kwargs,
        )
