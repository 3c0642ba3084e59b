import io
import os
import tracemalloc
import warnings

import numpy as np
import pytest
import torch

from p3dlab import data
from p3dlab.io import (
    IO,
    FileFormatError,
    OBJError,
    PLYError,
    UnsafePathError,
    load_obj,
    load_objs_as_meshes,
    load_ply,
    read_ply,
    save_obj,
    save_ply,
)


# ------------------------------------------------------------------ real files from other tools
def test_book_ply_files(testdata):
    d = testdata / "book/chap1/ply_io"
    v, f = load_ply(d / "cube.ply")
    assert v.shape == (8, 3) and f.shape == (12, 3) and v.abs().max() == 1
    v, f = load_ply(d / "cow.ply")
    assert v.shape == (2903, 3) and f.shape == (5804, 3)
    mesh = IO().load_mesh(d / "parallel_plane_color.ply")
    cols = mesh.textures.verts_features_packed()
    z = mesh.verts_packed()[:, 2]
    assert torch.equal(cols[z < 0], torch.tensor([[1.0, 0, 0]]).expand(4, 3))
    assert torch.equal(cols[z > 0], torch.tensor([[0.0, 0, 1.0]]).expand(4, 3))
    assert load_ply(d / "parallel_plane_mono.ply")[1].shape == (4, 3)
    cloud = IO().load_pointcloud(testdata / "book/chap3/pedestrian.ply")  # 'end_header ' with a trailing space
    assert cloud.num_points_per_cloud().tolist() == [239]


def test_book_and_pytorch3d_obj_files(testdata):
    verts, faces, aux = load_obj(testdata / "book/chap1/obj_io/cube.obj")
    assert verts.shape == (8, 3) and faces.verts_idx.shape == (12, 3)
    assert (faces.normals_idx == -1).all() and (faces.textures_idx == -1).all() and (faces.materials_idx == 0).all()
    door = aux.material_colors["Door"]
    assert torch.allclose(door["ambient_color"], torch.tensor([0.8, 0.6, 0.4]))
    assert torch.allclose(door["specular_color"], torch.tensor([0.9, 0.9, 0.9]))
    verts, faces, aux = load_obj(testdata / "book/chap1/obj_io/cube_texture.obj")
    assert aux.verts_uvs.shape == (14, 2) and aux.normals.shape == (6, 3)
    assert aux.texture_images["Skin"].shape == (250, 250, 3) and aux.texture_images["Skin"].max() <= 1
    assert (faces.textures_idx >= 0).all() and (faces.normals_idx >= 0).all()
    cow = testdata / "pytorch3d/cow_mesh/cow.obj"
    verts, faces, aux = load_obj(cow)
    assert verts.shape == (2930, 3) and faces.verts_idx.shape == (5856, 3) and aux.verts_uvs.shape == (3225, 2)
    assert aux.texture_images["material_1"].shape == (1024, 1024, 3)
    v, f, _ = load_obj(testdata / "pytorch3d/teapot.obj")
    assert v.shape == (1292, 3) and f.verts_idx.shape == (2464, 3)
    v, f, _ = load_obj(testdata / "book/chap2/data/diamond.obj")
    assert f.verts_idx.shape == (9, 3)  # the broken diamond of docs/errata.md#e26


def test_missing_material_files_warn(testdata):
    d = testdata / "pytorch3d/tests"
    with pytest.warns(UserWarning, match="not found"):
        load_obj(d / "missing_files_obj/model.obj")
    _, _, aux = load_obj(d / "obj_mtl_no_image/model.obj")
    # PyTorch3D (tests/test_io_obj.py, test_load_obj_mtl_no_image): an MTL without map_Kd gives {} images
    assert aux.texture_images == {} and list(aux.material_colors) == ["material_1"]
    meshes = load_objs_as_meshes([d / "missing_usemtl/cow.obj"])
    assert type(meshes.textures).__name__ == "TexturesUV"


def test_ply_with_uvs(testdata):
    data_ = read_ply(testdata / "pytorch3d/tests/uvs.ply")
    assert "vertex" in data_.elements and len(data_.elements["vertex"]["x"]) == 8


# ------------------------------------------------------------------ round trips
def test_ply_round_trips(tmp_path):
    m = data.ico_sphere(2)
    v, f = m.verts_packed(), m.faces_packed()
    cols = torch.rand(v.shape[0], 3)
    for ascii_ in (False, True):
        p = tmp_path / f"s_{ascii_}.ply"
        save_ply(p, v, f, verts_normals=m.verts_normals_packed(), colors=cols, ascii=ascii_)
        v2, f2 = load_ply(p)
        assert torch.equal(f2, f)
        if ascii_:
            assert torch.allclose(v2, v, atol=1e-7)
        else:
            assert torch.equal(v2, v)
        mesh = IO().load_mesh(p)
        assert torch.allclose(mesh.textures.verts_features_packed(), (cols * 255).round() / 255, atol=1e-6)
        assert torch.allclose(mesh.verts_normals_packed(), m.verts_normals_packed(), atol=1e-6)
    # point cloud without faces
    p = tmp_path / "pc.ply"
    save_ply(p, v)
    v3, f3 = load_ply(p)
    assert f3.shape == (0, 3) and torch.equal(v3, v)


