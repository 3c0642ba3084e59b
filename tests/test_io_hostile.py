"""Hostile and malformed files (issue 34): each defect with the smallest input that shows it.

Every reader failure must be a ``FileFormatError`` that names the file and the line (text) or byte
offset (binary data); nothing may run a program, block, or allocate what the file cannot justify.
"""

import io
import os
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import warnings
import zlib
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.io import IO, FileFormatError, OBJError, PLYError, load_mtl, load_obj, load_ply, obj_io, read_ply
from p3dlab.io.ply_io import RaggedList

TRI = "v 0 0 0\nv 1 0 0\nv 0 1 0\n"
XYZ = "property float x\nproperty float y\nproperty float z\n"


def _located(err: FileFormatError) -> bool:
    return err.line is not None or err.offset is not None


def _ply(fmt: str, header_rest: str, body: bytes = b"") -> bytes:
    return f"ply\nformat {fmt} 1.0\n{header_rest}end_header\n".encode() + body


def _png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height RGB pixels, with almost no pixel data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _image(fmt: str, size=(4, 3)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (255, 0, 0)).save(buf, format=fmt)
    return buf.getvalue()


def _textured(tmp_path, textures: dict, faces_use=None):
    """model.obj + model.mtl in tmp_path: one material per entry of ``textures`` (name -> image file)."""
    mtl = "".join(f"newmtl {name}\nKd 1 1 1\nmap_Kd {image}\n" for name, image in textures.items())
    (tmp_path / "model.mtl").write_text(mtl)
    uses = "".join(f"usemtl {name}\nf 1/1 2/2 3/3\n" for name in (faces_use or textures))
    obj = tmp_path / "model.obj"
    obj.write_text("mtllib model.mtl\n" + TRI + "vt 0 0\nvt 1 0\nvt 0 1\n" + uses)
    return obj


@contextmanager
def _no_hang(seconds: int = 20):
    """Fail instead of hanging if the body blocks (a FIFO opened for reading waits for a writer)."""

    def timeout(*_):
        raise TimeoutError("the reader blocked")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


needs_posix = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs, /dev/zero and SIGALRM are POSIX")


# ------------------------------------------------------------------ textures
def test_an_eps_texture_is_refused_without_trying_its_decoder(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    tried = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: tried.append("eps") or 1 / 0)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: tried.append("gs"))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n%%EOF\n"
    for name in ("tex.eps", "tex.png"):  # the name does not matter, the content is never tried as EPS
        (tmp_path / name).write_bytes(eps)
        obj = _textured(tmp_path, {"m": name})
        with pytest.raises(OBJError, match=r"model\.mtl, line 3: texture .* is not a PNG, JPEG, BMP or TGA image"):
            load_obj(obj)
    assert tried == []


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TGA"])
def test_plain_raster_textures_load(tmp_path, fmt):
    (tmp_path / "tex.img").write_bytes(_image(fmt))
    _, _, aux = load_obj(_textured(tmp_path, {"m": "tex.img"}))
    image = aux.texture_images["m"]
    assert image.shape == (3, 4, 3) and image.dtype == torch.float32
    assert torch.allclose(image[..., 0], torch.ones(3, 4), atol=0.02)


