"""Cameras, rasterization, lights, shading, blending and implicit rendering (PyTorch3D's
``pytorch3d.renderer`` names, including the textures, ``HarmonicEmbedding`` and the deprecated camera
names it re-exports). The submodules ``mesh``, ``points`` and ``implicit`` give PyTorch3D's deeper
paths (``p3dlab.renderer.mesh.shader.HardPhongShader``, ...)."""

from p3dlab.ops.interpolate import interpolate_face_attributes
from p3dlab.ops.pixels import pixel_centres
from p3dlab.ops.rasterize_meshes import rasterize_meshes
from p3dlab.ops.rasterize_points import rasterize_points
from p3dlab.ops.rasterize_reference import rasterize_meshes_reference
from p3dlab.renderer.blending import BlendParams, hard_rgb_blend, sigmoid_alpha_blend, softmax_rgb_blend
from p3dlab.renderer.camera_conversions import (
    c2w_from_camera,
    camera_from_c2w,
    camera_from_opengl_view,
    cameras_from_opencv_projection,
    fov_from_opengl_projection,
    opencv_from_cameras_projection,
    opengl_projection_matrix,
    opengl_view_from_camera,
)
from p3dlab.renderer.cameras import (
    CamerasBase,
    FoVOrthographicCameras,
    FoVPerspectiveCameras,
    LookAtDegenerateWarning,
    OpenGLOrthographicCameras,
    OpenGLPerspectiveCameras,
    OrthographicCameras,
    PerspectiveCameras,
    SfMOrthographicCameras,
    SfMPerspectiveCameras,
    camera_position_from_spherical_angles,
    get_world_to_view_transform,
    look_at_rotation,
    look_at_view_transform,
)
from p3dlab.renderer.implicit.harmonic_embedding import HarmonicEmbedding
from p3dlab.renderer.lighting import AmbientLights, DirectionalLights, Materials, PointLights
from p3dlab.renderer.mesh_rasterizer import Fragments, MeshRasterizer, RasterizationSettings
from p3dlab.renderer.mesh_renderer import MeshRenderer, MeshRendererWithFragments
from p3dlab.renderer.nmr import mirror_x, nmr_eye, nmr_normalize, nmr_pose
from p3dlab.renderer.points import (
    AlphaCompositor,
    NormWeightedCompositor,
    PointFragments,
    PointsRasterizationSettings,
    PointsRasterizer,
    PointsRenderer,
    WeightedSumCompositor,
)
from p3dlab.renderer.raymarching import (
    AbsorptionOnlyRaymarcher,
    EmissionAbsorptionRaymarcher,
    QuadratureRaymarcher,
    RaymarchResult,
)
from p3dlab.renderer.raysampling import (
    GridRaysampler,
    MonteCarloRaysampler,
    MultinomialRaysampler,
    NDCGridRaysampler,
    NDCMultinomialRaysampler,
    RayBundle,
    clip_ray_bundle_to_aabb,
    near_far_from_sphere,
    ray_aabb_intersection,
    ray_bundle_to_ray_points,
)
from p3dlab.renderer.shader import (
    HardDepthShader,
    HardFlatShader,
    HardGouraudShader,
    HardPhongShader,
    SoftGouraudShader,
    SoftPhongShader,
    SoftSilhouetteShader,
)
from p3dlab.renderer.shading import gouraud_shading, phong_shading
from p3dlab.renderer.splatting import GaussianRender, render_gaussians
from p3dlab.renderer.volume_renderer import ImplicitRenderer, VolumeRenderer, VolumeRendering, VolumeSampler
from p3dlab.structures.textures import TexturesAtlas, TexturesUV, TexturesVertex

__all__ = [
    "AbsorptionOnlyRaymarcher",
    "AlphaCompositor",
    "AmbientLights",
    "BlendParams",
    "CamerasBase",
    "DirectionalLights",
    "EmissionAbsorptionRaymarcher",
    "FoVOrthographicCameras",
    "FoVPerspectiveCameras",
    "Fragments",
    "GaussianRender",
    "GridRaysampler",
    "HardDepthShader",
    "HardFlatShader",
    "HardGouraudShader",
    "HardPhongShader",
    "HarmonicEmbedding",
    "ImplicitRenderer",
    "LookAtDegenerateWarning",
    "Materials",
    "MeshRasterizer",
    "MeshRenderer",
    "MeshRendererWithFragments",
    "MonteCarloRaysampler",
    "MultinomialRaysampler",
    "NDCGridRaysampler",
    "NDCMultinomialRaysampler",
    "NormWeightedCompositor",
    "OpenGLOrthographicCameras",
    "OpenGLPerspectiveCameras",
    "OrthographicCameras",
    "PerspectiveCameras",
    "PointFragments",
    "PointLights",
    "PointsRasterizationSettings",
    "PointsRasterizer",
    "PointsRenderer",
    "QuadratureRaymarcher",
    "RaymarchResult",
    "RasterizationSettings",
    "RayBundle",
    "SfMOrthographicCameras",
    "SfMPerspectiveCameras",
    "SoftGouraudShader",
    "SoftPhongShader",
    "SoftSilhouetteShader",
    "TexturesAtlas",
    "TexturesUV",
    "TexturesVertex",
    "VolumeRenderer",
    "VolumeRendering",
    "VolumeSampler",
    "WeightedSumCompositor",
    "c2w_from_camera",
    "camera_from_c2w",
    "camera_from_opengl_view",
    "camera_position_from_spherical_angles",
    "cameras_from_opencv_projection",
    "clip_ray_bundle_to_aabb",
    "fov_from_opengl_projection",
    "get_world_to_view_transform",
    "gouraud_shading",
    "hard_rgb_blend",
    "interpolate_face_attributes",
    "look_at_rotation",
    "look_at_view_transform",
    "mirror_x",
    "near_far_from_sphere",
    "nmr_eye",
    "nmr_normalize",
    "nmr_pose",
    "opencv_from_cameras_projection",
    "opengl_projection_matrix",
    "opengl_view_from_camera",
    "phong_shading",
    "pixel_centres",
    "rasterize_meshes",
    "rasterize_meshes_reference",
    "rasterize_points",
    "ray_aabb_intersection",
    "ray_bundle_to_ray_points",
    "render_gaussians",
    "sigmoid_alpha_blend",
    "softmax_rgb_blend",
]
