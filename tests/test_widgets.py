import numpy as np
import pytest
import torch

from p3dlab import data
from p3dlab.renderer import FoVPerspectiveCameras, look_at_view_transform
from p3dlab.widgets import frustum_lines, show


def test_frustum_lines_start_at_the_camera_and_reach_the_depth():
    R, T = look_at_view_transform(3.0, 20.0, 30.0)
    cam = FoVPerspectiveCameras(R=R, T=T, fov=60.0)
    segs = frustum_lines(cam, depth=2.0)
    assert segs.shape == (1, 16, 3)
    centre = cam.get_camera_center()[0].numpy()
    assert np.allclose(segs[0, 0], centre, atol=1e-5)
    far = torch.from_numpy(segs[0, 1])
    view = cam.get_world_to_view_transform().transform_points(far[None])[0]
    assert abs(view[2].item() - 2.0) < 1e-4  # the corner lies at view depth 2
    assert abs(abs(view[0].item()) - 2.0 * np.tan(np.radians(30))) < 1e-4  # on the frustum edge


def test_show_builds_a_scene_with_every_object():
    m = data.colored_cube()
    pc = data.noisy_point_cloud(data.ico_sphere(2), 100)
    R, T = look_at_view_transform(3.0, 0.0, 0.0)
    view = show(m, [pc, FoVPerspectiveCameras(R=R, T=T)])
    kinds = [type(c).__name__ for c in view.scene.children]
    assert {"Mesh", "Points", "LineSegments"} <= set(kinds)
    mesh = next(c for c in view.scene.children if type(c).__name__ == "Mesh")
    assert mesh.geometry.attributes["position"].array.shape == (24, 3)
    assert mesh.material.vertexColors == "VertexColors"


def test_ray_bundles_are_drawn_as_segments_with_their_samples():
    from p3dlab.renderer import NDCMultinomialRaysampler
    from p3dlab.widgets import ray_segments

    R, T = look_at_view_transform(3.0, 10.0, 20.0)
    cam = FoVPerspectiveCameras(R=R, T=T)
    bundle = NDCMultinomialRaysampler(8, 6, 5, 1.0, 4.0)(cam)
    segs, samples = ray_segments(bundle, max_rays=10)
    assert segs.shape == (20, 3) and samples.shape == (50, 3)
    centre = cam.get_camera_center()[0].numpy()
    # perspective rays start at the camera: sample i lies at view depth lengths[i]
    depth = np.linalg.norm(samples[0] - centre) / np.linalg.norm(bundle.directions.reshape(-1, 3)[0].numpy())
    assert abs(depth - 1.0) < 1e-4
    view = show(bundle, cam)
    kinds = [type(c).__name__ for c in view.scene.children]
    assert kinds.count("LineSegments") == 2 and "Points" in kinds


def test_normals_are_drawn_outward_and_a_grid_can_be_added():
    from p3dlab.widgets.threejs import normal_segments

    sphere = data.ico_sphere(2)
    segs = normal_segments(sphere, 0.1).reshape(-1, 2, 3)
    assert segs.shape[0] == sphere.verts_packed().shape[0]
    # on a unit sphere the normals point away from the centre: tips are 1.1 from the origin
    assert np.allclose(np.linalg.norm(segs[:, 1], axis=1), 1.1, atol=1e-3)
    view = show(sphere, normals=0.1, grid=True)
    kinds = [type(c).__name__ for c in view.scene.children]
    assert "GridHelper" in kinds and kinds.count("LineSegments") == 1


def test_mesh_viewer_toggles_change_the_materials():
    from p3dlab.widgets import mesh_viewer

    box = mesh_viewer(data.cube(inverted=True))
    (wire, back), view = box.children[0].children, box.children[1]
    mesh = next(c for c in view.scene.children if type(c).__name__ == "Mesh")
    assert mesh.material.side == "DoubleSide" and not mesh.material.wireframe
    back.value = False
    wire.value = True
    assert mesh.material.side == "FrontSide" and mesh.material.wireframe


