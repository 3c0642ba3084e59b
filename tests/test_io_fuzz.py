"""Fuzzing the readers: mutated real and generated files must load or raise FileFormatError.

CI runs 4 x 2,500 = 10,000 cases; ``make fuzz`` runs P3DLAB_FUZZ_EXAMPLES (default 50,000) each.
"""

import io
import os
import warnings
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p3dlab import data
from p3dlab.io import FileFormatError, load_obj, load_ply, read_ply, save_obj, save_ply

EXAMPLES = int(os.environ.get("P3DLAB_FUZZ_EXAMPLES", "2500"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata"


def _seed_files():
    m = data.colored_cube()
    out = {}
    for ascii_ in (False, True):
        buf = io.BytesIO()
        save_ply(
            buf,
            m.verts_packed(),
            m.faces_packed(),
            verts_normals=m.verts_normals_packed(),
            colors=m.textures.verts_features_packed(),
            ascii=ascii_,
        )
        out[f"ply_{ascii_}"] = buf.getvalue()
    t = io.StringIO()
    s = data.uv_sphere(3, 4, texture=data.uv_checker_texture(4))
    save_obj(
        t,
        s.verts_packed(),
        s.faces_packed(),
        normals=s.verts_normals_packed(),
        faces_normals_idx=s.faces_packed(),
        verts_uvs=s.textures.verts_uvs_list()[0],
        faces_uvs=s.textures.faces_uvs_list()[0],
    )
    out["obj"] = t.getvalue().encode() + b"f -1 -2 -3 -4\nf 1//1 2//2 3//3\n"
    for rel in (
        "book/chap1/ply_io/cube.ply",
        "book/chap1/ply_io/parallel_plane_color.ply",
        "book/chap1/obj_io/cube.obj",
        "book/chap2/data/dodecahedron.obj",
    ):
        p = TESTDATA / rel
        if p.is_file():
            out[rel] = p.read_bytes()
    return out


SEEDS = _seed_files()
PLY_SEEDS = [v for k, v in SEEDS.items() if "ply" in k]
OBJ_SEEDS = [v for k, v in SEEDS.items() if "obj" in k]

INTERESTING = [
    b"0",
    b"-1",
    b"4294967295",
    b"1e308",
    b"nan",
    b"-inf",
    b"999999999999",
    b"\0",
    b"\xff",
    b"/",
    b"//",
    b"\n",
    b"\r\n",
    b" ",
    b"end_header\n",
    b"element vertex 99999999\n",
    b"property list uchar int vertex_indices\n",
    b"f 1/2/3 4\n",
    b"mtllib ../../x.mtl\n",
]


@st.composite
def mutated(draw, seeds):
    blob = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice", "repeat"]))
        pos = draw(st.integers(0, max(len(blob) - 1, 0)))
        if op == "flip" and blob:
            blob[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            blob[pos:pos] = draw(st.sampled_from(INTERESTING))
        elif op == "delete":
            del blob[pos : pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del blob[pos:]
        elif op == "splice":
            blob[pos : pos + draw(st.integers(0, 8))] = draw(st.binary(max_size=12))
        elif op == "repeat":
            blob[pos:pos] = blob[pos : pos + draw(st.integers(1, 64))] * draw(st.integers(1, 4))
    return bytes(blob)


def _safe(fn, blob):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = fn(blob)
        except FileFormatError:
            return None
    return out


@FUZZ
@given(mutated(PLY_SEEDS))
def test_fuzz_ply_mutations(blob):
    out = _safe(lambda b: load_ply(io.BytesIO(b)), blob)
    if out is not None:
        verts, faces = out
        assert verts.ndim == 2 and verts.shape[1] == 3 and faces.ndim == 2 and faces.shape[1] == 3
        if faces.numel():
            assert 0 <= int(faces.min()) and int(faces.max()) < verts.shape[0]


@FUZZ
@given(mutated(OBJ_SEEDS))
def test_fuzz_obj_mutations(blob):
    out = _safe(lambda b: load_obj(io.BytesIO(b), load_textures=False), blob)
    if out is not None:
        verts, faces, aux = out
        if faces.verts_idx.numel():
            assert 0 <= int(faces.verts_idx.min()) and int(faces.verts_idx.max()) < verts.shape[0]
        if aux.verts_uvs is not None and faces.textures_idx.numel():
            assert int(faces.textures_idx.max()) < aux.verts_uvs.shape[0]


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(blob):
    _safe(lambda b: read_ply(io.BytesIO(b)), blob)
    _safe(lambda b: load_obj(io.BytesIO(b), load_textures=False), blob)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["vertex", "face", "other"]),
            st.integers(0, 5),
            st.lists(
                st.sampled_from(
                    [
                        "float x",
                        "float y",
                        "float z",
                        "uchar red",
                        "double nx",
                        "list uchar int vertex_indices",
                        "list int float w",
                    ]
                ),
                max_size=4,
            ),
        ),
        max_size=3,
    ),
    st.sampled_from(["ascii", "binary_little_endian", "binary_big_endian"]),
    st.binary(max_size=200),
)
def test_fuzz_random_headers(elements, fmt, body):
    lines = ["ply", f"format {fmt} 1.0"]
    for name, count, props in elements:
        lines.append(f"element {name} {count}")
        lines += [f"property {p}" for p in props]
    lines.append("end_header")
    blob = ("\n".join(lines) + "\n").encode() + (body if fmt != "ascii" else body.replace(b"\0", b" "))
    _safe(lambda b: load_ply(io.BytesIO(b)), blob)


def test_seed_files_are_valid():
    for blob in PLY_SEEDS:
        load_ply(io.BytesIO(blob))
    for blob in OBJ_SEEDS:
        load_obj(io.BytesIO(blob), load_textures=False)
    assert torch.is_tensor(load_ply(io.BytesIO(PLY_SEEDS[0]))[0])
