"""``plot_scene`` and ``plot_batch_individually`` under PyTorch3D's names and signatures
(``pytorch3d.vis.plotly_vis``), drawn with p3dlab's own 3D views instead of plotly.

``plots`` maps subplot titles to dicts of trace name -> structure: ``Meshes``, ``Pointclouds``,
cameras (any ``CamerasBase``) or a ``RayBundle``. A batched structure is drawn whole in its trace.
Each subplot is a pythreejs view (orbit with the mouse) or, where the browser has no WebGL
(``P3DLAB_WEBGL=0``), an image drawn by p3dlab's rasterizers with orbit sliders; the subplots sit
``ncols`` to a row under their titles. The returned :class:`SceneFigure` displays in Jupyter, has
the ``show()`` and ``update_layout(width=, height=)`` that PyTorch3D's tutorials call on a plotly
figure, and records what it drew (``fig.subplots[i].traces[name]``) so it can be checked.

Differences from PyTorch3D's plotly version are listed in ``docs/plot_scene.md``.
"""

from __future__ import annotations

import html
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.renderer import CamerasBase, RayBundle
from p3dlab.structures import Meshes, Pointclouds, join_meshes_as_scene
from p3dlab.widgets.scene import (
    Lights,
    LinesLayer,
    MeshLayer,
    PointsLayer,
    image_view,
    threejs_view,
)

# Trace colours, cycled through the traces of a figure (the mesh, point and line colours used when a
# structure carries none of its own).
_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]

_STRUCTS = "Meshes, Pointclouds, cameras (CamerasBase) or a RayBundle"


class AxisArgs(NamedTuple):
    """Axis settings, PyTorch3D's fields and defaults. The views here draw no axis boxes: only
    ``backgroundcolor`` (the view's background) and ``showgrid`` (a grid under the scene) are used."""

    showgrid: bool = False
    zeroline: bool = False
    showline: bool = False
    ticks: str = ""
    showticklabels: bool = False
    backgroundcolor: str = "#fff"
    showaxeslabels: bool = False


class Lighting(NamedTuple):
    """Mesh lighting, PyTorch3D's fields and defaults. ``ambient``, ``diffuse`` and ``specular``
    scale the view's ambient light and its light at the eye (the defaults give the kit's usual
    lighting); the other fields are accepted and unused."""

    ambient: float = 0.8
    diffuse: float = 1.0
    fresnel: float = 0.0
    specular: float = 0.0
    roughness: float = 0.5
    facenormalsepsilon: float = 1e-6
    vertexnormalsepsilon: float = 1e-12


@dataclass
class Trace:
    """What one trace put in its subplot: ``kind`` is the structure's class name; the counts are of
    what was drawn (after subsampling); ``points`` (P, 3) and ``segments`` (S, 2, 3) hold the drawn
    world coordinates (point-cloud points or ray samples; camera and ray lines)."""

    name: str
    kind: str
    color: str
    num_verts: int = 0
    num_faces: int = 0
    num_points: int = 0
    num_segments: int = 0
    points: Optional[np.ndarray] = None
    segments: Optional[np.ndarray] = None


@dataclass
class Subplot:
    """One titled view: its traces by name, and where its view looks from (``eye``), at
    (``target``, the point the view orbits about) and which way is ``up``, in world coordinates."""

    title: str
    traces: Dict[str, Trace]
    eye: np.ndarray
    target: np.ndarray
    up: np.ndarray
    layers: list = field(default_factory=list, repr=False)
    view: object = field(default=None, repr=False)


def get_camera_wireframe(scale: float = 0.3) -> torch.Tensor:
    """(12, 3) camera symbol in view coordinates as one polyline (consecutive points joined): a
    pyramid from the camera centre (the origin) to a 2·scale x 1.5·scale rectangle at view depth
    2·scale, with a roof on the rectangle's top (+Y) edge showing which way is up."""
    s = float(scale)
    tl, tr = [s, 0.75 * s, 2 * s], [-s, 0.75 * s, 2 * s]  # view +X points left, +Y up
    br, bl = [-s, -0.75 * s, 2 * s], [s, -0.75 * s, 2 * s]
    roof, centre = [0.0, 1.125 * s, 2 * s], [0.0, 0.0, 0.0]
    return torch.tensor([tl, roof, tr, tl, bl, br, tr, centre, br, bl, centre, tl])