def test_optimization_monitor_text_and_widget_modes(capsys):
    from p3dlab.widgets import OptimizationMonitor

    text = OptimizationMonitor(every=2, mode="text")
    for step in range(5):
        text.update(step, {"loss": 1.0 / (step + 1)}, params={"lr": 0.1})
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and out[-1].startswith("step 3") and "loss 0.25" in out[-1]
    mon = OptimizationMonitor(every=3, mode="widget", display=False)
    for step in range(6):
        mon.update(step, {"loss": 1.0 / (step + 1), "iou": step / 6}, image=torch.rand(8, 8, 3))
    first = bytes(mon._plot.value)
    assert first.startswith(b"\x89PNG") and bytes(mon._render.value).startswith(b"\x89PNG")
    mon.update(6, {"loss": 0.01, "iou": 0.99})
    mon.close()
    assert bytes(mon._plot.value) != first and "step 6" in mon._text.value
    # the plot is kept between draws and follows the history: a log axis while every loss is
    # positive, linear once one is not; a line per loss, new losses included
    assert mon._ax.get_yscale() == "linear" and set(mon._lines) == {"loss", "iou"}  # iou started at 0
    pos = OptimizationMonitor(every=1, mode="widget", display=False)
    pos.update(0, {"loss": 1.0})
    pos.update(1, {"loss": 0.5})
    assert pos._ax.get_yscale() == "log" and list(pos._lines["loss"].get_ydata()) == [1.0, 0.5]
    pos.update(2, {"loss": 0.25, "reg": -0.5})
    assert pos._ax.get_yscale() == "linear" and list(pos._lines["reg"].get_ydata()) == [-0.5]
    assert list(pos._lines["reg"].get_xdata()) == [2] and len(pos._lines["loss"].get_xdata()) == 3


def test_render_view_rerenders_on_slider_changes_and_coalesces():
    from p3dlab.widgets import RenderView, orbit_view

    view = orbit_view(data.teapot(3, normalize=True), image_size=64, sync=True)
    first = bytes(view.image.value)
    assert first.startswith(b"\xff\xd8") and view.renders == 1  # JPEG by default
    view.sliders["azim"].value = 120.0
    assert bytes(view.image.value) != first and view.renders == 2
    assert view.last_render_ms < 5000
    view.render()  # nothing changed: no new frame
    assert view.renders == 2
    calls = []
    rv = RenderView(
        lambda a: (calls.append(a), torch.full((4, 4, 3), a / 10.0))[1],
        {"a": __import__("ipywidgets").IntSlider(1, 0, 10)},
        sync=False,
    )
    for v in (2, 3, 4):  # no running event loop here: each change renders at once
        rv.sliders["a"].value = v
    assert calls[-1] == 4 and rv.renders == len(calls)


def test_show_without_webgl_renders_the_meshes_into_an_image(monkeypatch):
    import io

    from PIL import Image

    from p3dlab.widgets import mesh_viewer

    m = data.colored_cube()
    pc = data.noisy_point_cloud(data.ico_sphere(1), 20)
    box = show(m, pc, backend="image")
    imgs = [w for w in _walk(box) if type(w).__name__ == "Image"]
    assert len(imgs) == 1
    pixels = np.asarray(Image.open(io.BytesIO(imgs[0].value)))
    assert pixels.shape[0] >= 200 and (pixels[..., :3].std(axis=(0, 1)) > 5).all()  # a coloured cube, not a blank
    assert any("Pointclouds not drawn" in getattr(w, "value", "") for w in _walk(box) if type(w).__name__ == "HTML")
    monkeypatch.setenv("P3DLAB_WEBGL", "0")
    assert "p3dlab-image-fallback" in show(m)._dom_classes
    assert "p3dlab-image-fallback" in mesh_viewer(m)._dom_classes
    monkeypatch.setenv("P3DLAB_WEBGL", "1")
    assert type(show(m)).__name__ == "Renderer"
    import pytest

    with pytest.raises(Exception, match="backend"):
        show(m, backend="opengl")


def _walk(w):
    yield w
    for c in getattr(w, "children", ()):
        yield from _walk(c)


