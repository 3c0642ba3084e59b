"""Small shared types (PyTorch3D's ``pytorch3d.common`` names)."""

from p3dlab.common.datatypes import Device, get_device, make_device

__all__ = ["Device", "get_device", "make_device"]
