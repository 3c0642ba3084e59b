"""SMPLify on a CPU: fit a body's shape and pose to 2D keypoints seen by a camera with a known focal
length (the energy and the schedule: docs/body-models.md#smplify).

``E = sum_i c_i rho(|pi(J_i) - x_i|^2) + l_pose E_pose + l_shape |beta|^2 + l_angle E_angle``

with the Geman-McClure penalty ``rho(e) = sigma^2 e / (sigma^2 + e)`` on squared pixel residuals, a
Gaussian-mixture pose prior fitted to a procedural pose distribution, and hinge penalties on knees and
elbows bending the wrong way. The fit runs in stages, as in the paper: the camera translation and
the global orientation from the torso keypoints first, then the whole body with the prior weights
decreasing stage by stage.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from p3dlab.body.model import BodyModel
from p3dlab.body.skeleton import BONES, NUM_BODY_JOINTS, joint_index
from p3dlab.errors import P3DLabValueError
from p3dlab.renderer import PerspectiveCameras

#: Joints whose keypoints place the camera in the first stage: hips, shoulders and the spine.
TORSO_JOINTS: Tuple[int, ...] = tuple(
    joint_index(n)
    for n in ("pelvis", "left_hip", "right_hip", "spine1", "spine2", "spine3", "left_shoulder", "right_shoulder")
)

#: (body_pose joint, axis, sign) of the hinge joints' limits: ``sign * theta_axis`` must stay >= 0.
#: Knees bend about +x (the shin swings back), the left elbow about -y and the right about +y (the
#: forearm swings forward).
ANGLE_LIMITS: Tuple[Tuple[int, int, float], ...] = (
    (joint_index("left_knee") - 1, 0, 1.0),
    (joint_index("right_knee") - 1, 0, 1.0),
    (joint_index("left_elbow") - 1, 1, -1.0),
    (joint_index("right_elbow") - 1, 1, 1.0),
)

#: Global orientations the fit starts from: facing the camera (a half turn about y: the body faces
#: +z, the camera looks along +z) and facing away from it.
FACING_CAMERA = (0.0, math.pi, 0.0)
FACING_AWAY = (0.0, 0.0, 0.0)


def keypoint_camera(focal_length: float = 500.0, image_size: int = 256, dtype=torch.float32) -> PerspectiveCameras:
    """A pinhole camera at the origin looking along +z with a focal length in pixels and the
    principal point at the image centre (the camera SMPLify assumes)."""
    if not (focal_length > 0 and image_size > 0):
        raise P3DLabValueError("keypoint_camera: focal_length and image_size must be positive")
    c = image_size / 2.0
    return PerspectiveCameras(
        focal_length=((focal_length, focal_length),),
        principal_point=((c, c),),
        in_ndc=False,
        image_size=((image_size, image_size),),
        R=torch.eye(3, dtype=dtype)[None],
        T=torch.zeros(1, 3, dtype=dtype),
    )


def project(camera: PerspectiveCameras, points: torch.Tensor) -> torch.Tensor:
    """(N, P, 3) world points -> (N, P, 2) pixel coordinates (u right, v down; (0, 0) the top-left
    corner of the image)."""
    return camera.to(points.device).transform_points_screen(points)[..., :2]


def geman_mcclure(squared_residual: torch.Tensor, sigma: float) -> torch.Tensor:
    """``rho(e) = sigma^2 e / (sigma^2 + e)`` of squared residuals e: about e for ``e << sigma^2``,
    at most ``sigma^2`` however far an outlier lies."""
    s2 = sigma * sigma
    return s2 * squared_residual / (s2 + squared_residual)


def angle_limit_energy(body_pose: torch.Tensor) -> torch.Tensor:
    """(N,) ``sum max(0, -sign * theta_axis)^2`` over the knees and elbows of ``body_pose`` (N, 63):
    zero while they bend the natural way."""
    pose = body_pose.reshape(body_pose.shape[0], NUM_BODY_JOINTS, 3)
    total = torch.zeros(pose.shape[0], dtype=pose.dtype, device=pose.device)
    for joint, axis, sign in ANGLE_LIMITS:
        total = total + torch.relu(-sign * pose[:, joint, axis]) ** 2
    return total


# ----------------------------------------------------------------------------- procedural poses
def sample_poses(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 63) body poses from a procedural distribution of everyday activities — standing, walking,
    sitting, arms raised, reaching — each with random amplitudes and a little noise on every joint
    (axis-angle per joint, the order of ``body_pose``)."""
    if n < 1:
        raise P3DLabValueError(f"sample_poses: n must be positive, got {n}")
    g = torch.Generator().manual_seed(seed)

    def u(lo, hi, size=None):
        size = size or (n,)
        return lo + (hi - lo) * torch.rand(size, generator=g, dtype=torch.float64)

    pose = 0.05 * torch.randn(n, NUM_BODY_JOINTS, 3, generator=g, dtype=torch.float64)
    activity = torch.randint(0, 5, (n,), generator=g)
    j = {
        name: joint_index(name) - 1
        for name in (
            "left_hip",
            "right_hip",
            "left_knee",
            "right_knee",
            "spine1",
            "spine2",
            "left_shoulder",
            "right_shoulder",
            "left_elbow",
            "right_elbow",
            "neck",
            "head",
        )
    }
    down, swing, bend = u(0.9, 1.4), u(-0.6, 0.6), u(0.0, 1.2)
    # arms: down at the sides for standing, walking and sitting; raised or reaching otherwise
    raised = u(-0.2, 1.1)
    reach = u(0.6, 1.5)
    shoulder_z = torch.where(activity <= 2, -down, raised)
    shoulder_z = torch.where(activity == 4, -u(0.1, 0.5), shoulder_z)
    shoulder_y = torch.where(activity == 4, -reach, torch.where(activity == 1, swing, 0.0 * swing))
    pose[:, j["left_shoulder"], 2] += shoulder_z
    pose[:, j["right_shoulder"], 2] -= shoulder_z
    pose[:, j["left_shoulder"], 1] += shoulder_y
    pose[:, j["right_shoulder"], 1] += torch.where(
        activity == 1, swing, torch.where(activity == 4, u(0.0, 0.4), 0.0 * swing)
    )
    pose[:, j["left_elbow"], 1] -= bend
    pose[:, j["right_elbow"], 1] += bend * u(0.5, 1.0)
    # legs: walking swings them in opposition, sitting folds hips and knees
    phase = u(-0.5, 0.5)
    hip = torch.where(activity == 1, -phase, torch.where(activity == 2, -u(1.2, 1.6), -u(0.0, 0.2)))
    hip_r = torch.where(activity == 1, phase, torch.where(activity == 2, hip + u(-0.1, 0.1), -u(0.0, 0.2)))
    knee = torch.where(activity == 2, u(1.2, 1.7), torch.where(activity == 1, u(0.0, 0.8), u(0.0, 0.2)))
    knee_r = torch.where(activity == 2, knee + u(-0.1, 0.1), torch.where(activity == 1, u(0.0, 0.8), u(0.0, 0.2)))
    pose[:, j["left_hip"], 0] += hip
    pose[:, j["right_hip"], 0] += hip_r
    pose[:, j["left_knee"], 0] += knee
    pose[:, j["right_knee"], 0] += knee_r
    pose[:, j["spine1"], 0] += u(-0.1, 0.3)
    pose[:, j["spine2"], 1] += u(-0.3, 0.3)
    pose[:, j["neck"], 0] += u(-0.2, 0.3)
    pose[:, j["head"], 1] += u(-0.4, 0.4)
    # natural limits hold exactly for the samples
    for joint, axis, sign in ANGLE_LIMITS:
        pose[:, joint, axis] = sign * (sign * pose[:, joint, axis]).clamp_min(0.0)
    return pose.reshape(n, -1)