def _batch_len(struct) -> int:
    if _is_ray_bundle(struct):
        counts = getattr(struct, "camera_counts", None)
        return len(counts) if counts is not None else len(struct.directions)
    return len(struct)


def _is_ray_bundle(struct) -> bool:
    return all(hasattr(struct, a) for a in ("origins", "directions", "lengths"))


def _check_struct(struct, where: str) -> None:
    if isinstance(struct, (Meshes, Pointclouds, CamerasBase)) or _is_ray_bundle(struct):
        return
    raise P3DLabValueError(f"{where} is a {type(struct).__name__}; expected {_STRUCTS}")


# ------------------------------------------------------------------------------------------ cameras
def _to_world(cameras, view_points: torch.Tensor) -> torch.Tensor:
    """(N, K, 3) view-space points of each camera -> world space."""
    return cameras.get_world_to_view_transform().inverse().transform_points(view_points)


def _frustum_corners(cameras, depth: float) -> torch.Tensor:
    """(N, 4, 3) world corners (image top-left, top-right, bottom-right, bottom-left) at view depth
    ``depth``: on the rays through the image corners for perspective cameras that can unproject,
    else the fixed 4:3 symbol of :func:`get_camera_wireframe`."""
    n, dtype = len(cameras), cameras.R.dtype
    try:
        perspective = bool(cameras.is_perspective())
    except NotImplementedError:  # a bare CamerasBase (R and T only)
        perspective = False
    if perspective:
        size = cameras.get_image_size()
        if size is None:
            ux = uy = torch.ones(n, dtype=dtype)
        else:
            hw = torch.as_tensor(size, dtype=dtype).reshape(-1, 2).expand(n, 2)
            short = hw.min(dim=1).values
            uy, ux = hw[:, 0] / short, hw[:, 1] / short
        signs = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]], dtype=dtype)  # NDC +X is left
        xy = signs[None] * torch.stack([ux, uy], -1)[:, None]
        xy_depth = torch.cat([xy, torch.full((n, 4, 1), float(depth), dtype=dtype)], -1).to(cameras.device)
        try:
            if cameras.in_ndc():
                corners = cameras.unproject_points(xy_depth, world_coordinates=True)
            else:
                corners = cameras.unproject_points(xy_depth, world_coordinates=True, from_ndc=True)
            if bool(torch.isfinite(corners).all()):
                return corners.reshape(n, 4, 3)
        except (P3DLabValueError, NotImplementedError):  # e.g. a screen-space camera without image_size
            pass
    s = depth / 2.0
    symbol = torch.tensor([[s, 0.75 * s, depth], [-s, 0.75 * s, depth], [-s, -0.75 * s, depth], [s, -0.75 * s, depth]])
    return _to_world(cameras, symbol.to(dtype=dtype, device=cameras.device)[None].expand(n, 4, 3).contiguous())


def camera_segments(cameras, scale: float = 0.3) -> torch.Tensor:
    """(N, 10, 2, 3) world line segments of each camera's frustum: four edges from the camera centre
    (``get_camera_center()``) to the corners at view depth 2·scale, the rectangle joining the corners,
    and a roof on its top edge (the camera's up)."""
    centre = cameras.get_camera_center()
    tl, tr, br, bl = _frustum_corners(cameras, 2.0 * float(scale)).unbind(1)
    top, bottom = (tl + tr) / 2, (bl + br) / 2
    roof = top + 0.25 * (top - bottom)
    pairs = [(centre, tl), (centre, tr), (centre, br), (centre, bl), (tl, tr), (tr, br), (br, bl), (bl, tl)]
    pairs += [(tl, roof), (roof, tr)]
    return torch.stack([torch.stack(p, 1) for p in pairs], 1)


