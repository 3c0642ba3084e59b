"""Gaussian-splatting training (p3dlab.splatting): the loss falls, the optimiser surgery of
densification and pruning keeps Adam's state with its rows, split/clone/reset/SH schedule do what the
docs say, and a fixed seed gives identical results. Tiny scenes: targets are rendered from known
Gaussians, so nothing slow is needed."""

import math

import pytest
import torch

from p3dlab.data import MultiViewSplit
from p3dlab.errors import P3DLabValueError
from p3dlab.renderer import FoVPerspectiveCameras, look_at_view_transform, render_gaussians
from p3dlab.splatting import GaussianModel, GaussianTrainer, SplatSchedule, d_ssim_loss, fit_gaussians, rgb_to_sh_dc
from p3dlab.structures.gaussians import quaternion_to_rotation

SIZE = 16


def _views(n: int, offset: float = 0.0) -> FoVPerspectiveCameras:
    azim = torch.tensor([360.0 * (i + offset) / n for i in range(n)])
    elev = torch.tensor([20.0 * math.sin(i + offset) for i in range(n)])
    R, T = look_at_view_transform(2.5, elev, azim)
    return FoVPerspectiveCameras(R=R, T=T, fov=60.0)


def _split(truth: GaussianModel, cameras) -> MultiViewSplit:
    with torch.no_grad():
        renders = [render_gaussians(truth.splats(), cameras[i], (SIZE, SIZE)) for i in range(len(cameras))]
    images = torch.stack([r.image for r in renders]).clamp(0, 1)
    masks = torch.stack([r.alpha for r in renders])
    n = len(cameras)
    return MultiViewSplit(images, masks, cameras, torch.zeros(n), torch.zeros(n), 2.5)


@pytest.fixture(scope="module")
def scene():
    """Training and held-out views of 24 opaque coloured Gaussians in a box."""
    g = torch.Generator().manual_seed(7)
    points = torch.rand(24, 3, generator=g) * 1.2 - 0.6
    colours = torch.rand(24, 3, generator=g)
    truth = GaussianModel.from_points(points, colours, max_sh_degree=0, initial_opacity=0.9)
    with torch.no_grad():
        truth.log_scales.fill_(math.log(0.12))
    return _split(truth, _views(4)), _split(truth, _views(2, 0.5))


def _model(max_sh_degree: int = 0, n: int = 40) -> GaussianModel:
    return GaussianModel.random_box(
        n, (-0.7,) * 3, (0.7,) * 3, seed=3, max_sh_degree=max_sh_degree, initial_opacity=0.3
    )


def _trainer(train, **schedule) -> GaussianTrainer:
    schedule.setdefault("densify_from", 10**6)  # no automatic densification unless asked
    return GaussianTrainer(_model(schedule.pop("max_sh_degree", 0)), train, SplatSchedule(**schedule), seed=1)


def _adam_state(trainer, name):
    state = trainer.optimizer.state[getattr(trainer.model, name)]
    return state["exp_avg"].clone(), state["exp_avg_sq"].clone()


def _check_consistent(trainer):
    """Every optimiser group holds the model's own tensor, and moments/statistics have its rows."""
    n = trainer.model.num_gaussians
    for group in trainer.optimizer.param_groups:
        param = group["params"][0]
        assert param is getattr(trainer.model, group["name"]) and param.shape[0] == n
        state = trainer.optimizer.state.get(param)
        if state:
            assert state["exp_avg"].shape == param.shape and state["exp_avg_sq"].shape == param.shape
    assert trainer.grad_sum.shape == trainer.grad_count.shape == trainer.max_radii.shape == (n,)


def test_loss_falls_on_a_tiny_scene(scene):
    train, test = scene
    trainer = _trainer(train, iterations=30, views_per_step=1, lr_means=0.01, lr_means_final=0.001)
    psnr_before = trainer.evaluate(test)[0]
    history = trainer.fit(test, eval_every=30)
    assert sum(history.loss[-5:]) < 0.6 * sum(history.loss[:5])
    assert history.test_psnr[-1] > psnr_before + 3.0
    assert len(history.loss) == len(history.train_psnr) == len(history.num_gaussians) == 30


def test_prune_keeps_the_moments_of_kept_gaussians(scene):
    trainer = _trainer(scene[0])
    for _ in range(3):
        trainer.step()
    n = trainer.model.num_gaussians
    before = {
        name: (getattr(trainer.model, name).detach().clone(), *_adam_state(trainer, name))
        for name in ("means", "sh_dc")
    }
    trainer.grad_sum[:] = torch.arange(n, dtype=torch.float64)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[[0, 5, 6, n - 1]] = True
    assert trainer.prune(mask) == 4
    _check_consistent(trainer)
    assert trainer.model.num_gaussians == n - 4
    for name, (value, m1, m2) in before.items():
        assert torch.equal(getattr(trainer.model, name).detach(), value[~mask])
        assert torch.equal(_adam_state(trainer, name)[0], m1[~mask])
        assert torch.equal(_adam_state(trainer, name)[1], m2[~mask])
    assert torch.equal(trainer.grad_sum, torch.arange(n, dtype=torch.float64)[~mask])
    trainer.step()  # Adam steps on the new tensors without complaint
    _check_consistent(trainer)


