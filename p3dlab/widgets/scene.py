"""Scenes made of mesh, point and line-segment layers, drawn in a pythreejs view or, without WebGL,
as an image with orbit sliders.

This is the drawing layer under :func:`p3dlab.vis.plot_scene`: the caller turns its structures into
layers (a mesh, a set of coloured points, a set of line segments) and chooses where the view looks
from. :func:`threejs_view` draws the layers with pythreejs. :func:`image_view` is for browsers
without WebGL: p3dlab's own mesh rasterizer and point rasterizer draw the layers (a line segment
becomes a row of small dots), and the layers are composited by depth, so every kind of layer shows
up, not just the meshes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from p3dlab.errors import P3DLabValueError

_NAMED = {
    "white": "#ffffff",
    "black": "#000000",
    "red": "#ff0000",
    "green": "#008000",
    "blue": "#0000ff",
    "grey": "#808080",
    "gray": "#808080",
    "lightgrey": "#d3d3d3",
    "lightgray": "#d3d3d3",
    "orange": "#ffa500",
    "yellow": "#ffff00",
}


def parse_color(color: Union[str, Sequence[float]]) -> Tuple[float, float, float]:
    """An RGB triple in [0, 1] from ``"#rgb"``, ``"#rrggbb"``, ``"rgb(r, g, b)"`` / ``"rgba(r, g, b, a)"``
    (0-255, as plotly writes colours), a basic colour name, or three floats in [0, 1]."""
    if not isinstance(color, str):
        rgb = [float(c) for c in color]
        if len(rgb) != 3 or not all(0.0 <= c <= 1.0 for c in rgb):
            raise P3DLabValueError(f"a colour given as numbers must be three floats in [0, 1], got {color!r}")
        return tuple(rgb)
    s = _NAMED.get(color.strip().lower(), color.strip())
    m = re.fullmatch(r"rgba?\(\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*(?:,\s*[\d.]+\s*)?\)", s)
    if m:
        return tuple(min(float(v), 255.0) / 255.0 for v in m.groups())
    h = s.lstrip("#")
    if s.startswith("#") and len(h) == 3:
        h = "".join(c * 2 for c in h)
    if s.startswith("#") and len(h) == 6 and all(c in "0123456789abcdefABCDEF" for c in h):
        return tuple(int(h[i : i + 2], 16) / 255.0 for i in (0, 2, 4))
    raise P3DLabValueError(f"unknown colour {color!r}: use '#rrggbb', '#rgb', 'rgb(r, g, b)' or a basic name")


def hex_color(color) -> str:
    """``"#rrggbb"`` for anything :func:`parse_color` accepts (pythreejs wants CSS hex colours)."""
    return "#" + "".join(f"{round(c * 255):02x}" for c in parse_color(color))


@dataclass
class MeshLayer:
    """One mesh (a ``Meshes`` of batch size 1). Its textures colour it where the view supports them
    (vertex colours, UV maps, atlas colours); a mesh without textures is drawn in ``color``."""

    mesh: object
    color: str = "#d08a4c"


@dataclass
class PointsLayer:
    """(P, 3) points, drawn as dots ``size`` pixels across, each in its row of ``colors`` ((P, 3) in
    [0, 1]) or, without ``colors``, all in ``color``."""

    points: np.ndarray
    colors: Optional[np.ndarray] = None
    color: str = "#3070d0"
    size: float = 2.0


@dataclass
class LinesLayer:
    """(S, 2, 3) line segments (start and end point of each), ``width`` pixels wide."""

    segments: np.ndarray
    color: str = "#e03030"
    width: float = 1.0


Layer = Union[MeshLayer, PointsLayer, LinesLayer]


@dataclass
class Lights:
    """Strengths of the view's lights: an ambient light and a light at the eye (diffuse and
    specular), each scaling the kit's default for that term."""

    ambient: float = 1.0
    diffuse: float = 1.0
    specular: float = 0.0


def _mesh_texture_kind(mesh) -> str:
    tex = mesh.textures
    if tex is None:
        return "none"
    name = type(tex).__name__
    if name == "TexturesVertex":
        return "vertex" if tex.verts_features_packed().shape[1] >= 3 else "none"
    if name == "TexturesUV":
        return "uv" if tex.maps_list()[0].shape[-1] >= 3 else "none"
    if name == "TexturesAtlas":
        return "atlas" if tex.atlas_packed().shape[-1] >= 3 else "none"
    return "none"


