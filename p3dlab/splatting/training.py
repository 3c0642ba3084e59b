"""Training 3D Gaussian splats on a ``MultiViewSplit`` (docs/gaussian-splatting.md#training).

One step renders ``views_per_step`` training views with ``p3dlab.renderer.render_gaussians``, takes
the loss ``(1 - lambda) L1 + lambda (1 - SSIM)`` against the photographs and moves every raw parameter
with Adam, each at its own learning rate (the means' decays exponentially). Around the steps:

- the screen-space gradient norm ``|dL/d means2d|`` of every visible Gaussian is accumulated;
- every ``densify_every`` steps (between ``densify_from`` and ``densify_until``) Gaussians whose mean
  gradient exceeds ``densify_grad_threshold`` are cloned (small ones) or split in two (large ones),
  and transparent or huge Gaussians are pruned; Adam's moments follow the rows they belong to;
- every ``opacity_reset_every`` steps opacities are clamped down to ``reset_opacity``;
- the spherical-harmonic degree in use rises by one every ``sh_increase_every`` steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from p3dlab.common.history import FitHistory
from p3dlab.errors import P3DLabValueError
from p3dlab.loss.image_losses import psnr, ssim
from p3dlab.renderer.splatting import render_gaussians
from p3dlab.splatting.model import PARAMETER_NAMES, GaussianModel, _logit
from p3dlab.structures.gaussians import quaternion_to_rotation


@dataclass
class SplatSchedule:
    """Hyper-parameters of ``fit_gaussians`` (docs/gaussian-splatting.md#the-schedule).

    Learning rates are Adam's, per raw parameter; the means' rate is multiplied by the scene extent
    and decays exponentially from ``lr_means`` to ``lr_means_final`` over ``iterations``. Distances
    (``percent_dense``, ``max_world_scale``) are fractions of the scene extent; ``max_screen_radius``
    is in pixels (None: no screen-size pruning)."""

    iterations: int = 300
    views_per_step: int = 1
    lr_means: float = 1.6e-3
    lr_means_final: float = 1.6e-5
    lr_log_scales: float = 1e-2
    lr_quaternions: float = 1e-3
    lr_logit_opacities: float = 5e-2
    lr_sh_dc: float = 1e-2
    lr_sh_rest: float = 1e-2 / 20
    ssim_weight: float = 0.2
    densify_from: int = 50
    densify_until: int = 200
    densify_every: int = 50
    densify_grad_threshold: float = 2e-4
    percent_dense: float = 0.01
    max_gaussians: int = 20000
    min_opacity: float = 0.005
    max_world_scale: float = 0.1
    max_screen_radius: Optional[float] = None
    opacity_reset_every: int = 0
    reset_opacity: float = 0.01
    sh_increase_every: int = 100

    def validate(self) -> None:
        if self.iterations < 1 or self.views_per_step < 1:
            raise P3DLabValueError("SplatSchedule: iterations and views_per_step must be >= 1")
        if self.densify_every < 1 or self.sh_increase_every < 1 or self.opacity_reset_every < 0:
            raise P3DLabValueError("SplatSchedule: densify_every, sh_increase_every >= 1 and opacity_reset_every >= 0")
        if not 0.0 <= self.ssim_weight <= 1.0:
            raise P3DLabValueError(f"SplatSchedule: ssim_weight must be in [0, 1], got {self.ssim_weight}")
        if not 0.0 < self.reset_opacity < 1.0 or self.max_gaussians < 1:
            raise P3DLabValueError("SplatSchedule: reset_opacity must be in (0, 1) and max_gaussians >= 1")
        for name in PARAMETER_NAMES:
            if getattr(self, f"lr_{name}") < 0:
                raise P3DLabValueError(f"SplatSchedule: lr_{name} must be >= 0")


@dataclass
class SplatHistory(FitHistory):
    """``FitHistory`` (loss, seconds per step, held-out PSNR) plus, per step, the training PSNR of the
    rendered views, the number of Gaussians, the SH degree in use and the process's CPU seconds (all
    threads: on a busy machine it says what the run cost when the wall clock cannot)."""

    train_psnr: List[float] = field(default_factory=list)
    num_gaussians: List[int] = field(default_factory=list)
    sh_degree: List[int] = field(default_factory=list)
    cpu_seconds: List[float] = field(default_factory=list)
    events: List[Tuple[int, str, int]] = field(default_factory=list)  # (step, "clone"/"split"/"prune"/"reset", count)


def d_ssim_loss(prediction: torch.Tensor, target: torch.Tensor, ssim_weight: float = 0.2) -> torch.Tensor:
    """3DGS's photometric loss ``(1 - lambda) |x - y|_1 + lambda (1 - SSIM(x, y))`` on (..., H, W, 3)
    images; SSIM uses an 11-tap Gaussian window with reflected borders, so border pixels count too."""
    l1 = (prediction - target).abs().mean()
    if ssim_weight == 0:
        return l1
    window = min(11, 2 * ((min(prediction.shape[-3:-1]) - 1) // 2) - 1)
    return (1 - ssim_weight) * l1 + ssim_weight * (1 - ssim(prediction, target, window_size=window, padding="reflect"))


def scene_extent(cameras) -> float:
    """3DGS's scene size: 1.1 × the largest distance of a camera centre from the centres' mean."""
    centres = cameras.get_camera_center().reshape(-1, 3).double()
    return 1.1 * float((centres - centres.mean(0)).norm(dim=1).max().clamp(min=1e-6))


class GaussianTrainer:
    """Adam on a ``GaussianModel`` plus densification, pruning, opacity reset and the SH schedule.

    ``step()`` runs one training step; ``fit()`` runs the schedule; ``clone``, ``split``, ``prune``
    and ``reset_opacities`` are the surgeries densification is made of (public so they can be
    tested and shown). Every surgery replaces the model's parameter tensors and moves Adam's first
    and second moments with their rows (new rows start at zero moments)."""

    def __init__(
        self,
        model: GaussianModel,
        train,
        schedule: Optional[SplatSchedule] = None,
        extent: Optional[float] = None,
        background: Optional[torch.Tensor] = None,
        seed: int = 0,
        backend: str = "auto",
    ):
        self.schedule = schedule if schedule is not None else SplatSchedule()
        self.schedule.validate()
        if len(train) < 1:
            raise P3DLabValueError("GaussianTrainer: the training split has no views")
        self.model, self.train, self.backend = model, train, backend
        self.extent = scene_extent(train.cameras) if extent is None else float(extent)
        self.background = background
        self.image_size = tuple(train.images.shape[1:3])
        self.generator = torch.Generator().manual_seed(seed)
        s = self.schedule
        groups = [
            {"params": [getattr(model, name)], "lr": getattr(s, f"lr_{name}"), "name": name} for name in PARAMETER_NAMES
        ]
        groups[0]["lr"] = s.lr_means * self.extent
        self.optimizer = torch.optim.Adam(groups, lr=0.0, eps=1e-15, foreach=True)
        self.iteration = 0
        self._reset_statistics()

    # ---- schedules -------------------------------------------------------------------------------
    def means_lr(self, step: int) -> float:
        """``exp((1 - t) log lr0 + t log lr1) × extent`` with ``t = step / iterations``."""
        s = self.schedule
        t = min(max(step / max(s.iterations, 1), 0.0), 1.0)
        if s.lr_means <= 0 or s.lr_means_final <= 0:
            return s.lr_means * self.extent
        return math.exp((1 - t) * math.log(s.lr_means) + t * math.log(s.lr_means_final)) * self.extent

    def sh_degree(self, step: Optional[int] = None) -> int:
        """The SH degree in use at ``step``: ``min(step // sh_increase_every, max_sh_degree)``."""
        step = self.iteration if step is None else step
        return min(step // self.schedule.sh_increase_every, self.model.max_sh_degree)

    # ---- one step --------------------------------------------------------------------------------
    def render(self, camera, sh_degree: Optional[int] = None):
        return render_gaussians(
            self.model.splats(self.sh_degree() if sh_degree is None else sh_degree),
            camera,
            self.image_size,
            background=self.background,
            backend=self.backend,
        )

    def step(self) -> Dict[str, float]:
        """One Adam step on ``views_per_step`` random training views; then, when due, densification,
        pruning and the opacity reset. Returns the step's loss, training PSNR and Gaussian count."""
        s, step = self.schedule, self.iteration
        self.optimizer.param_groups[0]["lr"] = self.means_lr(step)
        n_views = min(s.views_per_step, len(self.train))
        views = torch.randperm(len(self.train), generator=self.generator)[:n_views].tolist()
        renders, images = [], []
        for v in views:
            renders.append(self.render(self.train.cameras[v]))
            images.append(renders[-1].image)
        prediction, target = torch.stack(images), self.train.images[views].to(images[0].dtype)
        loss = d_ssim_loss(prediction, target, s.ssim_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            for render in renders:
                self.record_screen_gradients(render, scale=n_views)
            self.optimizer.step()
        record = {
            "loss": float(loss.detach()),
            "psnr": float(psnr(prediction.detach().clamp(0, 1), target)),
            "num_gaussians": self.model.num_gaussians,
            "sh_degree": self.sh_degree(),
        }
        self.iteration += 1
        self._densify_if_due()
        return record

    def record_screen_gradients(self, render, scale: float = 1.0) -> None:
        """Accumulate ``scale × |dL/d means2d × (W/2, H/2)|`` (the gradient with respect to the NDC
        position, as 3DGS measures it, so the threshold does not depend on the image size) and the
        largest screen radius of every Gaussian that was visible (radius > 0) in ``render``."""
        visible = render.radii > 0
        if render.means2d.grad is not None:
            height, width = self.image_size
            half_size = render.means2d.new_tensor([0.5 * width, 0.5 * height])
            norms = (render.means2d.grad.detach() * half_size).norm(dim=-1) * scale
            self.grad_sum += torch.where(visible, norms, torch.zeros_like(norms))
        self.grad_count += visible.to(self.grad_count.dtype)
        self.max_radii = torch.maximum(self.max_radii, render.radii.detach().to(self.max_radii.dtype))

    def _densify_if_due(self) -> None:
        s, it = self.schedule, self.iteration
        if s.densify_from <= it <= s.densify_until and it % s.densify_every == 0:
            self.densify_and_prune()
        if s.opacity_reset_every > 0 and it % s.opacity_reset_every == 0 and it < s.iterations:
            self.reset_opacities()
            self.history_events.append((it, "reset", self.model.num_gaussians))

    # ---- densification ---------------------------------------------------------------------------
    def densify_and_prune(self) -> Dict[str, int]:
        """Clone small and split large Gaussians whose mean screen gradient ``grad_sum / grad_count``
        is at least ``densify_grad_threshold`` (at most ``max_gaussians`` in all, largest gradients
        first), then prune; resets the accumulated statistics."""
        s = self.schedule
        mean_grad = self.grad_sum / self.grad_count.clamp(min=1)
        candidates = mean_grad >= s.densify_grad_threshold
        largest_scale = torch.exp(self.model.log_scales.detach()).max(dim=1).values
        small = largest_scale <= s.percent_dense * self.extent
        room = s.max_gaussians - self.model.num_gaussians
        clone_mask, split_mask = candidates & small, candidates & ~small
        # a clone adds one Gaussian, a split adds one net (two children replace the parent)
        if int(candidates.sum()) > max(room, 0):
            order = torch.argsort(torch.where(candidates, mean_grad, torch.full_like(mean_grad, -1.0)), descending=True)
            allowed = torch.zeros_like(candidates)
            allowed[order[: max(room, 0)]] = True
            clone_mask, split_mask = clone_mask & allowed, split_mask & allowed
        counts = {"clone": int(clone_mask.sum()), "split": int(split_mask.sum())}
        self.densify(clone_mask, split_mask)
        counts["prune"] = self.prune(self.prune_mask())
        for kind in ("clone", "split", "prune"):
            self.history_events.append((self.iteration, kind, counts[kind]))
        self._reset_statistics()
        return counts

    def densify(self, clone_mask: torch.Tensor, split_mask: torch.Tensor) -> None:
        """Clone the Gaussians of ``clone_mask`` (an identical copy is appended) and split those of
        ``split_mask``: each is replaced by two children at ``mean ± R S eps`` (one antithetic pair
        drawn from the Gaussian itself, ``eps ~ N(0, I)``), with scales ``S / 1.6`` and the parent's
        rotation, opacity and colour. The pair's centroid is the parent's mean."""
        m = self.model
        clone_mask, split_mask = clone_mask.bool(), split_mask.bool()
        if bool((clone_mask & split_mask).any()):
            raise P3DLabValueError("densify: a Gaussian cannot be cloned and split at once")
        with torch.no_grad():
            new_rows = {name: getattr(m, name).detach()[clone_mask] for name in PARAMETER_NAMES}
            parents = split_mask.nonzero().squeeze(1)
            if len(parents):
                scales = torch.exp(m.log_scales.detach()[parents])
                rotations = quaternion_to_rotation(m.quaternions.detach()[parents])
                eps = torch.randn(len(parents), 3, generator=self.generator).to(scales)
                offsets = (rotations @ (scales * eps)[:, :, None])[:, :, 0]
                centres = m.means.detach()[parents]
                children = {
                    "means": torch.cat([centres + offsets, centres - offsets]),
                    "log_scales": (m.log_scales.detach()[parents] - math.log(1.6)).repeat(2, 1),
                }
                for name in PARAMETER_NAMES:
                    value = children.get(name)
                    if value is None:
                        parent = getattr(m, name).detach()[parents]
                        value = parent.repeat(2, *([1] * (parent.dim() - 1)))
                    new_rows[name] = torch.cat([new_rows[name], value])
        keep = ~split_mask
        self._replace_rows(keep, new_rows)

    def prune_mask(self) -> torch.Tensor:
        """Gaussians to remove: opacity below ``min_opacity``, largest world scale above
        ``max_world_scale × extent`` or (when set) screen radius above ``max_screen_radius``."""
        s, m = self.schedule, self.model
        with torch.no_grad():
            mask = torch.sigmoid(m.logit_opacities) < s.min_opacity
            mask |= torch.exp(m.log_scales).max(dim=1).values > s.max_world_scale * self.extent
            if s.max_screen_radius is not None and self.max_radii.shape[0] == mask.shape[0]:
                mask |= self.max_radii > s.max_screen_radius
        if bool(mask.all()):  # never remove every Gaussian: keep the most opaque one
            mask[torch.argmax(m.logit_opacities.detach())] = False
        return mask

    def prune(self, mask: torch.Tensor) -> int:
        """Remove the Gaussians of ``mask`` (and their optimiser moments); returns how many."""
        count = int(mask.sum())
        if count:
            self._replace_rows(~mask.bool(), None)
        return count

    def reset_opacities(self) -> None:
        """``opacity = min(opacity, reset_opacity)`` for every Gaussian, and zero the opacity's Adam
        moments (3DGS's reset: lets densification start again from see-through Gaussians)."""
        m = self.model
        with torch.no_grad():
            ceiling = torch.full_like(m.logit_opacities, _logit(self.schedule.reset_opacity))
            m.logit_opacities.copy_(torch.minimum(m.logit_opacities, ceiling))
        state = self.optimizer.state.get(m.logit_opacities)
        if state:
            state["exp_avg"].zero_()
            state["exp_avg_sq"].zero_()

    def _replace_rows(self, keep: torch.Tensor, new_rows: Optional[Dict[str, torch.Tensor]]) -> None:
        """Keep the rows ``keep`` of every parameter, append ``new_rows``, and do the same to Adam's
        ``exp_avg`` / ``exp_avg_sq`` (zeros for appended rows); ``step`` is kept. The densification
        statistics follow (zeros for new rows)."""
        m = self.model
        for group in self.optimizer.param_groups:
            name = group["name"]
            old = group["params"][0]
            value = old.detach()[keep]
            appended = 0
            if new_rows is not None:
                appended = new_rows[name].shape[0]
                value = torch.cat([value, new_rows[name].to(value)])
            param = torch.nn.Parameter(value)
            state = self.optimizer.state.pop(old, None)
            if state:
                for key in ("exp_avg", "exp_avg_sq"):
                    kept = state[key][keep]
                    state[key] = torch.cat([kept, kept.new_zeros((appended, *kept.shape[1:]))])
                self.optimizer.state[param] = state
            group["params"][0] = param
            setattr(m, name, param)
        appended = 0 if new_rows is None else new_rows["means"].shape[0]
        self.grad_sum = torch.cat([self.grad_sum[keep], self.grad_sum.new_zeros(appended)])
        self.grad_count = torch.cat([self.grad_count[keep], self.grad_count.new_zeros(appended)])
        self.max_radii = torch.cat([self.max_radii[keep], self.max_radii.new_zeros(appended)])

    def _reset_statistics(self) -> None:
        n, device = self.model.num_gaussians, self.model.means.device
        self.grad_sum = torch.zeros(n, dtype=torch.float64, device=device)
        self.grad_count = torch.zeros(n, dtype=torch.float64, device=device)
        self.max_radii = torch.zeros(n, dtype=torch.float64, device=device)
        if not hasattr(self, "history_events"):
            self.history_events: List[Tuple[int, str, int]] = []

    # ---- evaluation and the loop -----------------------------------------------------------------
    def evaluate(self, split) -> Tuple[float, torch.Tensor]:
        """PSNR over all views of ``split`` and the renders (V, H, W, 3), without gradients."""
        with torch.no_grad():
            images = torch.stack([self.render(split.cameras[v]).image for v in range(len(split))]).clamp(0, 1)
        return float(psnr(images, split.images.to(images.dtype))), images

    def fit(
        self,
        test=None,
        eval_every: int = 50,
        target_psnr: Optional[float] = None,
        callback: Optional[Callable[[int, Dict[str, float]], None]] = None,
        iterations: Optional[int] = None,
        max_seconds: Optional[float] = None,
    ) -> SplatHistory:
        """Run ``iterations`` (default the schedule's) steps, or stop early once ``max_seconds`` have
        passed (the last step is then evaluated). ``callback(step, record)`` runs after every step with
        the record of ``step()`` plus ``seconds`` and ``test_psnr`` (None when not evaluated)."""
        iterations = self.schedule.iterations if iterations is None else iterations
        if eval_every < 1:
            raise P3DLabValueError(f"fit: eval_every must be >= 1, got {eval_every}")
        history = SplatHistory(target_psnr=target_psnr)
        history.start = time.perf_counter()
        cpu_start = time.process_time()
        self.history_events = history.events
        for _ in range(iterations):
            step = self.iteration
            record = self.step()
            loss_tensor = torch.tensor(record["loss"])
            history.record(step, loss_tensor)
            history.train_psnr.append(record["psnr"])
            history.num_gaussians.append(self.model.num_gaussians)
            history.sh_degree.append(record["sh_degree"])
            history.cpu_seconds.append(time.process_time() - cpu_start)
            record["test_psnr"] = None
            out_of_time = max_seconds is not None and time.perf_counter() - history.start >= max_seconds
            due = history.evaluation_due(step, eval_every, iterations) or out_of_time
            if test is not None and len(test) and due:
                record["test_psnr"] = self.evaluate(test)[0]
                history.record_test(step, record["test_psnr"])
            record["seconds"] = time.perf_counter() - history.start
            record["num_gaussians"] = self.model.num_gaussians
            if callback is not None:
                callback(step, record)
            if out_of_time:
                break
        return history


def fit_gaussians(
    model: GaussianModel,
    train,
    test=None,
    schedule: Optional[SplatSchedule] = None,
    eval_every: int = 50,
    target_psnr: Optional[float] = None,
    seed: int = 0,
    callback: Optional[Callable[[int, Dict[str, float]], None]] = None,
    background: Optional[torch.Tensor] = None,
    backend: str = "auto",
    max_seconds: Optional[float] = None,
) -> SplatHistory:
    """Train ``model`` in place on ``train`` (a ``MultiViewSplit``) with ``schedule``; held-out PSNR on
    ``test`` every ``eval_every`` steps; stops early after ``max_seconds``. Deterministic for a fixed
    ``seed`` (and no ``max_seconds``). Returns the history; see ``GaussianTrainer`` to drive the steps
    yourself."""
    trainer = GaussianTrainer(model, train, schedule, background=background, seed=seed, backend=backend)
    return trainer.fit(test, eval_every, target_psnr, callback, max_seconds=max_seconds)