# ------------------------------------------------------------------------------------------ traces
def _ray_trace(bundle, name: str, where: str, max_rays: int, max_points: int):
    o, d, t = bundle.origins.detach(), bundle.directions.detach(), bundle.lengths.detach()
    if d.shape[-1] != 3 or t.shape[:-1] != d.shape[:-1]:
        raise P3DLabValueError(
            f"{where}: RayBundle directions {tuple(d.shape)} and lengths {tuple(t.shape)} do not match "
            "(directions (..., 3), lengths (..., P))"
        )
    o = torch.broadcast_to(o, d.shape).reshape(-1, 3).cpu().float()
    d, t = d.reshape(-1, 3).cpu().float(), t.reshape(-1, t.shape[-1]).cpu().float()
    extent = None
    if t.numel():
        extent = torch.cat([o + t.min(1, keepdim=True).values * d, o + t.max(1, keepdim=True).values * d])
    if o.shape[0] > max_rays:  # rays sampled without replacement, as PyTorch3D does
        pick = torch.randperm(o.shape[0])[:max_rays]
        o, d, t = o[pick], d[pick], t[pick]
    if t.shape[1] == 0:
        segs, pts = torch.zeros(0, 2, 3), torch.zeros(0, 3)
    else:
        ends = torch.stack([t.min(1).values, t.max(1).values], 1)
        segs = o[:, None] + ends[..., None] * d[:, None]
        if t.shape[1] > max_points:  # each ray keeps a random subset of its samples
            keep = torch.rand(t.shape).argsort(dim=1)[:, :max_points]
            t = t.gather(1, keep)
        pts = (o[:, None] + t[..., None] * d[:, None]).reshape(-1, 3)
    return segs.numpy(), pts.numpy(), extent


def _extent(points: torch.Tensor):
    """PyTorch3D's framing of a trace: its points' mean ± their largest extent along an axis."""
    points = points.detach().reshape(-1, 3).float().cpu()
    if points.shape[0] == 0:
        return None
    centre = points.mean(0)
    spread = float((points.max(0).values - points.min(0).values).max())
    return torch.stack([centre - spread, centre + spread])


def _add_trace(struct, name: str, subplot: str, color: str, opts: dict):
    """(Trace, layers, framing box) of one structure."""
    where = f"plot_scene: trace {name!r} of subplot {subplot!r}"
    if isinstance(struct, Meshes):
        mesh = join_meshes_as_scene(struct.detach().cpu()) if len(struct) else None
        if mesh is None or mesh.verts_packed().shape[0] == 0:
            return Trace(name, "Meshes", color), [], None
        verts = mesh.verts_packed()
        trace = Trace(name, "Meshes", color, num_verts=verts.shape[0], num_faces=mesh.faces_packed().shape[0])
        used = verts[mesh.faces_packed().unique()] if trace.num_faces else verts
        return trace, [MeshLayer(mesh, color)], _extent(used)
    if isinstance(struct, Pointclouds):
        clouds = struct.detach().cpu().subsample(opts["pointcloud_max_points"])
        pts = clouds.points_packed().float()
        feats = clouds.features_packed()
        colors = None
        if feats is not None and feats.shape[1] in (3, 4):  # RGB or RGBA, as PyTorch3D reads them
            colors = feats[:, :3].float().clamp(0, 1).numpy()
        trace = Trace(name, "Pointclouds", color, num_points=pts.shape[0], points=pts.numpy())
        size = 2.0 * opts["pointcloud_marker_size"]
        return trace, [PointsLayer(pts.numpy(), colors, color, size)], _extent(pts)
    if isinstance(struct, CamerasBase):
        segs = camera_segments(struct, opts["camera_scale"]).detach().reshape(-1, 2, 3).float().cpu()
        trace = Trace(name, type(struct).__name__, color, num_segments=segs.shape[0], segments=segs.numpy())
        return trace, [LinesLayer(segs.numpy(), color, 1.0)], _extent(segs)
    if _is_ray_bundle(struct):
        segs, pts, extent = _ray_trace(
            struct, name, where, opts["raybundle_max_rays"], opts["raybundle_max_points_per_ray"]
        )
        trace = Trace(
            name, type(struct).__name__, color, num_points=len(pts), num_segments=len(segs), points=pts, segments=segs
        )
        layers = [
            LinesLayer(segs, color, float(opts["raybundle_ray_line_width"])),
            PointsLayer(pts, None, color, 2.0 * opts["raybundle_ray_point_marker_size"]),
        ]
        return trace, layers, None if extent is None else _extent(extent)
    raise P3DLabValueError(f"{where} is a {type(struct).__name__}; expected {_STRUCTS}")


