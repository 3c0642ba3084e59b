"""Hostile tensors and settings given to the operations: every one is refused at the operation's
boundary with a p3dlab error that names the argument, before a kernel reads memory that was not
checked or anything large is allocated.

The cases that crashed the interpreter (a segmentation fault) or that need a capped address space
run in a child process, so that a regression fails its test instead of killing pytest.
"""

import importlib
import math
import resource
import subprocess
import sys
import textwrap

import pytest
import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.ops import (
    chamfer_distance,
    interpolate_face_attributes,
    knn_gather,
    knn_points,
    march_volumes,
    marching_cubes,
    sample_points_from_meshes,
)
from p3dlab.ops.rasterize_meshes import rasterize_meshes
from p3dlab.ops.rasterize_points import rasterize_points
from p3dlab.renderer import FoVPerspectiveCameras, MeshRasterizer, RasterizationSettings
from p3dlab.renderer.raysampling import RayBundle
from p3dlab.runtime import memory_budget
from p3dlab.structures import Meshes, Pointclouds, Volumes


def _triangle(dtype=torch.float32, z=1.0) -> Meshes:
    verts = torch.tensor([[-0.5, -0.5, z], [0.5, -0.5, z], [0.0, 0.5, z]], dtype=dtype)
    return Meshes([verts], [torch.tensor([[0, 1, 2]])])


def _run_child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- saved indices (the segfault)


def test_backward_refuses_fragments_changed_through_data_instead_of_crashing():
    """Writing through ``.data`` skips autograd's version check; the backward kernels index the
    vertices with the saved fragments, so they must check them first (this was a SIGSEGV)."""
    child = _run_child(
        """
        import torch
        from p3dlab.errors import P3DLabValueError
        from p3dlab.ops.rasterize_meshes import rasterize_meshes
        from p3dlab.ops.rasterize_points import rasterize_points
        from p3dlab.structures import Meshes, Pointclouds

        def triangle():
            v = torch.tensor([[-0.5, -0.5, 1.0], [0.5, -0.5, 1.0], [0.0, 0.5, 1.0]], requires_grad=True)
            return Meshes([v], [torch.tensor([[0, 1, 2]])])

        def mesh_value():
            p2f, z, b, d = rasterize_meshes(triangle(), 8)
            p2f.data[...] = 10**6
            (z.sum() + b.sum() + d.sum()).backward()

        def mesh_shape():
            p2f, z, b, d = rasterize_meshes(triangle(), 8)
            p2f.data = torch.zeros((1, 64, 64, 1), dtype=torch.int64)
            (z.sum() + d.sum()).backward()

        def points_value():
            pts = torch.tensor([[0.0, 0.0, 1.0]], requires_grad=True)
            idx, z, d = rasterize_points(Pointclouds([pts]), 8, 0.5, 2)
            idx.data[...] = -(2**31)
            (z.sum() + d.sum()).backward()

        for case in (mesh_value, mesh_shape, points_value):
            try:
                case()
                print(case.__name__, "no error")
            except P3DLabValueError as error:
                print(case.__name__, error)
        """
    )
    assert child.returncode == 0, f"the child died (return code {child.returncode}): {child.stderr[-2000:]}"
    lines = child.stdout.splitlines()
    assert len(lines) == 3, child.stdout
    assert all("(backward): the saved fragments were modified after the forward pass" in line for line in lines)
    assert "pix_to_face holds 1000000, outside [-1, 0]" in lines[0]
    assert "pix_to_face has shape (1, 64, 64, 1), not (1, 8, 8, 1)" in lines[1]
    assert "idx holds -2147483648" in lines[2]


# ---------------------------------------------------------------- indices checked at the boundary


@pytest.mark.parametrize("bad", [10**6, -1])
def test_faces_changed_after_the_meshes_were_built_are_refused(bad):
    for op in (lambda m: rasterize_meshes(m, 8), lambda m: sample_points_from_meshes(m, 5)):
        meshes = _triangle()
        meshes.faces_packed()[0, 1] = bad  # in place, after Meshes validated its faces
        with pytest.raises(
            P3DLabValueError, match=rf"meshes.faces_packed\(\) refers to vertex {bad}, outside \[0, 2\]"
        ):
            op(meshes)


def test_mesh_face_counts_changed_in_place_are_refused_before_the_kernel_walks_them():
    meshes = _triangle()
    meshes.num_faces_per_mesh()[0] = 10**6  # the cached counts the kernel walks
    with pytest.raises(P3DLabValueError, match="the per-item counts of the faces of meshes"):
        rasterize_meshes(meshes, 8)


