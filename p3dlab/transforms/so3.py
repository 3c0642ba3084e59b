"""PyTorch3D's ``pytorch3d.transforms.so3`` path: the SO(3) maps and the ``hat`` operator.

Thin re-exports; the implementations live in ``so3_se3`` and ``rotation_conversions``.
"""

from p3dlab.transforms.rotation_conversions import hat
from p3dlab.transforms.so3_se3 import hat_inv, so3_exp_map, so3_log_map, so3_relative_angle, so3_rotation_angle

__all__ = ["hat", "hat_inv", "so3_exp_map", "so3_log_map", "so3_relative_angle", "so3_rotation_angle"]