def _grid_lines(lo: np.ndarray, hi: np.ndarray, n: int = 10) -> np.ndarray:
    """(2(n+1), 2, 3) segments of a square grid in the plane y = lo[1] covering the framing box."""
    xs, zs = np.linspace(lo[0], hi[0], n + 1), np.linspace(lo[2], hi[2], n + 1)
    y = lo[1]
    rows = [[[lo[0], y, z], [hi[0], y, z]] for z in zs]
    cols = [[[x, y, lo[2]], [x, y, hi[2]]] for x in xs]
    return np.asarray(rows + cols, dtype=np.float32)


# ------------------------------------------------------------------------------------------ figure
class SceneFigure:
    """What :func:`plot_scene` returns: the subplots (``subplots``, in order, each with its traces)
    laid out ``ncols`` to a row in ``widget`` (an ipywidgets ``GridBox``). It displays itself in
    Jupyter; ``show()`` displays it explicitly, as plotly's ``fig.show()`` does."""

    def __init__(self, subplots: List[Subplot], ncols: int, backend: str, cell: tuple):
        self.subplots = subplots
        self.ncols = ncols
        self.nrows = max(1, math.ceil(len(subplots) / ncols))
        self.backend = backend
        self._cell = cell
        self.widget = self._layout()

    def _layout(self):
        import ipywidgets as widgets

        cells = []
        for sp in self.subplots:
            legend = " ".join(
                f'<span style="color:{t.color}">&#9632;</span>&nbsp;{html.escape(t.name)}' for t in sp.traces.values()
            )
            title = widgets.HTML(f"<b>{html.escape(sp.title)}</b><br><small>{legend}</small>")
            view = sp.view.widget if hasattr(sp.view, "widget") else sp.view
            cells.append(widgets.VBox([title, view]))
        layout = widgets.Layout(grid_template_columns=f"repeat({self.ncols}, max-content)", grid_gap="8px 16px")
        box = widgets.GridBox(cells, layout=layout)
        box.add_class("p3dlab-plot-scene")
        return box

    def __getitem__(self, title: str) -> Subplot:
        for sp in self.subplots:
            if sp.title == title:
                return sp
        raise KeyError(title)

    def update_layout(self, width: Optional[int] = None, height: Optional[int] = None, **other) -> "SceneFigure":
        """Resize the figure to ``width`` x ``height`` pixels in all (each subplot gets its share), as
        plotly's ``fig.update_layout(width=..., height=...)``. Other plotly layout settings have
        nothing to act on here: they are ignored with a warning."""
        if other:
            warnings.warn(
                f"update_layout: p3dlab's views only use width and height; ignored {sorted(other)}", stacklevel=2
            )
        w, h = self._cell
        w = int(width) // self.ncols if width else w
        h = int(height) // self.nrows if height else h
        if w < 1 or h < 1:
            raise P3DLabValueError(f"update_layout: width and height must leave each subplot a pixel, got {w}x{h}")
        self._cell = (w, h)
        for sp in self.subplots:
            if self.backend == "webgl":
                sp.view.width, sp.view.height = w, h
                sp.view.camera.aspect = w / h
            else:
                sp.view.image.width = min(w, h)
        return self

    def show(self) -> None:
        """Display the figure (in a notebook; elsewhere IPython prints its summary)."""
        from IPython.display import display

        display(self.widget)

    def _ipython_display_(self):
        self.show()

    def __repr__(self) -> str:
        parts = []
        for sp in self.subplots:
            traces = ", ".join(f"{t.name}: {t.kind}" for t in sp.traces.values())
            parts.append(f"{sp.title!r} [{traces}]")
        return f"SceneFigure({self.backend}, {self.nrows}x{self.ncols}: " + "; ".join(parts) + ")"