def test_clone_and_split(scene):
    trainer = _trainer(scene[0], max_sh_degree=1)
    for _ in range(2):
        trainer.step()
    m = trainer.model
    n = m.num_gaussians
    old = {
        name: getattr(m, name).detach().clone()
        for name in ("means", "log_scales", "quaternions", "logit_opacities", "sh_dc", "sh_rest")
    }
    moments = {name: _adam_state(trainer, name) for name in old}
    clone, split = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
    clone[[1, 4]] = True
    split[[2, 7, 9]] = True
    trainer.densify(clone, split)
    _check_consistent(trainer)
    kept = ~split
    n_kept = int(kept.sum())
    assert m.num_gaussians == n_kept + 2 + 2 * 3
    for name, value in old.items():
        new = getattr(m, name).detach()
        assert torch.equal(new[:n_kept], value[kept])  # kept rows first, unchanged
        assert torch.equal(new[n_kept : n_kept + 2], value[clone])  # clones: identical copies
        m1, m2 = _adam_state(trainer, name)
        assert torch.equal(m1[:n_kept], moments[name][0][kept]) and torch.equal(m2[:n_kept], moments[name][1][kept])
        assert not m1[n_kept:].any() and not m2[n_kept:].any()  # new rows start with zero moments
    children = slice(n_kept + 2, None)
    means = m.means.detach()[children]
    first, second = means[:3], means[3:]
    assert torch.allclose((first + second) / 2, old["means"][split], atol=1e-6)  # the pair keeps the mean
    # the offset is R S eps: in the parent's frame, divided by its scales, it is a plausible N(0, I) draw
    R = quaternion_to_rotation(old["quaternions"][split])
    local = (R.transpose(1, 2) @ (first - old["means"][split])[:, :, None])[:, :, 0] / old["log_scales"][split].exp()
    assert bool((local.abs() < 6).all()) and bool((first != second).any())
    assert torch.allclose(m.log_scales.detach()[children], (old["log_scales"][split] - math.log(1.6)).repeat(2, 1))
    for name in ("quaternions", "logit_opacities", "sh_dc", "sh_rest"):
        assert torch.equal(
            getattr(m, name).detach()[children], old[name][split].repeat(2, *([1] * (old[name].dim() - 1)))
        )
    trainer.step()
    with pytest.raises(P3DLabValueError, match="cloned and split"):
        both = torch.zeros(m.num_gaussians, dtype=torch.bool)
        both[0] = True
        trainer.densify(both, both)


def test_densify_and_prune_by_gradient_and_cap(scene):
    trainer = _trainer(
        scene[0],
        densify_grad_threshold=1.0,
        percent_dense=0.0,
        max_gaussians=43,
        min_opacity=0.05,
        max_world_scale=10.0,
    )
    m = trainer.model
    n = m.num_gaussians
    with torch.no_grad():
        m.logit_opacities[0] = -10.0  # transparent: pruned
    trainer.grad_sum[:] = 0.0
    trainer.grad_sum[[3, 4, 5, 6, 7]] = torch.tensor([5.0, 4.0, 3.0, 2.0, 0.5], dtype=torch.float64)
    trainer.grad_count[:] = 1.0
    counts = trainer.densify_and_prune()
    # 4 candidates above the threshold but room for 3 more: the 3 largest gradients are split
    assert counts == {"clone": 0, "split": 3, "prune": 1}
    assert m.num_gaussians == n + 3 - 1
    _check_consistent(trainer)
    assert not trainer.grad_sum.any() and not trainer.grad_count.any()  # statistics restart


def test_screen_gradients_are_accumulated(scene):
    trainer = _trainer(scene[0])
    trainer.step()
    assert bool((trainer.grad_count > 0).any()) and bool((trainer.grad_sum > 0).any())
    assert bool((trainer.grad_sum[trainer.grad_count == 0] == 0).all())
    assert bool((trainer.max_radii > 0).any())


def test_opacity_reset(scene):
    trainer = _trainer(scene[0], reset_opacity=0.01)
    for _ in range(2):
        trainer.step()
    m = trainer.model
    with torch.no_grad():
        m.logit_opacities[0] = -8.0  # already below the ceiling: unchanged
    before = m.logit_opacities.detach().clone()
    means_moments = _adam_state(trainer, "means")
    trainer.reset_opacities()
    opacity = torch.sigmoid(m.logit_opacities.detach())
    assert bool((opacity <= 0.01 + 1e-6).all()) and float(m.logit_opacities.detach()[0]) == -8.0
    assert torch.allclose(m.logit_opacities.detach(), torch.minimum(before, torch.tensor(math.log(0.01 / 0.99))))
    m1, m2 = _adam_state(trainer, "logit_opacities")
    assert not m1.any() and not m2.any()
    assert all(torch.equal(a, b) for a, b in zip(_adam_state(trainer, "means"), means_moments))