class GaussianMixturePrior(torch.nn.Module):
    """A pose prior: the energy of the best component of a Gaussian mixture,
    ``E(theta) = min_k [ (theta - mu_k)^T Lambda_k (theta - mu_k) / 2 - log w_k + log |Sigma_k| / 2 ] - c``
    (SMPLify's "max-mixture"; c makes the smallest possible energy 0)."""

    def __init__(self, means: torch.Tensor, covariances: torch.Tensor, weights: torch.Tensor):
        super().__init__()
        K, D = means.shape
        if covariances.shape != (K, D, D) or weights.shape != (K,):
            raise P3DLabValueError("GaussianMixturePrior: means (K, D), covariances (K, D, D), weights (K,)")
        chol = torch.linalg.cholesky(covariances.double())
        precision_chol = torch.linalg.inv(chol)  # Lambda = P^T P with P = L^-1
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        const = 0.5 * logdet - torch.log(weights.double())
        self.register_buffer("means", means)
        self.register_buffer("precision_chol", precision_chol.to(means.dtype))
        self.register_buffer("component_cost", (const - const.min()).to(means.dtype))
        self.register_buffer("weights", weights)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        """(N, D) poses -> (N,) energies."""
        diff = pose[None, :, :] - self.means.to(pose.dtype)[:, None, :]  # (K, N, D)
        z = diff @ self.precision_chol.to(pose.dtype).transpose(1, 2)  # rows P_k (theta - mu_k)
        energy = 0.5 * (z * z).sum(-1) + self.component_cost.to(pose.dtype)[:, None]  # (K, N)
        return energy.min(dim=0).values

    @staticmethod
    def fit(samples: torch.Tensor, components: int = 6, iterations: int = 25, seed: int = 0, reg: float = 1e-3):
        """Fit a mixture to samples (M, D) by expectation-maximisation (k-means++-style start,
        ``reg`` added to every covariance's diagonal)."""
        X = samples.double()
        M, D = X.shape
        if M < 2 * components:
            raise P3DLabValueError("GaussianMixturePrior.fit: need at least two samples per component")
        g = torch.Generator().manual_seed(seed)
        centres = [X[torch.randint(0, M, (1,), generator=g)].squeeze(0)]
        for _ in range(1, components):
            d2 = torch.cdist(X, torch.stack(centres)).min(1).values ** 2
            centres.append(X[torch.multinomial(d2 / d2.sum(), 1, generator=g)].squeeze(0))
        means = torch.stack(centres)
        cov = torch.eye(D, dtype=torch.float64).expand(components, D, D) * X.var(0).mean()
        weights = torch.full((components,), 1.0 / components, dtype=torch.float64)
        eye = torch.eye(D, dtype=torch.float64)
        for _ in range(iterations):
            chol = torch.linalg.cholesky(cov)
            diff = X[:, None, :] - means
            z = torch.linalg.solve_triangular(chol, diff.permute(1, 2, 0), upper=False)  # (K, D, M)
            logp = -0.5 * (z * z).sum(1).T - torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
            logp = logp + torch.log(weights)
            resp = torch.softmax(logp, dim=1)  # (M, K)
            nk = resp.sum(0) + 1e-9
            weights = nk / M
            means = (resp.T @ X) / nk[:, None]
            diff = X[:, None, :] - means
            cov = torch.stack([(resp[:, k, None] * diff[:, k]).T @ diff[:, k] for k in range(components)])
            cov = cov / nk[:, None, None] + reg * eye
        return GaussianMixturePrior(means.float(), cov.float(), weights.float())