def test_pix_to_face_outside_the_faces_is_refused_by_interpolation():
    bary, attr = torch.rand(1, 1, 1, 1, 3), torch.rand(2, 3, 4)
    for bad in (2, -3):
        with pytest.raises(P3DLabValueError, match=f"pix_to_face refers to face {bad}, outside"):
            interpolate_face_attributes(torch.tensor([[[[bad]]]]), bary, attr)
    out = interpolate_face_attributes(torch.tensor([[[[-1]]]]), bary, attr)
    assert torch.equal(out, torch.zeros(1, 1, 1, 1, 4))  # -1: the padding value


def test_knn_gather_refuses_indices_outside_the_cloud_and_pads_with_minus_one():
    x = torch.rand(1, 4, 3)
    for bad in (4, -2):
        with pytest.raises(P3DLabValueError, match=f"knn_gather: idx refers to point {bad}, outside"):
            knn_gather(x, torch.tensor([[[bad]]]))
    out = knn_gather(x, torch.tensor([[[3, -1]]]))
    assert torch.equal(out[0, 0, 0], x[0, 3]) and torch.equal(out[0, 0, 1], torch.zeros(3))
    with pytest.raises(P3DLabValueError, match="idx must be an integer tensor"):
        knn_gather(x, torch.tensor([[[1.0]]]))


# ---------------------------------------------------------------- memory refused up front


