"""Notebook widgets: pythreejs 3D views, slider-driven render views and a live optimisation monitor."""

from p3dlab.widgets.monitor import OptimizationMonitor
from p3dlab.widgets.render_view import RenderView, orbit_view
from p3dlab.widgets.threejs import frustum_lines, mesh_viewer, ray_segments, show

__all__ = ["OptimizationMonitor", "RenderView", "frustum_lines", "mesh_viewer", "orbit_view", "ray_segments", "show"]