def test_binary_cube_has_252_data_bytes(tmp_path):
    m = data.cube()
    p = tmp_path / "cube.ply"
    save_ply(p, m.verts_packed(), m.faces_packed())
    raw = p.read_bytes()
    assert len(raw) - (raw.index(b"end_header\n") + len(b"end_header\n")) == 8 * 12 + 12 * 13


def test_obj_round_trip_with_uvs_normals_and_texture(tmp_path):
    img = data.uv_checker_texture(32)
    s = data.uv_sphere(6, 8, texture=img)
    tex = s.textures
    p = tmp_path / "sphere.obj"
    IO().save_mesh(s, p)
    back = IO().load_mesh(p)
    assert torch.allclose(back.verts_packed(), s.verts_packed(), atol=1e-6)
    assert torch.equal(back.faces_packed(), s.faces_packed())
    assert torch.allclose(back.textures.verts_uvs_list()[0], tex.verts_uvs_list()[0], atol=1e-6)
    assert torch.allclose(back.textures.maps_list()[0], img, atol=1 / 255)
    n = s.verts_normals_packed()
    save_obj(tmp_path / "n.obj", s.verts_packed(), s.faces_packed(), normals=n, faces_normals_idx=s.faces_packed())
    _, faces, aux = load_obj(tmp_path / "n.obj")
    assert torch.allclose(aux.normals, n, atol=1e-6) and torch.equal(faces.normals_idx, s.faces_packed())


# ------------------------------------------------------------------ dialects written by hand
def _obj(text):
    return load_obj(io.StringIO(text))


def test_obj_dialects():
    text = """# comment
o thing
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0 # trailing comment
vt 0 0
vt 1 0
vt 1 1
vn 0 0 1
g group
s off
f 1 2 3 4
f -4/-3 -3/-2 -2/-1
f 1//1 3//1 4//1
f 1/1/1 2/2/1 3/3/1
"""
    verts, faces, aux = _obj(text)
    assert verts.shape == (4, 3)
    # the quad becomes a fan (0,1,2), (0,2,3); the others follow in order
    assert faces.verts_idx.tolist() == [[0, 1, 2], [0, 2, 3], [0, 1, 2], [0, 2, 3], [0, 1, 2]]
    assert faces.textures_idx.tolist() == [[-1, -1, -1]] * 2 + [[0, 1, 2], [-1, -1, -1], [0, 1, 2]]
    assert faces.normals_idx.tolist() == [[-1, -1, -1]] * 3 + [[0, 0, 0], [0, 0, 0]]
    assert (faces.materials_idx == -1).all()


def test_obj_relative_indices_follow_interleaving_and_crlf_bom():
    text = "\ufeffv 0 0 0\r\nv 1 0 0\r\nv 0 1 0\r\nf -3 -2 -1\r\nv 5 5 5\r\nv 6 5 5\r\nf -3 -2 -1\r\n"
    verts, faces, _ = _obj(text)
    assert faces.verts_idx.tolist() == [[0, 1, 2], [2, 3, 4]]


