"""Rotations and rigid/affine transforms.

Read this first: p3dlab (like PyTorch3D) applies transforms to **row vectors** (``x @ R + t``),
while every rotation-returning *function* here (``so3_exp_map``, ``axis_angle_to_matrix``,
``quaternion_to_matrix``, ``euler_angles_to_matrix``, ...) returns the textbook **column-convention**
matrix (``R @ x``). Convert with ``to_row_convention`` before passing one to ``Rotate`` or a camera.
"""

from p3dlab.transforms.rotation_conversions import (
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    euler_angles_to_matrix,
    hat,
    matrix_to_axis_angle,
    matrix_to_euler_angles,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_apply,
    quaternion_invert,
    quaternion_multiply,
    quaternion_raw_multiply,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    random_quaternions,
    random_rotation,
    random_rotations,
    rotation_6d_to_matrix,
    standardize_quaternion,
    to_column_convention,
    to_row_convention,
)
from p3dlab.transforms.so3_se3 import (
    hat_inv,
    se3_exp_map,
    se3_log_map,
    so3_exp_map,
    so3_log_map,
    so3_relative_angle,
    so3_rotation_angle,
)
from p3dlab.transforms.transform3d import (
    Rotate,
    RotateAxisAngle,
    Scale,
    Transform3d,
    Translate,
    from_column_matrix,
)

__all__ = [name for name in dir() if not name.startswith("_")]
