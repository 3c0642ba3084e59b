"""Notebook widgets: pythreejs 3D views and a live optimisation monitor."""

from p3dlab.widgets.monitor import OptimizationMonitor
from p3dlab.widgets.threejs import frustum_lines, mesh_viewer, show

__all__ = ["OptimizationMonitor", "frustum_lines", "mesh_viewer", "show"]
