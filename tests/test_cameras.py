import math

import pytest
import torch

from p3dlab.renderer import (
    FoVOrthographicCameras,
    FoVPerspectiveCameras,
    LookAtDegenerateWarning,
    OrthographicCameras,
    PerspectiveCameras,
    c2w_from_camera,
    camera_from_c2w,
    camera_from_opengl_view,
    camera_position_from_spherical_angles,
    cameras_from_opencv_projection,
    fov_from_opengl_projection,
    look_at_rotation,
    look_at_view_transform,
    opencv_from_cameras_projection,
    opengl_projection_matrix,
    opengl_view_from_camera,
)
from p3dlab.transforms import random_rotations

D = torch.float64


def test_look_at_worked_examples():
    R, T = look_at_view_transform(2.7, 0, 180)
    assert torch.allclose(R[0], torch.eye(3), atol=1e-6)
    assert torch.allclose(T[0], torch.tensor([0.0, 0.0, 2.7]), atol=1e-6)
    cam = FoVPerspectiveCameras(R=R, T=T)
    assert torch.allclose(cam.get_camera_center()[0], torch.tensor([0.0, 0.0, -2.7]), atol=1e-6)
    assert torch.allclose(
        camera_position_from_spherical_angles(3, 50, 0)[0], torch.tensor([0.0, 2.2981, 1.9284]), atol=1e-4
    )
    assert torch.allclose(
        camera_position_from_spherical_angles(2.7, 10, -150)[0], torch.tensor([-1.3295, 0.4689, -2.3027]), atol=1e-4
    )
    R, T = look_at_view_transform(3, 50, 0)
    assert torch.allclose(
        FoVPerspectiveCameras(R=R, T=T).get_camera_center()[0], torch.tensor([0.0, 2.2981, 1.9284]), atol=1e-4
    )


def test_look_at_never_rolls():
    R1, T1 = look_at_view_transform(2.0, 150.0, 20.0)
    R2, T2 = look_at_view_transform(2.0, 30.0, 200.0)
    assert torch.allclose(R1, R2, atol=1e-5) and torch.allclose(T1, T2, atol=1e-5)


def test_look_at_rotation_is_orthonormal_and_sees_the_target():
    C = torch.tensor([[1.0, 2.0, 3.0], [-2.0, 0.5, 0.1]])
    R = look_at_rotation(C)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(R), torch.ones(2), atol=1e-6)
    view = (torch.zeros(2, 1, 3) - C[:, None]) @ R  # the origin in view space
    assert torch.allclose(view[:, 0, :2], torch.zeros(2, 2), atol=1e-6) and (view[:, 0, 2] > 0).all()


def test_look_at_is_differentiable_and_warns_at_the_pole():
    C = torch.tensor([[0.5, 1.0, 2.0]], dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: look_at_rotation(c), (C,))
    with pytest.warns(LookAtDegenerateWarning):
        look_at_rotation(torch.tensor([[0.0, 3.0, 0.0]]))


def test_fov_and_focal_length_agree():
    pts = torch.tensor([[[0.3, -0.2, 2.0], [-1.0, 0.4, 5.0]]])
    fov90 = FoVPerspectiveCameras(fov=90.0).transform_points(pts)
    f1 = PerspectiveCameras(focal_length=1.0).transform_points(pts)
    assert torch.allclose(fov90[..., :2], f1[..., :2], atol=1e-6)
    fov60 = FoVPerspectiveCameras(fov=60.0).transform_points(pts)
    f173 = PerspectiveCameras(focal_length=1.7320508).transform_points(pts)
    assert torch.allclose(fov60[..., :2], f173[..., :2], atol=1e-5)
    # z_ndc in [0, 1] between znear and zfar
    z = FoVPerspectiveCameras(znear=1.0, zfar=10.0).transform_points(torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 10.0]]))
    assert torch.allclose(z[:, 2], torch.tensor([0.0, 1.0]), atol=1e-6)


