"""``p3dlab.vis``: PyTorch3D's ``plot_scene`` / ``plot_batch_individually`` drawn with the kit's views.

The behaviour compared against is PyTorch3D 0.7.9's ``pytorch3d/vis/plotly_vis.py`` (its docstrings
and what the functions do); differences are documented in docs/plot_scene.md.
"""

import io
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from p3dlab import data
from p3dlab.errors import P3DLabValueError
from p3dlab.renderer import (
    CamerasBase,
    FoVOrthographicCameras,
    FoVPerspectiveCameras,
    NDCMultinomialRaysampler,
    PerspectiveCameras,
    RayBundle,
    look_at_view_transform,
)
from p3dlab.structures import Meshes, Pointclouds, TexturesAtlas, TexturesVertex
from p3dlab.vis import AxisArgs, Lighting, get_camera_wireframe, plot_batch_individually, plot_scene


def _walk(w):
    yield w
    for c in getattr(w, "children", ()):
        yield from _walk(c)


def _kinds(fig, i=0):
    return [type(c).__name__ for c in fig.subplots[i].view.scene.children]


def _cameras(n=2, dist=3.0):
    R, T = look_at_view_transform(dist, 20.0, torch.linspace(0.0, 90.0, n))
    return FoVPerspectiveCameras(R=R, T=T, fov=60.0)


def _cdist(a, b):
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _view(cameras, points):
    return cameras.get_world_to_view_transform().transform_points(torch.as_tensor(points, dtype=torch.float32))


@pytest.fixture(autouse=True)
def _webgl(monkeypatch):
    monkeypatch.setenv("P3DLAB_WEBGL", "1")


def test_every_struct_type_is_drawn_in_a_named_subplot():
    """PyTorch3D's plot_scene takes Meshes, Pointclouds, Cameras and RayBundle traces in one
    subplot (plotly_vis.py, plot_scene docstring); each trace keeps its name."""
    cams = _cameras(2)
    bundle = NDCMultinomialRaysampler(8, 6, 5, 1.0, 4.0)(cams)
    pc = data.noisy_point_cloud(data.ico_sphere(2), 300)
    fig = plot_scene({"scene": {"cube": data.colored_cube(), "cloud": pc, "cams": cams, "rays": bundle}})
    (sp,) = fig.subplots
    assert sp.title == "scene" and list(sp.traces) == ["cube", "cloud", "cams", "rays"]
    t = sp.traces
    assert (t["cube"].kind, t["cube"].num_verts, t["cube"].num_faces) == ("Meshes", 24, 12)
    assert (t["cloud"].kind, t["cloud"].num_points) == ("Pointclouds", 300)
    assert (t["cams"].kind, t["cams"].num_segments) == ("FoVPerspectiveCameras", 2 * 10)
    assert (t["rays"].kind, t["rays"].num_segments, t["rays"].num_points) == ("RayBundle", 2 * 48, 2 * 48 * 5)
    kinds = _kinds(fig)
    assert kinds.count("Mesh") == 1 and kinds.count("Points") == 2 and kinds.count("LineSegments") == 2
    mesh = next(c for c in sp.view.scene.children if type(c).__name__ == "Mesh")
    assert mesh.material.vertexColors == "VertexColors"  # TexturesVertex colours shown, as PyTorch3D does
    assert mesh.geometry.attributes["position"].array.shape == (24, 3)
    titles = [w.value for w in _walk(fig.widget) if type(w).__name__ == "HTML"]
    assert "<b>scene</b>" in titles[0] and all(n in titles[0] for n in ("cube", "cloud", "cams", "rays"))


def test_a_batched_mesh_is_one_trace_joined_into_a_scene():
    """PyTorch3D draws every mesh of a batched Meshes in the one trace (join_meshes_as_scene)."""
    m = data.colored_cube().extend(3)
    fig = plot_scene({"s": {"cubes": m}})
    assert fig.subplots[0].traces["cubes"].num_verts == 72 and _kinds(fig).count("Mesh") == 1


