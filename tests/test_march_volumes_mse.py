"""``march_volumes_mse``: the quadrature render fused with the fitting loss and its gradient
(``march_volume_mse_cpu``), against the float64 torch reference (VolumeSampler + QuadratureRaymarcher
+ ``F.mse_loss``), gradcheck, its fallbacks and bad input."""

import warnings

import numba
import pytest
import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError
from p3dlab.ops import march_volumes, march_volumes_mse
from p3dlab.renderer import (
    FoVPerspectiveCameras,
    NDCMultinomialRaysampler,
    QuadratureRaymarcher,
    VolumeSampler,
    look_at_view_transform,
)
from p3dlab.renderer.raysampling import RayBundle
from p3dlab.structures import Volumes

D = torch.float64


def _scene(n=2, volumes=2, features=3, H=8, W=9, P=37, dtype=D, ray_grad=False):
    """``volumes`` (1 or n) density + feature grids of partial opacity, n views of them with stratified
    samples (P = 37: two full chunks of cells and a partial one), and targets for the loss."""
    g = torch.Generator().manual_seed(0)
    R, T = look_at_view_transform(
        dist=torch.tensor([3.0, 2.5][:n]), elev=torch.tensor([10.0, 30.0][:n]), azim=torch.tensor([20.0, -40.0][:n])
    )
    cams = FoVPerspectiveCameras(R=R.to(dtype), T=T.to(dtype))
    dens = (torch.rand(volumes, 1, 6, 7, 8, dtype=dtype, generator=g) * 1.5).requires_grad_()
    feats = torch.rand(volumes, features, 6, 7, 8, dtype=dtype, generator=g).requires_grad_()
    vol = Volumes(dens, feats, voxel_size=0.3, volume_translation=(0.1, -0.2, 0.05))
    torch.manual_seed(1)
    b = NDCMultinomialRaysampler(W, H, P, 1.0, 4.5, stratified_sampling=True)(cams)
    bundle = RayBundle(
        b.origins.clone().requires_grad_(ray_grad), b.directions.clone().requires_grad_(ray_grad), b.lengths, b.xys
    )
    target_f = torch.rand(n, H, W, features, dtype=dtype, generator=g)
    target_o = (torch.rand(n, H, W, generator=g) > 0.5).to(dtype)
    return vol, bundle, target_f, target_o


def _reference(vol, bundle, target_f, target_o, last_delta="interval"):
    dens, feats = VolumeSampler(vol)(bundle)
    out = QuadratureRaymarcher(last_delta=last_delta)(dens, feats, lengths=bundle.lengths, directions=bundle.directions)
    loss = F.mse_loss(out[..., :-1], target_f) + F.mse_loss(out[..., -1], target_o)
    return loss, out


@pytest.mark.parametrize("volumes", [2, 1])
@pytest.mark.parametrize("last_delta", ["interval", "inf"])
def test_fused_loss_images_and_gradients_match_the_torch_reference(volumes, last_delta):
    vol, bundle, target_f, target_o = _scene(volumes=volumes)
    loss_ref, out_ref = _reference(vol, bundle, target_f, target_o, last_delta)
    grads_ref = torch.autograd.grad(loss_ref, [vol.densities(), vol.features()])
    loss, f, o = march_volumes_mse(vol, bundle, target_f, target_o, last_delta=last_delta)
    assert 0.1 < o.mean() < 0.9  # partial opacity: every term of the scan matters
    assert not f.requires_grad and not o.requires_grad and loss.requires_grad
    assert torch.allclose(torch.cat([f, o], -1), out_ref, atol=1e-13)
    assert abs(loss.item() - loss_ref.item()) < 1e-13
    grads = torch.autograd.grad(loss, [vol.densities(), vol.features()])
    for a, b in zip(grads, grads_ref):
        assert b.abs().max() > 1e-3  # the gradient reaches both grids
        assert torch.allclose(a, b, atol=1e-13, rtol=1e-11), (a - b).abs().max()