def test_screen_space_camera_worked_example():
    cam = PerspectiveCameras(
        focal_length=torch.tensor([[1200.0, 300.0]]),
        principal_point=torch.tensor([[512.0, 256.0]]),
        in_ndc=False,
        image_size=torch.tensor([[512, 1024]]),
    )
    p = torch.tensor([[-50.0, -50.0, 20.0]])
    assert torch.allclose(cam.transform_points(p), torch.tensor([[-2488.0, -494.0, 0.05]]), atol=1e-3)
    assert torch.allclose(cam.transform_points_screen(p), torch.tensor([[3512.0, 1006.0, 0.05]]), atol=1e-3)
    # NDC version: f_ndc = f_px / s, p_ndc = -(p_px - (W/2, H/2)) / s with s = 256
    ndc_cam = PerspectiveCameras(
        focal_length=torch.tensor([[1200.0 / 256, 300.0 / 256]]), principal_point=torch.tensor([[0.0, 0.0]])
    )
    assert torch.allclose(cam.transform_points_ndc(p), ndc_cam.transform_points(p), atol=1e-5)
    with pytest.raises(ValueError, match="image_size"):
        PerspectiveCameras(in_ndc=False)


def test_screen_formula_matches_ndc_convention():
    # u = W/2 - s x_ndc, v = H/2 - s y_ndc with s = min(H, W)/2; image 128 x 256
    cam = PerspectiveCameras(focal_length=1.2)
    p = torch.tensor([[0.2, 0.1, 2.0]])
    ndc = cam.transform_points(p)
    screen = cam.transform_points_screen(p, image_size=(128, 256))
    assert torch.allclose(screen[0, 0], 128 - 64 * ndc[0, 0]) and torch.allclose(screen[0, 1], 64 - 64 * ndc[0, 1])


CAMERAS = {
    "fov_persp": lambda R, T: FoVPerspectiveCameras(znear=0.5, zfar=20.0, fov=50.0, R=R, T=T),
    "persp_ndc": lambda R, T: PerspectiveCameras(
        focal_length=torch.tensor([[1.5, 1.3]], dtype=D), principal_point=torch.tensor([[0.1, -0.2]], dtype=D), R=R, T=T
    ),
    "persp_screen": lambda R, T: PerspectiveCameras(
        focal_length=torch.tensor([[200.0, 220.0]], dtype=D),
        principal_point=torch.tensor([[60.0, 40.0]], dtype=D),
        R=R,
        T=T,
        in_ndc=False,
        image_size=((90, 120),),
    ),
    "ortho": lambda R, T: OrthographicCameras(focal_length=0.7, R=R, T=T),
    "fov_ortho": lambda R, T: FoVOrthographicCameras(max_y=2.0, min_y=-1.0, max_x=1.5, min_x=-2.0, R=R, T=T),
}


@pytest.mark.parametrize("name", list(CAMERAS))
def test_project_unproject_round_trip(name):
    g = torch.Generator().manual_seed(0)
    R = random_rotations(2, dtype=D, generator=g)
    T = torch.tensor([[0.1, -0.2, 6.0], [0.3, 0.1, 5.0]], dtype=D)
    cam = CAMERAS[name](R, T)
    world = (torch.rand(2, 7, 3, generator=g, dtype=D) - 0.5) * 2
    proj = cam.transform_points(world)
    depth = cam.get_world_to_view_transform().transform_points(world)[..., 2:3]
    xy_depth = torch.cat([proj[..., :2], depth], -1)
    back = cam.unproject_points(xy_depth)
    assert torch.allclose(back, world, atol=1e-9)
    if name.startswith("persp") or name == "ortho":
        ndc = cam.transform_points_ndc(world)
        back2 = cam.unproject_points(torch.cat([ndc[..., :2], depth], -1), from_ndc=True)
        assert torch.allclose(back2, world, atol=1e-9)


