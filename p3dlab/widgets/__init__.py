"""Notebook widgets: pythreejs 3D views (more in the widgets issue)."""

from p3dlab.widgets.threejs import frustum_lines, mesh_viewer, show

__all__ = ["frustum_lines", "mesh_viewer", "show"]
