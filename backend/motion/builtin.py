"""Built-in procedural motions for the demo and tests: a twirl and a walk, in the Blender world (Z up).

The body's rest frame is Y-up facing +Z; every motion's ``root_orient`` starts with a +90° turn about X that
stands the body up in the Z-up world facing −Y (towards a default Blender front camera), and ``trans`` puts
the soles on the ground plane z = 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from backend.body.model import BodyModel
from backend.core.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from backend.motion.motion import Motion

BUILTIN_MOTIONS = ("twirl", "walk")

# SMPL-X body joint k (0-based, without the pelvis) -> index into pose_body's 21 joints.
_L_HIP, _R_HIP, _SPINE1, _L_KNEE, _R_KNEE = 0, 1, 2, 3, 4
_L_SHOULDER, _R_SHOULDER, _L_ELBOW, _R_ELBOW = 15, 16, 17, 18
_L_COLLAR, _R_COLLAR = 12, 13


def _rot(axis: str, angle: np.ndarray) -> np.ndarray:
    vec = np.zeros((*np.shape(angle), 3))
    vec[..., "xyz".index(axis)] = angle
    return axis_angle_to_matrix(torch.as_tensor(vec)).numpy()


def _standing_trans(body: BodyModel, frames: int) -> np.ndarray:
    """Translation that puts the rest pelvis above the origin with the soles at z = 0 after the +90° X turn."""
    vertices = body.rest_vertices().detach().cpu().numpy().astype(np.float64)
    pelvis = body.rest_joints().detach().cpu().numpy()[0].astype(np.float64)
    height = pelvis[1] - vertices[:, 1].min()
    target = np.array([0.0, 0.0, height])
    return np.repeat((target - pelvis)[None], frames, axis=0)


def builtin_motion(name: str, body: BodyModel, frames: int = 48, fps: float = 24.0) -> Motion:
    """A procedural motion for ``body``.

    Args:
        name: ``"twirl"`` (a full turn on the spot with arms out) or ``"walk"`` (two strides forward).
        body: The body model (its rest geometry sets the standing height).
        frames: Number of frames (≥ 1).
        fps: Frame rate.
    """
    if name not in BUILTIN_MOTIONS:
        raise ValueError(f"unknown built-in motion {name!r}; choose from {BUILTIN_MOTIONS}")
    phase = np.arange(frames) / max(frames, 1)
    stand_up = _rot("x", np.full(frames, math.pi / 2))
    pose = np.zeros((frames, 21, 3))
    trans = _standing_trans(body, frames)
    if name == "twirl":
        heading = 2 * math.pi * phase
        root = _rot("z", heading) @ stand_up
        lift = 0.35 + 0.25 * np.sin(2 * math.pi * phase)
        pose[:, _L_SHOULDER, 2] = -(1.0 - lift)   # arms down from the T-pose, swinging
        pose[:, _R_SHOULDER, 2] = 1.0 - lift
        pose[:, _L_ELBOW, 1] = -0.4
        pose[:, _R_ELBOW, 1] = 0.4
        pose[:, _SPINE1, 1] = 0.25 * np.sin(2 * math.pi * phase)
    else:
        cycle = 2 * math.pi * 2 * phase  # two strides
        root = stand_up.copy()
        swing = 0.5 * np.sin(cycle)
        pose[:, _L_HIP, 0] = -swing
        pose[:, _R_HIP, 0] = swing
        pose[:, _L_KNEE, 0] = 0.6 * np.clip(np.sin(cycle + math.pi / 2), 0, None)
        pose[:, _R_KNEE, 0] = 0.6 * np.clip(-np.sin(cycle + math.pi / 2), 0, None)
        pose[:, _L_SHOULDER, 2] = -1.2
        pose[:, _R_SHOULDER, 2] = 1.2
        pose[:, _L_SHOULDER, 1] = 0.4 * np.sin(cycle)
        pose[:, _R_SHOULDER, 1] = 0.4 * np.sin(cycle)
        trans[:, 1] -= 1.2 * phase  # forward is world −Y
        trans[:, 2] += 0.02 * np.cos(2 * cycle)
    return Motion(
        root_orient=matrix_to_axis_angle(root).astype(np.float32),
        pose_body=pose.reshape(frames, 63).astype(np.float32),
        trans=trans.astype(np.float32),
        betas=np.zeros(10, np.float32),
        fps=float(fps),
    )