def test_point_cloud_subsampling_keeps_at_most_max_points_per_cloud():
    """PyTorch3D subsamples each cloud to pointcloud_max_points random points
    (``pointclouds.subsample(max_points)``)."""
    a, b = torch.rand(300, 3), torch.rand(50, 3) + 2.0
    clouds = Pointclouds([a, b], features=[torch.rand(300, 3), torch.rand(50, 3)])
    fig = plot_scene({"s": {"pc": clouds}}, pointcloud_max_points=100)
    trace = fig.subplots[0].traces["pc"]
    assert trace.num_points == 100 + 50
    drawn = torch.from_numpy(trace.points)
    assert int((drawn[:, 0] < 1.5).sum()) == 100  # 100 of the first cloud, all 50 of the second
    assert _cdist(drawn, torch.cat([a, b])).min(1).values.max() < 1e-6  # drawn points are original points
    assert len({tuple(p) for p in trace.points.tolist()}) == 150  # without replacement
    points = next(c for c in fig.subplots[0].view.scene.children if type(c).__name__ == "Points")
    assert points.geometry.attributes["color"].array.shape == (150, 3)  # RGB features become colours


def test_ray_bundle_subsampling_respects_max_rays_and_max_points_per_ray():
    """PyTorch3D draws at most raybundle_max_rays random rays, each a line from its smallest to its
    largest length, and at most raybundle_max_points_per_ray random samples per ray."""
    cams = _cameras(2)
    bundle = NDCMultinomialRaysampler(8, 6, 7, 1.0, 4.0)(cams)
    fig = plot_scene({"s": {"rays": bundle}}, raybundle_max_rays=10, raybundle_max_points_per_ray=3)
    trace = fig.subplots[0].traces["rays"]
    assert trace.num_segments == 10 and trace.num_points == 30
    segs = torch.from_numpy(trace.segments)
    pts = torch.from_numpy(trace.points).reshape(10, 3, 3)
    o, d = segs[:, 0], segs[:, 1] - segs[:, 0]
    # each sample lies on its ray's segment, between the nearest and farthest sample
    s = ((pts - o[:, None]) * d[:, None]).sum(-1) / (d * d).sum(-1)[:, None]
    assert (s > -1e-4).all() and (s < 1 + 1e-4).all()
    assert torch.allclose(o[:, None] + s[..., None] * d[:, None], pts, atol=1e-4)
    # every segment runs from length 1 to length 4 of a ray of the bundle
    origins = bundle.origins.reshape(-1, 3)
    dirs = bundle.directions.reshape(-1, 3)
    starts = origins + 1.0 * dirs
    assert _cdist(segs[:, 0], starts).min(1).values.max() < 1e-4
    assert _cdist(segs[:, 1], origins + 4.0 * dirs).min(1).values.max() < 1e-4
    few = plot_scene({"s": {"rays": bundle}}).subplots[0].traces["rays"]
    assert few.num_segments == 96 and few.num_points == 96 * 7  # under the limits: everything


def test_camera_frusta_start_at_the_camera_centre_and_reach_along_the_view():
    """PyTorch3D draws each camera as a wireframe scaled by camera_scale, placed by the inverse
    world-to-view transform (plotly_vis.py, _add_camera_trace); here a perspective camera's
    frustum: apex at get_camera_center(), corners on the rays through the image corners at view
    depth 2·camera_scale, and a roof on the image's top edge."""
    cams = _cameras(2)
    fig = plot_scene({"s": {"cams": cams}}, camera_scale=0.25)
    segs = torch.from_numpy(fig.subplots[0].traces["cams"].segments).reshape(2, 10, 2, 3)
    centre = cams.get_camera_center()
    assert torch.allclose(segs[:, :4, 0], centre[:, None].expand(2, 4, 3), atol=1e-5)
    corners = segs[:, :4, 1]
    view = _view(cams, corners)
    assert torch.allclose(view[..., 2], torch.full((2, 4), 0.5), atol=1e-5)  # depth 2 * camera_scale
    half = 0.5 * math.tan(math.radians(30.0))
    assert torch.allclose(view[..., :2].abs(), torch.full((2, 4, 2), half), atol=1e-5)
    ndc = cams.transform_points(corners)  # the corners project onto the image corners
    assert torch.allclose(ndc[..., :2].abs(), torch.ones(2, 4, 2), atol=1e-4)
    forward = cams.R[:, :, 2]  # the view direction in world space
    assert (((corners - centre[:, None]) * forward[:, None]).sum(-1) > 0).all()
    roof = _view(cams, segs[:, 8, 1:])[:, 0]  # the roof's apex lies above the top edge (view +Y is up)
    assert (roof[:, 1] > view[..., 1].max(1).values).all()


