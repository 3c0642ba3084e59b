import itertools

import pytest
import torch
from raster_scenes import random_projected_meshes

from p3dlab.ops.rasterize_meshes import rasterize_meshes
from p3dlab.ops.rasterize_reference import rasterize_meshes_reference

SETTINGS = list(
    itertools.product(
        [1, 3, 8],  # K
        [0.0, 0.02],  # blur
        [False, True],  # perspective_correct
        [False, True],  # clip_barycentric_coords
        [False, True],  # cull_backfaces
    )
)


def _compare(a, b, tol, rtol=0.0):
    p2f_a, z_a, bary_a, d_a = a
    p2f_b, z_b, bary_b, d_b = b
    assert torch.equal(p2f_a, p2f_b)
    valid = p2f_a >= 0
    assert torch.allclose(z_a[valid].double(), z_b[valid].double(), atol=tol, rtol=rtol)
    assert torch.allclose(bary_a[valid].double(), bary_b[valid].double(), atol=tol, rtol=rtol)
    assert torch.allclose(d_a[valid].double(), d_b[valid].double(), atol=tol, rtol=rtol)
    assert (z_a[~valid] == -1).all() and (d_a[~valid] == -1).all() and (bary_a[~valid] == -1).all()


@pytest.mark.parametrize("K, blur, persp, clip, cull", SETTINGS)
def test_kernel_matches_float64_reference(K, blur, persp, clip, cull):
    meshes = random_projected_meshes(n_meshes=3, n_faces=(7, 12, 0), seed=K + int(blur * 100))
    kw = dict(
        image_size=(13, 17),
        blur_radius=blur,
        faces_per_pixel=K,
        perspective_correct=persp,
        clip_barycentric_coords=clip,
        cull_backfaces=cull,
    )
    ref = rasterize_meshes_reference(meshes, **kw)
    assert (ref[0] >= 0).sum() > 20  # the scene covers pixels
    _compare(rasterize_meshes(meshes, **kw), ref, 1e-12)
    # float32 kernel against the float64 reference
    meshes32 = meshes.to(torch.float32)
    out32 = rasterize_meshes(meshes32, **kw)
    ref32 = rasterize_meshes_reference(meshes32.to(torch.float64), **kw)
    # float32: 1e-5 absolute, plus 1e-4 relative for extrapolated (unclipped, blurred) values,
    # which reach |bary| ~ 50 outside the face
    _compare(out32, ref32, 1e-5, 1e-4)
    inside = (out32[0] >= 0) & (out32[3] < 0)
    assert torch.allclose(out32[1][inside].double(), ref32[1][inside], atol=1e-5, rtol=0)


