"""Render animations to frames, MP4 and GIF, and preview them in a notebook.

One call renders a sequence in which any of three things changes per frame:

* the camera: an orbit (``look_at_view_transform`` per frame, so the object stays in view —
  the video article's fixed R with a moving T leaves every frame empty, docs/errata.md#e87);
* the object: a per-frame ``Transform3d`` of its vertices (e.g. a spin about Y);
* the shape: a morph between two vertex sets with the same faces.

Every frame passes ``R=``, ``T=`` (and optionally ``lights=``) to the renderer call, so rasterizer
and shader always see the same camera (docs/errata.md#e89); colours are clipped to [0, 1] before they
become bytes (docs/errata.md#e92).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.renderer.cameras import look_at_view_transform
from p3dlab.renderer.lighting import PointLights


@dataclass
class Orbit:
    """A camera path around ``at``: azimuth from ``azim_start`` to ``azim_end`` (degrees, end
    excluded so a 360° loop does not repeat its first frame), fixed distance and elevation."""

    dist: float = 3.0
    elev: float = 20.0
    azim_start: float = 0.0
    azim_end: float = 360.0
    at: Sequence[float] = (0.0, 0.0, 0.0)

    def pose(self, t: float):
        azim = self.azim_start + (self.azim_end - self.azim_start) * t
        return look_at_view_transform(self.dist, self.elev, azim, at=(tuple(self.at),))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(…, H, W, C>=3) float images in [0, 1] -> uint8 RGB, clipped first (no wrap-around)."""
    return (images[..., :3].detach().clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def render_frames(
    renderer,
    meshes,
    n_frames: int,
    orbit: Optional[Orbit] = None,
    transform: Optional[Callable[[float], object]] = None,
    morph_to: Optional[torch.Tensor] = None,
    light_follows_camera: bool = True,
    progress: bool = True,
    **render_kwargs,
) -> np.ndarray:
    """Render ``n_frames`` frames (uint8, (n_frames, H, W, 3)) of ``meshes`` (one mesh).

    Args:
        orbit: camera path; without it the renderer's own cameras are used for every frame.
        transform: ``t -> Transform3d`` applied to the vertices at time t in [0, 1).
        morph_to: (V, 3) target vertices; frame t shows ``(1 - s) v + s v_target`` with
            ``s = (1 - cos(2 pi t))/2`` (there and back).
        light_follows_camera: put a point light at the camera (so the visible side is lit).
    """
    if not isinstance(n_frames, int) or n_frames < 1:
        raise P3DLabValueError(f"n_frames must be a positive int, got {n_frames!r}")
    if len(meshes) != 1:
        raise P3DLabValueError("render_frames animates one mesh; join a scene with join_meshes_as_scene")
    verts0 = meshes.verts_packed()
    if morph_to is not None and morph_to.shape != verts0.shape:
        raise P3DLabValueError(f"morph_to must have the vertices' shape {tuple(verts0.shape)}")
    frames = []
    steps = range(n_frames)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="rendering", leave=False)
    with torch.no_grad():
        for k in steps:
            t = k / n_frames
            verts = verts0
            if morph_to is not None:
                s = (1.0 - np.cos(2.0 * np.pi * t)) / 2.0
                verts = (1.0 - s) * verts0 + s * morph_to.to(verts0)
            if transform is not None:
                verts = transform(t).transform_points(verts)
            mesh_t = meshes.update_padded(verts[None]) if verts is not verts0 else meshes
            kwargs = dict(render_kwargs)
            if orbit is not None:
                R, T = orbit.pose(t)
                kwargs.update(R=R.to(verts0), T=T.to(verts0))
                if light_follows_camera and "lights" not in kwargs:
                    C = -(T[:, None, :] @ R.transpose(1, 2))[:, 0]
                    kwargs["lights"] = PointLights(location=C.to(verts0), device=verts0.device)
            frames.append(to_uint8(renderer(mesh_t, **kwargs))[0])
    return np.stack(frames, 0)


