"""PyTorch3D's ``pytorch3d.renderer.materials`` path: a re-export of ``Materials``, which p3dlab
defines with the lights in ``p3dlab.renderer.lighting``."""

from p3dlab.renderer.lighting import Materials

__all__ = ["Materials"]
