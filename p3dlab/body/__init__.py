"""A procedural SMPL-like body model and SMPLify (the book's chapter 8), built here, nothing downloaded.

``BodyModel()(betas, body_pose, global_orient, transl)`` poses a watertight body of about 6400
vertices with 22 joints; ``fit_smplify`` fits it to 2D keypoints (docs/body-models.md).
"""

from p3dlab.body.model import BodyModel, BodyOutput, body_model_data, forward_kinematics, lbs, rodrigues
from p3dlab.body.skeleton import BONES, JOINT_NAMES, PARENTS, Proportions, descendants, joint_index
from p3dlab.body.smplify import (
    FACING_AWAY,
    FACING_CAMERA,
    GaussianMixturePrior,
    SMPLifyHistory,
    SMPLifyResult,
    angle_limit_energy,
    default_pose_prior,
    draw_keypoints,
    fit_smplify,
    geman_mcclure,
    keypoint_camera,
    project,
    sample_poses,
)
from p3dlab.body.template import BodyModelData, build_body_model_data

__all__ = [
    "BONES",
    "BodyModel",
    "BodyModelData",
    "BodyOutput",
    "FACING_AWAY",
    "FACING_CAMERA",
    "GaussianMixturePrior",
    "JOINT_NAMES",
    "PARENTS",
    "Proportions",
    "SMPLifyHistory",
    "SMPLifyResult",
    "angle_limit_energy",
    "body_model_data",
    "build_body_model_data",
    "default_pose_prior",
    "descendants",
    "draw_keypoints",
    "fit_smplify",
    "forward_kinematics",
    "geman_mcclure",
    "joint_index",
    "keypoint_camera",
    "lbs",
    "project",
    "rodrigues",
    "sample_poses",
]
