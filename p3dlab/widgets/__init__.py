"""Notebook widgets: pythreejs 3D views, slider-driven render views, a live optimisation monitor and
progress bars for loops that stop at convergence."""

from p3dlab.widgets.monitor import OptimizationMonitor
from p3dlab.widgets.progress import progress
from p3dlab.widgets.render_view import RenderView, orbit_view
from p3dlab.widgets.threejs import frustum_lines, mesh_viewer, ray_segments, show

__all__ = [
    "OptimizationMonitor",
    "RenderView",
    "frustum_lines",
    "mesh_viewer",
    "orbit_view",
    "progress",
    "ray_segments",
    "show",
]