# ----------------------------------------------------------------------------------------- pythreejs
def _unwelded_geometry(three, mesh, extra: dict):
    """Three corners per face (no index), so per-face-corner attributes (UVs, face colours) fit."""
    faces = mesh.faces_packed()
    pos = mesh.verts_packed().detach()[faces].reshape(-1, 3)
    nrm = mesh.verts_normals_packed().detach()[faces].reshape(-1, 3)
    attrs = {
        "position": three.BufferAttribute(pos.cpu().numpy().astype(np.float32), normalized=False),
        "normal": three.BufferAttribute(nrm.cpu().numpy().astype(np.float32), normalized=False),
    }
    attrs.update({k: three.BufferAttribute(v.astype(np.float32), normalized=False) for k, v in extra.items()})
    return three.BufferGeometry(attributes=attrs)


def threejs_mesh(layer: MeshLayer):
    """A ``pythreejs.Mesh`` of the layer: vertex colours, a UV texture map (``DataTexture``) or one
    colour per face from an atlas, else the layer's colour."""
    import pythreejs as three

    from p3dlab.widgets.threejs import _mesh_object

    mesh, kind = layer.mesh, _mesh_texture_kind(layer.mesh)
    if kind in ("vertex", "none"):
        # with a colour given, _mesh_object ignores the textures
        return _mesh_object(mesh, None if kind == "vertex" else hex_color(layer.color), False, False)
    tex = mesh.textures
    material = dict(side="DoubleSide", roughness=0.6, metalness=0.0)
    if kind == "uv":
        joined = tex.join_scene() if len(tex.maps_list()) > 1 else tex
        uvs = joined.faces_verts_uvs_packed().detach().reshape(-1, 2).cpu().numpy()
        image = joined.maps_list()[0].detach()[..., :3].clamp(0, 1).cpu().numpy()
        rgba = np.concatenate([image, np.ones_like(image[..., :1])], -1)
        # UV v = 0 is the map's bottom row, which is the first row a DataTexture reads
        data = np.ascontiguousarray((rgba[::-1] * 255 + 0.5).astype(np.uint8))
        texture = three.DataTexture(data=data, format="RGBAFormat", type="UnsignedByteType")
        texture.magFilter = texture.minFilter = "LinearFilter"
        geometry = _unwelded_geometry(three, mesh, {"uv": uvs})
        return three.Mesh(geometry=geometry, material=three.MeshStandardMaterial(map=texture, **material))
    # atlas: each face in the mean colour of its R x R atlas entries
    face_rgb = tex.atlas_packed().detach()[..., :3].mean(dim=(1, 2)).clamp(0, 1)
    corner_rgb = face_rgb[:, None].expand(-1, 3, -1).reshape(-1, 3).cpu().numpy()
    geometry = _unwelded_geometry(three, mesh, {"color": corner_rgb})
    return three.Mesh(geometry=geometry, material=three.MeshStandardMaterial(vertexColors="VertexColors", **material))


def threejs_view(
    layers: List[Layer],
    eye: Sequence[float],
    target: Sequence[float],
    up: Sequence[float] = (0.0, 1.0, 0.0),
    width: int = 480,
    height: int = 360,
    background: str = "#ffffff",
    lights: Optional[Lights] = None,
    fov: float = 50.0,
):
    """A ``pythreejs.Renderer`` of the layers seen from ``eye`` towards ``target`` (orbit controls
    turn about ``target``). Point sizes are in pixels (``sizeAttenuation`` off). Browsers draw WebGL
    lines one pixel wide whatever ``LinesLayer.width`` says."""
    import pythreejs as three

    lights = lights or Lights()
    children = [three.AmbientLight(color="#ffffff", intensity=0.55 * lights.ambient)]
    for layer in layers:
        if isinstance(layer, MeshLayer):
            children.append(threejs_mesh(layer))
        elif isinstance(layer, PointsLayer):
            attrs = {"position": three.BufferAttribute(layer.points.astype(np.float32), normalized=False)}
            if layer.colors is not None:
                attrs["color"] = three.BufferAttribute(layer.colors.astype(np.float32), normalized=False)
            material = three.PointsMaterial(
                size=float(layer.size),
                sizeAttenuation=False,
                vertexColors="VertexColors" if layer.colors is not None else "NoColors",
                color="#ffffff" if layer.colors is not None else hex_color(layer.color),
            )
            children.append(three.Points(geometry=three.BufferGeometry(attributes=attrs), material=material))
        elif isinstance(layer, LinesLayer):
            segs = layer.segments.reshape(-1, 3).astype(np.float32)
            geom = three.BufferGeometry(attributes={"position": three.BufferAttribute(segs, normalized=False)})
            material = three.LineBasicMaterial(color=hex_color(layer.color), linewidth=float(layer.width))
            children.append(three.LineSegments(geometry=geom, material=material))
        else:
            raise P3DLabValueError(f"threejs_view cannot draw a {type(layer).__name__}")
    eye_t, target_t = np.asarray(eye, dtype=float), np.asarray(target, dtype=float)
    dist = max(float(np.linalg.norm(eye_t - target_t)), 1e-6)
    cam = three.PerspectiveCamera(
        position=eye_t.tolist(),
        up=[float(u) for u in up],
        aspect=width / height,
        fov=fov,
        near=dist * 1e-3,
        far=dist * 1e3,
        children=[three.DirectionalLight(color="#ffffff", position=[0, 0, 1], intensity=0.6 * lights.diffuse)],
    )
    scene = three.Scene(children=children + [cam], background=hex_color(background))
    controls = three.OrbitControls(controlling=cam, target=target_t.tolist())
    cam.lookAt(target_t.tolist())
    return three.Renderer(camera=cam, scene=scene, controls=[controls], width=width, height=height, antialias=True)


