"""Utilities with PyTorch3D's ``pytorch3d.utils`` names: the icosphere and the OpenCV camera
conversions. It sits above ``p3dlab.data`` and ``p3dlab.renderer``, whose code it re-exports."""

from p3dlab.utils.camera_conversions import cameras_from_opencv_projection, opencv_from_cameras_projection
from p3dlab.utils.ico_sphere import ico_sphere

__all__ = ["cameras_from_opencv_projection", "ico_sphere", "opencv_from_cameras_projection"]
