"""Interactive 3D views on pythreejs: meshes, point clouds, camera frustums and ray bundles.

Browsers without WebGL (old machines, some locked-down lab computers, remote desktops) cannot show a
pythreejs scene. ``show(..., backend="image")`` — or ``P3DLAB_WEBGL=0`` in the environment, which
switches every ``show`` call of every lesson — renders the meshes with p3dlab's own rasterizer into a
plain image with orbit sliders instead.

``show(meshes, clouds, cameras, ...)`` builds one scene with orbit controls. Geometry goes into
``BufferGeometry`` attributes (one typed array per attribute), so large meshes stay responsive.
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Optional

import numpy as np
import torch

from p3dlab.errors import P3DLabValueError


def _flatten(objs) -> list:
    out = []
    for o in objs:
        if isinstance(o, (list, tuple)) and not hasattr(o, "_fields"):  # a RayBundle is a named tuple: keep it
            out.extend(_flatten(o))
        elif o is not None:
            out.append(o)
    return out


def frustum_lines(cameras, depth: float = 1.0, image_size=(1, 1)) -> np.ndarray:
    """(N, 16, 3) world-space segment end points of each camera's viewing frustum: the four edges
    from the centre to the image corners at view depth ``depth`` and the rectangle joining them."""
    h, w = image_size
    s = min(h, w)
    ux, uy = w / s, h / s
    corners = torch.tensor([[ux, uy], [-ux, uy], [-ux, -uy], [ux, -uy]], dtype=cameras.R.dtype)
    n = len(cameras)
    xy_depth = torch.cat([corners, torch.full((4, 1), float(depth), dtype=cameras.R.dtype)], 1)
    if hasattr(cameras, "in_ndc") and not cameras.in_ndc():
        raise P3DLabValueError("frustum_lines needs an NDC camera")
    far = cameras.unproject_points(xy_depth[None].expand(n, 4, 3).contiguous(), world_coordinates=True)
    centre = cameras.get_camera_center()
    segs = []
    for i in range(n):
        c = centre[i]
        for k in range(4):
            segs += [c, far[i, k]]
        for k in range(4):
            segs += [far[i, k], far[i, (k + 1) % 4]]
    return torch.stack(segs).reshape(n, 16, 3).detach().cpu().numpy().astype(np.float32)


def ray_segments(bundle, max_rays: int = 200):
    """(2·n, 3) segment end points (first to last sample) and (n·P, 3) sample points of at most
    ``max_rays`` rays of a ``RayBundle``, evenly spaced through the bundle."""
    o = bundle.origins.detach().reshape(-1, 3)
    d = bundle.directions.detach().reshape(-1, 3)
    t = bundle.lengths.detach().reshape(o.shape[0], -1)
    if o.shape[0] == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)
    pick = torch.linspace(0, o.shape[0] - 1, min(max_rays, o.shape[0])).round().long()
    o, d, t = o[pick], d[pick], t[pick]
    pts = o[:, None] + t[..., None] * d[:, None]
    segs = torch.stack([pts[:, 0], pts[:, -1]], 1).reshape(-1, 3)
    return segs.cpu().numpy().astype(np.float32), pts.reshape(-1, 3).cpu().numpy().astype(np.float32)


def _mesh_object(mesh, color, wireframe: bool, flat: bool):
    import pythreejs as three

    verts = mesh.verts_packed().detach().cpu().numpy().astype(np.float32)
    faces = mesh.faces_packed().cpu().numpy().astype(np.uint32)
    attrs = {
        "position": three.BufferAttribute(verts, normalized=False),
        "index": three.BufferAttribute(faces.ravel(), normalized=False),
        "normal": three.BufferAttribute(
            mesh.verts_normals_packed().detach().cpu().numpy().astype(np.float32), normalized=False
        ),
    }
    tex = mesh.textures
    vertex_colors = color is None and tex is not None and hasattr(tex, "verts_features_packed")
    if vertex_colors:
        cols = tex.verts_features_packed().detach().cpu().numpy()[:, :3].clip(0, 1).astype(np.float32)
        attrs["color"] = three.BufferAttribute(cols, normalized=False)
    geometry = three.BufferGeometry(attributes=attrs)
    material = three.MeshStandardMaterial(
        color="white" if vertex_colors else (color or "#d08a4c"),
        vertexColors="VertexColors" if vertex_colors else "NoColors",
        wireframe=wireframe,
        flatShading=flat,
        side="DoubleSide",
        roughness=0.6,
        metalness=0.0,
    )
    return three.Mesh(geometry=geometry, material=material)


FOV = 50.0  # degrees, the view's vertical field of view


def _points_of(obj, frustum_depth: float, max_rays: int) -> np.ndarray:
    """The (n, 3) points that a view of ``obj`` should frame."""
    name = type(obj).__name__
    if name == "Meshes":
        return obj.verts_packed().detach().cpu().numpy()
    if name == "Pointclouds":
        return obj.points_packed().detach().cpu().numpy()
    if name == "RayBundle":
        segs, samples = ray_segments(obj, max_rays)
        return np.concatenate([segs, samples])
    if hasattr(obj, "get_world_to_view_transform"):
        return frustum_lines(obj, depth=frustum_depth).reshape(-1, 3)
    return np.zeros((0, 3))


def _bounding_sphere(objects, frustum_depth: float, max_rays: int):
    """(centre, radius) of what the view shows: the centre of its bounding box and the largest
    distance from it (the unit sphere when there is nothing, or a single point)."""
    pts = [p for p in (_points_of(o, frustum_depth, max_rays) for o in objects) if len(p)]
    if not pts:
        return np.zeros(3), 1.0
    pts = np.concatenate(pts).astype(np.float64)
    pts = pts[np.isfinite(pts).all(1)]
    if not len(pts):
        return np.zeros(3), 1.0
    centre = (pts.min(0) + pts.max(0)) / 2
    radius = float(np.linalg.norm(pts - centre, axis=1).max())
    return centre, radius if radius > 0 else 1.0


def framing_position(target, radius: float, fov: float = FOV, direction=(3.0, 2.0, 4.0)) -> list:
    """A camera position looking at ``target`` from ``direction`` at which a sphere of ``radius``
    just fits a view of vertical field of view ``fov`` (degrees), with a 10 % margin:
    distance = 1.1 r / sin(fov / 2)."""
    d = np.asarray(direction, np.float64)
    distance = 1.1 * radius / math.sin(math.radians(fov) / 2)
    return (np.asarray(target, np.float64) + distance * d / np.linalg.norm(d)).tolist()


def show(
    *objects,
    width: int = 480,
    height: int = 360,
    wireframe: bool = False,
    flat: bool = False,
    color: Optional[str] = None,
    point_size: Optional[float] = None,
    frustum_depth: float = 1.0,
    camera_position: Optional[Iterable[float]] = None,
    max_rays: int = 200,
    backend: str = "auto",
    normals: float = 0.0,
    grid: bool = False,
):
    """A pythreejs view of any mix of ``Meshes``, ``Pointclouds``, cameras and ``RayBundle``s (or
    lists of them).

    Meshes use their ``TexturesVertex`` colours when present; every mesh of a batch is shown. Ray
    bundles are drawn as segments from their first to their last sample, with the samples as points
    (at most ``max_rays`` rays, evenly picked).

    ``normals`` > 0 draws every mesh's vertex normals as segments of that length (at most 5000);
    ``grid`` adds a ground grid in the y = 0 plane (axes are always shown).

    The view is framed to its content: the camera looks at the centre of everything shown, from the
    direction (3, 2, 4), at the distance where the bounding sphere fills the view
    (``camera_position`` overrides it). ``point_size`` defaults to 1/50 of that sphere's radius.

    ``backend``: "webgl" (pythreejs), "image" (the no-WebGL fallback: the meshes rendered by p3dlab
    with orbit sliders; other objects are listed but not drawn) or "auto" ("image" when the
    environment variable ``P3DLAB_WEBGL`` is "0", else "webgl").
    Returns the ``pythreejs.Renderer`` widget (display it, or put it in a layout).
    """
    if backend not in ("auto", "webgl", "image"):
        raise P3DLabValueError(f"show: backend must be 'auto', 'webgl' or 'image', got {backend!r}")
    if backend == "image" or (backend == "auto" and os.environ.get("P3DLAB_WEBGL", "1") == "0"):
        return _image_fallback(_flatten(objects), width, color)
    import pythreejs as three

    radius = _bounding_sphere(_flatten(objects), frustum_depth, max_rays)[1]
    point_size = point_size if point_size is not None else radius / 50
    children = [three.AmbientLight(color="#777777")]
    for obj in _flatten(objects):
        name = type(obj).__name__
        if name == "Meshes":
            for i in range(len(obj)):
                children.append(_mesh_object(obj[i], color, wireframe, flat))
                if normals > 0:
                    children.append(_normal_segments(three, obj[i], normals))
        elif name == "Pointclouds":
            pts = obj.points_packed().detach().cpu().numpy().astype(np.float32)
            attrs = {"position": three.BufferAttribute(pts, normalized=False)}
            feats = obj.features_packed()
            if feats is not None and feats.shape[1] >= 3:
                attrs["color"] = three.BufferAttribute(
                    feats[:, :3].detach().cpu().numpy().clip(0, 1).astype(np.float32)
                )
            material = three.PointsMaterial(
                size=point_size,
                vertexColors="VertexColors" if "color" in attrs else "NoColors",
                color="white" if "color" in attrs else "#3070d0",
            )
            children.append(three.Points(geometry=three.BufferGeometry(attributes=attrs), material=material))
        elif name == "RayBundle":
            segs, samples = ray_segments(obj, max_rays)
            geom = three.BufferGeometry(attributes={"position": three.BufferAttribute(segs, normalized=False)})
            children.append(three.LineSegments(geometry=geom, material=three.LineBasicMaterial(color="#3a8a3a")))
            attrs = {"position": three.BufferAttribute(samples, normalized=False)}
            children.append(
                three.Points(
                    geometry=three.BufferGeometry(attributes=attrs),
                    material=three.PointsMaterial(size=point_size * 0.6, color="#1f5fbf"),
                )
            )
        elif hasattr(obj, "get_world_to_view_transform"):
            segs = frustum_lines(obj, depth=frustum_depth).reshape(-1, 3)
            geom = three.BufferGeometry(attributes={"position": three.BufferAttribute(segs, normalized=False)})
            children.append(three.LineSegments(geometry=geom, material=three.LineBasicMaterial(color="#e03030")))
        else:
            raise P3DLabValueError(f"show() cannot display a {name}")
    target, radius = _bounding_sphere(_flatten(objects), frustum_depth, max_rays)
    position = list(camera_position) if camera_position is not None else framing_position(target, radius, FOV)
    distance = float(np.linalg.norm(np.subtract(position, target)))
    cam = three.PerspectiveCamera(
        position=[float(x) for x in position],
        up=[0, 1, 0],
        aspect=width / height,
        fov=FOV,
        near=distance / 100,
        far=distance * 100,
        children=[three.DirectionalLight(color="white", position=[3, 5, 1], intensity=0.6)],
    )
    children.append(three.AxesHelper(size=0.5 * radius))
    if grid:
        children.append(three.GridHelper(size=4 * radius, divisions=16, colorCenterLine="#888888", colorGrid="#cccccc"))
    scene = three.Scene(children=children + [cam], background="#f4f4f4")
    controls = three.OrbitControls(controlling=cam, target=[float(x) for x in target])
    cam.lookAt([float(x) for x in target])
    return three.Renderer(camera=cam, scene=scene, controls=[controls], width=width, height=height, antialias=True)


def normal_segments(mesh, length: float, max_normals: int = 5000) -> np.ndarray:
    """(2·n, 3) segment end points ``v`` and ``v + length·n_v`` for at most ``max_normals`` vertices."""
    v = mesh.verts_packed().detach()
    n = mesh.verts_normals_packed().detach()
    pick = torch.linspace(0, v.shape[0] - 1, min(max_normals, v.shape[0])).round().long() if v.shape[0] else []
    v, n = v[pick], n[pick]
    return torch.stack([v, v + length * n], 1).reshape(-1, 3).cpu().numpy().astype(np.float32)


def _normal_segments(three, mesh, length: float):
    segs = normal_segments(mesh, length)
    geom = three.BufferGeometry(attributes={"position": three.BufferAttribute(segs, normalized=False)})
    return three.LineSegments(geometry=geom, material=three.LineBasicMaterial(color="#2060c0"))


def _image_fallback(objects, width: int, color: Optional[str]):
    """``show`` without WebGL: an orbit ``RenderView`` of the meshes (joined into one scene)."""
    import ipywidgets as widgets
    import torch

    from p3dlab.structures import TexturesVertex, join_meshes_as_scene
    from p3dlab.widgets.render_view import orbit_view

    meshes = [o for o in objects if type(o).__name__ == "Meshes"]
    skipped = sorted({type(o).__name__ for o in objects if type(o).__name__ != "Meshes"})
    note = f"<small>no WebGL: {', '.join(skipped)} not drawn</small>" if skipped else ""
    if not meshes:
        return widgets.HTML(note or "<small>nothing to show</small>")
    parts = []
    for m in meshes:
        if color is not None or m.textures is None:
            rgb = torch.tensor([0.82, 0.54, 0.30]) if color is None else _hex_rgb(color)
            m = m.clone()
            m.textures = TexturesVertex([rgb.to(v).expand_as(v) for v in m.verts_list()])
        parts.append(m)
    scene = join_meshes_as_scene(parts) if len(parts) > 1 or len(parts[0]) > 1 else parts[0]
    centre = scene.verts_packed().mean(0).tolist()
    radius = float((scene.verts_packed() - scene.verts_packed().mean(0)).norm(dim=-1).max())
    view = orbit_view(scene, image_size=min(int(width), 384), dist=2.8 * max(radius, 1e-3), at=centre)
    view.widget.add_class("p3dlab-image-fallback")
    return widgets.VBox([view.widget, widgets.HTML(note)]) if note else view.widget


def _hex_rgb(color: str):
    import torch

    named = {"white": "#ffffff", "black": "#000000", "red": "#ff0000", "green": "#00ff00", "blue": "#0000ff"}
    h = named.get(color, color).lstrip("#")
    if len(h) != 6:
        raise P3DLabValueError(f"show: colour must be '#rrggbb' or a basic name, got {color!r}")
    return torch.tensor([int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)])


def mesh_viewer(*objects, **kwargs):
    """:func:`show` plus toggles: wireframe on/off and back faces shown/hidden (the book's Open3D
    "back face" switch). Hiding back faces reveals inward-wound (inside-out) meshes at once."""
    import ipywidgets as widgets
    import pythreejs as three

    view = show(*objects, **kwargs)
    if not isinstance(view, three.Renderer):
        return view  # the no-WebGL fallback has no materials to toggle
    meshes = [c for c in view.scene.children if isinstance(c, three.Mesh)]
    wire = widgets.ToggleButton(value=False, description="wireframe")
    back = widgets.ToggleButton(value=True, description="back faces")

    def update(_=None):
        for m in meshes:
            m.material.wireframe = wire.value
            m.material.side = "DoubleSide" if back.value else "FrontSide"

    wire.observe(update, names="value")
    back.observe(update, names="value")
    return widgets.VBox([widgets.HBox([wire, back]), view])
