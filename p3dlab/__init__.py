"""p3dlab: a notebook-first teaching kit for 3D deep learning and differentiable rendering.

Public names and conventions follow PyTorch3D (row vectors, +X left, +Y up, NDC), so code written
against PyTorch3D material ports by changing the import. See the README's architecture section.
"""

from p3dlab.errors import P3DLabError
from p3dlab.runtime.threads import apply_thread_policy

# Before anything loads an OpenMP runtime of p3dlab's: idle threads sleep, and the thread counts follow
# the CPUs this process is given (p3dlab/runtime/threads.py; README, "Threads").
apply_thread_policy()

__version__ = "0.1.0"
__all__ = ["P3DLabError", "__version__"]