# ----------------------------------------------------------------------------------------- image
def _drawable_mesh(layer: MeshLayer):
    """The layer's mesh with three-channel textures (a plain colour when it has none)."""
    from p3dlab.structures import TexturesAtlas, TexturesUV, TexturesVertex

    mesh, kind = layer.mesh, _mesh_texture_kind(layer.mesh)
    tex = mesh.textures
    if kind == "none":
        rgb = torch.tensor(parse_color(layer.color))
        textures = TexturesVertex([rgb.to(v).expand_as(v) for v in mesh.verts_list()])
    elif kind == "vertex":
        textures = TexturesVertex([f[:, :3] for f in tex.verts_features_list()])
    elif kind == "uv":
        textures = TexturesUV(
            [m[..., :3] for m in tex.maps_list()],
            tex.faces_uvs_list(),
            tex.verts_uvs_list(),
            padding_mode=tex.padding_mode,
            align_corners=tex.align_corners,
            sampling_mode=tex.sampling_mode,
        )
    else:
        textures = TexturesAtlas([a[..., :3] for a in tex.atlas_list()])
    out = mesh.detach().clone()
    out.textures = textures
    return out


def _line_dots(segments: torch.Tensor, step: float, max_dots: int) -> torch.Tensor:
    """Points along each (S, 2, 3) segment, about ``step`` apart (at most ``max_dots`` in all)."""
    lengths = (segments[:, 1] - segments[:, 0]).norm(dim=-1)
    total = float((lengths / step).ceil().clamp(min=2).sum()) if len(lengths) else 0.0
    if total > max_dots:
        step *= total / max_dots
    counts = (lengths / step).ceil().clamp(min=2, max=4096).long()
    t = torch.cat([torch.linspace(0.0, 1.0, int(c), dtype=segments.dtype) for c in counts.tolist()])
    seg = torch.repeat_interleave(torch.arange(len(counts)), counts)
    return segments[seg, 0] + t[:, None] * (segments[seg, 1] - segments[seg, 0])