@pytest.mark.parametrize("side", [13000, 9000])
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch, side):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    bomb = _png(side, side)
    assert len(bomb) < 200
    (tmp_path / "bomb.png").write_bytes(bomb)
    obj = _textured(tmp_path, {"m": "bomb.png"})
    tracemalloc.start()
    try:
        with pytest.raises(OBJError) as err:
            load_obj(obj)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(err.value)
    assert f"{side} x {side} = {side * side} pixels" in msg and str(2**26) in msg and "P3DLAB_MAX_TEXTURE_PIXELS" in msg
    assert err.value.line == 3 and peak < 5_000_000


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS caps the address space on Linux")
def test_a_decompression_bomb_is_refused_under_a_capped_address_space(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_png(13000, 13000))  # 507 MB as uint8 RGB, 2 GB as float32
    obj = _textured(tmp_path, {"m": "bomb.png"})
    script = (
        "import resource\n"
        "cap = 1536 * 2**20\n"
        "resource.setrlimit(resource.RLIMIT_AS, (cap, cap))\n"
        "from p3dlab.io import OBJError, load_obj\n"
        "try:\n"
        f"    load_obj({str(obj)!r})\n"
        "except OBJError as e:\n"
        "    print('refused:', e)\n"
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    assert "refused:" in child.stdout and "13000 x 13000" in child.stdout


def test_the_pixel_budget_is_an_environment_knob_shared_by_all_textures(tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(_image("PNG", (8, 8)))
    (tmp_path / "b.png").write_bytes(_image("PNG", (8, 8)))
    monkeypatch.setenv("P3DLAB_MAX_TEXTURE_PIXELS", "100")
    _, _, aux = load_obj(_textured(tmp_path, {"a": "a.png"}))
    assert aux.texture_images["a"].shape == (8, 8, 3)
    with pytest.raises(OBJError, match="64 of them taken by other textures"):
        load_obj(_textured(tmp_path, {"a": "a.png", "b": "b.png"}))
    monkeypatch.setenv("P3DLAB_MAX_TEXTURE_PIXELS", "63")
    with pytest.raises(OBJError, match="8 x 8 = 64 pixels, over the limit of 63"):
        load_obj(_textured(tmp_path, {"a": "a.png"}))
    monkeypatch.setenv("P3DLAB_MAX_TEXTURE_PIXELS", "lots")
    with pytest.raises(P3DLabValueError, match="P3DLAB_MAX_TEXTURE_PIXELS"):
        load_obj(_textured(tmp_path, {"a": "a.png"}))


def test_a_texture_shared_by_materials_is_decoded_once(tmp_path, monkeypatch):
    from PIL import Image

    (tmp_path / "a.png").write_bytes(_image("PNG", (8, 8)))
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k))
    monkeypatch.setenv("P3DLAB_MAX_TEXTURE_PIXELS", "64")  # one copy fits, two would not
    _, _, aux = load_obj(_textured(tmp_path, {"a": "a.png", "b": "a.png"}))
    assert len(opened) == 1 and set(aux.texture_images) == {"a", "b"}


# ------------------------------------------------------------------ devices, FIFOs, directories
@needs_posix
def test_devices_are_refused():
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    with _no_hang():
        for reader in (load_ply, load_obj, read_ply):
            with pytest.raises(FileFormatError, match="/dev/zero is a device"):
                reader("/dev/zero")
        with open("/dev/zero", "rb") as stream, pytest.raises(FileFormatError, match="a device"):
            load_ply(stream)


@needs_posix
def test_fifos_and_directories_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.ply"
    os.mkfifo(fifo)
    with _no_hang():
        for reader in (load_ply, load_obj, IO().load_mesh, IO().load_pointcloud):
            with pytest.raises(FileFormatError, match="FIFO"):
                reader(fifo)
        for reader in (load_ply, load_obj):
            with pytest.raises(FileFormatError, match="is a directory"):
                reader(tmp_path)
        os.mkfifo(tmp_path / "pipe.mtl")
        obj = tmp_path / "a.obj"
        obj.write_text("mtllib pipe.mtl\n" + TRI + "f 1 2 3\n")
        with pytest.raises(OBJError, match=r"a\.obj, line 1: .*pipe\.mtl is a FIFO"):
            load_obj(obj)
        os.mkfifo(tmp_path / "pipe.png")
        with pytest.raises(OBJError, match=r"model\.mtl, line 3: .*pipe\.png is a FIFO"):
            load_obj(_textured(tmp_path, {"m": "pipe.png"}))
        (tmp_path / "folder.png").mkdir()
        with pytest.raises(OBJError, match=r"model\.mtl, line 3: .*folder\.png is a directory"):
            load_obj(_textured(tmp_path, {"m": "folder.png"}))