def test_cameras_without_perspective_unprojection_get_the_fixed_symbol():
    """A bare CamerasBase (R, T only, as PyTorch3D's plot_batch_individually builds) and orthographic
    cameras get PyTorch3D's symbol size: a 2s x 1.5s rectangle at view depth 2s (s = camera_scale)."""
    R, T = look_at_view_transform(2.0, 10.0, 40.0)
    for cams in (CamerasBase(R=R, T=T), FoVOrthographicCameras(R=R, T=T)):
        segs = torch.from_numpy(plot_scene({"s": {"c": cams}}).subplots[0].traces["c"].segments)
        assert torch.allclose(segs[:4, 0], cams.get_camera_center().expand(4, 3), atol=1e-5)
        view = _view(cams, segs[:4, 1])
        expected = torch.tensor([[0.3, 0.225, 0.6], [-0.3, 0.225, 0.6], [-0.3, -0.225, 0.6], [0.3, -0.225, 0.6]])
        assert torch.allclose(view, expected, atol=1e-5)
    wire = get_camera_wireframe(0.3)  # the same symbol as a polyline in view coordinates
    assert wire.shape == (12, 3) and torch.allclose(wire[:, 2].max(), torch.tensor(0.6))
    rounded = lambda pts: {tuple(round(v, 5) for v in p) for p in pts.tolist()}
    assert rounded(expected) <= rounded(wire)
    # a screen-space perspective camera with image_size still gets its true (non-square) frustum
    wide = PerspectiveCameras(
        focal_length=100.0, principal_point=((80.0, 50.0),), image_size=((100, 160),), in_ndc=False
    )
    corners = torch.from_numpy(plot_scene({"s": {"c": wide}}).subplots[0].traces["c"].segments[:4, 1])
    view = _view(wide, corners)
    assert torch.allclose(view[:, 0].abs(), torch.full((4,), 0.6 * 80 / 100), atol=1e-4)
    assert torch.allclose(view[:, 1].abs(), torch.full((4,), 0.6 * 50 / 100), atol=1e-4)


def test_plot_batch_individually_puts_element_i_of_every_struct_in_subplot_i():
    """PyTorch3D: n subplots for batch size n, subplot i showing element i of each struct as trace
    "trace{i}-{j}"; batch-size-1 structs are drawn in every subplot (extend_struct=True) or only
    in the first (extend_struct=False, as its docstring says); titles default to "subplot i"."""
    meshes = Meshes([data.cube().verts_packed() + k for k in range(3)], [data.cube().faces_packed()] * 3)
    cams = _cameras(3)
    cloud = Pointclouds([torch.rand(40, 3)])
    fig = plot_batch_individually([meshes, cams, cloud], ncols=2)
    assert [sp.title for sp in fig.subplots] == ["subplot 1", "subplot 2", "subplot 3"]
    assert (fig.nrows, fig.ncols) == (2, 2)
    for k, sp in enumerate(fig.subplots):
        assert list(sp.traces) == [f"trace{k + 1}-1", f"trace{k + 1}-2", f"trace{k + 1}-3"]
        apex = torch.from_numpy(sp.traces[f"trace{k + 1}-2"].segments[0, 0])
        assert torch.allclose(apex, cams.get_camera_center()[k], atol=1e-5)  # camera k, with its intrinsics
        assert sp.traces[f"trace{k + 1}-2"].kind == "FoVPerspectiveCameras"
        layer = next(la for la in sp.layers if type(la).__name__ == "MeshLayer")
        assert torch.allclose(layer.mesh.verts_packed(), meshes[k].verts_packed())
        assert sp.traces[f"trace{k + 1}-3"].num_points == 40
    lone = plot_batch_individually([meshes, cloud], extend_struct=False, subplot_titles=["a", "b", "c"])
    assert [list(sp.traces) for sp in lone.subplots] == [["trace1-1", "trace1-2"], ["trace2-1"], ["trace3-1"]]
    assert [sp.title for sp in lone.subplots] == ["a", "b", "c"]
    single = plot_batch_individually(meshes)  # a single struct: one trace per subplot
    assert [list(sp.traces) for sp in single.subplots] == [["trace1-1"], ["trace2-1"], ["trace3-1"]]