def test_fused_loss_gradcheck_and_a_scaled_upstream_gradient():
    vol, bundle, target_f, target_o = _scene(n=1, volumes=1, H=3, W=2, P=19)
    dens, feats = vol.densities().detach()[:, :, :3, :4, :5], vol.features().detach()[:, :, :3, :4, :5]
    dens, feats = dens.contiguous().requires_grad_(), feats.contiguous().requires_grad_()
    bundle = RayBundle(bundle.origins.detach(), bundle.directions.detach(), bundle.lengths, bundle.xys)

    def loss_of(d, f):
        return march_volumes_mse(Volumes(d, f, voxel_size=0.45), bundle, target_f, target_o)[0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.autograd.gradcheck(loss_of, (dens, feats), eps=1e-6, atol=1e-6, rtol=1e-4)
    g1 = torch.autograd.grad(loss_of(dens, feats), [dens, feats])
    g3 = torch.autograd.grad(-3.0 * loss_of(dens, feats), [dens, feats])
    assert g1[0].abs().max() > 0
    for a, b in zip(g1, g3):
        assert torch.allclose(-3.0 * a, b, atol=1e-15)


def test_float32_fused_loss_is_close_to_the_unfused_path():
    vol, bundle, target_f, target_o = _scene(dtype=torch.float32)
    loss, f, o = march_volumes_mse(vol, bundle, target_f, target_o)
    grads = torch.autograd.grad(loss, [vol.densities(), vol.features()])
    f2, o2, _, _ = march_volumes(vol, bundle, "quadrature", keep_samples=True)
    loss2 = F.mse_loss(f2, target_f) + F.mse_loss(o2[..., 0], target_o)
    grads2 = torch.autograd.grad(loss2, [vol.densities(), vol.features()])
    assert torch.equal(f, f2) and torch.equal(o, o2)  # the same forward arithmetic
    assert abs(loss.item() - loss2.item()) < 1e-6
    for a, b in zip(grads, grads2):
        assert torch.allclose(a, b, atol=1e-6 * float(b.abs().max()))


@pytest.mark.parametrize("case", ["no_grad", "ray_grad", "one_feature", "frozen_grids", "target_grad"])
def test_fallbacks_give_the_reference_values(case):
    vol, bundle, target_f, target_o = _scene(features=1 if case == "one_feature" else 3, ray_grad=case == "ray_grad")
    if case == "frozen_grids":
        vol = Volumes(
            vol.densities().detach(), vol.features().detach(), voxel_size=0.3, volume_translation=(0.1, -0.2, 0.05)
        )
    if case == "target_grad":
        target_f.requires_grad_()
    loss_ref, out_ref = _reference(vol, bundle, target_f, target_o)
    if case == "no_grad":
        with torch.no_grad():
            loss, f, o = march_volumes_mse(vol, bundle, target_f, target_o)
        assert not loss.requires_grad
    else:
        loss, f, o = march_volumes_mse(vol, bundle, target_f, target_o)
    assert torch.allclose(torch.cat([f, o], -1), out_ref, atol=1e-13)
    assert abs(loss.item() - loss_ref.item()) < 1e-13
    if case in ("ray_grad", "one_feature", "target_grad"):
        inputs = {
            "ray_grad": [bundle.origins, bundle.directions],
            "one_feature": [vol.densities(), vol.features()],
            "target_grad": [target_f, vol.densities()],
        }[case]
        for a, b in zip(torch.autograd.grad(loss, inputs), torch.autograd.grad(loss_ref, inputs)):
            assert torch.allclose(a, b, atol=1e-11)


def test_bad_input_and_a_retained_graph():
    vol, bundle, target_f, target_o = _scene()
    with pytest.raises(P3DLabValueError, match="targets"):
        march_volumes_mse(vol, bundle, target_f[..., :2], target_o)
    with pytest.raises(P3DLabValueError, match="targets"):
        march_volumes_mse(vol, bundle, target_f, target_o[:1])
    with pytest.raises(P3DLabValueError, match="last_delta"):
        march_volumes_mse(vol, bundle, target_f, target_o, last_delta="none")
    nan_rays = RayBundle(bundle.origins * float("nan"), bundle.directions, bundle.lengths, bundle.xys)
    with pytest.raises(P3DLabValueError, match="not finite"):
        march_volumes_mse(vol, nan_rays, target_f, target_o)
    # a retained graph goes backward again, to the same gradients
    loss, _, _ = march_volumes_mse(vol, bundle, target_f, target_o)
    first = torch.autograd.grad(loss, [vol.densities()], retain_graph=True)[0]
    assert torch.equal(torch.autograd.grad(loss, [vol.densities()])[0], first)
    # leaves accumulate into .grad without touching the gradients the graph keeps for the next backward
    dens = vol.densities().detach().clone().requires_grad_()
    feats = vol.features().detach().clone().requires_grad_()
    vol2 = Volumes(dens, feats, voxel_size=0.3, volume_translation=(0.1, -0.2, 0.05))
    loss, _, _ = march_volumes_mse(vol2, bundle, target_f, target_o)
    loss.backward(retain_graph=True)
    g1 = dens.grad.clone()
    loss.backward(retain_graph=True)
    loss.backward()
    assert g1.abs().max() > 0 and torch.allclose(dens.grad, 3 * g1, rtol=1e-12, atol=0)


def test_one_work_copy_within_a_small_memory_budget_gives_the_same_gradients(monkeypatch):
    """A budget below two copies of the grid with its gradient channels leaves one task (one copy);
    the loss and the gradients agree with the default's (a different order of summation)."""
    import p3dlab.runtime.volume_scratch as vs

    vol, bundle, target_f, target_o = _scene()
    tasks = []
    real = vs.n_tasks
    monkeypatch.setattr(vs, "n_tasks", lambda *a: tasks.append(real(*a)) or tasks[-1])
    results = []
    for budget in (vs.BUFFER_BYTES, 1):
        monkeypatch.setattr(vs, "BUFFER_BYTES", budget)
        loss, _, _ = march_volumes_mse(vol, bundle, target_f, target_o)
        results.append((loss, *torch.autograd.grad(loss, [vol.densities(), vol.features()])))
    assert tasks[-1] == 1 and tasks[0] == numba.get_num_threads()
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-13)