@functools.lru_cache(maxsize=2)
def default_pose_prior(components: int = 6) -> GaussianMixturePrior:
    """The mixture fitted to 1200 ``sample_poses`` (built once per process, cached)."""
    return GaussianMixturePrior.fit(sample_poses(1200, seed=1), components)


# ----------------------------------------------------------------------------- the fit
@dataclass
class SMPLifyHistory:
    """One entry per energy evaluation: the stage, the total energy, the mean reprojection error of
    the keypoints (pixels) and the wall time."""

    stage: List[int] = field(default_factory=list)
    energy: List[float] = field(default_factory=list)
    reprojection_px: List[float] = field(default_factory=list)
    seconds: List[float] = field(default_factory=list)
    start: float = field(default_factory=time.perf_counter, repr=False)

    def record(self, stage: int, energy: torch.Tensor, px: torch.Tensor) -> None:
        self.stage.append(stage)
        self.energy.append(float(energy.detach()))
        self.reprojection_px.append(float(px.detach()))
        self.seconds.append(time.perf_counter() - self.start)


class SMPLifyResult(NamedTuple):
    """A fit: the parameters (each (1, ...)), the fitted joints (1, J, 3) and their projections
    (1, J, 2), the final energy and mean reprojection error (pixels), the history of the chosen
    start, and the final energy of every start (``start_energies``; the fit is the lowest)."""

    betas: torch.Tensor
    body_pose: torch.Tensor
    global_orient: torch.Tensor
    transl: torch.Tensor
    joints: torch.Tensor
    keypoints: torch.Tensor
    energy: float
    reprojection_px: float
    history: SMPLifyHistory
    start: int
    start_energies: List[float]


