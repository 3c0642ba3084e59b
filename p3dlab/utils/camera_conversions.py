"""PyTorch3D's ``pytorch3d.utils.camera_conversions`` path: re-exports of the OpenCV camera
conversions in ``p3dlab.renderer.camera_conversions``."""

from p3dlab.renderer.camera_conversions import cameras_from_opencv_projection, opencv_from_cameras_projection

__all__ = ["cameras_from_opencv_projection", "opencv_from_cameras_projection"]