def render_layers(
    layers: List[Layer],
    eye: Sequence[float],
    target: Sequence[float],
    up: Sequence[float] = (0.0, 1.0, 0.0),
    image_size: int = 256,
    background: str = "#ffffff",
    lights: Optional[Lights] = None,
    fov: float = 50.0,
    max_line_dots: int = 200_000,
) -> torch.Tensor:
    """(H, W, 3) image in [0, 1] of the layers seen from ``eye`` towards ``target``, drawn by p3dlab:
    each mesh by ``MeshRasterizer`` + ``HardPhongShader`` (light at the eye), all points and line
    dots in one ``PointsRasterizer`` pass, the nearest surface winning at every pixel."""
    from p3dlab.renderer import (
        FoVPerspectiveCameras,
        HardPhongShader,
        MeshRasterizer,
        PointLights,
        PointsRasterizationSettings,
        PointsRasterizer,
        RasterizationSettings,
        look_at_view_transform,
    )
    from p3dlab.structures import Pointclouds

    lights = lights or Lights()
    eye_t = torch.tensor([float(e) for e in eye])
    target_t = torch.tensor([float(a) for a in target])
    dist = max(float((eye_t - target_t).norm()), 1e-6)
    R, T = look_at_view_transform(eye=eye_t[None], at=(target_t.tolist(),), up=(tuple(float(u) for u in up),))
    cams = FoVPerspectiveCameras(R=R, T=T, fov=fov, znear=dist * 1e-3, zfar=dist * 1e3)
    size = int(image_size)
    rgb = torch.tensor(parse_color(background)).expand(size, size, 3).clone()
    depth = torch.full((size, size), math.inf)
    point_lights = PointLights(
        location=eye_t[None],
        ambient_color=((0.55 * lights.ambient,) * 3,),
        diffuse_color=((0.45 * lights.diffuse,) * 3,),
        specular_color=((0.3 * lights.specular,) * 3,),
    )
    with torch.no_grad():
        for layer in layers:
            if not isinstance(layer, MeshLayer) or layer.mesh.faces_packed().shape[0] == 0:
                continue
            mesh = _drawable_mesh(layer)
            frags = MeshRasterizer(cams, RasterizationSettings(image_size=size))(mesh)
            image = HardPhongShader(cameras=cams, lights=point_lights)(frags, mesh)[0, ..., :3]
            z = frags.zbuf[0, ..., 0]
            nearer = (frags.pix_to_face[0, ..., 0] >= 0) & (z < depth)
            rgb[nearer], depth[nearer] = image[nearer].clamp(0, 1), z[nearer]
        pts, cols, radii = [], [], []
        pixel = 2.0 * dist * math.tan(math.radians(fov) / 2) / size  # one pixel's width at the target
        for layer in layers:
            if isinstance(layer, PointsLayer) and len(layer.points):
                p = torch.as_tensor(layer.points, dtype=torch.float32).reshape(-1, 3)
                if layer.colors is not None:
                    c = torch.as_tensor(layer.colors, dtype=torch.float32).reshape(-1, 3)
                else:
                    c = torch.tensor(parse_color(layer.color)).expand(len(p), 3)
                diameter = max(float(layer.size), 1.5)
            elif isinstance(layer, LinesLayer) and len(layer.segments):
                p = _line_dots(
                    torch.as_tensor(layer.segments, dtype=torch.float32).reshape(-1, 2, 3), pixel, max_line_dots
                )
                c = torch.tensor(parse_color(layer.color)).expand(len(p), 3)
                diameter = max(1.5 * float(layer.width), 1.5)
            else:
                continue
            pts.append(p)
            cols.append(c)
            radii.append(torch.full((len(p),), diameter / size))  # NDC spans 2 over `size` pixels
        if pts:
            p, c, r = torch.cat(pts), torch.cat(cols), torch.cat(radii)
            settings = PointsRasterizationSettings(image_size=size, radius=r[None], points_per_pixel=1)
            frags = PointsRasterizer(cams, settings)(Pointclouds([p]))
            idx, z = frags.idx[0, ..., 0].long(), frags.zbuf[0, ..., 0]
            nearer = (idx >= 0) & (z < depth)
            rgb[nearer], depth[nearer] = c[idx[nearer]].clamp(0, 1), z[nearer]
    return rgb


def orbit_angles(eye: Sequence[float], target: Sequence[float]) -> Tuple[float, float, float]:
    """``(azim, elev, dist)`` in degrees of ``eye`` about ``target`` (``look_at_view_transform``'s
    spherical angles, y up)."""
    v = np.asarray(eye, dtype=float) - np.asarray(target, dtype=float)
    dist = max(float(np.linalg.norm(v)), 1e-6)
    elev = math.degrees(math.asin(max(-1.0, min(1.0, v[1] / dist))))
    azim = math.degrees(math.atan2(v[0], v[2]))
    return azim, elev, dist


def image_view(
    layers: List[Layer],
    eye: Sequence[float],
    target: Sequence[float],
    image_size: int = 256,
    width: Optional[int] = None,
    background: str = "#ffffff",
    lights: Optional[Lights] = None,
    fov: float = 50.0,
    sync: Optional[bool] = None,
):
    """A :class:`~p3dlab.widgets.RenderView` of :func:`render_layers` with azimuth / elevation /
    distance sliders about ``target``, starting at ``eye`` (y is up: an eye straight above or below
    the target is tilted to 89°)."""
    import ipywidgets as widgets

    from p3dlab.widgets.render_view import RenderView

    azim, elev, dist = orbit_angles(eye, target)
    elev = max(-89.0, min(89.0, elev))
    target_t = np.asarray(target, dtype=float)

    def render(azim, elev, dist):
        a, e = math.radians(azim), math.radians(elev)
        offset = dist * np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])
        return render_layers(layers, target_t + offset, target_t, (0.0, 1.0, 0.0), image_size, background, lights, fov)

    sliders = {
        "azim": widgets.FloatSlider(value=azim, min=-180, max=180, step=1, description="azimuth"),
        "elev": widgets.FloatSlider(value=elev, min=-89, max=89, step=1, description="elevation"),
        "dist": widgets.FloatSlider(value=dist, min=0.25 * dist, max=4 * dist, step=dist / 100, description="distance"),
    }
    view = RenderView(render, sliders, width=width or image_size, sync=sync)
    view.widget.add_class("p3dlab-image-fallback")
    return view