def test_opacity_reset_on_schedule(scene):
    trainer = _trainer(scene[0], opacity_reset_every=3, iterations=10)
    for _ in range(3):
        trainer.step()
    assert bool((torch.sigmoid(trainer.model.logit_opacities.detach()) <= 0.01 + 1e-6).all())


def test_sh_degree_schedule(scene):
    trainer = _trainer(scene[0], max_sh_degree=2, sh_increase_every=4)
    assert [trainer.sh_degree(s) for s in (0, 3, 4, 7, 8, 100)] == [0, 0, 1, 1, 2, 2]
    start = trainer.model.sh_rest.detach().clone()
    for _ in range(4):
        trainer.step()  # degree 0: the higher coefficients get no gradient
    assert torch.equal(trainer.model.sh_rest.detach(), start)
    for _ in range(4):
        trainer.step()  # degree 1: only its 3 coefficients move
    rest = trainer.model.sh_rest.detach()
    assert not torch.equal(rest[:, :3], start[:, :3]) and torch.equal(rest[:, 3:], start[:, 3:])


def test_fixed_seed_gives_identical_results(scene):
    train, test = scene
    schedule = dict(iterations=12, densify_from=4, densify_every=4, densify_until=8, densify_grad_threshold=1e-5)
    runs = []
    for _ in range(2):
        model = _model()
        history = fit_gaussians(model, train, test, SplatSchedule(**schedule), eval_every=6, seed=5)
        runs.append((model, history))
    (a, ha), (b, hb) = runs
    assert ha.loss == hb.loss and ha.num_gaussians == hb.num_gaussians and ha.test_psnr == hb.test_psnr
    assert ha.num_gaussians[-1] != 40  # densification happened
    for name in ("means", "log_scales", "quaternions", "logit_opacities", "sh_dc"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_callback_and_history(scene):
    records = []
    model = _model()
    history = fit_gaussians(
        model,
        scene[0],
        scene[1],
        SplatSchedule(iterations=4),
        eval_every=2,
        callback=lambda s, r: records.append((s, r)),
    )
    assert [s for s, _ in records] == [0, 1, 2, 3]
    assert records[1][1]["test_psnr"] is not None and records[0][1]["test_psnr"] is None
    assert {"loss", "psnr", "num_gaussians", "seconds", "sh_degree"} <= set(records[0][1])
    assert history.test_steps == [1, 3] and history.seconds == sorted(history.seconds)
    assert len(history.cpu_seconds) == 4 and history.cpu_seconds == sorted(history.cpu_seconds)


def test_max_seconds_stops_early_and_evaluates(scene):
    history = fit_gaussians(_model(), scene[0], scene[1], SplatSchedule(iterations=50), eval_every=100, max_seconds=0.0)
    assert history.steps == [0] and history.test_steps == [0]


def test_model_initialisation_and_errors():
    points = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [0, 0.1, 0], [0, 0, 0.1]])
    model = GaussianModel.from_points(points, torch.full((4, 3), 0.25), max_sh_degree=3, neighbours=1)
    assert model.sh_rest.shape == (4, 15, 3) and model.max_sh_degree == 3
    assert torch.allclose(model.log_scales.exp()[0], torch.full((3,), 0.1))
    splats = model.splats(sh_degree=1)
    assert splats.sh.shape == (4, 4, 3) and torch.allclose(splats.opacities, torch.full((4,), 0.1))
    colour = 0.5 + 0.28209479177387814 * splats.sh[:, 0]
    assert torch.allclose(colour, torch.full((4, 3), 0.25))
    assert torch.allclose(rgb_to_sh_dc(torch.tensor(0.5)), torch.tensor(0.0))
    with pytest.raises(P3DLabValueError):
        GaussianModel.from_points(torch.zeros(4, 2))
    with pytest.raises(P3DLabValueError):
        GaussianModel.from_points(points, max_sh_degree=4)
    with pytest.raises(P3DLabValueError):
        GaussianModel.from_points(torch.tensor([[float("nan"), 0, 0]]))
    with pytest.raises(P3DLabValueError):
        GaussianModel.random_box(0)
    with pytest.raises(P3DLabValueError):
        SplatSchedule(ssim_weight=2.0).validate()


def test_d_ssim_loss():
    a = torch.rand(2, SIZE, SIZE, 3)
    assert float(d_ssim_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    b = torch.rand(2, SIZE, SIZE, 3)
    assert float(d_ssim_loss(a, b, 0.0)) == pytest.approx(float((a - b).abs().mean()))
    assert float(d_ssim_loss(a, b)) > 0