def test_ply_dialects_big_endian_doubles_uchar_colours_and_quads():
    header = (
        "ply\nformat binary_big_endian 1.0\ncomment hi\nobj_info made by hand\n"
        "element vertex 4\nproperty double x\nproperty double y\nproperty double z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        "element face 1\nproperty list uchar uint vertex_indices\n"
        "element extra 2\nproperty short a\nend_header\n"
    ).encode()
    vdt = np.dtype([("x", ">f8"), ("y", ">f8"), ("z", ">f8"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    v = np.array([(0, 0, 0, 255, 0, 0), (1, 0, 0, 0, 255, 0), (1, 1, 0, 0, 0, 255), (0, 1, 0, 10, 20, 30)], vdt)
    face = np.array([4], "u1").tobytes() + np.array([0, 1, 2, 3], ">u4").tobytes()
    extra = np.array([7, -8], ">i2").tobytes()
    parsed = read_ply(io.BytesIO(header + v.tobytes() + face + extra))
    assert parsed.comments == ["hi"] and parsed.obj_info == ["made by hand"]
    assert parsed.elements["extra"]["a"].tolist() == [7, -8]
    verts, faces = load_ply(io.BytesIO(header + v.tobytes() + face + extra))
    assert verts.dtype == torch.float32 and faces.tolist() == [[0, 1, 2], [0, 2, 3]]


def test_ply_mixed_polygons_ascii():
    text = b"ply\r\nformat ascii 1.0\r\nelement vertex 5\r\nproperty float x\r\nproperty float y\r\nproperty float z\r\nelement face 2\r\nproperty list uchar int vertex_index\r\nend_header\r\n0 0 0\r\n1 0 0\r\n1 1 0\r\n0 1 0\r\n2 2 0\r\n3 0 1 2\r\n4 0 2 3 4\r\n"
    verts, faces = load_ply(io.BytesIO(text))
    assert faces.tolist() == [[0, 1, 2], [0, 2, 3], [0, 3, 4]]


# ------------------------------------------------------------------ hostile files
def test_ply_claiming_a_trillion_vertices_fails_fast_without_allocating():
    for fmt in ("ascii", "binary_little_endian"):
        payload = b"0 0 0\n" * 4 if fmt == "ascii" else b"\0" * 24
        blob = (
            f"ply\nformat {fmt} 1.0\nelement vertex 1000000000000\nproperty float x\nproperty float y\nproperty float z\nend_header\n".encode()
            + payload
        )
        tracemalloc.start()
        with pytest.raises(PLYError) as err:
            load_ply(io.BytesIO(blob))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 1_000_000
        assert "1000000000000" in str(err.value) or "values" in str(err.value)


@pytest.mark.parametrize(
    "blob, match",
    [
        (b"", "not a PLY"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "not a PLY"),
        (b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nend_header\n1\n", "line"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\nabc\n", "non-numeric"),
        (b"ply\nformat ascii 1.0\nelement vertex -3\nend_header\n", "negative"),
        (b"ply\nformat ascii 1.0\nproperty float x\nend_header\n", "before any element"),
        (
            b"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
            + b"\0" * 10,
            "byte",
        ),
        (b"ply\nformat ascii 2.0\nend_header\n", "version"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty fancy x\nend_header\n1\n", "unknown property"),
        (
            b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n",
            "vertex",
        ),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\0\n", "NUL"),
    ],
)
def test_bad_ply_files_raise_a_named_error(blob, match):
    with pytest.raises(PLYError, match=match):
        load_ply(io.BytesIO(blob))


@pytest.mark.parametrize(
    "text, match",
    [
        ("v 0 0 0\nv 1 0 0\nf 1 2 3\n", "out of range"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2\n", "at least 3"),
        ("v 0 0 zero\n", "non-numeric"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1/1 2 3\n", "inconsistent"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 x\n", "non-integer"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 -9\n", "out of range"),
        ("v 0 0\n", "at least 3"),
        ("v nan 0 0\n", "non-finite"),
    ],
)
def test_bad_obj_files_raise_a_named_error(text, match):
    with pytest.raises(OBJError, match=match) as err:
        _obj(text)
    assert "line" in str(err.value)


def test_obj_nul_bytes_and_errors_name_file_and_line(tmp_path):
    p = tmp_path / "bad.obj"
    p.write_bytes(b"v 0 0 0\nv 1 0 0\n\0\0")
    with pytest.raises(OBJError, match=r"bad\.obj, line 3"):
        load_obj(p)


def test_mtllib_and_map_kd_outside_the_folder_are_refused(tmp_path):
    inner = tmp_path / "inner"
    inner.mkdir()
    (tmp_path / "secret.mtl").write_text("newmtl m\nKd 1 0 0\n")
    obj = inner / "model.obj"
    obj.write_text("mtllib ../secret.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nusemtl m\nf 1 2 3\n")
    with pytest.raises(UnsafePathError, match="line 1"):
        load_obj(obj)
    _, faces, aux = load_obj(obj, allow_outside_paths=True)
    assert torch.allclose(aux.material_colors["m"]["diffuse_color"], torch.tensor([1.0, 0, 0]))
    (inner / "tex.mtl").write_text("newmtl t\nmap_Kd /etc/passwd\n")
    obj.write_text("mtllib tex.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(UnsafePathError, match="tex.mtl, line 2"):
        load_obj(obj)


def test_io_rejects_unknown_formats(tmp_path):
    p = tmp_path / "x.stl"
    p.write_text("solid")
    with pytest.raises(FileFormatError, match="no registered"):
        IO().load_mesh(p)


def test_textured_cow_loads_as_a_textured_mesh(testdata):
    meshes = load_objs_as_meshes([testdata / "pytorch3d/cow_mesh/cow.obj"])
    assert meshes.num_faces_per_mesh().tolist() == [5856]
    assert meshes.textures.maps_list()[0].shape == (1024, 1024, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        IO().load_mesh(os.fspath(testdata / "pytorch3d/cow_mesh/cow.obj"))
