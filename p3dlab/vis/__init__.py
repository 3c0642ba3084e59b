"""Scene plots under PyTorch3D's names (``pytorch3d.vis``), drawn with p3dlab's own 3D views."""

from p3dlab.vis.plotly_vis import (
    AxisArgs,
    Lighting,
    SceneFigure,
    get_camera_wireframe,
    plot_batch_individually,
    plot_scene,
)

__all__ = ["AxisArgs", "Lighting", "SceneFigure", "get_camera_wireframe", "plot_batch_individually", "plot_scene"]