def test_plot_batch_individually_splits_ray_bundles_by_camera():
    """PyTorch3D treats a RayBundle's first dimension (the camera) as its batch."""
    cams = _cameras(2)
    bundle = NDCMultinomialRaysampler(4, 3, 2, 1.0, 2.0)(cams)
    fig = plot_batch_individually([bundle, cams])
    assert len(fig.subplots) == 2
    for k, sp in enumerate(fig.subplots):
        rays = sp.traces[f"trace{k + 1}-1"]
        assert rays.num_segments == 12 and rays.num_points == 24
        own = bundle.origins[k].reshape(-1, 3) + 1.0 * bundle.directions[k].reshape(-1, 3)
        assert torch.allclose(torch.from_numpy(rays.segments[:, 0]).sort(0).values, own.sort(0).values, atol=1e-5)


def test_subplot_titles_and_ncols_lay_out_the_grid():
    """PyTorch3D lays the subplots out ncols per row in dict order, with the dict keys as titles."""
    m = data.cube()
    fig = plot_scene({"one": {"m": m}, "two": {"m": m}, "three": {"m": m}}, ncols=2)
    assert [sp.title for sp in fig.subplots] == ["one", "two", "three"] and (fig.nrows, fig.ncols) == (2, 2)
    assert fig.widget.layout.grid_template_columns.startswith("repeat(2,")
    assert len(fig.widget.children) == 3 and fig["two"] is fig.subplots[1]
    titles = [c.children[0].value for c in fig.widget.children]
    assert ["<b>one</b>" in titles[0], "<b>two</b>" in titles[1], "<b>three</b>" in titles[2]] == [True] * 3
    assert fig.subplots[0].view.width == 400  # two per row share the default width
    fig.update_layout(width=600, height=800)
    assert (fig.subplots[0].view.width, fig.subplots[0].view.height) == (300, 400)
    with pytest.warns(UserWarning, match="title"):
        fig.update_layout(title="x")


def test_viewpoint_cameras_place_the_views():
    """PyTorch3D: one viewpoint camera serves every subplot, one per subplot maps one to one, and
    any other number is ignored with a warning; the view sits at the camera and looks along it."""
    m = data.cube()
    cams = _cameras(2, dist=5.0)
    fig = plot_scene({"a": {"m": m}, "b": {"m": m}}, viewpoint_cameras=cams)
    for k, sp in enumerate(fig.subplots):
        assert np.allclose(sp.eye, cams.get_camera_center()[k].numpy(), atol=1e-5)
        ahead = (sp.target - sp.eye) / np.linalg.norm(sp.target - sp.eye)
        assert np.allclose(ahead, cams.R[k, :, 2].numpy(), atol=1e-5)
        assert np.allclose(sp.view.camera.position, sp.eye, atol=1e-5)
    one = plot_scene({"a": {"m": m}, "b": {"m": m}}, viewpoint_cameras=cams[1])
    assert all(np.allclose(sp.eye, cams.get_camera_center()[1].numpy(), atol=1e-5) for sp in one.subplots)
    with pytest.warns(UserWarning, match="viewpoint"):
        default = plot_scene({"a": {"m": m}, "b": {"m": m}, "c": {"m": m}}, viewpoint_cameras=cams)
    # the default view: plotly's eye (1.25, 1.25, 1.25) in units of the framing box (centre ± extent)
    assert np.allclose(default.subplots[0].eye, [2.5, 2.5, 2.5]) and np.allclose(default.subplots[0].target, 0)


