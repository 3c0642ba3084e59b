"""PyTorch3D's public names under ``p3dlab``: the name table, the module paths and the small pieces of
API added so that ``pytorch3d`` -> ``p3dlab`` is the only change ported code needs.

The names and their statuses live in tests/data/pytorch3d_names.tsv (read from PyTorch3D 0.7.8/0.7.9's
``__init__.py`` files; the file's header records the commits). Behaviour is compared with what
PyTorch3D documents for each name, cited in each test's docstring.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path

import pytest
import torch

from p3dlab.errors import P3DLabValueError

ROOT = Path(__file__).resolve().parents[1]


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_compat_table", ROOT / "docs" / "make_compat_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _load_generator()
ROWS = GEN.read_rows()


def _here(module: str) -> str:
    return "p3dlab" + module[len("pytorch3d") :]


def _resolve(module: str, name: str):
    """``getattr(importlib.import_module(p3dlab path), name)``; raises ImportError/AttributeError."""
    return getattr(importlib.import_module(_here(module)), name)


def _id(row) -> str:
    return f"{row.module}.{row.name}"


# ----------------------------------------------------------------------------- the table
def test_table_lists_every_pytorch3d_package_once_per_name():
    """Every package whose __init__ PyTorch3D exports names from is in the table, no row twice."""
    packages = {r.module for r in ROWS if r.kind == "init"}
    assert packages == {
        "pytorch3d.common",
        "pytorch3d.datasets",
        "pytorch3d.io",
        "pytorch3d.loss",
        "pytorch3d.ops",
        "pytorch3d.renderer",
        "pytorch3d.renderer.implicit",
        "pytorch3d.renderer.mesh",
        "pytorch3d.renderer.points",
        "pytorch3d.structures",
        "pytorch3d.transforms",
        "pytorch3d.utils",
        "pytorch3d.vis",
    }
    keys = [(r.kind, r.module, r.name) for r in ROWS]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("row", [r for r in ROWS if r.status != "absent"], ids=_id)
def test_same_and_different_names_resolve_at_their_pytorch3d_path(row):
    obj = _resolve(row.module, row.name)
    assert not inspect.ismodule(obj), f"{_here(row.module)}.{row.name} is a module, not PyTorch3D's object"


@pytest.mark.parametrize("row", [r for r in ROWS if r.status == "absent"], ids=_id)
def test_absent_names_do_not_resolve(row):
    """A name marked absent that starts resolving must have its row updated (same or different)."""
    with pytest.raises((ImportError, AttributeError)):
        _resolve(row.module, row.name)


def test_the_docs_table_is_the_generators_output():
    page = (ROOT / "docs" / "pytorch3d-compatibility.md").read_text(encoding="utf-8")
    assert GEN.table_in_page(page) == GEN.render(ROWS), "run python docs/make_compat_table.py"


def test_every_pytorch3d_path_is_one_implementation():
    """The deeper paths are re-exports: a name that resolves at several PyTorch3D paths is one object."""
    seen = {}
    for row in ROWS:
        if row.status == "absent":
            continue
        obj = _resolve(row.module, row.name)
        first = seen.setdefault(row.name, (row.module, obj))
        assert first[1] is obj, f"{_here(row.module)}.{row.name} is not {_here(first[0])}.{row.name}"


# PyTorch3D's parameters (names in order; after "*" keyword-only) for the callables ported code uses
# most, from the signatures in PyTorch3D 0.7.8's sources and API docs. For a name marked "same" the
# kit must take the same leading positional parameters and accept the keyword-only ones.
PYTORCH3D_PARAMETERS = {
    "pytorch3d.structures.Meshes": "verts faces textures * verts_normals",
    "pytorch3d.structures.Pointclouds": "points normals features",
    "pytorch3d.structures.Volumes": "densities features voxel_size volume_translation align_corners",
    "pytorch3d.structures.join_meshes_as_batch": "meshes include_textures",
    "pytorch3d.structures.join_meshes_as_scene": "meshes include_textures",
    "pytorch3d.structures.list_to_padded": "x pad_size pad_value equisized",
    "pytorch3d.structures.packed_to_list": "x split_size",
    "pytorch3d.structures.padded_to_list": "x split_size",
    "pytorch3d.io.load_obj": "f load_textures create_texture_atlas texture_atlas_size texture_wrap device path_manager",
    "pytorch3d.loss.chamfer_distance": (
        "x y x_lengths y_lengths x_normals y_normals weights batch_reduction point_reduction norm "
        "single_directional abs_cosine"
    ),
    "pytorch3d.loss.mesh_edge_loss": "meshes target_length",
    "pytorch3d.loss.mesh_laplacian_smoothing": "meshes method",
    "pytorch3d.loss.mesh_normal_consistency": "meshes",
    "pytorch3d.ops.sample_points_from_meshes": "meshes num_samples return_normals return_textures",
    "pytorch3d.ops.knn_points": "p1 p2 lengths1 lengths2 norm K version return_nn return_sorted",
    "pytorch3d.ops.knn_gather": "x idx lengths",
    "pytorch3d.ops.interpolate_face_attributes": "pix_to_face barycentric_coords face_attributes",
    "pytorch3d.ops.vert_align": "feats verts return_packed interp_mode padding_mode align_corners",
    "pytorch3d.ops.GraphConv": "input_dim output_dim init directed",
    "pytorch3d.ops.SubdivideMeshes": "meshes",
    "pytorch3d.renderer.FoVPerspectiveCameras": "znear zfar aspect_ratio fov degrees R T K device",
    "pytorch3d.renderer.FoVOrthographicCameras": "znear zfar max_y min_y max_x min_x scale_xyz R T K device",
    "pytorch3d.renderer.PerspectiveCameras": "focal_length principal_point R T K device in_ndc image_size",
    "pytorch3d.renderer.OrthographicCameras": "focal_length principal_point R T K device in_ndc image_size",
    "pytorch3d.renderer.OpenGLPerspectiveCameras": "znear zfar aspect_ratio fov degrees R T device",
    "pytorch3d.renderer.OpenGLOrthographicCameras": "znear zfar top bottom left right scale_xyz R T device",
    "pytorch3d.renderer.SfMPerspectiveCameras": "focal_length principal_point R T device",
    "pytorch3d.renderer.SfMOrthographicCameras": "focal_length principal_point R T device",
    "pytorch3d.renderer.look_at_view_transform": "dist elev azim degrees eye at up device",
    "pytorch3d.renderer.look_at_rotation": "camera_position at up device",
    "pytorch3d.renderer.camera_position_from_spherical_angles": "distance elevation azimuth degrees device",
    "pytorch3d.renderer.get_world_to_view_transform": "R T",
    "pytorch3d.renderer.RasterizationSettings": (
        "image_size blur_radius faces_per_pixel bin_size max_faces_per_bin perspective_correct "
        "clip_barycentric_coords cull_backfaces z_clip_value cull_to_frustum"
    ),
    "pytorch3d.renderer.MeshRasterizer": "cameras raster_settings",
    "pytorch3d.renderer.MeshRenderer": "rasterizer shader",
    "pytorch3d.renderer.MeshRendererWithFragments": "rasterizer shader",
    "pytorch3d.renderer.SoftPhongShader": "device cameras lights materials blend_params",
    "pytorch3d.renderer.HardPhongShader": "device cameras lights materials blend_params",
    "pytorch3d.renderer.SoftGouraudShader": "device cameras lights materials blend_params",
    "pytorch3d.renderer.HardGouraudShader": "device cameras lights materials blend_params",
    "pytorch3d.renderer.HardFlatShader": "device cameras lights materials blend_params",
    "pytorch3d.renderer.SoftSilhouetteShader": "blend_params",
    "pytorch3d.renderer.BlendParams": "sigma gamma background_color",
    "pytorch3d.renderer.hard_rgb_blend": "colors fragments blend_params",
    "pytorch3d.renderer.sigmoid_alpha_blend": "colors fragments blend_params",
    "pytorch3d.renderer.softmax_rgb_blend": "colors fragments blend_params znear zfar",
    "pytorch3d.renderer.phong_shading": "meshes fragments lights cameras materials texels",
    "pytorch3d.renderer.gouraud_shading": "meshes fragments lights cameras materials",
    "pytorch3d.renderer.PointLights": "ambient_color diffuse_color specular_color location device",
    "pytorch3d.renderer.DirectionalLights": "ambient_color diffuse_color specular_color direction device",
    "pytorch3d.renderer.AmbientLights": "ambient_color device",
    "pytorch3d.renderer.Materials": "ambient_color diffuse_color specular_color shininess device",
    "pytorch3d.renderer.TexturesVertex": "verts_features",
    "pytorch3d.renderer.TexturesUV": "maps faces_uvs verts_uvs padding_mode align_corners sampling_mode",
    "pytorch3d.renderer.TexturesAtlas": "atlas",
    "pytorch3d.renderer.rasterize_points": "pointclouds image_size radius points_per_pixel bin_size max_points_per_bin",
    "pytorch3d.renderer.PointsRasterizationSettings": "image_size radius points_per_pixel bin_size max_points_per_bin",
    "pytorch3d.renderer.PointsRasterizer": "cameras raster_settings",
    "pytorch3d.renderer.PointsRenderer": "rasterizer compositor",
    "pytorch3d.renderer.AlphaCompositor": "background_color",
    "pytorch3d.renderer.NormWeightedCompositor": "background_color",
    "pytorch3d.renderer.EmissionAbsorptionRaymarcher": "surface_thickness",
    "pytorch3d.renderer.ImplicitRenderer": "raysampler raymarcher",
    "pytorch3d.renderer.VolumeRenderer": "raysampler raymarcher sample_mode",
    "pytorch3d.renderer.VolumeSampler": "volumes sample_mode padding_mode",
    "pytorch3d.renderer.RayBundle": "origins directions lengths xys",
    "pytorch3d.renderer.ray_bundle_to_ray_points": "ray_bundle",
    "pytorch3d.transforms.so3.hat": "v",
    "pytorch3d.transforms.so3.hat_inv": "h",
    "pytorch3d.transforms.Transform3d": "dtype device matrix",
    "pytorch3d.transforms.Translate": "x y z dtype device",
    "pytorch3d.transforms.Scale": "x y z dtype device",
    "pytorch3d.transforms.Rotate": "R dtype device orthogonal_tol",
    "pytorch3d.transforms.RotateAxisAngle": "angle axis degrees dtype device",
    "pytorch3d.transforms.axis_angle_to_matrix": "axis_angle",
    "pytorch3d.transforms.matrix_to_axis_angle": "matrix",
    "pytorch3d.transforms.euler_angles_to_matrix": "euler_angles convention",
    "pytorch3d.transforms.matrix_to_euler_angles": "matrix convention",
    "pytorch3d.transforms.quaternion_to_matrix": "quaternions",
    "pytorch3d.transforms.matrix_to_quaternion": "matrix",
    "pytorch3d.transforms.random_rotations": "n dtype device",
    "pytorch3d.transforms.random_rotation": "dtype device",
    "pytorch3d.transforms.random_quaternions": "n dtype device",
    "pytorch3d.transforms.rotation_6d_to_matrix": "d6",
    "pytorch3d.transforms.matrix_to_rotation_6d": "matrix",
    "pytorch3d.utils.ico_sphere": "level device",
    "pytorch3d.utils.cameras_from_opencv_projection": "R tvec camera_matrix image_size",
    "pytorch3d.utils.opencv_from_cameras_projection": "cameras image_size",
    "pytorch3d.common.make_device": "device",
    "pytorch3d.common.get_device": "x device",
}
STATUS = {f"{r.module}.{r.name}": r.status for r in ROWS}


def test_parameter_list_names_only_tabled_names():
    assert set(PYTORCH3D_PARAMETERS) <= set(STATUS)


@pytest.mark.parametrize("full", [k for k in PYTORCH3D_PARAMETERS if STATUS.get(k) == "same"])
def test_names_marked_same_take_pytorch3ds_parameters(full):
    module, name = full.rsplit(".", 1)
    params = inspect.signature(_resolve(module, name)).parameters.values()
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    by_name = {p.name for p in params if p.kind != p.VAR_POSITIONAL}
    takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in params)
    want = PYTORCH3D_PARAMETERS[full].split()
    want_positional, want_keyword = (
        (want[: want.index("*")], want[want.index("*") + 1 :]) if "*" in want else (want, [])
    )
    assert positional[: len(want_positional)] == want_positional, f"{full}: {positional} vs PyTorch3D {want}"
    missing = [k for k in want_keyword if k not in by_name and not takes_kwargs]
    assert not missing, f"{full} does not accept {missing}"


# ----------------------------------------------------------------------------- __all__
@pytest.mark.parametrize(
    "package",
    [
        "p3dlab.common",
        "p3dlab.io",
        "p3dlab.loss",
        "p3dlab.ops",
        "p3dlab.renderer",
        "p3dlab.renderer.implicit",
        "p3dlab.renderer.mesh",
        "p3dlab.renderer.points",
        "p3dlab.structures",
        "p3dlab.transforms",
        "p3dlab.utils",
    ],
)
def test_all_is_explicit_and_lists_no_modules(package):
    """``from package import *`` gives the public names only, never submodule objects."""
    module = importlib.import_module(package)
    assert module.__all__ == sorted(set(module.__all__), key=module.__all__.index), "duplicates in __all__"
    for name in module.__all__:
        assert not inspect.ismodule(getattr(module, name)), f"{package}.__all__ exports the module {name}"
    namespace = {}
    exec(f"from {package} import *", namespace)
    assert not [k for k, v in namespace.items() if inspect.ismodule(v)]


# ----------------------------------------------------------------------------- added pieces
def _fov_matrix(cameras):
    return cameras.get_projection_transform().get_matrix()


def test_opengl_perspective_cameras_is_fov_perspective_with_a_warning():
    """PyTorch3D (renderer/cameras.py): ``OpenGLPerspectiveCameras(znear, zfar, aspect_ratio, fov,
    degrees, R, T, device)`` warns PendingDeprecationWarning and returns ``FoVPerspectiveCameras``
    with the same values."""
    from p3dlab.renderer import FoVPerspectiveCameras, OpenGLPerspectiveCameras

    R = torch.eye(3)[None]
    T = torch.tensor([[0.1, -0.2, 3.0]])
    with pytest.warns(PendingDeprecationWarning, match="FoVPerspectiveCameras"):
        cam = OpenGLPerspectiveCameras(0.5, 20.0, 1.5, 40.0, True, R, T)
    assert type(cam) is FoVPerspectiveCameras
    ref = FoVPerspectiveCameras(znear=0.5, zfar=20.0, aspect_ratio=1.5, fov=40.0, R=R, T=T)
    assert torch.equal(_fov_matrix(cam), _fov_matrix(ref))
    assert torch.equal(cam.get_world_to_view_transform().get_matrix(), ref.get_world_to_view_transform().get_matrix())
    with pytest.warns(PendingDeprecationWarning):
        radians = OpenGLPerspectiveCameras(fov=0.7, degrees=False)
    assert torch.allclose(_fov_matrix(radians), _fov_matrix(FoVPerspectiveCameras(fov=0.7, degrees=False)))


def test_opengl_orthographic_cameras_maps_top_bottom_left_right():
    """PyTorch3D: ``OpenGLOrthographicCameras(znear, zfar, top, bottom, left, right, scale_xyz, R, T,
    device)`` returns ``FoVOrthographicCameras(max_y=top, min_y=bottom, max_x=right, min_x=left)``."""
    from p3dlab.renderer import FoVOrthographicCameras, OpenGLOrthographicCameras

    with pytest.warns(PendingDeprecationWarning, match="FoVOrthographicCameras"):
        cam = OpenGLOrthographicCameras(0.5, 10.0, 2.0, -1.0, -3.0, 4.0, ((1.0, 2.0, 0.5),))
    assert type(cam) is FoVOrthographicCameras
    assert (float(cam.max_y), float(cam.min_y), float(cam.min_x), float(cam.max_x)) == (2.0, -1.0, -3.0, 4.0)
    ref = FoVOrthographicCameras(0.5, 10.0, 2.0, -1.0, 4.0, -3.0, ((1.0, 2.0, 0.5),))
    assert torch.equal(_fov_matrix(cam), _fov_matrix(ref))
    points = torch.tensor([[[4.0, 2.0, 0.5], [-3.0, -1.0, 10.0]]])
    # right/top map to NDC +1 (scaled by scale_xyz), left/bottom to -1; znear -> 0, zfar -> 1
    ndc = cam.transform_points(points / torch.tensor([1.0, 2.0, 0.5]))
    assert torch.allclose(ndc, torch.tensor([[[1.0, 1.0, 0.0], [-1.0, -1.0, 1.0]]]), atol=1e-6)


@pytest.mark.parametrize(
    "old,new", [("SfMPerspectiveCameras", "PerspectiveCameras"), ("SfMOrthographicCameras", "OrthographicCameras")]
)
def test_sfm_cameras_are_ndc_intrinsics_cameras_with_a_warning(old, new):
    """PyTorch3D: ``SfMPerspectiveCameras(focal_length, principal_point, R, T, device)`` and the
    orthographic one warn and return the new NDC class with the same focal length and principal point."""
    import p3dlab.renderer as renderer

    R = torch.eye(3)[None]
    T = torch.tensor([[0.0, 0.0, 2.0]])
    with pytest.warns(PendingDeprecationWarning, match=new):
        cam = getattr(renderer, old)(((2.0, 3.0),), ((0.1, -0.2),), R, T)
    assert type(cam) is getattr(renderer, new) and cam.in_ndc()
    ref = getattr(renderer, new)(focal_length=((2.0, 3.0),), principal_point=((0.1, -0.2),), R=R, T=T)
    assert torch.equal(
        cam.get_full_projection_transform().get_matrix(), ref.get_full_projection_transform().get_matrix()
    )


def test_get_world_to_view_transform_function():
    """PyTorch3D: ``get_world_to_view_transform(R, T)`` is the row-layout transform ``[[R, 0], [T, 1]]``
    (``X_view = X_world R + T``) that a camera's method returns; R (N, 3, 3) and T (N, 3) share N."""
    from p3dlab.renderer import FoVPerspectiveCameras, get_world_to_view_transform
    from p3dlab.transforms import random_rotations

    R = random_rotations(2)
    T = torch.randn(2, 3)
    M = get_world_to_view_transform(R, T).get_matrix()
    assert torch.equal(M[:, :3, :3], R) and torch.equal(M[:, 3, :3], T)
    assert torch.equal(M[:, :, 3], torch.tensor([[0.0, 0.0, 0.0, 1.0]] * 2))
    X = torch.randn(2, 5, 3)
    assert torch.allclose(get_world_to_view_transform(R=R, T=T).transform_points(X), X @ R + T[:, None], atol=1e-6)
    assert torch.equal(M, FoVPerspectiveCameras(R=R, T=T).get_world_to_view_transform().get_matrix())
    assert torch.equal(get_world_to_view_transform().get_matrix(), torch.eye(4)[None])
    with pytest.raises(P3DLabValueError, match="same batch size"):
        get_world_to_view_transform(R, T[:1])
    with pytest.raises(P3DLabValueError, match=r"R must be \(N, 3, 3\)"):
        get_world_to_view_transform(torch.eye(4)[None], T[:1])
    with pytest.raises(P3DLabValueError, match=r"T must be \(N, 3\)"):
        get_world_to_view_transform(R, torch.zeros(2, 4))


