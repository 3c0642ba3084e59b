"""PyTorch3D's ``pytorch3d.loss.chamfer`` path; the implementation lives in :mod:`p3dlab.ops.chamfer`."""

from p3dlab.ops.chamfer import chamfer_distance

__all__ = ["chamfer_distance"]
