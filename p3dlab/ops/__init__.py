"""Differentiable operations on tensors and structures (pure torch or Numba kernels behind autograd)."""

from p3dlab.ops.interpolate import interpolate_face_attributes

__all__ = ["interpolate_face_attributes"]