def test_camera_centre_and_overrides():
    R, T = look_at_view_transform(3.0, 20.0, 40.0)
    cam = FoVPerspectiveCameras()
    assert torch.allclose(
        cam.get_camera_center(R=R, T=T), camera_position_from_spherical_angles(3.0, 20.0, 40.0), atol=1e-5
    )
    assert torch.allclose(cam.get_camera_center(), torch.zeros(1, 3))
    batch = FoVPerspectiveCameras(R=R.expand(4, 3, 3), T=T.expand(4, 3), fov=torch.tensor([30.0, 40.0, 50.0, 60.0]))
    assert len(batch) == 4 and len(batch[1:3]) == 2
    assert torch.allclose(batch[2].fov, torch.tensor([50.0]))


def test_opencv_round_trip_and_pixels():
    g = torch.Generator().manual_seed(1)
    n = 5
    R_cv = random_rotations(n, dtype=D, generator=g)
    t_cv = torch.randn(n, 3, generator=g, dtype=D) + torch.tensor([0.0, 0.0, 8.0], dtype=D)
    K = torch.zeros(n, 3, 3, dtype=D)
    K[:, 0, 0] = 300 + 50 * torch.rand(n, generator=g, dtype=D)
    K[:, 1, 1] = 310 + 50 * torch.rand(n, generator=g, dtype=D)
    K[:, 0, 2] = 160 + 10 * torch.rand(n, generator=g, dtype=D)
    K[:, 1, 2] = 100 + 10 * torch.rand(n, generator=g, dtype=D)
    K[:, 2, 2] = 1
    size = torch.tensor([[200, 320]] * n, dtype=D)
    X = torch.randn(n, 10, 3, generator=g, dtype=D)
    cam_pts = X @ R_cv.transpose(1, 2) + t_cv[:, None]
    uv = cam_pts @ K.transpose(1, 2)
    uv = uv[..., :2] / uv[..., 2:]
    for in_ndc in (True, False):
        cams = cameras_from_opencv_projection(R_cv, t_cv, K, size, in_ndc=in_ndc)
        screen = cams.transform_points_screen(X, image_size=size)
        assert torch.allclose(screen[..., :2], uv, atol=1e-3)
        R2, t2, K2 = opencv_from_cameras_projection(cams, size)
        assert torch.allclose(R2, R_cv) and torch.allclose(t2, t_cv) and torch.allclose(K2, K)


def test_opengl_conversions_round_trip():
    g = torch.Generator().manual_seed(2)
    R = random_rotations(3, dtype=D, generator=g)
    T = torch.randn(3, 3, generator=g, dtype=D)
    assert all(torch.allclose(a, b) for a, b in zip(camera_from_opengl_view(opengl_view_from_camera(R, T)), (R, T)))
    c2w = c2w_from_camera(R, T)
    assert all(torch.allclose(a, b) for a, b in zip(camera_from_c2w(c2w), (R, T)))
    # a Blender-style camera on +Z looking down -Z (identity rotation) is p3dlab's camera at
    # (0, 0, 4) looking at the origin
    c2w = torch.eye(4, dtype=D)[None].clone()
    c2w[0, 2, 3] = 4.0
    R, T = camera_from_c2w(c2w)
    R_ref, T_ref = look_at_view_transform(4.0, 0.0, 0.0)
    assert torch.allclose(R, R_ref.double(), atol=1e-6) and torch.allclose(T, T_ref.double(), atol=1e-6)
    P = opengl_projection_matrix(60.0, 1.5, 0.1, 50.0)
    fov, aspect, n, f = fov_from_opengl_projection(P)
    assert (fov, aspect) == pytest.approx((60.0, 1.5)) and (n, f) == pytest.approx((0.1, 50.0), rel=1e-4)


def test_bad_camera_input():
    with pytest.raises(ValueError, match="batch sizes"):
        FoVPerspectiveCameras(R=torch.eye(3).expand(2, 3, 3), T=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="R must be"):
        FoVPerspectiveCameras(R=torch.eye(4))
    assert math.isfinite(
        float(FoVPerspectiveCameras().transform_points(torch.tensor([[0.0, 0.0, 0.0]]), eps=1e-6)[0, 0])
    )