def _pick_backend(backend: str) -> str:
    if backend not in ("auto", "webgl", "image"):
        raise P3DLabValueError(f"plot_scene: backend must be 'auto', 'webgl' or 'image', got {backend!r}")
    if backend == "auto":
        return "image" if os.environ.get("P3DLAB_WEBGL", "1") == "0" else "webgl"
    return backend


def _viewpoints(viewpoint_cameras, n_subplots: int):
    """Per-viewpoint (eye, forward, up) world vectors, or None (with PyTorch3D's warning) when the
    number of cameras is neither 1 nor the number of subplots."""
    if viewpoint_cameras is None:
        return None
    if not isinstance(viewpoint_cameras, CamerasBase):
        raise P3DLabValueError(
            f"plot_scene: viewpoint_cameras must be a cameras object, got {type(viewpoint_cameras).__name__}"
        )
    n = len(viewpoint_cameras)
    if n not in (1, n_subplots):
        warnings.warn(
            f"plot_scene: {n} viewpoint cameras for {n_subplots} subplots; give 1 or {n_subplots}. "
            "The viewpoint cameras are not used.",
            stacklevel=4,
        )
        return None
    eye = viewpoint_cameras.get_camera_center().detach().cpu().double()
    R = viewpoint_cameras.R.detach().cpu().double()
    # X_view = X_world R + T: the view's +Z (forward) and +Y (up) axes are R's last two columns
    return eye.numpy(), R[:, :, 2].numpy(), R[:, :, 1].numpy()