def test_textures_axis_args_and_lighting_reach_the_view():
    """PyTorch3D shows TexturesVertex colours and single-colour atlas faces, and takes axis_args,
    xaxis/yaxis/zaxis and lighting keywords; here UV maps are shown too."""
    sphere = data.uv_sphere(4, 6, texture=data.uv_checker_texture(8, 2))
    fig = plot_scene(
        {"s": {"globe": sphere}},
        axis_args=AxisArgs(backgroundcolor="rgb(200, 230, 200)", showgrid=True),
        lighting=Lighting(ambient=0.4),
    )
    children = fig.subplots[0].view.scene.children
    mesh = next(c for c in children if type(c).__name__ == "Mesh")
    faces = sphere.faces_packed().shape[0]
    assert mesh.geometry.attributes["uv"].array.shape == (3 * faces, 2)
    texture = sphere.textures.maps_list()[0]
    assert mesh.material.map.data.shape == (8, 8, 4)
    assert np.allclose(mesh.material.map.data[0, :, :3] / 255.0, texture[-1].numpy(), atol=1 / 255)  # v = 0 row first
    assert fig.subplots[0].view.scene.background == "#c8e6c8"
    assert "LineSegments" in _kinds(fig)  # showgrid: a grid under the scene
    ambient = next(c for c in children if type(c).__name__ == "AmbientLight")
    assert math.isclose(ambient.intensity, 0.55 * 0.4 / 0.8)
    atlas = Meshes([data.cube().verts_packed()], [data.cube().faces_packed()])
    atlas.textures = TexturesAtlas([torch.rand(12, 1, 1, 3)])
    mesh = next(
        c for c in plot_scene({"s": {"a": atlas}}).subplots[0].view.scene.children if type(c).__name__ == "Mesh"
    )
    rgb = mesh.geometry.attributes["color"].array.reshape(12, 3, 3)
    assert np.allclose(rgb, atlas.textures.atlas_packed()[:, 0, 0, None].expand(12, 3, 3).numpy(), atol=1e-6)


def test_without_webgl_every_struct_type_is_rendered_into_an_image(monkeypatch):
    """Without WebGL (P3DLAB_WEBGL=0) each subplot is an image drawn by p3dlab's rasterizers with
    orbit sliders, and points and lines show in it, not just the meshes."""
    monkeypatch.setenv("P3DLAB_WEBGL", "0")
    red = Pointclouds([torch.rand(400, 3) - 0.5], features=[torch.tensor([[1.0, 0.0, 0.0]]).expand(400, 3)])
    cams = _cameras(1, dist=2.0)
    fig = plot_scene({"points": {"red": red}, "camera": {"cam": cams}}, ncols=2, width=192)
    assert fig.backend == "image"
    images = [w for w in _walk(fig.widget) if type(w).__name__ == "Image"]
    assert len(images) == 2 and all("p3dlab-image-fallback" in sp.view.widget._dom_classes for sp in fig.subplots)
    pts, cam = (np.asarray(Image.open(io.BytesIO(im.value)).convert("RGB")).astype(int) for im in images)
    assert pts.shape == (96, 96, 3)
    reddish = (pts[..., 0] > 180) & (pts[..., 1] < 90) & (pts[..., 2] < 90)
    assert reddish.sum() > 50  # the red points were drawn
    drawn = (np.abs(cam - 255).sum(-1) > 60).sum()
    assert 20 < drawn < 0.5 * 96 * 96  # the frustum's lines, on a white background
    before = bytes(images[1].value)
    fig.subplots[1].view.sliders["azim"].value += 40.0  # orbiting re-renders the image
    fig.subplots[1].view.render()
    assert bytes(images[1].value) != before
    shaded = plot_scene({"m": {"cube": data.colored_cube()}}, backend="image", width=64)
    img = np.asarray(Image.open(io.BytesIO(shaded.subplots[0].view.image.value)).convert("RGB"))
    assert (img.reshape(-1, 3).std(0) > 5).all()