def save_video(frames: np.ndarray, path: Union[str, os.PathLike], fps: int = 30, loop: int = 0) -> str:
    """Write uint8 frames to ``.mp4`` (H.264 via imageio-ffmpeg) or ``.gif`` (Pillow).

    GIF frame durations are in milliseconds (``1000 / fps``): imageio's old ``duration=0.3`` now
    means 0.3 ms (docs/errata.md#e79). MP4 frame sizes are padded to even numbers (H.264 needs them).
    """
    path = os.fspath(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise P3DLabValueError("frames must be a uint8 array (n, H, W, 3); see to_uint8")
    if path.lower().endswith(".gif"):
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=loop)
    elif path.lower().endswith(".mp4"):
        import imageio.v2 as imageio

        h, w = frames.shape[1:3]
        padded = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1, quality=7) as writer:
            for f in padded:
                writer.append_data(f)
    else:
        raise P3DLabValueError(f"unknown video format {path!r}: use .mp4 or .gif")
    return path


def lesson_output(name: Optional[str] = None) -> Path:
    """Where a lesson saves what a student should be able to open: ``outputs/<name>`` beside the
    notebook (a notebook's kernel runs in the notebook's folder), the folder created when needed.
    JupyterLab's file browser shows it; without ``name``, the folder itself."""
    folder = Path("outputs")
    folder.mkdir(exist_ok=True)
    return folder if name is None else folder / name


def embed(path: Union[str, os.PathLike]):
    """A display object that plays a saved ``.gif`` or ``.mp4`` inside the notebook, its bytes
    embedded (so it also plays in an exported HTML file or a notebook opened elsewhere)."""
    from IPython.display import Image, Video

    path = os.fspath(path)
    if path.lower().endswith(".gif"):
        return Image(filename=path, format="gif")
    if path.lower().endswith(".mp4"):
        return Video(path, embed=True, html_attributes="controls loop autoplay muted")
    raise P3DLabValueError(f"embed: {path!r} is neither a .gif nor an .mp4")


def preview(frames: np.ndarray, fps: int = 20, zoom: Optional[int] = None):
    """A notebook widget: the frames behind a Play button and a slider (no file needed), shown at
    ``zoom`` times their size in pixels (whole pixels, no blur): by default the largest whole
    factor that keeps them within 512 pixels, and at least 1. A zoom control changes it."""
    import io

    import ipywidgets as widgets
    from PIL import Image

    frames = np.asarray(frames)
    if frames.ndim != 4 or not len(frames):
        raise P3DLabValueError(f"preview: frames must be an (n, H, W, 3) array, got shape {frames.shape}")
    height, width = frames.shape[1:3]
    zoom = zoom or max(1, 512 // max(height, width))

    def png(f):
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="PNG")
        return buf.getvalue()

    encoded = [png(f) for f in frames]
    image = widgets.Image(value=encoded[0], format="png")
    image.add_class("p3dlab-pixelated")

    def set_zoom(factor):
        image.layout.width, image.layout.height = f"{width * factor}px", f"{height * factor}px"

    set_zoom(zoom)
    zooms = widgets.ToggleButtons(options=[(f"{z}×", z) for z in sorted({1, 2, 3, 4, zoom})], value=zoom,
                                  description="zoom", style={"button_width": "40px"})  # fmt: skip
    zooms.observe(lambda ch: set_zoom(ch["new"]), names="value")
    play = widgets.Play(min=0, max=len(frames) - 1, interval=max(1, round(1000 / fps)))
    slider = widgets.IntSlider(min=0, max=len(frames) - 1, description="frame")
    widgets.jslink((play, "value"), (slider, "value"))
    slider.observe(lambda ch: setattr(image, "value", encoded[ch["new"]]), names="value")
    # whole-pixel zoom: without it a browser blurs a 64-pixel frame shown at 256
    style = widgets.HTML("<style>.p3dlab-pixelated img, img.p3dlab-pixelated {image-rendering: pixelated;}</style>")
    return widgets.VBox([widgets.HBox([play, slider, zooms]), image, style])