def test_memory_budget_reads_the_address_space_limit(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmSize:\t  1000 kB\n")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    left = memory_budget.address_space_left(status)
    assert left is None if soft == resource.RLIM_INFINITY else left == soft - 1000 * 1024
    assert memory_budget.format_bytes(3 * 2**30) == "3.0 GiB"
    memory_budget.check_fits("op", memory_budget.FITS_ANYWHERE, "small things", "nothing")  # never checked


def test_huge_allocations_are_refused_with_a_p3dlab_error_under_a_capped_address_space():
    """Under ``ulimit -v`` torch's allocator fails half-way; the operations must refuse first,
    saying what they need, what is left and which argument to lower."""
    child = _run_child(
        """
        import resource
        import torch
        from p3dlab.ops import interpolate_face_attributes, knn_points, marching_cubes, sample_points_from_meshes
        from p3dlab.ops.rasterize_meshes import rasterize_meshes
        from p3dlab.ops.rasterize_points import rasterize_points
        from p3dlab.structures import Meshes, Pointclouds

        vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + 2**29, resource.getrlimit(resource.RLIMIT_AS)[1]))
        v = torch.tensor([[-0.5, -0.5, 1.0], [0.5, -0.5, 1.0], [0.0, 0.5, 1.0]], requires_grad=True)
        tri = Meshes([v], [torch.tensor([[0, 1, 2]])])
        p2f = torch.zeros((), dtype=torch.int64).expand(1, 2048, 2048, 12)  # stride 0: no memory
        cases = {
            "knn": lambda: knn_points(torch.rand(1, 1, 3), torch.rand(1, 4, 3), K=10**8),
            "sample": lambda: sample_points_from_meshes(tri, 10**10),
            "mesh": lambda: rasterize_meshes(tri, 2048, faces_per_pixel=12),
            "points": lambda: rasterize_points(Pointclouds([v]), 2048, 0.1, 12),
            "interpolate": lambda: interpolate_face_attributes(p2f, torch.zeros(()).expand(*p2f.shape, 3), torch.rand(1, 3, 3)),
            "cubes": lambda: marching_cubes(torch.zeros(1, 1, 1, 1, dtype=torch.uint8).expand(1, 1024, 1024, 1024)),
        }
        for name, case in cases.items():
            try:
                case()
                print(name, "| no error")
            except Exception as error:
                print(name, "|", type(error).__name__, "|", error)
        """
    )
    assert child.returncode == 0, child.stderr[-2000:]
    lines = dict(line.split(" | ", 1) for line in child.stdout.splitlines())
    knobs = {
        "knn": "lower K",
        "sample": "lower num_samples",
        "mesh": "lower faces_per_pixel",
        "points": "lower points_per_pixel",
    }
    knobs["cubes"] = "lower the grid's resolution"
    knobs["interpolate"] = "lower the fragments' faces_per_pixel"
    assert set(lines) == set(knobs), child.stdout
    for name, knob in knobs.items():
        kind, message = lines[name].split(" | ", 1)
        assert kind == "P3DLabMemoryError", f"{name}: {lines[name]}"
        assert " would take " in message and "bytes" in message and "RLIMIT_AS" in message and knob in message, message


def test_the_fragments_estimate_follows_the_dtype_and_the_gradients(monkeypatch):
    seen = []
    monkeypatch.setattr(memory_budget, "check_fits", lambda op, need, what, lower: seen.append(need))
    rasterize_meshes(_triangle(), 8, faces_per_pixel=2)
    verts = torch.tensor([[-0.5, -0.5, 1.0], [0.5, -0.5, 1.0], [0.0, 0.5, 1.0]], requires_grad=True)
    rasterize_meshes(Meshes([verts], [torch.tensor([[0, 1, 2]])]), 8, faces_per_pixel=2)
    assert seen == [64 * 2 * 28, 64 * 2 * 48]  # PyTorch3D's 48 bytes per slot for forward + backward


# ---------------------------------------------------------------- input rules


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_refused_with_the_conversion_to_make(dtype):
    p = torch.rand(1, 4, 3).to(dtype)
    cases = [
        lambda: knn_points(p, p),
        lambda: chamfer_distance(p, p),
        lambda: marching_cubes(torch.rand(1, 3, 3, 3).to(dtype)),
        lambda: rasterize_meshes(_triangle(dtype), 8),
        lambda: sample_points_from_meshes(_triangle(dtype), 5),
        lambda: rasterize_points(Pointclouds([p[0]]), 8),
    ]
    for case in cases:
        with pytest.raises(
            P3DLabValueError, match=rf"{dtype}; p3dlab's kernels compute in float32 or float64: .*float\(\)"
        ):
            case()


def test_complex_inputs_are_refused_clearly():
    c = torch.rand(1, 4, 3, dtype=torch.complex64)
    for case, name in (
        (lambda: knn_points(c, c), "p1"),
        (lambda: chamfer_distance(c, c), "x"),
        (lambda: marching_cubes(torch.rand(1, 3, 3, 3, dtype=torch.complex64)), "vol_batch"),
    ):
        with pytest.raises(P3DLabValueError, match=f"{name} is complex"):
            case()


def test_marching_cubes_refuses_non_finite_grids_and_isolevels():
    grid = torch.rand(1, 5, 6, 7)
    for value in (math.nan, math.inf):
        bad = grid.clone()
        bad[0, 2, 3, 4] = value
        with pytest.raises(P3DLabValueError, match=r"vol_batch\[0\] holds .* at \(z, y, x\) = \(2, 3, 4\).*nan_to_num"):
            marching_cubes(bad, 0.5)
    with pytest.raises(P3DLabValueError, match="isolevel must be a finite number"):
        marching_cubes(grid, math.nan)


def _winding_set(faces: torch.Tensor) -> set:
    """The faces as a set of triangles, each kept in its winding (rotated to start at its lowest index)."""
    return {tuple(f[f.index(min(f)) :] + f[: f.index(min(f))]) for f in faces.tolist()}


def test_marching_cubes_by_chunks_equals_one_chunk_and_winds_every_edge_once(monkeypatch):
    grid = torch.rand(1, 9, 8, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grid[:, [0, -1]] = 0
    grid[:, :, [0, -1]] = 0
    grid[:, :, :, [0, -1]] = 0  # every surface closes inside the grid
    verts, faces = marching_cubes(grid, 0.5)
    monkeypatch.setattr(importlib.import_module("p3dlab.ops.marching_cubes"), "CHUNK_CELLS", 5)
    verts_chunked, faces_chunked = marching_cubes(grid, 0.5)
    assert torch.equal(verts[0], verts_chunked[0]) and _winding_set(faces[0]) == _winding_set(faces_chunked[0])
    f = faces[0]
    directed = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    key, reverse = directed[:, 0] * len(verts[0]) + directed[:, 1], directed[:, 1] * len(verts[0]) + directed[:, 0]
    assert key.unique().numel() == key.numel() and bool(torch.isin(reverse, key).all())  # consistent winding


def test_march_volumes_refuses_a_nan_eps_and_nan_lengths():
    vol = Volumes(torch.rand(1, 1, 4, 4, 4), voxel_size=0.5)
    o, d = torch.tensor([[[0.0, 0.0, -1.0]]]), torch.tensor([[[0.0, 0.0, 1.0]]])
    t = torch.linspace(0.0, 2.0, 5)[None, None]
    with pytest.raises(P3DLabValueError, match="march_volumes: eps must be a finite number >= 0, got nan"):
        march_volumes(vol, RayBundle(o, d, t, o[..., :2]), eps=math.nan)
    t_nan = t.clone()
    t_nan[..., 2] = math.nan
    with pytest.raises(P3DLabValueError, match="ray_bundle.lengths is not finite"):
        march_volumes(vol, RayBundle(o, d, t_nan, o[..., :2]))


@pytest.mark.parametrize("num_samples", [0, -3, 2.0, True, "10"])
def test_num_samples_must_be_a_positive_int(num_samples):
    with pytest.raises(P3DLabValueError, match="num_samples must be an int >= 1"):
        sample_points_from_meshes(_triangle(), num_samples)


def test_sample_points_refuses_faces_of_infinite_area():
    big = Meshes([torch.tensor([[0.0, 0.0, 0.0], [3e38, 0.0, 0.0], [0.0, 3e38, 0.0]])], [torch.tensor([[0, 1, 2]])])
    with pytest.raises(P3DLabValueError, match="packed face 0 of meshes has area inf"):
        sample_points_from_meshes(big, 4)


def test_an_empty_second_cloud_gives_padding_neighbours():
    p1 = torch.rand(2, 3, 3, requires_grad=True)
    res = knn_points(p1, torch.rand(2, 0, 3), K=2, return_nn=True)
    assert torch.equal(res.idx, torch.full((2, 3, 2), -1)) and torch.equal(res.dists, torch.zeros(2, 3, 2))
    assert torch.equal(res.knn, torch.zeros(2, 3, 2, 3))
    loss, _ = chamfer_distance(p1, torch.rand(2, 0, 3), single_directional=True)
    assert loss.item() == 0.0


def test_point_radius_tensors_of_the_wrong_shape_are_refused():
    clouds = Pointclouds([torch.rand(5, 3), torch.rand(3, 3)])
    for radius in (torch.full((2, 3), 0.1), torch.full((5,), 0.1), torch.full((1, 5), 0.1)):
        with pytest.raises(P3DLabValueError, match=r"radius must be a float or an \(N, P\) = \(2, 5\) tensor"):
            rasterize_points(clouds, 8, radius)
    rasterize_points(clouds, 8, torch.full((2, 5), 0.1))  # the padded shape is right
    rasterize_points(clouds, 8, torch.tensor(0.1))  # so is one value


def test_znear_zero_is_refused_naming_znear():
    with pytest.raises(P3DLabValueError, match="znear must be finite and > 0"):
        FoVPerspectiveCameras(znear=0.0)
    rasterizer = MeshRasterizer(FoVPerspectiveCameras(), RasterizationSettings(image_size=8))
    with pytest.raises(P3DLabValueError, match=r"znear must be finite and > 0.*got znear=\[0.0\]"):
        rasterizer(_triangle(z=3.0), znear=0.0)


def test_padded_faces_accept_only_trailing_rows_of_minus_one():
    from p3dlab.structures import Meshes

    verts = torch.rand(2, 4, 3)
    faces = torch.tensor([[[0, 1, 2], [1, 2, 3]], [[0, 1, 3], [-1, -1, -1]]])
    m = Meshes(verts, faces)
    assert m.num_faces_per_mesh().tolist() == [2, 1]
    assert torch.equal(m.faces_padded(), faces)
    with pytest.raises(P3DLabValueError, match=r"mesh 1, row 1 is \[-2, -2, -2\]"):
        Meshes(verts, torch.tensor([[[0, 1, 2], [1, 2, 3]], [[0, 1, 3], [-2, -2, -2]]]))
    with pytest.raises(P3DLabValueError, match=r"mesh 0, row 0 is \[0, -1, 2\]"):
        Meshes(verts, torch.tensor([[[0, -1, 2], [1, 2, 3]], [[0, 1, 3], [-1, -1, -1]]]))
    with pytest.raises(P3DLabValueError, match="padding must come after every face"):
        Meshes(verts, torch.tensor([[[-1, -1, -1], [1, 2, 3]], [[0, 1, 3], [-1, -1, -1]]]))


@pytest.mark.parametrize("bad", [10**6, -1])
def test_mesh_losses_refuse_faces_changed_after_the_mesh_was_built(bad):
    from p3dlab import data
    from p3dlab.loss import mesh_edge_loss, mesh_laplacian_smoothing, mesh_normal_consistency

    for loss in (mesh_edge_loss, mesh_normal_consistency, mesh_laplacian_smoothing):
        mesh = data.ico_sphere(1)
        mesh.faces_packed()[3, 1] = bad  # in place, after validation (faces_list shares the storage)
        with pytest.raises(P3DLabValueError, match=rf"{loss.__name__}: meshes.faces_packed\(\) refers to vertex {bad}"):
            loss(mesh)


@pytest.mark.parametrize("eps", [float("nan"), -1e-3, float("inf")])
def test_ea_raymarcher_refuses_a_non_finite_or_negative_eps(eps):
    from p3dlab.renderer import EmissionAbsorptionRaymarcher

    densities, features = torch.full((2, 5, 1), 0.3), torch.rand(2, 5, 3)
    with pytest.raises(P3DLabValueError, match="EmissionAbsorptionRaymarcher: eps"):
        EmissionAbsorptionRaymarcher()(densities, features, eps=eps)
    assert torch.isfinite(EmissionAbsorptionRaymarcher()(densities, features)).all()