#: The body stages' prior weights (pose, shape), strong to weak, as in the paper.
STAGE_WEIGHTS: Tuple[Tuple[float, float], ...] = ((10.0, 10.0), (2.0, 2.0), (0.3, 0.5), (0.03, 0.1))


def _initial_translation(model, keypoints, camera, orient, image_size, focal_length):
    """Similar triangles: the depth at which the mean body's torso (shoulder-to-hip distance)
    has the keypoints' length in pixels; x and y put the pelvis on its keypoint."""
    J = model.posed_joints(global_orient=torch.tensor([orient], dtype=keypoints.dtype))[0]
    ls, rs, lh, rh = (joint_index(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip"))
    torso3d = ((J[ls] + J[rs]) / 2 - (J[lh] + J[rh]) / 2).norm()
    k = keypoints[0]
    torso2d = ((k[ls] + k[rs]) / 2 - (k[lh] + k[rh]) / 2).norm().clamp_min(1.0)
    depth = focal_length * torso3d / torso2d
    # the projection's direction for +x and +y, read off the camera (p3dlab's screen convention)
    probe = project(camera, torch.tensor([[[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]], dtype=keypoints.dtype))[0]
    sign = torch.sign(probe[1] - probe[0])
    c = image_size / 2.0
    pelvis = k[joint_index("pelvis")]
    xy = (pelvis - c) * sign * depth / focal_length - J[0, :2]
    return torch.stack([xy[0], xy[1], depth])[None]


def fit_smplify(
    model: BodyModel,
    keypoints: torch.Tensor,
    focal_length: float = 500.0,
    image_size: int = 256,
    confidence: Optional[torch.Tensor] = None,
    starts: Sequence[Sequence[float]] = (FACING_CAMERA,),
    iterations: int = 300,
    sigma: float = 30.0,
    robust: bool = True,
    stage_weights: Sequence[Tuple[float, float]] = STAGE_WEIGHTS,
    angle_weight: float = 100.0,
    pose_prior: Optional[GaussianMixturePrior] = None,
) -> SMPLifyResult:
    """Fit ``model``'s betas, body pose, global orientation and translation to ``keypoints``
    (J, 2) or (1, J, 2) in pixels (one per joint of the model; ``confidence`` (J,) weights them, 0
    for a missing one), seen by ``keypoint_camera(focal_length, image_size)``.

    Each start (a global orientation) runs the stages: the camera translation and orientation from
    the torso keypoints (a tenth of ``iterations``), then the body once per entry of
    ``stage_weights`` (pose prior, shape prior), the rest of ``iterations`` split between them. Each
    stage is L-BFGS with a strong-Wolfe line search; ``iterations`` counts its iterations.
    ``robust=False`` replaces Geman-McClure by plain squared error. The start with the lowest final
    energy is the fit."""
    keypoints = torch.as_tensor(keypoints)
    if keypoints.ndim == 2:
        keypoints = keypoints[None]
    J = model.J_template.shape[0]
    if keypoints.shape != (1, J, 2):
        raise P3DLabValueError(f"fit_smplify: keypoints must be ({J}, 2) pixels, got {tuple(keypoints.shape)}")
    if not torch.isfinite(keypoints).all():
        raise P3DLabValueError("fit_smplify: keypoints must be finite (give a missing one confidence 0)")
    if iterations < 10 or not starts:
        raise P3DLabValueError("fit_smplify: iterations must be at least 10 and starts non-empty")
    dtype = model.v_template.dtype
    keypoints = keypoints.to(dtype)
    conf = torch.ones(J, dtype=dtype) if confidence is None else torch.as_tensor(confidence, dtype=dtype)
    if conf.shape != (J,) or (conf < 0).any():
        raise P3DLabValueError(f"fit_smplify: confidence must be ({J},) and non-negative")
    camera = keypoint_camera(focal_length, image_size, dtype)
    prior = pose_prior if pose_prior is not None else default_pose_prior()
    torso = torch.zeros(J, dtype=dtype)
    torso[list(TORSO_JOINTS)] = 1.0
    camera_iterations = max(iterations // 10, 5)
    body_iterations = max((iterations - camera_iterations) // len(stage_weights), 5)

    def data_term(joints, weights):
        e = ((project(camera, joints) - keypoints) ** 2).sum(-1)  # (1, J) squared pixel residuals
        rho = geman_mcclure(e, sigma) if robust else e
        px = (weights * e.sqrt()).sum() / weights.sum().clamp_min(1e-9)
        return (weights * rho).sum(), px

    best = None
    energies = []
    for s, orient in enumerate(starts):
        history = SMPLifyHistory()
        params = {
            "betas": torch.zeros(1, model.num_betas, dtype=dtype),
            "body_pose": prior.means[prior.weights.argmax()][None].to(dtype).clone(),
            "global_orient": torch.tensor([orient], dtype=dtype),
            "transl": _initial_translation(model, keypoints, camera, orient, image_size, focal_length).to(dtype),
        }
        for p in params.values():
            p.requires_grad_(True)

        def run_stage(stage, free, iters, w_pose, w_shape, weights, params=params, history=history):
            opt = torch.optim.LBFGS(
                [params[k] for k in free],
                lr=1.0,
                max_iter=iters,
                line_search_fn="strong_wolfe",
                tolerance_grad=1e-9,
                tolerance_change=1e-12,
                history_size=20,
            )

            def closure():
                opt.zero_grad()
                joints = model.posed_joints(**params)
                energy, px = data_term(joints, weights)
                if w_pose > 0:
                    energy = energy + w_pose * prior(params["body_pose"]).sum()
                    energy = energy + angle_weight * angle_limit_energy(params["body_pose"]).sum()
                if w_shape > 0:
                    energy = energy + w_shape * (params["betas"] ** 2).sum()
                energy.backward()
                history.record(stage, energy, px)
                return energy

            opt.step(closure)

        run_stage(0, ("transl", "global_orient"), camera_iterations, 0.0, 0.0, conf * torso)
        for k, (w_pose, w_shape) in enumerate(stage_weights):
            run_stage(k + 1, tuple(params), body_iterations, w_pose, w_shape, conf)
        energies.append(history.energy[-1])
        if best is None or energies[-1] < energies[best[0]]:
            best = (s, {k: v.detach().clone() for k, v in params.items()}, history)
    s, params, history = best
    with torch.no_grad():
        joints = model.posed_joints(**params)
        fitted = project(camera, joints)
        px = float(((fitted - keypoints) ** 2).sum(-1).sqrt().mul(conf).sum() / conf.sum().clamp_min(1e-9))
    return SMPLifyResult(
        params["betas"],
        params["body_pose"],
        params["global_orient"],
        params["transl"],
        joints,
        fitted,
        energies[s],
        px,
        history,
        s,
        energies,
    )


# ----------------------------------------------------------------------------- pictures
def draw_keypoints(
    image=None,
    keypoints: Optional[torch.Tensor] = None,
    fitted: Optional[torch.Tensor] = None,
    image_size: int = 256,
    bones=BONES,
) -> np.ndarray:
    """The overlay of a fit: ``keypoints`` (the input, green) and ``fitted`` (the fitted skeleton's
    projections, red), each (J, 2) pixels, drawn as dots joined by the skeleton's bones onto
    ``image`` ((H, W, 3) floats in [0, 1] or uint8; white when None). Returns a uint8 (H, W, 3)."""
    from PIL import Image, ImageDraw

    if image is None:
        canvas = np.full((image_size, image_size, 3), 255, np.uint8)
    else:
        canvas = np.asarray(image.detach().cpu() if torch.is_tensor(image) else image)
        if canvas.ndim != 3 or canvas.shape[-1] < 3:
            raise P3DLabValueError(f"draw_keypoints: image must be (H, W, 3), got {canvas.shape}")
        canvas = canvas[..., :3]
        if canvas.dtype != np.uint8:
            canvas = (np.clip(canvas, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    picture = Image.fromarray(np.ascontiguousarray(canvas))
    draw = ImageDraw.Draw(picture)
    radius = max(1, picture.size[0] // 100)
    for points, colour in ((keypoints, (0, 170, 0)), (fitted, (220, 0, 0))):
        if points is None:
            continue
        pts = torch.as_tensor(points).detach().reshape(-1, 2).cpu().tolist()
        for child, parent in bones:
            draw.line([tuple(pts[child]), tuple(pts[parent])], fill=colour, width=max(1, radius // 2 + 1))
        for x, y in pts:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
    return np.asarray(picture)
