"""Compile every Numba kernel once so that the first lesson cell does not wait for the JIT
(``python -m p3dlab.classroom warmup``; Binder's postBuild runs it). Kernels use ``cache=True``, so
the compiled code lands in the package's ``__pycache__`` and later processes load it in well under
a second."""

from __future__ import annotations

import time


def warmup() -> float:
    """Run tiny forward + backward passes through the mesh and point rasterizers, fragment
    interpolation, KNN/Chamfer, the volume kernels and the Gaussian splatting kernels (projection,
    binning, compositing) in float32 and float64. Returns the seconds it took."""
    import torch

    from p3dlab import data
    from p3dlab.ops import chamfer_distance, interpolate_face_attributes, march_volumes, sample_grid
    from p3dlab.renderer import (
        FoVPerspectiveCameras,
        MeshRasterizer,
        NDCMultinomialRaysampler,
        PointsRasterizationSettings,
        PointsRasterizer,
        RasterizationSettings,
        look_at_view_transform,
        render_gaussians,
    )
    from p3dlab.structures import GaussianSplats, Pointclouds, Volumes

    t0 = time.perf_counter()
    R, T = look_at_view_transform(2.7, 10.0, 20.0)
    for dtype in (torch.float32, torch.float64):
        cams = FoVPerspectiveCameras(R=R.to(dtype), T=T.to(dtype))
        mesh = data.ico_sphere(1, dtype=dtype)
        verts = mesh.verts_packed().clone().requires_grad_()
        frags = MeshRasterizer(cams, RasterizationSettings(image_size=8, blur_radius=1e-3, faces_per_pixel=2))(
            mesh.update_padded(verts[None])
        )
        (frags.dists.sum() + frags.zbuf.sum()).backward()
        with torch.no_grad():  # the inference path of interpolate_face_attributes (shaders, RenderView)
            interpolate_face_attributes(frags.pix_to_face, frags.bary_coords, verts[mesh.faces_packed()])
        pts = torch.rand(1, 30, 3, dtype=dtype, requires_grad=True)
        PointsRasterizer(cams, PointsRasterizationSettings(image_size=8, radius=0.1))(
            Pointclouds(pts)
        ).dists.sum().backward()
        chamfer_distance(pts, torch.rand(1, 20, 3, dtype=dtype))[0].backward()
        grid = torch.rand(1, 3, 4, 4, 4, dtype=dtype, requires_grad=True)
        sample_grid(grid, torch.rand(1, 5, 3, dtype=dtype)).sum().backward()
        bundle = NDCMultinomialRaysampler(4, 4, 8, 1.0, 4.0)(cams)
        for mode in ("ea", "quadrature"):
            vol = Volumes(torch.rand(1, 1, 4, 4, 4, dtype=dtype, requires_grad=True) * 0.5, grid, voxel_size=0.5)
            f, o, _, _ = march_volumes(vol, bundle, mode)
            (f.sum() + o.sum()).backward()
        means = (torch.rand(6, 3, dtype=dtype) - 0.5).requires_grad_()
        one = torch.ones(6, dtype=dtype)
        splats = GaussianSplats(
            means,
            0.2 * torch.ones(6, 3, dtype=dtype),
            torch.tensor([[1.0, 0, 0, 0]], dtype=dtype).expand(6, 4),
            0.5 * one,
            torch.rand(6, 1, 3, dtype=dtype),
        )
        render_gaussians(splats, cams, 8).image.sum().backward()  # the projection's kernels too: means need grad
    return time.perf_counter() - t0