def test_utils_ico_sphere_takes_level_then_device():
    """PyTorch3D: ``pytorch3d.utils.ico_sphere(level=0, device=None)``; level L has 10 * 4**L + 2
    vertices and 20 * 4**L faces, float32. ``ico_sphere(4, device)`` is the tutorials' call."""
    from p3dlab.data import ico_sphere as data_ico_sphere
    from p3dlab.utils import ico_sphere
    from p3dlab.utils.ico_sphere import ico_sphere as at_module_path

    assert at_module_path is ico_sphere
    mesh = ico_sphere(4, torch.device("cpu"))
    assert mesh.verts_packed().shape == (2562, 3) and mesh.faces_packed().shape == (5120, 3)
    assert mesh.verts_packed().dtype == torch.float32 and mesh.device.type == "cpu"
    small = ico_sphere(1, "cpu")
    assert torch.equal(small.verts_packed(), data_ico_sphere(1).verts_packed())
    assert torch.equal(ico_sphere().faces_packed(), data_ico_sphere(0).faces_packed())
    with pytest.raises(P3DLabValueError):
        ico_sphere(-1)


def test_common_datatypes_device_helpers():
    """PyTorch3D (common/datatypes.py): ``Device = Union[str, torch.device]``; ``make_device`` turns one
    into a ``torch.device``; ``get_device(x, device=None)`` is ``device`` if given, else x's device
    when x is a tensor, else the CPU."""
    from typing import get_args

    from p3dlab.common import Device, get_device, make_device
    from p3dlab.common.datatypes import Device as at_module_path

    assert at_module_path is Device and set(get_args(Device)) == {str, torch.device}
    assert make_device("cpu") == torch.device("cpu") and isinstance(make_device("cpu"), torch.device)
    assert make_device(torch.device("cpu")) == torch.device("cpu")
    x = torch.zeros(2, device="meta")
    assert get_device(x) == torch.device("meta")
    assert get_device(x, "cpu") == torch.device("cpu")
    assert get_device([1.0, 2.0]) == torch.device("cpu")
    with pytest.raises(P3DLabValueError, match="not a device name"):
        make_device("gpu0")
    with pytest.raises(P3DLabValueError, match="str or torch.device"):
        make_device(0.5)


