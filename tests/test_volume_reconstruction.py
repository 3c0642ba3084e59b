"""Synthetic multi-view data and the voxel-grid reconstruction (issue 7's chapter-5 workflow)."""

import math

import pytest
import torch

from p3dlab.data import multiview_dataset, painted_teapot, view_angles
from p3dlab.errors import P3DLabValueError
from p3dlab.volumes import VoxelRadianceField, evaluate, fit_volume


def test_view_angles_exclude_the_duplicated_end_view():
    azim, elev = view_angles(8, (-10.0, 40.0))
    assert azim.tolist() == [45.0 * i for i in range(8)]  # 360 is not repeated (docs/errata.md#e57)
    assert elev.min() >= -10 and elev.max() <= 40 and len(set(elev.tolist())) == 8


def test_multiview_dataset_shapes_masks_and_held_out_views_differ():
    train, test = multiview_dataset(n_views=6, n_test=2, image_size=32)
    assert train.images.shape == (6, 32, 32, 3) and train.masks.shape == (6, 32, 32) and len(test) == 2
    assert 0.03 < train.masks.mean() < 0.6
    assert train.images.min() >= 0 and train.images.max() <= 1
    # black background outside the coverage; antialiased edges give fractional masks
    assert train.images[train.masks == 0].abs().max() == 0
    assert ((train.masks > 0) & (train.masks < 1)).any()
    assert not torch.isin(test.azimuths, train.azimuths).any()
    sub = train[[0, 2]]
    assert len(sub) == 2 and torch.equal(sub.images[1], train.images[2]) and sub.cameras.R.shape == (2, 3, 3)
    with pytest.raises(P3DLabValueError):
        multiview_dataset(image_size=2)


def test_painted_teapot_fits_the_unit_box_and_has_colour_variation():
    mesh = painted_teapot()
    v = mesh.verts_packed()
    assert v.abs().max().item() == pytest.approx(1.0)
    colours = mesh.textures.verts_features_packed()
    assert colours.std(0).min() > 0.1


def test_initial_fog_opacity_is_set_by_target_not_by_sample_count():
    model = VoxelRadianceField(grid_size=8, half_extent=1.0, init_opacity=0.3)
    # a ray along the x axis crosses the box (2 units) in the box's voxel-centre extent
    from p3dlab.ops import march_volumes
    from p3dlab.renderer.raysampling import RayBundle

    o = torch.tensor([[[-3.0, 0.0, 0.0]]])
    d = torch.tensor([[[1.0, 0.0, 0.0]]])
    for P in (16, 64):
        t = torch.linspace(2.0, 4.0, P)[None, None] * (P - 1) / P + 2.0 / P / 2  # P intervals of 2/P
        t = (2.0 + (torch.arange(P) + 0.5) * 2.0 / P)[None, None]
        _, opacity, _, _ = march_volumes(model.volumes(), RayBundle(o, d, t, o[..., :2]), "quadrature")
        assert opacity.item() == pytest.approx(0.3, abs=0.01)


def test_stratified_jitter_keeps_each_sample_in_its_interval_and_follows_the_generator():
    from p3dlab.renderer import FoVPerspectiveCameras, look_at_view_transform

    model = VoxelRadianceField(grid_size=8)
    R, T = look_at_view_transform(torch.tensor([3.0, 3.5]), torch.tensor([10.0, 40.0]), torch.tensor([0.0, 90.0]))
    cams = FoVPerspectiveCameras(R=R, T=T)
    base = model.rays(cams, (6, 5), 16)
    runs = [model.rays(cams, (6, 5), 16, generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert torch.equal(runs[0].lengths, runs[1].lengths) and not torch.equal(runs[0].lengths, runs[2].lengths)
    assert torch.equal(runs[0].origins, base.origins) and torch.equal(runs[0].directions, base.directions)
    hit = base.lengths[..., -1] > base.lengths[..., 0]  # rays that cross the box
    assert hit.float().mean() > 0.5
    step = (base.lengths[..., 1:2] - base.lengths[..., :1])[hit]
    offset = (runs[0].lengths[hit] - base.lengths[hit]) / step  # in units of the sample spacing
    assert offset.abs().max() <= 0.5 + 1e-4 and offset.min() < -0.45 and offset.max() > 0.45
    assert abs(float(offset.mean())) < 0.05 and (runs[0].lengths[hit].diff(dim=-1) > 0).all()
    assert torch.equal(runs[0].lengths[~hit], base.lengths[~hit])  # zero spacing: nothing moves


def test_voxel_fit_reduces_the_loss_and_beats_the_initial_psnr():
    torch.manual_seed(0)
    train, test = multiview_dataset(n_views=8, n_test=2, image_size=24)
    model = VoxelRadianceField(grid_size=16)
    before, _ = evaluate(model, test, n_pts=24)
    hist = fit_volume(model, train, test, iterations=40, views_per_step=2, n_pts=24, eval_every=20)
    assert hist.loss[-1] < hist.loss[0] / 5  # a 16³ fit's loss falls by 5x (docs/kernels.md#testing-the-kernels)
    assert hist.test_psnr[-1] > before + 6
    mesh = model.to_mesh(opacity_per_voxel=0.2)
    assert mesh.num_faces_per_mesh().item() > 50
    v = mesh.verts_packed()
    assert v.abs().max() <= model.half_extent + 1e-5
    assert math.isfinite(float(mesh.textures.verts_features_packed().sum()))


def test_voxel_field_rejects_bad_settings():
    with pytest.raises(P3DLabValueError, match="grid_size"):
        VoxelRadianceField(grid_size=1024)
    with pytest.raises(P3DLabValueError):
        VoxelRadianceField(grid_size=8, init_opacity=1.0)


def test_rays_of_selected_views_equal_the_rays_of_those_cameras():
    """``fit_volume`` computes the training views' rays once and selects each step's views: the
    same rays, bit for bit, as computing them from the step's cameras, so jittering them with the
    same generator gives the same samples."""
    from p3dlab.renderer import FoVPerspectiveCameras, look_at_view_transform
    from p3dlab.volumes.reconstruction import jitter_samples, select_views

    model = VoxelRadianceField(grid_size=8)
    R, T = look_at_view_transform(
        torch.tensor([3.0, 3.2, 3.5]), torch.tensor([10.0, 25.0, 40.0]), torch.tensor([0.0, 60.0, 90.0])
    )
    cams = FoVPerspectiveCameras(R=R, T=T)
    views = [2, 0]
    every = model.rays(cams, (6, 5), 16)
    chosen = select_views(every, views)
    direct = model.rays(FoVPerspectiveCameras(R=R[views], T=T[views]), (6, 5), 16)
    for name in ("origins", "directions", "lengths", "xys"):
        assert torch.equal(getattr(chosen, name), getattr(direct, name)), name
    a = jitter_samples(chosen, torch.Generator().manual_seed(3))
    b = model.rays(
        FoVPerspectiveCameras(R=R[views], T=T[views]), (6, 5), 16, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(a.lengths, b.lengths)