def test_orbit_view_culls_back_faces_only_for_closed_meshes_and_can_send_png():
    from p3dlab.widgets import orbit_view
    from p3dlab.widgets.render_view import _is_closed

    sphere, plane = data.ico_sphere(2), data.parallel_planes()
    assert _is_closed(sphere) and _is_closed(data.cube()) and not _is_closed(plane)
    closed = orbit_view(sphere, image_size=64, sync=True)
    open_ = orbit_view(plane, image_size=64, sync=True)
    assert closed.raster_settings.cull_backfaces and not open_.raster_settings.cull_backfaces
    # culling a closed outward mesh changes nothing a student can see
    culled = np.asarray(orbit_view(sphere, image_size=64, sync=True, cull_backfaces=True).render_fn(30.0, 20.0, 2.7))
    plain = np.asarray(orbit_view(sphere, image_size=64, sync=True, cull_backfaces=False).render_fn(30.0, 20.0, 2.7))
    assert np.allclose(culled, plain, atol=1e-5)
    png = orbit_view(sphere, image_size=64, sync=True)
    png.fmt = "png"
    png.sliders["azim"].value = 45.0
    assert bytes(png.image.value).startswith(b"\x89PNG")


def test_render_view_never_renders_on_two_threads_at_once():
    """Kernels may deliver slider events on several threads; overlapping renders would launch
    parallel Numba kernels concurrently, which the workqueue threading layer answers by aborting."""
    import threading
    import time

    import ipywidgets as widgets

    from p3dlab.widgets import RenderView

    active, overlaps = [0], [0]

    def slow_render(a):
        active[0] += 1
        overlaps[0] = max(overlaps[0], active[0])
        time.sleep(0.01)
        active[0] -= 1
        return np.full((8, 8, 3), a / 100.0)

    views = [RenderView(slow_render, {"a": widgets.FloatSlider(value=1, min=0, max=100)}, sync=True) for _ in range(2)]

    def drag(view):
        for v in range(2, 12):
            view.sliders["a"].value = float(v)

    threads = [threading.Thread(target=drag, args=(v,)) for v in views]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps[0] == 1
    assert all(v.renders == 11 for v in views)


def test_optimization_monitor_shows_no_image_box_until_it_has_an_image():
    """An empty image widget is drawn as a broken-image icon: the render box stays hidden until the
    first image arrives."""
    from p3dlab.widgets import OptimizationMonitor

    mon = OptimizationMonitor(every=1, mode="widget", display=False)
    mon.update(0, {"loss": 1.0})
    assert mon._render.layout.display == "none" and not mon._render.value
    mon.update(1, {"loss": 0.5}, image=np.full((4, 5, 3), 0.5))
    assert mon._render.layout.display is None and mon._render.value[:4] == b"\x89PNG"


def test_show_frames_its_content_whatever_its_size_and_place():
    """A small point cloud far from the origin fills the view: the camera looks at its centre from
    the distance at which its bounding sphere fits the field of view (with a 10 % margin)."""
    import math

    from p3dlab.structures import Pointclouds

    g = torch.Generator().manual_seed(0)
    pts = torch.rand(500, 3, generator=g) * 0.2 + torch.tensor([5.0, -3.0, 2.0])
    view = show(Pointclouds([pts]), backend="webgl")
    cam = view.camera
    centre = (pts.min(0).values + pts.max(0).values) / 2
    assert np.allclose(view.controls[0].target, centre.numpy(), atol=1e-6)
    offsets = pts.numpy() - np.array(cam.position)
    axis = centre.numpy() - np.array(cam.position)
    axis /= np.linalg.norm(axis)
    angles = np.degrees(np.arccos(offsets @ axis / np.linalg.norm(offsets, axis=1)))
    assert angles.max() < cam.fov / 2  # everything is in view...
    radius = np.linalg.norm(pts.numpy() - centre.numpy(), axis=1).max()
    distance = np.linalg.norm(np.array(cam.position) - centre.numpy())
    assert distance == pytest.approx(1.1 * radius / math.sin(math.radians(cam.fov / 2)), rel=1e-6)  # ...and fills it
    assert cam.near < distance - radius and cam.far > distance + radius
    points = [c for c in view.scene.children if type(c).__name__ == "Points"][0]
    assert points.material.size == pytest.approx(radius / 50, rel=1e-6)
    fixed = show(Pointclouds([pts]), backend="webgl", camera_position=(1.0, 2.0, 3.0))
    assert list(fixed.camera.position) == [1.0, 2.0, 3.0]  # an explicit position wins
