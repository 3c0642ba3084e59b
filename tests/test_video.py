import numpy as np
import pytest
import torch

from p3dlab import data
from p3dlab.renderer import FoVPerspectiveCameras, HardPhongShader, MeshRasterizer, MeshRenderer, RasterizationSettings
from p3dlab.structures import TexturesVertex
from p3dlab.transforms import RotateAxisAngle
from p3dlab.video import Orbit, embed, lesson_output, preview, render_frames, save_video, to_uint8


def _renderer(size=32):
    return MeshRenderer(
        MeshRasterizer(FoVPerspectiveCameras(), RasterizationSettings(image_size=size)), HardPhongShader()
    )


def _mesh():
    m = data.teapot(2, normalize=True)
    m.textures = TexturesVertex([torch.ones_like(m.verts_packed())])
    return m


def test_orbit_keeps_the_object_in_every_frame():
    frames = render_frames(_renderer(), _mesh(), 12, orbit=Orbit(dist=3.0, elev=30.0), progress=False)
    assert frames.shape == (12, 32, 32, 3) and frames.dtype == np.uint8
    background = (frames == 255).all(-1)
    assert ((~background).sum(axis=(1, 2)) > 30).all()
    assert not np.array_equal(frames[0], frames[3])  # the view changes


def test_transform_and_morph_change_the_frames():
    m = _mesh()
    fixed = Orbit(dist=3.0, azim_end=0.0)  # a camera that does not move
    spin = render_frames(
        _renderer(), m, 4, orbit=fixed, transform=lambda t: RotateAxisAngle(360 * t, "Y"), progress=False
    )
    assert not np.array_equal(spin[0], spin[1])
    target = m.verts_packed() * torch.tensor([1.5, 0.5, 1.0])
    morph = render_frames(_renderer(), m, 4, orbit=fixed, morph_to=target, progress=False)
    assert not np.array_equal(morph[0], morph[2])
    with pytest.raises(ValueError, match="morph_to"):
        render_frames(_renderer(), m, 2, morph_to=torch.zeros(3, 3))


def test_to_uint8_clips_instead_of_wrapping():
    img = torch.tensor([[[[1.5, -0.2, 0.5, 1.0]]]])
    assert to_uint8(img)[0, 0, 0].tolist() == [255, 0, 128]


def test_save_gif_and_mp4(tmp_path):
    frames = render_frames(_renderer(33), _mesh(), 6, orbit=Orbit(dist=3.0), progress=False)
    gif = save_video(frames, tmp_path / "a.gif", fps=10)
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames == 6 and im.info["duration"] == 100
    mp4 = save_video(frames, tmp_path / "a.mp4", fps=10)
    import imageio.v2 as imageio

    back = imageio.mimread(mp4)
    assert len(back) == 6 and back[0].shape[:2] == (34, 34)  # padded to even sizes
    with pytest.raises(ValueError, match="format"):
        save_video(frames, tmp_path / "a.avi")


def test_preview_widget_shows_frames_at_a_whole_pixel_zoom():
    frames = np.zeros((3, 8, 10, 3), np.uint8)
    frames[2] = 255
    w = preview(frames)
    controls, image, _style = w.children
    play, slider, zoom = controls.children
    first = bytes(image.value)
    slider.value = 2
    assert bytes(image.value[:4]) == b"\x89PNG" and bytes(image.value) != first
    assert zoom.value == 51 and image.layout.width == "510px" and image.layout.height == "408px"  # 512 // 10
    zoom.value = 1  # natural size
    assert (image.layout.width, image.layout.height) == ("10px", "8px")
    big = preview(np.zeros((2, 300, 200, 3), np.uint8), zoom=None)
    assert big.children[1].layout.width == "200px"  # never shrunk, never stretched to the page


def test_lesson_outputs_go_beside_the_notebook_and_play_embedded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a notebook's kernel runs in the notebook's folder
    frames = render_frames(_renderer(16), _mesh(), 3, orbit=Orbit(dist=3.0), progress=False)
    gif = save_video(frames, lesson_output("spin.gif"), fps=10)
    assert (tmp_path / "outputs" / "spin.gif").is_file() and gif == "outputs/spin.gif"
    shown = embed(gif)
    assert shown.data[:6] == b"GIF89a" and shown.format == "gif"
    mp4 = save_video(frames, lesson_output("spin.mp4"), fps=10)
    html = embed(mp4)._repr_html_()
    assert "data:video/mp4;base64," in html and "loop" in html
    with pytest.raises(ValueError, match="neither"):
        embed("x.avi")