@torch.no_grad()
def plot_scene(
    plots: Dict[str, Dict[str, object]],
    *,
    viewpoint_cameras: Optional[CamerasBase] = None,
    ncols: int = 1,
    camera_scale: float = 0.3,
    pointcloud_max_points: int = 20000,
    pointcloud_marker_size: int = 1,
    raybundle_max_rays: int = 20000,
    raybundle_max_points_per_ray: int = 1000,
    raybundle_ray_point_marker_size: int = 1,
    raybundle_ray_line_width: int = 1,
    **kwargs,
) -> SceneFigure:
    """Draw ``{subplot title: {trace name: structure}}`` into titled subplots, ``ncols`` per row.

    Structures: ``Meshes`` (a batch is drawn joined into one scene; vertex colours, UV textures and
    atlas colours are shown), ``Pointclouds`` (at most ``pointcloud_max_points`` random points per
    cloud, dots ``2·pointcloud_marker_size`` pixels across, RGB(A) features as colours), cameras
    (each as a frustum: edges from its centre to its image corners at view depth ``2·camera_scale``,
    the rectangle there and a roof on the top edge) and ``RayBundle``s (at most
    ``raybundle_max_rays`` random rays, each a segment from its nearest to its farthest sample,
    plus at most ``raybundle_max_points_per_ray`` random samples per ray as dots).

    ``viewpoint_cameras``: 1 camera (every subplot is seen from it) or one per subplot; any other
    number is ignored with a warning, as in PyTorch3D. Without it each subplot is seen from plotly's
    default direction (1.25, 1.25, 1.25) in units of the subplot's framing box.

    ``kwargs``: PyTorch3D's ``lighting`` (:class:`Lighting`), ``axis_args`` (:class:`AxisArgs`) and
    ``xaxis`` / ``yaxis`` / ``zaxis`` dicts (only ``backgroundcolor`` and ``showgrid`` have an effect);
    p3dlab's own ``backend`` ("auto": images when ``P3DLAB_WEBGL=0``, else "webgl"; or "image"),
    and ``width`` / ``height`` of the whole figure in pixels. Other keywords are ignored with a
    warning.
    """
    if not isinstance(plots, dict):
        raise P3DLabValueError(f"plot_scene: plots must be a dict of subplot title -> dict, got {type(plots).__name__}")
    if not isinstance(ncols, int) or isinstance(ncols, bool) or ncols < 1:
        raise P3DLabValueError(f"plot_scene: ncols must be an integer >= 1, got {ncols!r}")
    for key, value in (
        ("camera_scale", camera_scale),
        ("pointcloud_max_points", pointcloud_max_points),
        ("pointcloud_marker_size", pointcloud_marker_size),
        ("raybundle_max_rays", raybundle_max_rays),
        ("raybundle_max_points_per_ray", raybundle_max_points_per_ray),
        ("raybundle_ray_point_marker_size", raybundle_ray_point_marker_size),
        ("raybundle_ray_line_width", raybundle_ray_line_width),
    ):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
            raise P3DLabValueError(f"plot_scene: {key} must be a number > 0, got {value!r}")
    opts = dict(
        camera_scale=camera_scale,
        pointcloud_max_points=int(pointcloud_max_points),
        pointcloud_marker_size=pointcloud_marker_size,
        raybundle_max_rays=int(raybundle_max_rays),
        raybundle_max_points_per_ray=int(raybundle_max_points_per_ray),
        raybundle_ray_point_marker_size=raybundle_ray_point_marker_size,
        raybundle_ray_line_width=raybundle_ray_line_width,
    )
    lighting = kwargs.pop("lighting", Lighting())
    axis_args = kwargs.pop("axis_args", AxisArgs())
    axes = [dict(kwargs.pop(k, None) or {}) for k in ("xaxis", "yaxis", "zaxis")]
    backend = _pick_backend(kwargs.pop("backend", "auto"))
    width, height = kwargs.pop("width", None), kwargs.pop("height", None)
    if kwargs:
        warnings.warn(f"plot_scene: ignored keyword arguments {sorted(kwargs)}", stacklevel=3)
    settings = [{**axis_args._asdict(), **a} for a in axes]
    background = settings[0]["backgroundcolor"]
    grid = any(bool(s["showgrid"]) for s in settings)
    lights = Lights(ambient=lighting.ambient / 0.8, diffuse=lighting.diffuse, specular=lighting.specular)

    titles = list(plots)
    viewpoints = _viewpoints(viewpoint_cameras, len(titles))
    nrows = max(1, math.ceil(len(titles) / ncols))
    cell_w = int(width) // ncols if width else (480 if ncols == 1 else max(200, 800 // ncols))
    cell_h = int(height) // nrows if height else (round(0.75 * cell_w) if backend == "webgl" else cell_w)
    if cell_w < 1 or cell_h < 1:
        raise P3DLabValueError(f"plot_scene: width and height leave each subplot {cell_w}x{cell_h} pixels")

    subplots, n_traces = [], 0
    for index, title in enumerate(titles):
        traces_in = plots[title]
        if not isinstance(traces_in, dict):
            raise P3DLabValueError(
                f"plot_scene: subplot {title!r} must be a dict of trace name -> structure, "
                f"got {type(traces_in).__name__}"
            )
        traces, layers, boxes = {}, [], []
        for name, struct in traces_in.items():
            color = _PALETTE[n_traces % len(_PALETTE)]
            n_traces += 1
            trace, trace_layers, box = _add_trace(struct, name, title, color, opts)
            traces[name] = trace
            layers += trace_layers
            if box is not None:
                boxes.append(box)
        if boxes:
            lo = torch.stack([b[0] for b in boxes]).min(0).values.double().numpy()
            hi = torch.stack([b[1] for b in boxes]).max(0).values.double().numpy()
        else:
            lo, hi = -np.ones(3), np.ones(3)
        centre, half = (lo + hi) / 2, (hi - lo) / 2
        half = np.where(half > 0, half, half.max() if half.max() > 0 else 1.0)
        if grid:
            layers.append(LinesLayer(_grid_lines(centre - half, centre + half), "#c8c8c8", 1.0))
        up = np.array([0.0, 1.0, 0.0])
        if viewpoints is None:
            eye, target = centre + 1.25 * half, centre
        else:
            i = min(index, len(viewpoints[0]) - 1)
            eye, forward, up = viewpoints[0][i], viewpoints[1][i], viewpoints[2][i]
            ahead = float(np.dot(centre - eye, forward))
            reach = ahead if ahead > 1e-9 else float(np.linalg.norm(centre - eye)) or float(half.max())
            target = eye + reach * forward  # orbit about the point ahead of the camera nearest the scene's centre
        if backend == "webgl":
            view = threejs_view(layers, eye, target, up, cell_w, cell_h, background, lights)
        else:
            side = min(cell_w, cell_h)
            view = image_view(
                layers, eye, target, image_size=min(side, 320), width=side, background=background, lights=lights
            )
        subplots.append(Subplot(str(title), traces, np.asarray(eye), np.asarray(target), np.asarray(up), layers, view))
    return SceneFigure(subplots, ncols, backend, (cell_w, cell_h))


