"""p3dlab's PLY/OBJ files against plyfile and trimesh (dev dependencies), both directions."""

import io

import numpy as np
import pytest
import torch

from p3dlab import data
from p3dlab.io import load_obj, load_ply, save_obj, save_ply

plyfile = pytest.importorskip("plyfile")
trimesh = pytest.importorskip("trimesh")


@pytest.mark.parametrize("ascii_", [False, True])
def test_plyfile_reads_what_we_write(tmp_path, ascii_):
    m = data.ico_sphere(2)
    p = tmp_path / "a.ply"
    cols = torch.rand(m.verts_packed().shape[0], 3)
    save_ply(p, m.verts_packed(), m.faces_packed(), colors=cols, ascii=ascii_)
    ply = plyfile.PlyData.read(str(p))
    v = np.stack([ply["vertex"][c] for c in "xyz"], 1)
    assert np.allclose(v, m.verts_packed().numpy(), atol=1e-6)
    assert np.array_equal(np.stack(ply["face"]["vertex_indices"]), m.faces_packed().numpy())
    assert np.array_equal(ply["vertex"]["red"], (cols[:, 0] * 255 + 0.5).to(torch.uint8).numpy())


@pytest.mark.parametrize("byte_order", ["<", ">", "="])
@pytest.mark.parametrize("text", [False, True])
def test_we_read_what_plyfile_writes(tmp_path, byte_order, text):
    rng = np.random.default_rng(0)
    verts = np.zeros(50, dtype=[("x", "f8"), ("y", "f8"), ("z", "f8"), ("quality", "i2")])
    for c in "xyz":
        verts[c] = rng.normal(size=50)
    faces = np.zeros(20, dtype=[("vertex_indices", "O"), ("flags", "u1")])
    for i in range(20):
        faces["vertex_indices"][i] = rng.choice(50, size=3 + i % 2, replace=False).astype(np.int32)
    el = [
        plyfile.PlyElement.describe(verts, "vertex"),
        plyfile.PlyElement.describe(
            faces, "face", len_types={"vertex_indices": "u1"}, val_types={"vertex_indices": "i4"}
        ),
    ]
    p = tmp_path / "b.ply"
    plyfile.PlyData(el, text=text, byte_order=byte_order).write(str(p))
    v, f = load_ply(p)
    assert np.allclose(v.numpy(), np.stack([verts[c] for c in "xyz"], 1).astype(np.float32))
    expected = []
    for poly in faces["vertex_indices"]:
        expected += [[poly[0], poly[i], poly[i + 1]] for i in range(1, len(poly) - 1)]
    assert f.tolist() == expected


def test_trimesh_agrees_on_obj(tmp_path):
    m = data.teapot(3)
    p = tmp_path / "t.obj"
    save_obj(p, m.verts_packed(), m.faces_packed())
    tm = trimesh.load(str(p), process=False, force="mesh")
    verts, faces, _ = load_obj(p)
    assert np.allclose(tm.vertices, verts.numpy(), atol=1e-6)
    assert np.array_equal(tm.faces, faces.verts_idx.numpy())
    buf = io.StringIO(trimesh.exchange.obj.export_obj(tm))
    v2, f2, _ = load_obj(buf)
    assert np.allclose(v2.numpy(), tm.vertices, atol=1e-6) and np.array_equal(f2.verts_idx.numpy(), tm.faces)
