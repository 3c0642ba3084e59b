"""Cameras with PyTorch3D's names, defaults and conventions (docs/conventions.md#cameras).

World to view is ``X_view = X_world @ R + T`` (row vectors; the columns of R are the camera axes in
world coordinates). View space is +X left, +Y up, +Z forward into the scene. Each camera class maps
view space to NDC (+X left, +Y up, the shorter image side spanning [-1, 1]); see the class
docstrings for the depth coordinate each one produces. ``image_size`` is always (H, W).

Every method accepts keyword overrides of the camera's fields (``R=``, ``T=``, ``fov=``, ...), so a
renderer can be called with a new pose without building a new camera.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError
from p3dlab.transforms import Transform3d

_R_DEFAULT = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


class LookAtDegenerateWarning(UserWarning):
    """The look-at rotation is near-singular: camera on (or near) the up axis, or at ``at``."""


def _broadcast(values: dict, device=None, dtype=torch.float32) -> dict:
    """Convert every field to a tensor and broadcast them to one batch size N (dim 0)."""
    out = {}
    for k, v in values.items():
        if v is None:
            out[k] = None
            continue
        t = torch.as_tensor(v)
        if t.is_floating_point() or not isinstance(v, torch.Tensor):
            t = t.to(dtype)  # one dtype for all fields
        if device is not None:
            t = t.to(device)
        out[k] = t
    sizes = {v.shape[0] for v in out.values() if v is not None and v.ndim > 0}
    n = max(sizes) if sizes else 1
    if any(s not in (1, n) for s in sizes):
        raise P3DLabValueError(f"camera fields have incompatible batch sizes {sorted(sizes)}")
    for k, v in out.items():
        if v is None:
            continue
        if v.ndim == 0:
            v = v.expand(n)
        elif v.shape[0] == 1 and n > 1:
            v = v.expand(n, *v.shape[1:])
        out[k] = v
    return out


def get_world_to_view_transform(R=_R_DEFAULT, T=((0.0, 0.0, 0.0),)) -> Transform3d:
    """The world-to-view transform ``X_view = X_world @ R + T`` of (N, 3, 3) R and (N, 3) T, as a
    (N, 4, 4) row-layout ``Transform3d`` ``[[R, 0], [T, 1]]`` (PyTorch3D's module-level function).

    R and T need the same batch size N; a single (3, 3) R or (3,) T counts as N = 1.
    """
    R = torch.as_tensor(R, dtype=torch.float32) if not isinstance(R, torch.Tensor) else R
    T = torch.as_tensor(T, dtype=R.dtype, device=R.device) if not isinstance(T, torch.Tensor) else T
    R = R[None] if R.ndim == 2 else R
    T = T[None] if T.ndim == 1 else T
    if R.ndim != 3 or R.shape[1:] != (3, 3):
        raise P3DLabValueError(f"get_world_to_view_transform: R must be (N, 3, 3), got {tuple(R.shape)}")
    if T.ndim != 2 or T.shape[1] != 3:
        raise P3DLabValueError(f"get_world_to_view_transform: T must be (N, 3), got {tuple(T.shape)}")
    if R.shape[0] != T.shape[0]:
        raise P3DLabValueError(
            f"get_world_to_view_transform: R and T need the same batch size, got {R.shape[0]} and {T.shape[0]}"
        )
    n = R.shape[0]
    top = torch.cat([R, R.new_zeros(n, 3, 1)], 2)
    bottom = torch.cat([T, T.new_ones(n, 1)], 1)[:, None]
    return Transform3d(matrix=torch.cat([top, bottom], 1))


class CamerasBase:
    """Shared machinery: fields, overrides, world-to-view, NDC/screen conversions, unprojection."""

    _FIELDS: Sequence[str] = ("R", "T")

    def __init__(self, device=None, **fields):
        R = fields.get("R")
        if R is not None:
            R = torch.as_tensor(R)
            if R.ndim == 2:
                R = R[None]
            if R.shape[-2:] != (3, 3):
                raise P3DLabValueError(f"R must be (N, 3, 3), got {tuple(R.shape)}")
            fields["R"] = R
        T = fields.get("T")
        if T is not None:
            T = torch.as_tensor(T)
            if T.ndim == 1:
                T = T[None]
            if T.shape[-1] != 3:
                raise P3DLabValueError(f"T must be (N, 3), got {tuple(T.shape)}")
            fields["T"] = T
        # one dtype for every field: R's if it is a floating tensor, else float32
        R0 = fields.get("R")
        dtype = R0.dtype if isinstance(R0, torch.Tensor) and R0.is_floating_point() else torch.float32
        b = _broadcast(fields, device, dtype)
        for k, v in b.items():
            setattr(self, k, v)
        self._N = b["R"].shape[0]
        self.device = b["R"].device

    # -------------------------------------------------------------- basics
    def __len__(self) -> int:
        return self._N

    def __repr__(self) -> str:
        return f"{type(self).__name__}(N={self._N}, device={self.device})"

    def _get(self, name: str, kwargs: dict):
        v = kwargs.get(name, getattr(self, name))
        if v is None or name in ("image_size",):
            return v
        v = torch.as_tensor(v, device=self.device)
        if not v.is_floating_point():
            v = v.to(self.R.dtype)
        return v

    def _fields(self, kwargs: dict) -> dict:
        vals = {k: self._get(k, kwargs) for k in self._FIELDS}
        vals["R"] = vals["R"][None] if vals["R"].ndim == 2 else vals["R"]
        vals["T"] = vals["T"][None] if vals["T"].ndim == 1 else vals["T"]
        dtype = vals["R"].dtype if vals["R"].is_floating_point() else self.R.dtype
        return _broadcast(vals, self.device, dtype)

    def clone(self):
        return self.__class__(
            **{
                k: (getattr(self, k).clone() if isinstance(getattr(self, k), torch.Tensor) else getattr(self, k))
                for k in self._FIELDS
            }
        )

    def to(self, device):
        return self.__class__(device=device, **{k: getattr(self, k) for k in self._FIELDS})

    def cpu(self):
        return self.to("cpu")

    def __getitem__(self, index):
        if isinstance(index, int):
            index = [index]
        fields = {}
        for k in self._FIELDS:
            v = getattr(self, k)
            fields[k] = v[index] if isinstance(v, torch.Tensor) and v.ndim > 0 else v
        return self.__class__(**fields)

    def is_perspective(self) -> bool:
        raise NotImplementedError

    def in_ndc(self) -> bool:
        return True

    def get_znear(self):
        return None

    def get_image_size(self):
        return getattr(self, "image_size", None)

    # -------------------------------------------------------------- transforms
    def get_world_to_view_transform(self, **kwargs) -> Transform3d:
        """``X_view = X_world @ R + T`` as a (N, 4, 4) row-layout Transform3d."""
        f = self._fields(kwargs)
        return get_world_to_view_transform(f["R"], f["T"])

    def get_projection_transform(self, **kwargs) -> Transform3d:
        raise NotImplementedError

    def get_full_projection_transform(self, **kwargs) -> Transform3d:
        """World -> the camera's projection output (NDC for NDC cameras)."""
        return self.get_world_to_view_transform(**kwargs).compose(self.get_projection_transform(**kwargs))

    def transform_points(self, points: torch.Tensor, eps: Optional[float] = None, **kwargs) -> torch.Tensor:
        """World points (P, 3) or (N, P, 3) -> projection output (see the class docstring)."""
        return self.get_full_projection_transform(**kwargs).transform_points(points, eps=eps)

    def get_ndc_camera_transform(self, **kwargs) -> Transform3d:
        """Projection output -> NDC: identity for NDC cameras. For screen-space cameras the
        output ``f X/Z + p`` is the true pixel mirrored about p, so ``x_ndc = (x - 2 p_x + W/2)/s``."""
        if self.in_ndc():
            return Transform3d(dtype=self.R.dtype, device=self.device)
        f = self._fields(kwargs)
        h, w = _image_size_tensor(kwargs.get("image_size", self.get_image_size()), self._N, self.device, self.R.dtype)
        s = torch.minimum(h, w) / 2.0
        pp = f["principal_point"]
        n = pp.shape[0]
        m = torch.eye(4, dtype=self.R.dtype, device=self.device).repeat(n, 1, 1)
        m[:, 0, 0] = 1.0 / s
        m[:, 1, 1] = 1.0 / s
        m[:, 3, 0] = (w / 2.0 - 2.0 * pp[:, 0]) / s
        m[:, 3, 1] = (h / 2.0 - 2.0 * pp[:, 1]) / s
        return Transform3d(matrix=m)

    def transform_points_ndc(self, points: torch.Tensor, eps: Optional[float] = None, **kwargs) -> torch.Tensor:
        """World points -> NDC (x, y) with the camera's depth coordinate."""
        t = self.get_full_projection_transform(**kwargs).compose(self.get_ndc_camera_transform(**kwargs))
        return t.transform_points(points, eps=eps)

    def transform_points_screen(
        self, points: torch.Tensor, eps: Optional[float] = None, with_xyflip: bool = True, image_size=None, **kwargs
    ) -> torch.Tensor:
        """World points -> pixel coordinates: ``u = W/2 - s x_ndc``, ``v = H/2 - s y_ndc``
        (s = min(H, W)/2; (0, 0) is the top-left corner of the top-left pixel). With
        ``with_xyflip=False`` the NDC axes are kept: ``u = W/2 + s x_ndc``, ``v = H/2 + s y_ndc``."""
        image_size = image_size if image_size is not None else kwargs.get("image_size", self.get_image_size())
        if image_size is None:
            raise P3DLabValueError("transform_points_screen needs image_size=(H, W)")
        ndc = self.transform_points_ndc(points, eps=eps, **kwargs)
        h, w = _image_size_tensor(image_size, self._N, self.device, ndc.dtype)
        s = torch.minimum(h, w) / 2.0
        sign = -1.0 if with_xyflip else 1.0
        batched = ndc if ndc.ndim == 3 else ndc[None]
        u = w[:, None] / 2.0 + sign * s[:, None] * batched[..., 0]
        v = h[:, None] / 2.0 + sign * s[:, None] * batched[..., 1]
        out = torch.stack([u, v, batched[..., 2]], -1)
        return out if ndc.ndim == 3 else out[0]

    def get_camera_center(self, **kwargs) -> torch.Tensor:
        """(N, 3) camera centres in world coordinates: ``C = -T @ R^T``."""
        f = self._fields(kwargs)
        return -(f["T"][:, None, :] @ f["R"].transpose(1, 2))[:, 0]

    def unproject_points(self, xy_depth: torch.Tensor, world_coordinates: bool = True, **kwargs) -> torch.Tensor:
        """(x, y, depth) -> world (or view) points; ``depth`` is view Z. See subclasses."""
        raise NotImplementedError

    def _invert_projection(self, points: torch.Tensor, world_coordinates: bool, **kwargs) -> torch.Tensor:
        """Projection-output points back to world (or view) space through the inverse matrix."""
        if world_coordinates:
            t = self.get_full_projection_transform(**kwargs)
        else:
            t = self.get_projection_transform(**kwargs)
        return t.inverse(invert_composed=True).transform_points(points)


def _image_size_tensor(image_size, n: int, device, dtype):
    if image_size is None:
        raise P3DLabValueError("this camera needs image_size=(H, W)")
    t = torch.as_tensor(image_size, dtype=dtype, device=device)
    if t.ndim == 1:
        t = t[None]
    if t.shape[-1] != 2:
        raise P3DLabValueError(f"image_size must be (H, W) or (N, 2), got {tuple(t.shape)}")
    t = t.expand(n, 2) if t.shape[0] == 1 else t
    return t[:, 0], t[:, 1]


def _row_matrix_from_column(K: torch.Tensor) -> Transform3d:
    return Transform3d(matrix=K.transpose(1, 2).contiguous())


def _check_znear(znear) -> None:
    """A perspective camera's near plane must lie in front of it: ``znear`` finite and > 0."""
    z = torch.as_tensor(znear)
    if z.is_complex() or not bool(torch.isfinite(z).all()) or bool((z <= 0).any()):
        raise P3DLabValueError(
            "FoVPerspectiveCameras: znear must be finite and > 0, the distance of the near clipping plane in front "
            f"of the camera (MeshRasterizer clips faces at znear / 2 by default), got znear={z.tolist()}"
        )


class FoVPerspectiveCameras(CamerasBase):
    """OpenGL-style perspective camera (docs/conventions.md#fovperspectivecameras); no image size.

    ``x_ndc = X/(a t Z)``, ``y_ndc = Y/(t Z)``, ``z_ndc = f/(f - n) - f n/((f - n) Z)`` with
    t = tan(fov/2), a = aspect_ratio (pixel aspect: keep 1 for non-square images, then ``fov``
    spans the shorter side). ``K`` (N, 4, 4), column form, overrides the projection.
    """

    _FIELDS = ("R", "T", "znear", "zfar", "aspect_ratio", "fov", "K")

    def __init__(
        self,
        znear=1.0,
        zfar=100.0,
        aspect_ratio=1.0,
        fov=60.0,
        degrees: bool = True,
        R=_R_DEFAULT,
        T=((0.0, 0.0, 0.0),),
        K=None,
        device=None,
    ):
        self.degrees = degrees
        _check_znear(znear)
        super().__init__(device=device, R=R, T=T, znear=znear, zfar=zfar, aspect_ratio=aspect_ratio, fov=fov, K=K)

    def clone(self):
        c = super().clone()
        c.degrees = self.degrees
        return c

    def __getitem__(self, index):
        c = super().__getitem__(index)
        c.degrees = self.degrees
        return c

    def to(self, device):
        c = super().to(device)
        c.degrees = self.degrees
        return c

    def is_perspective(self) -> bool:
        return True

    def get_znear(self):
        return self.znear

    def compute_projection_matrix(self, znear, zfar, fov, aspect_ratio, degrees: bool) -> torch.Tensor:
        """(N, 4, 4) column-form projection matrix."""
        fov = fov * (math.pi / 180.0) if degrees else fov
        t = torch.tan(fov / 2.0)
        n = t.shape[0]
        K = t.new_zeros(n, 4, 4)
        K[:, 0, 0] = 1.0 / (aspect_ratio * t)
        K[:, 1, 1] = 1.0 / t
        K[:, 2, 2] = zfar / (zfar - znear)
        K[:, 2, 3] = -zfar * znear / (zfar - znear)
        K[:, 3, 2] = 1.0
        return K

    def get_projection_transform(self, **kwargs) -> Transform3d:
        f = self._fields(kwargs)
        if f["K"] is not None:
            return _row_matrix_from_column(f["K"])
        _check_znear(f["znear"])  # a znear passed at call time, or set after construction
        K = self.compute_projection_matrix(
            f["znear"], f["zfar"], f["fov"], f["aspect_ratio"], kwargs.get("degrees", self.degrees)
        )
        return _row_matrix_from_column(K)

    def unproject_points(self, xy_depth, world_coordinates: bool = True, scaled_depth_input: bool = False, **kwargs):
        """(…, 3) NDC x, y and view depth Z (or z_ndc with ``scaled_depth_input=True``) -> points."""
        f = self._fields(kwargs)
        if scaled_depth_input:
            sdepth = xy_depth[..., 2:3]
        else:
            zn, zf = f["znear"], f["zfar"]
            zn = zn.view(-1, *([1] * (xy_depth.ndim - 1)))
            zf = zf.view(-1, *([1] * (xy_depth.ndim - 1)))
            sdepth = zf / (zf - zn) - zf * zn / ((zf - zn) * xy_depth[..., 2:3])
            if xy_depth.ndim == 2:
                sdepth = sdepth[0]
        pts = torch.cat([xy_depth[..., :2], sdepth], -1)
        return self._invert_projection(pts, world_coordinates, **kwargs)


class _IntrinsicsCamera(CamerasBase):
    """Shared by PerspectiveCameras and OrthographicCameras: focal length and principal point,
    in NDC units (``in_ndc=True``) or in pixels with ``image_size`` (``in_ndc=False``)."""

    _FIELDS = ("R", "T", "focal_length", "principal_point", "K", "image_size")

    def __init__(
        self,
        focal_length=1.0,
        principal_point=((0.0, 0.0),),
        R=_R_DEFAULT,
        T=((0.0, 0.0, 0.0),),
        K=None,
        device=None,
        in_ndc: bool = True,
        image_size=None,
    ):
        fl = (
            focal_length
            if isinstance(focal_length, torch.Tensor)
            else torch.as_tensor(focal_length, dtype=torch.float32)
        )
        if fl.ndim == 0:
            fl = fl.reshape(1, 1)
        elif fl.ndim == 1:
            fl = fl[:, None]  # one focal length per camera
        if fl.ndim != 2 or fl.shape[1] not in (1, 2):
            raise P3DLabValueError(f"focal_length must be a scalar, (N,), (N, 1) or (N, 2), got {tuple(fl.shape)}")
        fl = fl.expand(-1, 2)
        if not in_ndc and image_size is None:
            raise P3DLabValueError(f"{type(self).__name__}(in_ndc=False) needs image_size=(H, W)")
        self._in_ndc = in_ndc
        super().__init__(
            device=device, R=R, T=T, focal_length=fl, principal_point=principal_point, K=K, image_size=image_size
        )

    def in_ndc(self) -> bool:
        return self._in_ndc

    def _rebuild(self, c):
        c._in_ndc = self._in_ndc
        return c

    def clone(self):
        fields = {
            k: (getattr(self, k).clone() if isinstance(getattr(self, k), torch.Tensor) else getattr(self, k))
            for k in self._FIELDS
        }
        return self.__class__(in_ndc=self._in_ndc, **fields)

    def to(self, device):
        return self.__class__(device=device, in_ndc=self._in_ndc, **{k: getattr(self, k) for k in self._FIELDS})

    def __getitem__(self, index):
        if isinstance(index, int):
            index = [index]
        fields = {}
        for k in self._FIELDS:
            v = getattr(self, k)
            fields[k] = v[index] if isinstance(v, torch.Tensor) and v.ndim > 0 else v
        return self.__class__(in_ndc=self._in_ndc, **fields)


class PerspectiveCameras(_IntrinsicsCamera):
    """Pinhole camera (docs/conventions.md#perspectivecameras):
    ``x = f_x X/Z + p_x``, ``y = f_y Y/Z + p_y``, ``z = 1/Z``.

    With ``in_ndc=True`` (default) f and p are NDC values (f = 1 is a 90° field of view on the
    short side). With ``in_ndc=False`` they are pixels, p in image coordinates, and ``image_size``
    is required; ``transform_points`` then returns the pixel mirrored about p (PyTorch3D's
    behaviour): use ``transform_points_screen`` for pixels.
    """

    def is_perspective(self) -> bool:
        return True

    def get_projection_transform(self, **kwargs) -> Transform3d:
        f = self._fields(kwargs)
        if f["K"] is not None:
            return _row_matrix_from_column(f["K"])
        fl, pp = f["focal_length"], f["principal_point"]
        K = fl.new_zeros(fl.shape[0], 4, 4)
        K[:, 0, 0], K[:, 1, 1] = fl[:, 0], fl[:, 1]
        K[:, 0, 2], K[:, 1, 2] = pp[:, 0], pp[:, 1]
        K[:, 2, 3] = 1.0
        K[:, 3, 2] = 1.0
        return _row_matrix_from_column(K)

    def unproject_points(self, xy_depth, world_coordinates: bool = True, from_ndc: bool = False, **kwargs):
        """(…, 3) x, y (projection output, or NDC with ``from_ndc=True``) and view depth Z -> points."""
        if from_ndc:
            xy_depth = _ndc_xy_to_output(self, xy_depth, **kwargs)
        pts = torch.cat([xy_depth[..., :2], 1.0 / xy_depth[..., 2:3]], -1)
        return self._invert_projection(pts, world_coordinates, **kwargs)


class OrthographicCameras(_IntrinsicsCamera):
    """Orthographic camera (docs/conventions.md#orthographic-cameras):
    ``x = f_x X + p_x``, ``y = f_y Y + p_y``, ``z = Z``."""

    def is_perspective(self) -> bool:
        return False

    def get_projection_transform(self, **kwargs) -> Transform3d:
        f = self._fields(kwargs)
        if f["K"] is not None:
            return _row_matrix_from_column(f["K"])
        fl, pp = f["focal_length"], f["principal_point"]
        K = fl.new_zeros(fl.shape[0], 4, 4)
        K[:, 0, 0], K[:, 1, 1] = fl[:, 0], fl[:, 1]
        K[:, 0, 3], K[:, 1, 3] = pp[:, 0], pp[:, 1]
        K[:, 2, 2] = 1.0
        K[:, 3, 3] = 1.0
        return _row_matrix_from_column(K)

    def unproject_points(self, xy_depth, world_coordinates: bool = True, from_ndc: bool = False, **kwargs):
        if from_ndc:
            xy_depth = _ndc_xy_to_output(self, xy_depth, **kwargs)
        return self._invert_projection(xy_depth, world_coordinates, **kwargs)


def _ndc_xy_to_output(cam, xy_depth, **kwargs):
    """Map NDC x, y back to a screen camera's projection-output space (depth untouched)."""
    if cam.in_ndc():
        return xy_depth
    inv = cam.get_ndc_camera_transform(**kwargs).inverse()
    xy = inv.transform_points(torch.cat([xy_depth[..., :2], torch.zeros_like(xy_depth[..., 2:3])], -1))[..., :2]
    return torch.cat([xy, xy_depth[..., 2:3]], -1)


class FoVOrthographicCameras(CamerasBase):
    """Orthographic camera given by its view volume (docs/conventions.md#orthographic-cameras):
    ``x_ndc = 2 s_x X/(max_x - min_x) - (max_x + min_x)/(max_x - min_x)`` (same for y),
    ``z_ndc = (s_z Z - n)/(f - n)``."""

    _FIELDS = ("R", "T", "znear", "zfar", "max_y", "min_y", "max_x", "min_x", "scale_xyz", "K")

    def __init__(
        self,
        znear=1.0,
        zfar=100.0,
        max_y=1.0,
        min_y=-1.0,
        max_x=1.0,
        min_x=-1.0,
        scale_xyz=((1.0, 1.0, 1.0),),
        R=_R_DEFAULT,
        T=((0.0, 0.0, 0.0),),
        K=None,
        device=None,
    ):
        super().__init__(
            device=device,
            R=R,
            T=T,
            znear=znear,
            zfar=zfar,
            max_y=max_y,
            min_y=min_y,
            max_x=max_x,
            min_x=min_x,
            scale_xyz=scale_xyz,
            K=K,
        )

    def is_perspective(self) -> bool:
        return False

    def get_znear(self):
        return self.znear

    def get_projection_transform(self, **kwargs) -> Transform3d:
        f = self._fields(kwargs)
        if f["K"] is not None:
            return _row_matrix_from_column(f["K"])
        s = f["scale_xyz"]
        n = s.shape[0]
        K = s.new_zeros(n, 4, 4)
        K[:, 0, 0] = 2.0 * s[:, 0] / (f["max_x"] - f["min_x"])
        K[:, 1, 1] = 2.0 * s[:, 1] / (f["max_y"] - f["min_y"])
        K[:, 0, 3] = -(f["max_x"] + f["min_x"]) / (f["max_x"] - f["min_x"])
        K[:, 1, 3] = -(f["max_y"] + f["min_y"]) / (f["max_y"] - f["min_y"])
        K[:, 2, 2] = s[:, 2] / (f["zfar"] - f["znear"])
        K[:, 2, 3] = -f["znear"] / (f["zfar"] - f["znear"])
        K[:, 3, 3] = 1.0
        return _row_matrix_from_column(K)

    def unproject_points(self, xy_depth, world_coordinates: bool = True, scaled_depth_input: bool = False, **kwargs):
        f = self._fields(kwargs)
        if scaled_depth_input:
            pts = xy_depth
        else:
            sz = f["scale_xyz"][:, 2]
            zn, zf = f["znear"], f["zfar"]
            shape = (-1,) + (1,) * (xy_depth.ndim - 2)
            z = (sz.view(shape) * xy_depth[..., 2] - zn.view(shape)) / (zf - zn).view(shape)
            if xy_depth.ndim == 2:
                z = z[0] if z.ndim > 1 else z
            pts = torch.cat([xy_depth[..., :2], z[..., None]], -1)
        return self._invert_projection(pts, world_coordinates, **kwargs)


# ----------------------------------------------------------------------------- look-at
def camera_position_from_spherical_angles(
    distance, elevation, azimuth, degrees: bool = True, device=None
) -> torch.Tensor:
    """``C = (d cos e sin a, d sin e, d cos e cos a)``: azimuth 0 is on +Z, elevation 90 above."""
    d, e, a = (
        torch.as_tensor(v, dtype=torch.float32, device=device) if not isinstance(v, torch.Tensor) else v
        for v in (distance, elevation, azimuth)
    )
    dtype = torch.promote_types(torch.promote_types(d.dtype, e.dtype), a.dtype)
    d, e, a = (v.to(dtype).reshape(-1) for v in (d, e, a))
    if degrees:
        e, a = e * (math.pi / 180.0), a * (math.pi / 180.0)
    n = max(d.shape[0], e.shape[0], a.shape[0])
    d, e, a = (v.expand(n) for v in (d, e, a))
    return torch.stack([d * torch.cos(e) * torch.sin(a), d * torch.sin(e), d * torch.cos(e) * torch.cos(a)], 1)


def look_at_rotation(camera_position, at=((0, 0, 0),), up=((0, 1, 0),), device=None) -> torch.Tensor:
    """(N, 3, 3) R whose columns are the camera axes: ``z = nrm(at - C)``, ``x = nrm(up x z)``,
    ``y = nrm(z x x)``, with ``nrm(v) = v / max(|v|, 1e-5)`` (PyTorch3D's exact output, including
    its fallback ``x = nrm(y x z)`` when all |x_i| <= 5e-3). Differentiable in C.

    Warns ``LookAtDegenerateWarning`` when sin(angle(view direction, up)) < 1e-4 or |C - at| < 1e-6:
    there R is not a valid rotation or its gradient explodes.
    """
    C = (
        torch.as_tensor(camera_position, dtype=torch.float32, device=device)
        if not isinstance(camera_position, torch.Tensor)
        else camera_position
    )
    C = C.reshape(-1, 3)
    at = torch.as_tensor(at, dtype=C.dtype, device=C.device).reshape(-1, 3)
    up = torch.as_tensor(up, dtype=C.dtype, device=C.device).reshape(-1, 3)
    n = max(C.shape[0], at.shape[0], up.shape[0])
    C, at, up = C.expand(n, 3), at.expand(n, 3), up.expand(n, 3)
    with torch.no_grad():
        diff = (at - C).norm(dim=1)
        s = torch.cross(F.normalize(up, dim=1), F.normalize(at - C, dim=1), dim=1).norm(dim=1)
        if bool((diff < 1e-6).any()) or bool((s < 1e-4).any()):
            warnings.warn(
                "look_at_rotation: the camera is (nearly) on the up axis through `at`, or at `at`; the rotation "
                "is degenerate there. Move the camera off the pole or use an axis-angle pose.",
                LookAtDegenerateWarning,
                stacklevel=2,
            )
    z = F.normalize(at - C, dim=1, eps=1e-5)
    x = F.normalize(torch.cross(up, z, dim=1), dim=1, eps=1e-5)
    y = F.normalize(torch.cross(z, x, dim=1), dim=1, eps=1e-5)
    close = (x.abs() <= 5e-3).all(dim=1, keepdim=True)
    if bool(close.any()):
        x = torch.where(close, F.normalize(torch.cross(y, z, dim=1), dim=1, eps=1e-5), x)
    return torch.stack([x, y, z], 2)


def look_at_view_transform(
    dist=1.0, elev=0.0, azim=0.0, degrees: bool = True, eye=None, at=((0, 0, 0),), up=((0, 1, 0),), device=None
):
    """``(R, T)`` of cameras at spherical (dist, elev, azim) around ``at`` (or at ``eye``) looking at
    ``at`` with ``up``: ``R = look_at_rotation(C, at, up)``, ``T = -C @ R``.

    Example: (2.7, 0, 180) gives R = I, T = (0, 0, 2.7), camera centre (0, 0, -2.7).
    """
    if eye is not None:
        C = torch.as_tensor(eye, dtype=torch.float32, device=device) if not isinstance(eye, torch.Tensor) else eye
        C = C.reshape(-1, 3)
    else:
        at_t = torch.as_tensor(at, dtype=torch.float32, device=device).reshape(-1, 3)
        C = camera_position_from_spherical_angles(dist, elev, azim, degrees=degrees, device=device)
        C = C + at_t.to(C.dtype)
    R = look_at_rotation(C, at, up, device=device)
    T = -(C[:, None, :] @ R)[:, 0]
    return R, T


# ----------------------------------------------------------------------------- deprecated names
# PyTorch3D keeps its pre-0.3 camera names as functions that warn (PendingDeprecationWarning) and
# build the new class; tutorials and older course code still call them, so they resolve here too,
# with PyTorch3D's parameter order and mapping.
def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated: use {new} instead.", PendingDeprecationWarning, stacklevel=3)


def OpenGLPerspectiveCameras(
    znear=1.0,
    zfar=100.0,
    aspect_ratio=1.0,
    fov=60.0,
    degrees: bool = True,
    R=_R_DEFAULT,
    T=((0.0, 0.0, 0.0),),
    device=None,
) -> FoVPerspectiveCameras:
    """Deprecated name of ``FoVPerspectiveCameras`` (same parameters, without ``K``)."""
    _deprecated("OpenGLPerspectiveCameras", "FoVPerspectiveCameras")
    return FoVPerspectiveCameras(
        znear=znear, zfar=zfar, aspect_ratio=aspect_ratio, fov=fov, degrees=degrees, R=R, T=T, device=device
    )


def OpenGLOrthographicCameras(
    znear=1.0,
    zfar=100.0,
    top=1.0,
    bottom=-1.0,
    left=-1.0,
    right=1.0,
    scale_xyz=((1.0, 1.0, 1.0),),
    R=_R_DEFAULT,
    T=((0.0, 0.0, 0.0),),
    device=None,
) -> FoVOrthographicCameras:
    """Deprecated name of ``FoVOrthographicCameras``: ``top``/``bottom``/``left``/``right`` become
    ``max_y``/``min_y``/``min_x``/``max_x``."""
    _deprecated("OpenGLOrthographicCameras", "FoVOrthographicCameras")
    return FoVOrthographicCameras(
        znear=znear,
        zfar=zfar,
        max_y=top,
        min_y=bottom,
        max_x=right,
        min_x=left,
        scale_xyz=scale_xyz,
        R=R,
        T=T,
        device=device,
    )


def SfMPerspectiveCameras(
    focal_length=1.0, principal_point=((0.0, 0.0),), R=_R_DEFAULT, T=((0.0, 0.0, 0.0),), device=None
) -> PerspectiveCameras:
    """Deprecated name of ``PerspectiveCameras`` in NDC (no ``K``, ``in_ndc`` or ``image_size``)."""
    _deprecated("SfMPerspectiveCameras", "PerspectiveCameras")
    return PerspectiveCameras(focal_length=focal_length, principal_point=principal_point, R=R, T=T, device=device)


def SfMOrthographicCameras(
    focal_length=1.0, principal_point=((0.0, 0.0),), R=_R_DEFAULT, T=((0.0, 0.0, 0.0),), device=None
) -> OrthographicCameras:
    """Deprecated name of ``OrthographicCameras`` in NDC (no ``K``, ``in_ndc`` or ``image_size``)."""
    _deprecated("SfMOrthographicCameras", "OrthographicCameras")
    return OrthographicCameras(focal_length=focal_length, principal_point=principal_point, R=R, T=T, device=device)
