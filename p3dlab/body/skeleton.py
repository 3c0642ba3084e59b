"""The body's kinematic tree and the parts its surface is built from (see docs/body-models.md).

Coordinates: metres, +Y up, the body faces +Z, its left hand points to +X; the pelvis joint is the
origin of the rest pose, a T-pose (arms straight out, legs straight down).
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

#: The 22 joints, in the order of SMPL's body joints: every parent comes before its children.
JOINT_NAMES: Tuple[str, ...] = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
)

#: ``PARENTS[j]`` is the index of joint j's parent; -1 for the root (the pelvis).
PARENTS: Tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)

NUM_JOINTS = len(JOINT_NAMES)
#: Joints a ``body_pose`` rotates: every joint but the root (whose rotation is ``global_orient``).
NUM_BODY_JOINTS = NUM_JOINTS - 1

#: The bones drawn as a skeleton (child, parent) pairs.
BONES: Tuple[Tuple[int, int], ...] = tuple((j, PARENTS[j]) for j in range(1, NUM_JOINTS))


def joint_index(name: str) -> int:
    """Index of a joint by name (``"left_elbow"`` -> 18)."""
    return JOINT_NAMES.index(name)


def descendants(joint: int) -> List[int]:
    """Joint ``joint`` and every joint below it in the tree."""
    out = [joint]
    for j in range(joint + 1, NUM_JOINTS):
        if PARENTS[j] in out:
            out.append(j)
    return out


class Proportions(NamedTuple):
    """The numbers a procedural body is drawn from; 1.0 is the mean body.

    ``height`` scales the whole body, ``girth`` every radius, ``legs``/``arms`` the limb bones,
    ``torso`` the spine and neck, ``shoulders`` the collar bones and hip width, ``belly`` the
    abdomen's depth and ``head`` the head's size.
    """

    height: float = 1.0
    girth: float = 1.0
    legs: float = 1.0
    arms: float = 1.0
    torso: float = 1.0
    shoulders: float = 1.0
    belly: float = 1.0
    head: float = 1.0


# Rest-pose joint positions of the mean body (x, y, z), before any proportions are applied.
_MEAN_JOINTS = {
    "pelvis": (0.0, 0.0, 0.0),
    "left_hip": (0.095, -0.07, 0.0),
    "spine1": (0.0, 0.11, -0.015),
    "left_knee": (0.105, -0.48, 0.01),
    "spine2": (0.0, 0.23, -0.02),
    "left_ankle": (0.11, -0.87, -0.02),
    "spine3": (0.0, 0.36, -0.01),
    "left_foot": (0.115, -0.93, 0.10),
    "neck": (0.0, 0.56, -0.02),
    "left_collar": (0.07, 0.49, -0.01),
    "head": (0.0, 0.63, 0.0),
    "left_shoulder": (0.185, 0.50, -0.02),
    "left_elbow": (0.45, 0.50, -0.03),
    "left_wrist": (0.70, 0.50, -0.02),
}


class Part(NamedTuple):
    """One piece of the surface: a tapered capsule from ``a`` to ``b`` (radii ``ra``, ``rb``),
    squashed along z by ``depth`` and along y by ``flat``, moved by joint ``joint``."""

    a: Tuple[float, float, float]
    b: Tuple[float, float, float]
    ra: float
    rb: float
    joint: int
    depth: float = 1.0
    flat: float = 1.0


def _mirror(p):
    return (-p[0], p[1], p[2])


def rest_joints(prop: Optional[Proportions] = None) -> List[Tuple[float, float, float]]:
    """The rest-pose joint positions of a body with proportions ``prop`` (mean body: the defaults).

    Each bone offset (child minus parent) is scaled by the factor of the limb it belongs to, then the
    whole skeleton by ``height``."""
    prop = prop if prop is not None else Proportions()
    mean = dict(_MEAN_JOINTS)
    for name in list(mean):
        if name.startswith("left_"):
            mean["right_" + name[5:]] = _mirror(mean[name])
    factor = {}
    for name in JOINT_NAMES:
        side = name.split("_", 1)[-1]
        if side in ("knee", "ankle", "foot"):
            factor[name] = (prop.legs, prop.legs, prop.legs)
        elif side in ("elbow", "wrist"):
            factor[name] = (prop.arms, prop.arms, prop.arms)
        elif side in ("hip", "collar"):
            factor[name] = (prop.shoulders, prop.torso, 1.0)
        elif side == "shoulder":
            factor[name] = (prop.shoulders, 1.0, 1.0)
        elif name in ("spine1", "spine2", "spine3", "neck", "head"):
            factor[name] = (1.0, prop.torso, 1.0)
        else:
            factor[name] = (1.0, 1.0, 1.0)
    out: List[Tuple[float, float, float]] = []
    for j, name in enumerate(JOINT_NAMES):
        if PARENTS[j] < 0:
            out.append(mean[name])
            continue
        parent = JOINT_NAMES[PARENTS[j]]
        offset = [(mean[name][k] - mean[parent][k]) * factor[name][k] for k in range(3)]
        out.append(tuple(out[PARENTS[j]][k] + offset[k] for k in range(3)))
    return [tuple(c * prop.height for c in p) for p in out]


def body_parts(prop: Optional[Proportions] = None) -> List[Part]:
    """The capsules whose smooth union is the surface of a body with proportions ``prop``."""
    prop = prop if prop is not None else Proportions()
    J = rest_joints(prop)
    g, h = prop.girth * prop.height, prop.height
    idx = {n: i for i, n in enumerate(JOINT_NAMES)}

    def at(name, dx=0.0, dy=0.0, dz=0.0):
        p = J[idx[name]]
        return (p[0] + dx * h, p[1] + dy * h, p[2] + dz * h)

    parts = [
        Part(at("left_hip", 0.0, 0.0), at("right_hip"), 0.105 * g, 0.105 * g, idx["pelvis"], 0.75),
        Part(at("pelvis", 0, -0.02), at("spine1"), 0.14 * g, 0.135 * g, idx["pelvis"], 0.7 * prop.belly),
        Part(at("spine1"), at("spine2"), 0.135 * g, 0.14 * g, idx["spine1"], 0.68 * prop.belly),
        Part(at("spine2"), at("spine3"), 0.14 * g, 0.15 * g, idx["spine2"], 0.66),
        Part(at("spine3"), at("neck", 0, -0.05), 0.15 * g, 0.11 * g, idx["spine3"], 0.62),
        Part(at("neck", 0, -0.03), at("head", 0, 0.02), 0.05 * g, 0.048 * g, idx["neck"]),
        Part(
            at("head", 0, 0.075 * prop.head, 0.015),
            at("head", 0, 0.125 * prop.head, 0.015),
            0.092 * h * prop.head,
            0.085 * h * prop.head,
            idx["head"],
            1.12,
        ),
    ]
    for side in ("left", "right"):
        s = 1.0 if side == "left" else -1.0
        parts += [
            Part(at(f"{side}_collar"), at(f"{side}_shoulder"), 0.065 * g, 0.06 * g, idx[f"{side}_collar"], 0.9),
            Part(at(f"{side}_shoulder"), at(f"{side}_elbow"), 0.056 * g, 0.045 * g, idx[f"{side}_shoulder"]),
            Part(at(f"{side}_elbow"), at(f"{side}_wrist"), 0.043 * g, 0.033 * g, idx[f"{side}_elbow"]),
            Part(
                at(f"{side}_wrist", s * 0.05),
                at(f"{side}_wrist", s * 0.12),
                0.045 * g,
                0.04 * g,
                idx[f"{side}_wrist"],
                1.0,
                0.6,
            ),
            Part(at(f"{side}_hip"), at(f"{side}_knee"), 0.085 * g, 0.058 * g, idx[f"{side}_hip"]),
            Part(at(f"{side}_knee"), at(f"{side}_ankle"), 0.054 * g, 0.04 * g, idx[f"{side}_knee"]),
            Part(
                at(f"{side}_ankle", 0, -0.02, -0.04),
                at(f"{side}_foot"),
                0.042 * g,
                0.04 * g,
                idx[f"{side}_ankle"],
                1.0,
                0.8,
            ),
            Part(
                at(f"{side}_foot"),
                at(f"{side}_foot", 0, -0.005, 0.06),
                0.037 * g,
                0.03 * g,
                idx[f"{side}_foot"],
                1.0,
                0.7,
            ),
        ]
    return parts