def test_errors_name_the_offending_trace():
    """Unknown structures and mismatched batch sizes raise, naming the trace (PyTorch3D raises a
    ValueError for both); an empty batch list warns and returns None, as in PyTorch3D."""
    m = data.cube()
    with pytest.raises(P3DLabValueError, match=r"trace 'bad' of subplot 'room'.*str"):
        plot_scene({"room": {"ok": m, "bad": "teapot"}})
    with pytest.raises(P3DLabValueError, match="subplot 'room' must be a dict"):
        plot_scene({"room": m})
    with pytest.raises(P3DLabValueError, match="plots must be a dict"):
        plot_scene([m])
    with pytest.raises(P3DLabValueError, match="ncols"):
        plot_scene({"a": {"m": m}}, ncols=0)
    with pytest.raises(P3DLabValueError, match="pointcloud_max_points"):
        plot_scene({"a": {"m": m}}, pointcloud_max_points=0)
    with pytest.raises(P3DLabValueError, match="backend"):
        plot_scene({"a": {"m": m}}, backend="plotly")
    bad_rays = RayBundle(
        origins=torch.zeros(2, 3), directions=torch.ones(2, 3), lengths=torch.ones(3, 4), xys=torch.zeros(2, 2)
    )
    with pytest.raises(P3DLabValueError, match="trace 'r'.*lengths"):
        plot_scene({"a": {"r": bad_rays}})
    with pytest.raises(P3DLabValueError, match=r"batched_structs\[1\].*'trace\*-2'.*batch size 2.*3"):
        plot_batch_individually([m.extend(3), m.extend(2)])
    with pytest.raises(P3DLabValueError, match=r"batched_structs\[0\] is a Tensor"):
        plot_batch_individually([torch.zeros(3, 3), m])
    with pytest.raises(P3DLabValueError, match="2 subplot_titles for 3"):
        plot_batch_individually(m.extend(3), subplot_titles=["a", "b"])
    with pytest.warns(UserWarning, match="no structs"):
        assert plot_batch_individually([]) is None
    with pytest.warns(UserWarning, match="ignored keyword"):
        plot_scene({"a": {"m": m}}, colour="red")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_scene({"a": {"m": m}}, xaxis={"backgroundcolor": "#fff"}, axis_args=AxisArgs())  # PyTorch3D's keywords


def test_empty_and_untextured_structures_still_draw():
    """Meshes without textures get the trace's colour (PyTorch3D: plotly's default colours); clouds
    with non-RGB features are drawn in the trace colour; a struct with nothing in it is listed."""
    plain = data.ico_sphere(1)
    grey = Pointclouds([torch.rand(10, 3)], features=[torch.rand(10, 1)])
    fig = plot_scene({"s": {"plain": plain, "grey": grey, "none": Pointclouds([torch.zeros(0, 3)])}})
    children = fig.subplots[0].view.scene.children
    mesh = next(c for c in children if type(c).__name__ == "Mesh")
    assert mesh.material.vertexColors == "NoColors" and mesh.material.color == fig.subplots[0].traces["plain"].color
    points = [c for c in children if type(c).__name__ == "Points"]
    assert points[0].material.vertexColors == "NoColors"
    assert fig.subplots[0].traces["none"].num_points == 0
    vertex_one_channel = Meshes([plain.verts_packed()], [plain.faces_packed()])
    vertex_one_channel.textures = TexturesVertex([torch.rand(plain.verts_packed().shape[0], 1)])
    m = next(
        c
        for c in plot_scene({"s": {"v": vertex_one_channel}}).subplots[0].view.scene.children
        if type(c).__name__ == "Mesh"
    )
    assert m.material.vertexColors == "NoColors"


def test_heterogeneous_ray_bundles_are_split_by_camera_counts():
    """PyTorch3D's plot_batch_individually splits a bundle with ``camera_counts`` (its
    HeterogeneousRayBundle) into runs of consecutive rays, one run per camera."""
    from types import SimpleNamespace

    origins = torch.zeros(5, 3)
    directions = torch.arange(15, dtype=torch.float32).reshape(5, 3)
    bundle = SimpleNamespace(
        origins=origins,
        directions=directions,
        lengths=torch.ones(5, 2),
        xys=torch.zeros(5, 2),
        camera_counts=torch.tensor([2, 3]),
    )
    fig = plot_batch_individually(bundle)
    assert [sp.traces[f"trace{k + 1}-1"].num_segments for k, sp in enumerate(fig.subplots)] == [2, 3]
    second = torch.from_numpy(fig.subplots[1].traces["trace2-1"].segments[:, 0]).sort(0).values
    assert torch.allclose(second, directions[2:].sort(0).values)
