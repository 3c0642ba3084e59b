import torch

from p3dlab import data
from p3dlab.renderer import (
    FoVPerspectiveCameras,
    MeshRasterizer,
    RasterizationSettings,
    camera_position_from_spherical_angles,
    mirror_x,
    nmr_eye,
    nmr_normalize,
    nmr_pose,
)


def test_nmr_eye_is_spherical_with_azimuth_mirrored():
    for d, e, a in [(2.732, 30.0, -15.0), (5.0, -10.0, 120.0)]:
        assert torch.allclose(nmr_eye(d, e, a), camera_position_from_spherical_angles(d, e, 180.0 - a), atol=1e-5)


def test_nmr_normalize_spans_minus_one_to_one():
    v = nmr_normalize(data.teapot(3).verts_packed())
    extent = v.max(0).values - v.min(0).values
    assert abs(extent.max().item() - 2.0) < 1e-6
    assert torch.allclose(v.max(0).values, extent / 2, atol=1e-6)


def test_nmr_reference_view_shows_the_spout_on_the_right():
    """NMR's example-4 reference from (2.732, 30°, -15°) shows the spout (world +X) on the right; a
    right-handed camera there sees it on the left: the NMR frame is the mirror."""
    teapot = data.teapot(4)
    teapot = teapot.update_padded(nmr_normalize(teapot.verts_packed())[None])
    R, T = nmr_pose(nmr_eye(2.732, 30.0, -15.0))
    cam = FoVPerspectiveCameras(fov=60.0, R=R, T=T)
    frags = MeshRasterizer(cam, RasterizationSettings(image_size=64))(teapot)
    spout = teapot.verts_packed()[teapot.verts_packed()[:, 0].argmax()][None]
    u = cam.transform_points_screen(spout, image_size=(64, 64))[0, 0].item()
    assert u < 32  # p3dlab: on the left
    mask = (frags.pix_to_face[..., 0] >= 0).float()[..., None]
    nmr_frame = mirror_x(mask)
    assert torch.equal(nmr_frame[0, :, 63 - int(u)], mask[0, :, int(u)])  # the spout column moves to the right
    assert 63 - int(u) > 32