def _index_struct(struct, i: int):
    """Element ``i`` of a batched structure (cameras keep their class and intrinsics)."""
    if _is_ray_bundle(struct):
        counts = getattr(struct, "camera_counts", None)
        names = ("origins", "directions", "lengths", "xys")
        if counts is not None:  # a heterogeneous bundle: camera i owns a run of consecutive rays
            first = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
            a, b = int(first[i]), int(first[i + 1])
            return RayBundle(**{k: getattr(struct, k)[a:b] for k in names})
        return RayBundle(**{k: getattr(struct, k)[i] for k in names})
    return struct[i]


@torch.no_grad()
def plot_batch_individually(
    batched_structs: Union[List[object], object],
    *,
    viewpoint_cameras: Optional[CamerasBase] = None,
    ncols: int = 1,
    extend_struct: bool = True,
    subplot_titles: Optional[Sequence[str]] = None,
    **kwargs,
) -> Optional[SceneFigure]:
    """One subplot per batch element: subplot i shows element i of every structure in
    ``batched_structs`` (a list, or a single structure), each as its own trace ``"trace{i}-{j}"``
    (j: the structure's place in the list, from 1). Every structure has the largest batch size n or
    batch size 1; a batch-size-1 structure is drawn in every subplot (``extend_struct=True``) or only
    in the first. ``subplot_titles`` (n strings) defaults to "subplot 1", "subplot 2", ...
    The other keywords go to :func:`plot_scene`. Nothing to plot (an empty list, or one structure
    of batch size 0) warns and returns None, as in PyTorch3D."""
    # a RayBundle is a named tuple: one structure, not a list of them
    is_list = isinstance(batched_structs, (list, tuple)) and not hasattr(batched_structs, "_fields")
    structs = list(batched_structs) if is_list else [batched_structs]
    for i, s in enumerate(structs):
        _check_struct(s, f"plot_batch_individually: batched_structs{f'[{i}]' if is_list else ''}")
    if not structs or (not is_list and _batch_len(structs[0]) == 0):
        warnings.warn("plot_batch_individually: no structs to plot", stacklevel=3)
        return None
    sizes = [_batch_len(s) for s in structs]
    n = max(sizes)
    for i, (s, size) in enumerate(zip(structs, sizes)):
        if size not in (1, n):
            raise P3DLabValueError(
                f"plot_batch_individually: batched_structs[{i}] (trace 'trace*-{i + 1}', a {type(s).__name__}) "
                f"has batch size {size}; every struct needs batch size {n} (the largest) or 1"
            )
    if n == 0:
        raise P3DLabValueError("plot_batch_individually: no data is provided with at least one element")
    if subplot_titles:
        titles = [str(t) for t in subplot_titles]
        if len(titles) != n:
            raise P3DLabValueError(f"plot_batch_individually: {len(titles)} subplot_titles for {n} subplots")
        if len(set(titles)) != n:
            raise P3DLabValueError(f"plot_batch_individually: subplot_titles must be distinct, got {titles}")
    else:
        titles = [f"subplot {k + 1}" for k in range(n)]
    scenes = {}
    for k, title in enumerate(titles):
        scenes[title] = {}
        for j, (s, size) in enumerate(zip(structs, sizes)):
            if size == 1 and k > 0 and not extend_struct:
                continue
            scenes[title][f"trace{k + 1}-{j + 1}"] = _index_struct(s, min(k, size - 1))
    return plot_scene(scenes, viewpoint_cameras=viewpoint_cameras, ncols=ncols, **kwargs)
