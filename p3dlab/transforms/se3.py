"""PyTorch3D's ``pytorch3d.transforms.se3`` path: the SE(3) exponential and logarithm maps.

Thin re-exports of the implementations in ``so3_se3``.
"""

from p3dlab.transforms.so3_se3 import se3_exp_map, se3_log_map

__all__ = ["se3_exp_map", "se3_log_map"]