def test_hat_and_hat_inv_at_the_so3_path():
    """PyTorch3D (transforms/so3.py): ``hat(v)`` is the skew matrix with ``hat(v) @ w = v x w``;
    ``hat_inv`` inverts it and refuses matrices that are not skew-symmetric (ValueError)."""
    from p3dlab.transforms.so3 import hat, hat_inv, so3_exp_map, so3_log_map

    v = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.equal(hat(v), torch.tensor([[[0.0, -3.0, 2.0], [3.0, 0.0, -1.0], [-2.0, 1.0, 0.0]]]))
    assert torch.equal(hat_inv(hat(v)), v)
    with pytest.raises(ValueError, match="skew"):
        hat_inv(torch.ones(1, 3, 3))
    w = torch.tensor([[0.2, -0.1, 0.5]], dtype=torch.float64)
    assert torch.allclose(so3_exp_map(w), torch.linalg.matrix_exp(hat(w)), atol=1e-12)
    assert torch.allclose(so3_log_map(so3_exp_map(w)), w, atol=1e-12)


def test_mesh_renderer_with_fragments_returns_images_and_fragments():
    """PyTorch3D: ``MeshRendererWithFragments(rasterizer, shader)(meshes)`` returns ``(images,
    fragments)``, the images being what ``MeshRenderer`` returns."""
    from p3dlab.data import ico_sphere
    from p3dlab.renderer import (
        FoVPerspectiveCameras,
        HardPhongShader,
        MeshRasterizer,
        MeshRenderer,
        MeshRendererWithFragments,
        RasterizationSettings,
        TexturesVertex,
        look_at_view_transform,
    )

    mesh = ico_sphere(1)
    mesh.textures = TexturesVertex(torch.ones_like(mesh.verts_padded()) * 0.7)
    R, T = look_at_view_transform(3.0, 10.0, 30.0)
    rasterizer = MeshRasterizer(FoVPerspectiveCameras(R=R, T=T), RasterizationSettings(image_size=12))
    shader = HardPhongShader()
    images, fragments = MeshRendererWithFragments(rasterizer, shader)(mesh)
    assert torch.equal(images, MeshRenderer(rasterizer, shader)(mesh))
    expected = rasterizer(mesh)
    assert torch.equal(fragments.pix_to_face, expected.pix_to_face) and torch.equal(fragments.zbuf, expected.zbuf)
    assert (fragments.pix_to_face >= 0).any()


