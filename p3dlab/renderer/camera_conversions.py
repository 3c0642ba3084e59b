"""Converters between p3dlab cameras and OpenCV / OpenGL conventions
(docs/conventions.md#opencv-opengl-and-nmr).

With ``M_cv = diag(-1, -1, 1)`` and ``M_gl = diag(-1, 1, -1)``:

* OpenCV (x right, y down, z forward; ``x_cam = R_cv x + t_cv``): ``R = R_cv^T M_cv``, ``T = t_cv M_cv``.
* OpenGL (x right, y up, z backward; ``x_cam = R_gl x + t_gl``): ``R = R_gl^T M_gl``, ``T = t_gl M_gl``.
* A camera-to-world pose ``c2w = [[R_c, c], [0, 1]]`` (NeRF / Blender JSON, OpenGL axes):
  ``R = R_c M_gl``, ``T = -c R``.
"""

from __future__ import annotations

import math

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.renderer.cameras import PerspectiveCameras


def _diag(values, like: torch.Tensor) -> torch.Tensor:
    return torch.diag(torch.tensor(values, dtype=like.dtype, device=like.device))


def _hw(image_size, n, like):
    t = torch.as_tensor(image_size, dtype=like.dtype, device=like.device).reshape(-1, 2).expand(n, 2)
    return t[:, 0], t[:, 1]


def cameras_from_opencv_projection(R, tvec, camera_matrix, image_size, in_ndc: bool = True) -> PerspectiveCameras:
    """OpenCV extrinsics (R (N, 3, 3), tvec (N, 3)) and intrinsics K (N, 3, 3) -> PerspectiveCameras.

    ``in_ndc=True`` (default) converts f and c to NDC (``f_ndc = f_px / s``,
    ``p_ndc = -((c_x, c_y) - (W/2, H/2)) / s``, s = min(H, W)/2); ``in_ndc=False`` keeps pixels.
    """
    R, tvec, K = (torch.as_tensor(x) for x in (R, tvec, camera_matrix))
    if R.shape[-2:] != (3, 3) or K.shape[-2:] != (3, 3) or tvec.shape[-1] != 3:
        raise P3DLabValueError("cameras_from_opencv_projection: R (N,3,3), tvec (N,3), camera_matrix (N,3,3)")
    R, K, tvec = R.reshape(-1, 3, 3), K.reshape(-1, 3, 3), tvec.reshape(-1, 3)
    m = _diag([-1.0, -1.0, 1.0], R)
    R_p = R.transpose(1, 2) @ m
    T_p = tvec @ m
    f_px = torch.stack([K[:, 0, 0], K[:, 1, 1]], 1)
    c_px = torch.stack([K[:, 0, 2], K[:, 1, 2]], 1)
    h, w = _hw(image_size, R.shape[0], R)
    if not in_ndc:
        return PerspectiveCameras(f_px, c_px, R_p, T_p, in_ndc=False, image_size=torch.stack([h, w], 1))
    s = (torch.minimum(h, w) / 2.0)[:, None]
    half = torch.stack([w, h], 1) / 2.0
    return PerspectiveCameras(f_px / s, -(c_px - half) / s, R_p, T_p)


def opencv_from_cameras_projection(cameras: PerspectiveCameras, image_size):
    """Inverse of :func:`cameras_from_opencv_projection`: returns (R_cv, tvec, K) for OpenCV."""
    R, T = cameras.R, cameras.T
    m = _diag([-1.0, -1.0, 1.0], R)
    R_cv = (R @ m).transpose(1, 2)
    t_cv = T @ m
    fl, pp = cameras.focal_length, cameras.principal_point
    n = R.shape[0]
    fl, pp = fl.expand(n, 2), pp.expand(n, 2)
    if cameras.in_ndc():
        h, w = _hw(image_size, n, R)
        s = (torch.minimum(h, w) / 2.0)[:, None]
        f_px = fl * s
        c_px = -pp * s + torch.stack([w, h], 1) / 2.0
    else:
        f_px, c_px = fl, pp
    K = R.new_zeros(n, 3, 3)
    K[:, 0, 0], K[:, 1, 1] = f_px[:, 0], f_px[:, 1]
    K[:, 0, 2], K[:, 1, 2] = c_px[:, 0], c_px[:, 1]
    K[:, 2, 2] = 1.0
    return R_cv, t_cv, K


def camera_from_opengl_view(view: torch.Tensor):
    """OpenGL world-to-camera matrix (N, 4, 4), column vectors -> p3dlab (R, T)."""
    view = torch.as_tensor(view).reshape(-1, 4, 4)
    m = _diag([-1.0, 1.0, -1.0], view)
    return view[:, :3, :3].transpose(1, 2) @ m, view[:, :3, 3] @ m


def opengl_view_from_camera(R: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """p3dlab (R, T) -> OpenGL world-to-camera matrix (N, 4, 4), column vectors."""
    m = _diag([-1.0, 1.0, -1.0], R)
    n = R.shape[0]
    view = torch.eye(4, dtype=R.dtype, device=R.device).repeat(n, 1, 1)
    view[:, :3, :3] = (R @ m).transpose(1, 2)
    view[:, :3, 3] = T @ m
    return view


def camera_from_c2w(c2w: torch.Tensor):
    """Camera-to-world pose (N, 4, 4) or (N, 3, 4) in OpenGL axes (NeRF/Blender) -> (R, T)."""
    c2w = torch.as_tensor(c2w)
    c2w = c2w.reshape(-1, *c2w.shape[-2:])
    m = _diag([-1.0, 1.0, -1.0], c2w)
    R = c2w[:, :3, :3] @ m
    T = -(c2w[:, None, :3, 3] @ R)[:, 0]
    return R, T


def c2w_from_camera(R: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """p3dlab (R, T) -> camera-to-world (N, 4, 4) in OpenGL axes."""
    m = _diag([-1.0, 1.0, -1.0], R)
    n = R.shape[0]
    out = torch.eye(4, dtype=R.dtype, device=R.device).repeat(n, 1, 1)
    out[:, :3, :3] = R @ m
    out[:, :3, 3] = -(T[:, None, :] @ R.transpose(1, 2))[:, 0]
    return out


def opengl_projection_matrix(fov, aspect_ratio, znear, zfar, degrees: bool = True) -> torch.Tensor:
    """The classic OpenGL perspective matrix (4, 4) (column vectors, z mapped to [-1, 1], camera
    looking along -z). p3dlab's FoV matrix instead keeps z positive and maps it to [0, 1]."""
    fov = math.radians(fov) if degrees else fov
    f = 1.0 / math.tan(fov / 2.0)
    P = torch.zeros(4, 4)
    P[0, 0] = f / aspect_ratio
    P[1, 1] = f
    P[2, 2] = (zfar + znear) / (znear - zfar)
    P[2, 3] = 2.0 * zfar * znear / (znear - zfar)
    P[3, 2] = -1.0
    return P


def fov_from_opengl_projection(P: torch.Tensor, degrees: bool = True):
    """Inverse of :func:`opengl_projection_matrix`: (fov, aspect_ratio, znear, zfar)."""
    f = float(P[1, 1])
    aspect = f / float(P[0, 0])
    a, b = float(P[2, 2]), float(P[2, 3])
    znear = b / (a - 1.0)
    zfar = b / (a + 1.0)
    fov = 2.0 * math.atan(1.0 / f)
    return (math.degrees(fov) if degrees else fov), aspect, znear, zfar
