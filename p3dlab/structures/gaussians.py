"""A set of 3D Gaussians for splatting (docs/kernels.md#gaussian-splatting).

Gaussian n has a mean ``mu_n`` (world), a covariance ``Sigma_n = R_n S_n S_n^T R_n^T`` built from its
standard deviations along its local axes (``S_n = diag(scales_n)``) and the rotation ``R_n`` of a
quaternion, an opacity ``o_n`` in [0, 1] and a colour given by spherical-harmonic coefficients.

``GaussianSplats`` holds *activated* values and keeps autograd: a training loop keeps raw parameters
(log-scales, opacity logits, ...) and builds one of these per step with ``exp``/``sigmoid``.
"""

from __future__ import annotations

from typing import Union

import torch

from p3dlab.errors import P3DLabValueError

__all__ = ["GaussianSplats", "quaternion_to_rotation"]

_SH_SIZES = {1: 0, 4: 1, 9: 2, 16: 3}


def quaternion_to_rotation(quaternions: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (w, x, y, z), real part first, of any non-zero length -> (..., 3, 3)
    rotation matrices. The quaternion is divided by its norm first, so ``q`` and ``2 q`` give the same
    rotation (the gradient of the norm's direction is kept). Matrices act on column vectors:
    ``R = [[1 - 2(y^2 + z^2), 2(xy - wz), 2(xz + wy)], ...]``."""
    q = quaternions / quaternions.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    )  # fmt: skip
    return torch.stack(rows, -1).reshape(q.shape[:-1] + (3, 3))


def _check(name: str, t, shape_text: str, ndim: int, last=None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise P3DLabValueError(f"GaussianSplats: {name} must be a tensor {shape_text}, got {type(t).__name__}")
    if t.ndim != ndim or (last is not None and tuple(t.shape[1:]) != tuple(last)):
        raise P3DLabValueError(f"GaussianSplats: {name} must have shape {shape_text}, got {tuple(t.shape)}")
    if t.dtype not in (torch.float32, torch.float64):
        raise P3DLabValueError(f"GaussianSplats: {name} must be float32 or float64, got {t.dtype}")
    if not bool(torch.isfinite(t.detach().sum())) and not bool(torch.isfinite(t).all()):  # the sum: one pass
        bad = int((~torch.isfinite(t)).reshape(t.shape[0], -1).any(1).nonzero()[0, 0])
        raise P3DLabValueError(f"GaussianSplats: {name} of Gaussian {bad} is not finite (NaN or inf)")
    return t


class GaussianSplats:
    """N 3D Gaussians: activated parameters, with autograd.

    Args:
        means: (N, 3) centres in world coordinates.
        scales: (N, 3) standard deviations along the Gaussian's local axes, all > 0.
        rotations: (N, 4) quaternions (w, x, y, z), real part first (PyTorch3D's convention), any
            non-zero length: they are normalised where used (a zero quaternion is an error).
        opacities: (N,) in [0, 1].
        sh: (N, K, 3) spherical-harmonic colour coefficients, K = (d + 1)^2 for degree d in 0..3.
            Degree 0 gives the colour ``max(0.5 + C0 sh[:, 0], 0)``, C0 = 0.28209479177387814.

    All tensors share one dtype (float32 or float64) and one device, and must be finite.
    """

    def __init__(self, means, scales, rotations, opacities, sh):
        means = _check("means", means, "(N, 3)", 2, (3,))
        n = means.shape[0]
        scales = _check("scales", scales, f"(N, 3) = ({n}, 3)", 2, (3,))
        rotations = _check("rotations", rotations, f"(N, 4) = ({n}, 4)", 2, (4,))
        opacities = _check("opacities", opacities, f"(N,) = ({n},)", 1)
        sh = _check("sh", sh, f"(N, K, 3) = ({n}, K, 3)", 3)
        for name, t in (("scales", scales), ("rotations", rotations), ("opacities", opacities), ("sh", sh)):
            if t.shape[0] != n:
                raise P3DLabValueError(f"GaussianSplats: {name} has {t.shape[0]} rows for {n} means")
            if t.dtype != means.dtype or t.device != means.device:
                raise P3DLabValueError(
                    f"GaussianSplats: {name} is {t.dtype} on {t.device} but means are {means.dtype} on {means.device}"
                )
        if sh.shape[2] != 3 or sh.shape[1] not in _SH_SIZES:
            raise P3DLabValueError(
                "GaussianSplats: sh must have shape (N, K, 3) with K = (d + 1)^2 in (1, 4, 9, 16), "
                f"got {tuple(sh.shape)}"
            )
        if n:
            if bool((scales <= 0).any()):
                k = int((scales <= 0).any(1).nonzero()[0, 0])
                raise P3DLabValueError(
                    f"GaussianSplats: scales must be > 0 (standard deviations), Gaussian {k} has {scales[k].tolist()}; "
                    "keep log-scales as parameters and pass their exp()"
                )
            zero = rotations.detach().norm(dim=1) < 1e-12
            if bool(zero.any()):
                k = int(zero.nonzero()[0, 0])
                raise P3DLabValueError(
                    f"GaussianSplats: the quaternion of Gaussian {k} is zero ({rotations[k].tolist()}); it has no "
                    "rotation. Quaternions of any other length are normalised"
                )
            if bool(((opacities < 0) | (opacities > 1)).any()):
                k = int(((opacities < 0) | (opacities > 1)).nonzero()[0, 0])
                raise P3DLabValueError(
                    f"GaussianSplats: opacities must be in [0, 1], Gaussian {k} has {float(opacities[k])}; "
                    "keep logits as parameters and pass their sigmoid()"
                )
        self.means, self.scales, self.rotations, self.opacities, self.sh = means, scales, rotations, opacities, sh

    # ------------------------------------------------------------------ properties
    @property
    def num_gaussians(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        """The degree d of the coefficients held: K = (d + 1)^2."""
        return _SH_SIZES[self.sh.shape[1]]

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def __len__(self) -> int:
        return self.num_gaussians

    def __repr__(self) -> str:
        return f"GaussianSplats(num_gaussians={self.num_gaussians}, sh_degree={self.sh_degree}, dtype={self.dtype})"

    def rotation_matrices(self) -> torch.Tensor:
        """(N, 3, 3) rotations of the normalised quaternions."""
        return quaternion_to_rotation(self.rotations)

    def covariances(self) -> torch.Tensor:
        """(N, 3, 3) world covariances ``Sigma = R S S^T R^T``, ``S = diag(scales)``."""
        M = self.rotation_matrices() * self.scales[:, None, :]  # R S: column k scaled by s_k
        return (M[:, :, None, :] * M[:, None, :, :]).sum(3)  # M M^T, without batched 3 x 3 matmuls

    # ------------------------------------------------------------------ copies
    def _map(self, fn) -> "GaussianSplats":
        return GaussianSplats(fn(self.means), fn(self.scales), fn(self.rotations), fn(self.opacities), fn(self.sh))

    def to(self, device) -> "GaussianSplats":
        return self._map(lambda t: t.to(device))

    def detach(self) -> "GaussianSplats":
        return self._map(lambda t: t.detach())

    def clone(self) -> "GaussianSplats":
        return self._map(lambda t: t.clone())

    def __getitem__(self, index: Union[int, slice, torch.Tensor, list]) -> "GaussianSplats":
        """The Gaussians selected by a boolean mask (N,), an index tensor or list, a slice or an int."""
        if isinstance(index, int):
            index = [index]
        if isinstance(index, list):
            index = torch.as_tensor(index, dtype=torch.long, device=self.device)
        if (
            isinstance(index, torch.Tensor)
            and index.dtype == torch.bool
            and tuple(index.shape) != (self.num_gaussians,)
        ):
            raise P3DLabValueError(f"GaussianSplats: a mask must have shape ({self.num_gaussians},)")
        return self._map(lambda t: t[index])