def _band_lists_built(fv, first, count, H, W, blur):
    """Whether ``rasterize_meshes_cpu`` lists each band's faces for this scene (else it scans them)."""
    import math

    import numpy as np

    from p3dlab.kernels import mesh_raster_cpu as mrc

    boxes = np.empty((fv.shape[0], 4), np.int64)
    for f in range(fv.shape[0]):
        mrc.face_pixel_box(fv, f, H, W, float(min(H, W)), math.sqrt(blur), False, boxes)
    n_bands = -(-H // mrc.BAND)
    list_first = np.empty(len(first) * n_bands + 1, np.int64)
    list_faces = np.empty(mrc.MAX_BAND_ENTRIES_PER_FACE * fv.shape[0] + n_bands, np.int32)
    return mrc.band_face_lists(boxes, first, count, n_bands, list_first, list_faces)


@pytest.mark.parametrize(
    "H, W, K, blur, xy, listed",
    [
        (21, 19, 4, 0.01, 1.2, True),  # random faces spanning up to 3 bands: listed
        (61, 37, 3, 0.0, 0.4, True),  # smaller faces, 8 bands, no blur
        (96, 40, 2, 0.02, 3.0, False),  # faces spanning all 12 bands: the lists would be too long
    ],
)
def test_band_kernel_equals_per_pixel_loop(H, W, K, blur, xy, listed):
    import numpy as np

    from p3dlab.kernels.mesh_raster_cpu import rasterize_meshes_cpu, rasterize_meshes_cpu_naive

    meshes = random_projected_meshes(n_meshes=2, n_faces=(40, 25), seed=5, xy=xy)
    fv = meshes.verts_packed()[meshes.faces_packed()].numpy()
    first = meshes.mesh_to_faces_packed_first_idx().numpy()
    count = meshes.num_faces_per_mesh().numpy()
    assert _band_lists_built(fv, first, count, H, W, blur) == listed
    sib = np.full(fv.shape[0], -1, np.int64)
    outs = []
    # the band kernel writes -1 into empty slots itself: its outputs start as garbage
    for fn, fill in ((rasterize_meshes_cpu, 7), (rasterize_meshes_cpu_naive, -1)):
        o = [np.full((2, H, W, K), fill, np.int64)]
        o += [np.full(s, float(fill)) for s in [(2, H, W, K), (2, H, W, K, 3), (2, H, W, K)]]
        fn(fv, sib, first, count, H, W, K, blur, True, blur > 0, False, o[0], o[1], o[2], o[3])
        outs.append(o)
    assert (outs[0][0] >= 0).sum() > 100  # the scene covers pixels
    for a, b in zip(*outs):
        assert np.array_equal(a, b)


def test_ties_are_judged_on_the_stored_depth():
    """float32 fragments: two depths that differ in float64 but round to one float32 value are a tie,
    so the lower face stays first (it was the later, nearer-by-1e-9 face before)."""
    import numpy as np

    from p3dlab.kernels.mesh_raster_cpu import insert

    stored = float(np.float32(3.169013))
    ulp = float(np.spacing(np.float32(stored)))
    first, second = stored + ulp / 8, stored - ulp / 8  # both round to `stored`
    assert np.float32(first) == np.float32(second) and second < first
    for K in (2, 1):
        p2f = np.full((1, 1, 1, K), -1, np.int64)
        zbuf, dists = np.full((1, 1, 1, K), -1, np.float32), np.full((1, 1, 1, K), -1, np.float32)
        bary = np.full((1, 1, 1, K, 3), -1, np.float32)
        count = insert(p2f, zbuf, bary, dists, 0, 0, 0, 0, K, 0, -1, first, -0.1, 0.2, 0.3, 0.5)
        count = insert(p2f, zbuf, bary, dists, 0, 0, 0, count, K, 1, -1, second, -0.1, 0.2, 0.3, 0.5)
        assert p2f[0, 0, 0].tolist() == [0, 1][:K]
        assert (zbuf[0, 0, 0] == np.float32(stored)).all()


def test_deferred_order_equals_inserting_each_face_on_a_real_mesh():
    """Shared edges and vertices give many equal depths in float32: the band kernel's deferred sort
    must order them exactly as inserting each face in turn (the per-pixel loop) does, also where a
    pixel overflows K."""
    import numpy as np

    from p3dlab import data
    from p3dlab.kernels.mesh_raster_cpu import rasterize_meshes_cpu, rasterize_meshes_cpu_naive

    sphere = data.ico_sphere(3)
    v = sphere.verts_packed().to(torch.float32)
    v = torch.cat([v[:, :2] * 0.9, v[:, 2:] + 3.0], 1)  # seen from 3 units away: (x, y, Z)
    fv = v[sphere.faces_packed()].numpy()
    first, count = np.zeros(1, np.int64), np.array([fv.shape[0]], np.int64)
    sib = np.full(fv.shape[0], -1, np.int64)
    H, W = 24, 20
    for K in (5, 30):
        outs = []
        for fn, fill in ((rasterize_meshes_cpu, 7), (rasterize_meshes_cpu_naive, -1)):
            o = [np.full((1, H, W, K), fill, np.int64)]
            o += [np.full(s, float(fill), np.float32) for s in [(1, H, W, K), (1, H, W, K, 3), (1, H, W, K)]]
            fn(fv, sib, first, count, H, W, K, 0.01, True, True, False, *o)
            outs.append(o)
        kept = (outs[1][0] >= 0).sum(-1)
        assert kept.max() == K and (kept > 1).sum() > H * W // 2  # full lists and sorted lists
        z = outs[1][1]
        assert ((z[..., 1:] == z[..., :-1]) & (outs[1][0][..., 1:] >= 0)).any()  # ties happen
        for a, b in zip(*outs):
            assert np.array_equal(a, b)


def test_ties_in_depth_keep_the_lower_face_first():
    # two identical triangles at the same depth, listed as faces 0 and 1
    v = torch.tensor([[0.5, 0.5, 2.0], [-0.5, 0.5, 2.0], [0.0, -0.5, 2.0]], dtype=torch.float64)
    from p3dlab.structures import Meshes

    m = Meshes([torch.cat([v, v])], [torch.tensor([[0, 1, 2], [3, 4, 5]])])
    p2f, *_ = rasterize_meshes(m, image_size=8, faces_per_pixel=2)
    covered = p2f[..., 0] >= 0
    assert covered.any()
    assert (p2f[..., 0][covered] == 0).all() and (p2f[..., 1][covered] == 1).all()
    p2f1, *_ = rasterize_meshes(m, image_size=8, faces_per_pixel=1)
    assert (p2f1[..., 0][covered] == 0).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(faces_per_pixel=0), "faces_per_pixel"),
        (dict(image_size=0), "image_size"),
        (dict(image_size=(16, 100000)), "image_size"),
        (dict(blur_radius=-1.0), "blur_radius"),
        (dict(blur_radius=float("nan")), "blur_radius"),
        (dict(image_size=4096, faces_per_pixel=100), "smaller faces_per_pixel or image_size"),
    ],
)
def test_bad_settings_raise_before_the_kernel(kwargs, message):
    m = random_projected_meshes(1, (3,))
    with pytest.raises(ValueError, match=message):
        rasterize_meshes(m, **kwargs)


def test_non_finite_projected_vertices_are_refused():
    m = random_projected_meshes(1, (3,))
    v = m.verts_packed().clone()
    v[4, 0] = float("inf")
    from p3dlab.structures import Meshes

    with pytest.raises(ValueError, match="vertex 4"):
        rasterize_meshes(Meshes([v], [m.faces_packed()]), image_size=8)


def test_fragments_held_by_the_caller_are_never_reused():
    """The CPU outputs come from a pool of earlier fragments' memory (p3dlab.runtime.recycled): a new
    render must never write into fragments a caller still holds, and memory let go of is reused."""
    first = rasterize_meshes(
        random_projected_meshes(n_meshes=1, n_faces=(30,), seed=1), image_size=48, faces_per_pixel=3
    )
    kept = [t.clone() for t in first]
    second = rasterize_meshes(
        random_projected_meshes(n_meshes=1, n_faces=(30,), seed=2), image_size=48, faces_per_pixel=3
    )
    for a, b in zip(first, kept):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], second[0])  # a different scene, in other memory
    pointers = {t.data_ptr() for t in second}
    del second
    third = rasterize_meshes(
        random_projected_meshes(n_meshes=1, n_faces=(30,), seed=3), image_size=48, faces_per_pixel=3
    )
    assert {t.data_ptr() for t in third} & pointers  # the memory let go of served again
    assert torch.equal(third[0] < 0, (third[3] == -1) & (third[1] == -1))  # empty slots all -1 (reused, refilled)