def test_in_memory_streams_still_work():
    verts, faces, _ = load_obj(io.StringIO(TRI + "f 1 2 3\n"))
    assert faces.verts_idx.tolist() == [[0, 1, 2]]
    verts, faces, _ = load_obj(io.BytesIO((TRI + "f 1 2 3\n").encode()))
    assert verts.shape == (3, 3)
    blob = _ply("ascii", "element vertex 1\n" + XYZ, b"1 2 3\n")
    assert load_ply(io.BytesIO(blob))[0].tolist() == [[1, 2, 3]]


# ------------------------------------------------------------------ PLY: sizes the header declares
def _timed(fn, seconds: float):
    start = time.perf_counter()
    out = fn()
    assert time.perf_counter() - start < seconds
    return out


def test_element_counts_beyond_int64_or_the_file_are_refused_before_allocating():
    with pytest.raises(PLYError, match="line 3: element count 9223372036854775808 is too large"):
        read_ply(io.BytesIO(_ply("binary_little_endian", f"element nothing {2**63}\n")))
    for bad in ("1_0", "+5", "5.0", "0x10", "-0"):
        with pytest.raises(PLYError, match="line 3: element count"):
            read_ply(io.BytesIO(_ply("ascii", f"element vertex {bad}\n" + XYZ)))
    tracemalloc.start()
    try:
        # records of no bytes cost nothing, however many
        empty = read_ply(io.BytesIO(_ply("binary_little_endian", f"element nothing {2**63 - 1}\n")))
        assert empty.elements["nothing"] == {}
        for fmt, lists in [(f, lst) for f in ("ascii", "binary_big_endian") for lst in (False, True)]:
            prop = "property list uchar int vertex_indices\n" if lists else XYZ
            with pytest.raises(PLYError) as err:
                read_ply(io.BytesIO(_ply(fmt, f"element vertex {2**63 - 1}\n{prop}", b"0 0 0\n" * 3)))
            assert _located(err.value)
        assert tracemalloc.get_traced_memory()[1] < 1_000_000
    finally:
        tracemalloc.stop()


def test_non_ascii_digits_in_an_element_count_are_refused():
    blob = b"ply\nformat ascii 1.0\nelement vertex \xd9\xa1\n" + XYZ.encode() + b"end_header\n1 2 3\n"
    with pytest.raises(PLYError, match="line 3: non-ASCII"):
        read_ply(io.BytesIO(blob))


def test_huge_headers_parse_in_linear_time():
    elements = "".join(f"element e{i} 0\n" for i in range(60_000))
    ply = _timed(lambda: read_ply(io.BytesIO(_ply("ascii", elements))), 15)
    assert len(ply.header) == 60_000
    props = "".join(f"property uchar p{i}\n" for i in range(45_000))
    blob = _ply("binary_little_endian", "element vertex 1\n" + props, bytes(45_000))
    ply = _timed(lambda: read_ply(io.BytesIO(blob)), 15)
    assert len(ply.elements["vertex"]) == 45_000


@pytest.mark.parametrize("count", ["inf", "nan", "-1", "2.5", "300", "1e30"])
def test_bad_ascii_list_lengths_name_their_line(count):
    head = "element vertex 3\n" + XYZ + "element face 2\nproperty list uchar int vertex_indices\n"
    blob = _ply("ascii", head, f"0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n{count} 0 1 2\n".encode())
    with pytest.raises(PLYError, match=r"line 14: record 1 of 'face': list length"):
        load_ply(io.BytesIO(blob))


def _faces_ply(fmt: str, polygons, n_verts=3, count="uchar", item="int") -> bytes:
    head = (
        f"element vertex {n_verts}\n"
        + XYZ
        + f"element face {len(polygons)}\nproperty list {count} {item} vertex_indices\n"
    )
    if fmt == "ascii":
        body = "0 0 0\n" * n_verts + "".join(f"{len(p)} {' '.join(map(str, p))}\n" for p in polygons)
        return _ply(fmt, head, body.encode())
    body = np.zeros(3 * n_verts, "<f4").tobytes()
    for p in polygons:
        body += np.array([len(p)], "<" + {"uchar": "u1", "int": "i4"}[count]).tobytes()
        body += np.array(p, "<" + {"int": "i4", "float": "f4"}[item]).tobytes()
    return _ply(fmt, head, body)


