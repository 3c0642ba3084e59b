"""Compositional neural feature fields (GIRAFFE, the book's chapter 7) trained on a CPU: box
transforms, object and background feature fields, the composition operator, feature volume
rendering with a 2D neural renderer, procedural two-object scenes and auto-decoder training
(docs/giraffe.md)."""

from p3dlab.giraffe.boxes import object_to_world, rotation_y, world_to_object
from p3dlab.giraffe.fields import BackgroundFeatureField, ObjectFeatureField, composite_fields
from p3dlab.giraffe.model import GiraffeModel, NeuralRenderer, SceneRender
from p3dlab.giraffe.scenes import (
    SHAPES,
    SceneLayout,
    SceneViews,
    rig_cameras,
    scene_mesh,
    shape_mesh,
    sky_colour,
    two_object_scenes,
)
from p3dlab.giraffe.training import evaluate_psnr, fit_giraffe, render_all_views

__all__ = [
    "BackgroundFeatureField",
    "GiraffeModel",
    "NeuralRenderer",
    "ObjectFeatureField",
    "SHAPES",
    "SceneLayout",
    "SceneRender",
    "SceneViews",
    "composite_fields",
    "evaluate_psnr",
    "fit_giraffe",
    "object_to_world",
    "render_all_views",
    "rig_cameras",
    "rotation_y",
    "scene_mesh",
    "shape_mesh",
    "sky_colour",
    "two_object_scenes",
    "world_to_object",
]
