"""p3dlab: a notebook-first teaching kit for 3D deep learning and differentiable rendering.

Public names and conventions follow PyTorch3D (row vectors, +X left, +Y up, NDC), so code written
against PyTorch3D material ports by changing the import. See the README's architecture section.
"""

from p3dlab.errors import P3DLabError

__version__ = "0.1.0"
__all__ = ["P3DLabError", "__version__"]