def test_a_polygon_is_bounded_by_the_bytes_left_in_the_file():
    blob = _faces_ply("binary_little_endian", [[0, 1, 2]], count="int")
    claim = blob.replace(np.array([3], "<i4").tobytes() + np.array([0, 1, 2], "<i4").tobytes(),
                         np.array([2_000_000], "<i4").tobytes() + np.array([0, 1, 2], "<i4").tobytes())  # fmt: skip
    with pytest.raises(PLYError, match="a list of 2000000 items does not fit") as err:
        load_ply(io.BytesIO(claim))
    assert err.value.offset == len(blob) - 16
    corners = (np.arange(200_000) % 3).tolist()
    big = _faces_ply("binary_little_endian", [corners], count="int")
    tracemalloc.start()
    try:
        _, faces = load_ply(io.BytesIO(big))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert faces.shape == (199_998, 3) and faces[-1].tolist() == [0, 0, 1]
    assert peak < 10 * len(big)  # the triangles themselves take 6x the file


def test_ragged_lists_are_stored_flat():
    polygons = [[0, 1, 2], [0, 1, 2, 0]] * 10_000
    blob = _faces_ply("binary_little_endian", polygons)
    tracemalloc.start()
    try:
        lists = read_ply(io.BytesIO(blob)).elements["face"]["vertex_indices"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(lists, RaggedList) and len(lists) == 20_000 and lists.values.shape == (70_000,)
    assert lists[1].tolist() == [0, 1, 2, 0] and lists[-2].tolist() == [0, 1, 2]
    assert peak < 8 * len(blob)
    _, faces = load_ply(io.BytesIO(blob))
    assert faces.shape == (30_000, 3) and faces[:3].tolist() == [[0, 1, 2], [0, 1, 2], [0, 2, 0]]


# ------------------------------------------------------------------ PLY: every error says where
def test_a_bad_face_index_names_the_line_or_byte_offset_of_its_face():
    text = _faces_ply("ascii", [[0, 1, 2], [0, 1, 3]])
    with pytest.raises(PLYError, match=r"line 14: face 1 refers to vertex \[0, 1, 3\] but there are 3 vertices"):
        load_ply(io.BytesIO(text))
    for polygons, face_start in (([[0, 1, 2], [0, 1, 3]], 36 + 13), ([[0, 1, 2, 1], [0, 1, 3]], 36 + 17)):
        blob = _faces_ply("binary_little_endian", polygons)
        header = blob.index(b"end_header\n") + len(b"end_header\n")
        with pytest.raises(PLYError, match="face 1 refers to vertex") as err:
            load_ply(io.BytesIO(blob))
        assert err.value.offset == header + face_start


def test_non_finite_coordinates_are_refused_with_their_place_also_through_io(tmp_path):
    head = "element vertex 2\n" + XYZ
    verts = np.array([[0, 0, 0], [np.nan, 0, 0]], "<f4").tobytes()
    blob = _ply("binary_little_endian", head, verts)
    assert np.isnan(read_ply(io.BytesIO(blob)).elements["vertex"]["x"][1])  # read_ply keeps the values
    path = tmp_path / "nan.ply"
    path.write_bytes(blob)
    for reader in (load_ply, IO().load_mesh, IO().load_pointcloud):
        with pytest.raises(PLYError, match="vertex 1 has non-finite coordinates") as err:
            reader(path)
        assert err.value.offset == len(blob) - 12
    with pytest.raises(PLYError, match="line 9: vertex 1 has non-finite"):
        load_ply(io.BytesIO(_ply("ascii", head, b"0 0 0\n0 inf 0\n")))
    with pytest.raises(PLYError, match="line 10: property 'y' of 'vertex': value 1e\\+39 overflows float32"):
        load_ply(io.BytesIO(_ply("ascii", head, b"0 0 0\n\n0 1e39 0\n")))
    double = "element vertex 1\nproperty double x\nproperty double y\nproperty double z\n"
    with pytest.raises(PLYError, match="non-finite coordinates"):  # fits a double, not the float32 result
        load_ply(io.BytesIO(_ply("ascii", double, b"0 1e39 0\n")))


@pytest.mark.parametrize(
    "token, line",
    [(b"1_0", 9), (b"\xd9\xa1", 9), (b"1\x0b2", 9), (b"0x10", 9), (b"1e", 9), (b"\x00", 9)],
)
def test_ascii_values_follow_the_decimal_grammar(token, line):
    blob = _ply("ascii", "element vertex 2\n" + XYZ, b"0 0 0\n0 " + token + b" 0\n")
    with pytest.raises(PLYError, match=f"line {line}: ") as err:
        read_ply(io.BytesIO(blob))
    assert "non-numeric" in str(err.value) or "byte" in str(err.value)


def test_float_face_indices_are_refused():
    blob = _faces_ply("binary_little_endian", [[0, 1.5, 2]], item="float")
    with pytest.raises(PLYError, match="line 8: face property 'vertex_indices' must be a list of integers"):
        load_ply(io.BytesIO(blob))
    with pytest.raises(PLYError, match="line 13: property 'vertex_indices' of 'face': value 1.5 is not an integer"):
        load_ply(io.BytesIO(_faces_ply("ascii", [[0, 1.5, 2]])))


@pytest.mark.parametrize(
    "header, match",
    [
        ("element vertex 1\nproperty float x\0n\nproperty float y\nproperty float z\n", "line 4: control character"),
        ("element vertex 1\n" + XYZ + "property float x\n", "line 7: property 'x' declared twice"),
        ("element vertex 1\nproperty float x\nproperty float y\nproperty list uchar float z\n", "line 6: .*'z' is a list"),
        ("element vertex 1\n" + XYZ + "property list uchar uchar red\nproperty uchar green\nproperty uchar blue\n",
         "line 7: colours must be scalar properties, but 'red' is a list"),
        ("element vertex 1\n" + XYZ + "property float nx\nproperty list uchar float ny\nproperty float nz\n",
         "line 8: normals must be scalar"),
        ("element vertex 1\n" + XYZ + "property list uchar float u\nproperty float v\n", "line 7: texture coordinates"),
        ("element vertex 1\n\x0bproperty float x\n", "line 4: control character"),
        ("element vert\xe9x 1\n" + XYZ, "line 3: non-ASCII"),
        ("format ascii 1.0\nelement vertex 1\n" + XYZ, "line 3: a second 'format' line"),
        ("element face 0\n", "line 4: no 'vertex' element"),
    ],
)  # fmt: skip
def test_malformed_headers_are_refused_with_their_line(tmp_path, header, match):
    values = b" ".join([b"0"] * header.count("property")) + b"\n"  # a list of 0 items takes one value
    path = tmp_path / "bad.ply"
    path.write_bytes(_ply("ascii", header, values if "vertex 1" in header else b""))
    with pytest.raises(PLYError, match=match):
        IO().load_mesh(path)


def test_headers_may_have_utf8_comments_and_old_mac_line_ends():
    blob = _ply("ascii", "comment créé à la main\nelement vertex 1\n" + XYZ, b"1 2 3\n")
    ply = read_ply(io.BytesIO(blob))
    assert ply.comments == ["créé à la main"]
    cr = blob.replace(b"\n", b"\r")
    assert load_ply(io.BytesIO(cr))[0].tolist() == [[1, 2, 3]]
    with pytest.raises(PLYError, match="line 10: 1 values after"):
        load_ply(io.BytesIO(cr + b"4\r"))


# ------------------------------------------------------------------ OBJ and MTL: sizes and repeats
def test_a_material_file_named_2000_times_is_read_once(tmp_path, monkeypatch):
    (tmp_path / "m.mtl").write_text("newmtl a\nKd 1 0 0\n")
    obj = tmp_path / "a.obj"
    obj.write_text("mtllib m.mtl\n" * 1000 + "mtllib ./m.mtl m.mtl\n" * 1000 + TRI + "usemtl a\nf 1 2 3\n")
    parsed = []
    real = obj_io._parse_mtl
    monkeypatch.setattr(obj_io, "_parse_mtl", lambda *a: parsed.append(a[0]) or real(*a))
    _, _, aux = _timed(lambda: load_obj(obj), 10)
    assert len(parsed) == 1 and aux.material_colors["a"]["diffuse_color"].tolist() == [1, 0, 0]
    obj.write_text("mtllib gone.mtl\n" * 2000 + TRI + "f 1 2 3\n")
    with pytest.warns(UserWarning, match="gone.mtl not found") as record:
        load_obj(obj)
    assert len([w for w in record if "gone.mtl" in str(w.message)]) == 1


def test_the_number_of_material_files_is_bounded(tmp_path):
    for i in range(obj_io.MAX_MTL_FILES + 1):
        (tmp_path / f"m{i}.mtl").write_text(f"newmtl a{i}\n")
    obj = tmp_path / "a.obj"
    obj.write_text("".join(f"mtllib m{i}.mtl\n" for i in range(obj_io.MAX_MTL_FILES + 1)) + TRI + "f 1 2 3\n")
    with pytest.raises(OBJError, match=f"line {obj_io.MAX_MTL_FILES + 1}: more than {obj_io.MAX_MTL_FILES}"):
        load_obj(obj)


def test_100000_distinct_materials_take_linear_time():
    text = TRI + "".join(f"usemtl m{i}\nf 1 2 3\n" for i in range(100_000))
    _, faces, aux = _timed(lambda: load_obj(io.StringIO(text)), 20)
    assert torch.equal(faces.materials_idx, torch.arange(100_000)) and aux.material_colors is None


def test_several_materials_without_usemtl_name_the_mtllib_line(tmp_path):
    (tmp_path / "m.mtl").write_text("newmtl a\nnewmtl b\n")
    obj = tmp_path / "a.obj"
    obj.write_text(TRI + "mtllib m.mtl\nf 1 2 3\n")
    with pytest.raises(OBJError, match=r"a\.obj, line 4: 2 materials but no usemtl"):
        load_obj(obj)
    with pytest.raises(OBJError, match=r"m\.mtl, line 2: 2 materials"):
        load_mtl(tmp_path / "m.mtl", material_names=[])


# ------------------------------------------------------------------ OBJ and MTL: the grammar
@pytest.mark.parametrize(
    "faces, line, match",
    [
        ("vt 0 0\nvn 0 0 1\nf 1/1 2/1/1 3/1/1\n", 6, "inconsistent face format"),  # v/vt with v/vt/vn
        ("vt 0 0\nf 1/1/1/1 2 3\n", 5, "inconsistent face format"),  # 1/2/3/4 and bare corners
        ("vt 0 0\nf 1/1/1/1 2/1/1/1 3/1/1/1\n", 5, "each must be one of"),
        ("vn 0 0 1\nf 1//1 2/1/1 3//1\n", 5, "each must be one of"),
        ("vt 0 0\nf 1/0 2/1 3/1\n", 5, "index 0 in a face"),
        ("vn 0 0 1\nf 1//1 2//0 3//1\n", 5, "index 0 in a face"),
        ("vt 0 0\nvn 0 0 1\nf 1/1/1 2/1/1 3/1/0\n", 6, "index 0 in a face"),
        ("f 1 0 2\n", 4, "vertex index 0"),
        ("f 1 2 3_0\n", 4, "non-integer index '3_0'"),
        ("f 1 2 \u0663\n", 4, "non-integer index"),
        ("f 1 2 3.0\n", 4, "non-integer index '3.0'"),
    ],
)
def test_faces_follow_the_grammar(faces, line, match):
    for text in (TRI + faces, TRI + faces + "# ünïcödé comment elsewhere\n"):  # the fast and the general path
        with pytest.raises(OBJError, match=f"line {line}: .*{match}"):
            load_obj(io.StringIO(text))


@pytest.mark.parametrize(
    "lines, match",
    [
        ("v 1_0 0 0\n", "non-numeric value '1_0'"),
        ("v \u0661 0 0\n", "non-numeric value"),
        ("v 0x1 0 0\n", "non-numeric value '0x1'"),
        ("v 1e39 0 0\n", r"'v' values \[1e\+39, 0.0, 0.0\] overflow float32"),
        ("v 1e400 0 0\n", "non-finite value"),
        ("vt nan 0\n", "non-finite value"),
        ("vt 0 0 0\nvt 0 -inf\n", "non-finite value"),
        ("vn 0 inf 0\n", "non-finite value"),
        ("vn 0 0 1\nvn 0 0 1 1e39\n", None),  # extra columns are read as doubles and dropped
    ],
)
def test_numbers_follow_the_grammar(lines, match):
    line = TRI.count("\n") + lines.count("\n")
    for text in (TRI + lines, TRI + lines + "# ünïcödé\n"):
        if match is None:
            load_obj(io.StringIO(text))
            continue
        with pytest.raises(OBJError, match=f"line {line}: {match}"):
            load_obj(io.StringIO(text))


@pytest.mark.parametrize(
    "mtl, match",
    [
        ("Kd nan nan nan", "non-finite value 'nan'"),
        ("Ka 1e39 0 0", "overflow float32"),
        ("Ks 1_0 0 0", "non-numeric value '1_0'"),
        ("Ns inf", "non-finite"),
        ("Ns 1 2", "malformed 'Ns' line"),
        ("Kd 1 2", "malformed 'Kd' line"),
        ("Kd\x0b1 1 1", "control character"),
    ],
)
def test_material_values_follow_the_grammar(tmp_path, mtl, match):
    (tmp_path / "m.mtl").write_text(f"newmtl a\n{mtl}\n")
    obj = tmp_path / "a.obj"
    obj.write_text("mtllib m.mtl\n" + TRI + "usemtl a\nf 1 2 3\n")
    with pytest.raises(OBJError, match=rf"m\.mtl, line 2: .*{match}"):
        load_obj(obj)


@pytest.mark.parametrize("control", ["\x0b", "\x0c", "\x1c", "\x00"])
def test_other_whitespace_is_refused_the_same_way_everywhere(control):
    text = f"v 0 0 0\nv 1 0 0\nv 0 1 0{control}v 1 1 0\nf 1 2 3\n"
    for extra in ("", "# ünïcödé comment\n", "  # an indented comment\n"):
        with pytest.raises(OBJError, match="line 3: control character"):
            load_obj(io.StringIO(text + extra))
    with pytest.raises(OBJError, match="control character"):
        load_obj(io.StringIO(TRI + f"f{control}1 2 3\n"))


def test_non_finite_obj_vertices_through_io_name_their_line(tmp_path):
    path = tmp_path / "nan.obj"
    path.write_text(TRI + "v nan 0 0\nf 1 2 3\n")
    with pytest.raises(OBJError, match=r"nan\.obj, line 4: non-finite"):
        IO().load_mesh(path)


def test_tabs_and_utf8_names_are_still_fine():
    text = "v\t0 0 0\nv 1\t0 0\nv 0 1 0\t# é\nusemtl matériau\nf\t1 2\t3\n"
    verts, faces, _ = load_obj(io.StringIO(text))
    assert verts.shape == (3, 3) and faces.materials_idx.tolist() == [0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_obj(io.StringIO(TRI + "f 1 2 3\n"), load_textures=False)