def test_points_package_keeps_the_old_module_names():
    """``p3dlab.renderer.points`` became a package with PyTorch3D's submodules; what the old module
    offered still imports from it."""
    from p3dlab.renderer import compositing
    from p3dlab.renderer.points import (
        AlphaCompositor,
        PointFragments,
        WeightedSumCompositor,
        alpha_composite,
        norm_weighted_sum,
        weighted_sum,
    )
    from p3dlab.renderer.points.compositor import AlphaCompositor as at_compositor
    from p3dlab.renderer.points.rasterizer import PointFragments as at_rasterizer

    assert at_compositor is AlphaCompositor and at_rasterizer is PointFragments
    assert WeightedSumCompositor._fn is weighted_sum
    assert (alpha_composite, norm_weighted_sum, weighted_sum) == (
        compositing.alpha_composite,
        compositing.norm_weighted_sum,
        compositing.weighted_sum,
    )


def test_harmonic_embedding_lives_in_the_renderer_and_serves_nerf():
    """PyTorch3D exports ``HarmonicEmbedding`` from ``pytorch3d.renderer`` (implicit/harmonic_embedding.py):
    ``[sin(x w_k), cos(x w_k), x]`` with ``w_k = omega_0 2^k``. The kit's NeRF uses the same class."""
    import p3dlab.nerf
    from p3dlab.renderer import HarmonicEmbedding

    assert p3dlab.nerf.HarmonicEmbedding is HarmonicEmbedding
    x = torch.tensor([[0.3, -1.0]])
    out = HarmonicEmbedding(n_harmonic_functions=2, omega_0=0.5)(x)
    arg = torch.tensor([[0.15, 0.3, -0.5, -1.0]])  # x_d * w_k, d-major: (0.3*0.5, 0.3*1, -1*0.5, -1*1)
    assert torch.allclose(out, torch.cat([arg.sin(), arg.cos(), x], -1))