def test_prefetching_changes_no_bit_and_starts_at_grids_beyond_the_caches(monkeypatch):
    """``march_volume_mse_cpu`` with ``prefetch_ray`` (forced on for this small grid, several
    lookaheads) gives the same loss, images and gradients, bit for bit, as without; the wrapper
    turns it on from ``_PREFETCH_MIN_BYTES`` a task."""
    import p3dlab.runtime.volume_scratch as vs

    assert vs.prefetch_ahead(torch.empty(vs.PREFETCH_MIN_BYTES // 4, dtype=torch.float32)) == vs.PREFETCH_AHEAD
    assert vs.prefetch_ahead(torch.empty(vs.PREFETCH_MIN_BYTES // 4 - 1, dtype=torch.float32)) == 0
    assert vs.PREFETCH_AHEAD > 0
    vol, bundle, target_f, target_o = _scene(dtype=torch.float32)
    results = []
    for ahead in (0, 1, 4, 10**6):  # 10**6: beyond every task's last ray, nothing to prefetch
        monkeypatch.setattr(vs, "prefetch_ahead", lambda grid, ahead=ahead: ahead)
        loss, feats, opacity = march_volumes_mse(vol, bundle, target_f, target_o)
        results.append((loss, feats, opacity, *torch.autograd.grad(loss, [vol.densities(), vol.features()])))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@pytest.mark.parametrize("mode", ["ea", "quadrature"])
@pytest.mark.parametrize("keep", [False, True])
def test_prefetching_in_the_backward_changes_no_bit(monkeypatch, mode, keep):
    """``march_volume_backward_cpu`` with ``prefetch_ray`` forced on (grid and buffer lines, or only
    the buffer's when the samples were kept) gives the same gradients, bit for bit, as without."""
    import p3dlab.runtime.volume_scratch as vs

    vol, bundle, _, _ = _scene(dtype=torch.float32)
    grads = []
    for ahead in (0, 1, 4):
        monkeypatch.setattr(vs, "prefetch_ahead", lambda grid, ahead=ahead: ahead)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EA densities above 1 in this scene
            f, o, _, _ = march_volumes(vol, bundle, mode, keep_samples=keep)
        grads.append(torch.autograd.grad(f.sum() + o.sum(), [vol.densities(), vol.features()]))
    for other in grads[1:]:
        assert all(torch.equal(a, b) for a, b in zip(grads[0], other))
    assert grads[0][0].abs().sum() > 0


def _activated(vol, scale):
    return vol.update_padded(scale * F.softplus(vol.densities()), torch.sigmoid(vol.features()))


def test_raw_parameters_float32_fused_activations_match_torchs():
    """``raw_density_scale``: the kernel's packing applies softplus and sigmoid (float32, no libm)
    and its unpacking their derivatives: the same loss, images and raw gradients as torch's
    activations in front of the same fused kernel, to float32 rounding."""
    vol, bundle, target_f, target_o = _scene(dtype=torch.float32)
    raw = vol.update_padded((vol.densities() - 0.7) * 3, (vol.features() - 0.5) * 6)  # both signs
    params = [raw.densities(), raw.features()]
    loss, f, o = march_volumes_mse(raw, bundle, target_f, target_o, raw_density_scale=2.5)
    grads = torch.autograd.grad(loss, params)
    loss2, f2, o2 = march_volumes_mse(_activated(raw, 2.5), bundle, target_f, target_o)
    grads2 = torch.autograd.grad(loss2, params)
    assert 0.1 < o.mean() < 0.9
    assert torch.allclose(torch.cat([f, o], -1), torch.cat([f2, o2], -1), atol=2e-6)
    assert abs(loss.item() - loss2.item()) < 2e-6 * loss2.item()
    for a, b in zip(grads, grads2):
        assert b.abs().max() > 1e-4
        assert torch.allclose(a, b, atol=1e-5 * float(b.abs().max())), (a - b).abs().max()


def test_raw_parameters_in_float64_take_torchs_activations_exactly():
    vol, bundle, target_f, target_o = _scene()
    raw = vol.update_padded((vol.densities() - 0.7) * 3, (vol.features() - 0.5) * 6)
    params = [raw.densities(), raw.features()]
    loss, out = _reference(_activated(raw, 2.5), bundle, target_f, target_o)
    ours, f, o = march_volumes_mse(raw, bundle, target_f, target_o, raw_density_scale=2.5)
    assert torch.allclose(torch.cat([f, o], -1), out, atol=1e-13) and abs(ours.item() - loss.item()) < 1e-13
    for a, b in zip(torch.autograd.grad(ours, params), torch.autograd.grad(loss, params)):
        assert torch.allclose(a, b, atol=1e-13, rtol=1e-11)
    # and without gradients (the unfused path) the same
    with torch.no_grad():
        assert (
            abs(march_volumes_mse(raw, bundle, target_f, target_o, raw_density_scale=2.5)[0].item() - loss.item())
            < 1e-13
        )


@pytest.mark.parametrize("scale", [0, -1.0, float("nan"), float("inf"), "2", None])
def test_bad_raw_density_scale(scale):
    vol, bundle, target_f, target_o = _scene(dtype=torch.float32)
    if scale is None:  # a scale without features to take the sigmoid of
        vol = Volumes(vol.densities(), voxel_size=0.3)
        with pytest.raises(P3DLabValueError, match="raw_density_scale"):
            march_volumes_mse(vol, bundle, target_f[..., :1], target_o, raw_density_scale=1.0)
        return
    with pytest.raises(P3DLabValueError, match="raw_density_scale"):
        march_volumes_mse(vol, bundle, target_f, target_o, raw_density_scale=scale)


def test_voxel_field_render_loss_is_the_unfused_loss_of_its_render():
    from p3dlab.data import multiview_dataset
    from p3dlab.volumes import VoxelRadianceField

    train, _ = multiview_dataset(n_views=2, n_test=0, image_size=12)
    model = VoxelRadianceField(10)
    with torch.no_grad():
        model.raw_density.add_(torch.randn(model.raw_density.shape, generator=torch.Generator().manual_seed(0)))
        model.raw_colour.add_(torch.randn(model.raw_colour.shape, generator=torch.Generator().manual_seed(1)))
    bundle = model.rays(train.cameras, (12, 12), 24)
    loss, rgba = model.render_loss(bundle, train.images, train.masks)
    grads = torch.autograd.grad(loss, [model.raw_density, model.raw_colour])
    ref = model.render_rays(bundle)
    loss_ref = F.mse_loss(ref[..., :3], train.images) + F.mse_loss(ref[..., 3], train.masks)
    grads_ref = torch.autograd.grad(loss_ref, [model.raw_density, model.raw_colour])
    assert torch.allclose(rgba, ref.detach(), atol=2e-6) and abs(loss.item() - loss_ref.item()) < 2e-6
    for a, b in zip(grads, grads_ref):
        assert b.abs().max() > 0 and torch.allclose(a, b, atol=2e-5 * float(b.abs().max()))
