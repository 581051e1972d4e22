"""Body models with one forward: SMPL-X semantics, batched over frames, differentiable in the pose.

``body(betas, root_orient, pose_body, trans, pose_hand=None) -> BodyOutput``:
root_orient rotates about the pelvis joint, ``trans`` is added after posing, ``pose_body`` holds the 21
SMPL-X body joints (axis-angle), ``pose_hand`` the 30 hand joints (absolute, i.e. flat hand mean).
Outputs are in the frame the motion lives in (Blender world for our motions: the body's own rest frame is
Y-up and ``root_orient`` carries it into the Z-up world, as in AMASS).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from backend.body.lbs import forward_kinematics, skin_points
from backend.core.rotations import axis_angle_to_matrix
from backend.core.errors import InputError

NUM_BODY_JOINTS = 21
NUM_HAND_JOINTS = 30
NUM_BETAS = 10


@dataclass
class BodyOutput:
    """Posed body.

    Attributes:
        vertices: Posed mesh vertices. [F, V, 3]
        joints: Posed joint positions. [F, J, 3]
        joint_transforms: Rest->posed transform per joint (rest-pose points to posed points). [F, J, 4, 4]
    """

    vertices: Tensor
    joints: Tensor
    joint_transforms: Tensor


class BodyModel(nn.Module):
    """Common forward over subclass-provided rest geometry, skeleton and pose layout.

    Subclasses set ``joint_names``, ``parents``, the buffers ``faces`` [T, 3] and ``skin_weights`` [V, J],
    and implement ``shaped(betas) -> (rest_vertices [V,3], rest_joints [J,3])`` and ``_pose_index`` (which
    model joint each of the 21 body and 30 hand joints drives).
    """

    name: str = "body"
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]
    body_joint_index: tuple[int, ...]  # model joint driven by pose_body[:, k]
    hand_joint_index: tuple[int, ...] | None  # model joint driven by pose_hand[:, k], None if no hands

    faces: Tensor
    skin_weights: Tensor

    @property
    def num_joints(self) -> int:
        return len(self.parents)

    @property
    def num_vertices(self) -> int:
        return self.skin_weights.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.skin_weights.dtype

    @property
    def device(self) -> torch.device:
        return self.skin_weights.device

    # ---- shape ---------------------------------------------------------------------------------------------
    def shaped(self, betas: Tensor) -> tuple[Tensor, Tensor]:
        """Rest-pose vertices [V, 3] and joints [J, 3] for one shape ``betas`` [S]."""
        raise NotImplementedError

    def rest_vertices(self, betas: Tensor | None = None) -> Tensor:
        """Rest-pose vertices (all rotations zero, trans zero). [V, 3]"""
        return self.shaped(self._betas(betas))[0]

    def rest_joints(self, betas: Tensor | None = None) -> Tensor:
        """Rest-pose joints. [J, 3]"""
        return self.shaped(self._betas(betas))[1]

    def pose_offsets(self, local_rotations: Tensor) -> Tensor | None:
        """Pose-corrective vertex offsets [F, V, 3] (SMPL's posedirs), or None."""
        return None

    def _betas(self, betas: Tensor | None) -> Tensor:
        if betas is None:
            return torch.zeros(NUM_BETAS, dtype=self.dtype, device=self.device)
        return torch.as_tensor(betas, dtype=self.dtype, device=self.device)

    # ---- pose ----------------------------------------------------------------------------------------------
    def local_rotations(self, root_orient: Tensor, pose_body: Tensor, pose_hand: Tensor | None) -> Tensor:
        """Per-joint local rotation matrices in the model's joint order. [F, J, 3, 3]"""
        frames = root_orient.shape[0]
        axis_angle = torch.zeros(frames, self.num_joints, 3, dtype=root_orient.dtype, device=root_orient.device)
        axis_angle[:, 0] = root_orient
        axis_angle[:, list(self.body_joint_index)] = pose_body.reshape(frames, NUM_BODY_JOINTS, 3)
        if pose_hand is not None and self.hand_joint_index is not None:
            axis_angle[:, list(self.hand_joint_index)] = pose_hand.reshape(frames, NUM_HAND_JOINTS, 3)
        return axis_angle_to_matrix(axis_angle)

    def forward(
        self,
        betas: Tensor | None,
        root_orient: Tensor,
        pose_body: Tensor,
        trans: Tensor,
        pose_hand: Tensor | None = None,
    ) -> BodyOutput:
        """Pose the body for F frames.

        Args:
            betas: Shape coefficients, one shape for all frames. [S] (S ≤ 10 used; more are ignored) or None
            root_orient: Root rotation about the pelvis joint, axis-angle. [F, 3]
            pose_body: 21 body joint rotations, axis-angle. [F, 63]
            trans: Translation added after posing. [F, 3]
            pose_hand: 30 hand joint rotations (absolute). [F, 90] or None

        Returns:
            BodyOutput with vertices [F, V, 3], joints [F, J, 3], joint_transforms [F, J, 4, 4].
        """
        frames = root_orient.shape[0] if root_orient.ndim == 2 else -1
        check_shape("root_orient", root_orient, (frames, 3))
        check_shape("pose_body", pose_body, (frames, NUM_BODY_JOINTS * 3))
        check_shape("trans", trans, (frames, 3))
        if pose_hand is not None:
            check_shape("pose_hand", pose_hand, (frames, NUM_HAND_JOINTS * 3))
        rest_vertices, rest_joints = self.shaped(self._betas(betas))
        rotations = self.local_rotations(root_orient, pose_body, pose_hand)
        joints, transforms = forward_kinematics(rotations, rest_joints, self.parents, trans)
        offsets = self.pose_offsets(rotations)
        points = rest_vertices if offsets is None else rest_vertices[None] + offsets
        vertices = skin_points(points, self.skin_weights, transforms)
        return BodyOutput(vertices=vertices, joints=joints, joint_transforms=transforms)


def check_shape(name: str, value: Tensor, shape: tuple[int, ...]) -> None:
    """Raise InputError naming ``name`` unless ``value`` has ``shape`` (-1 matches any size ≥ 1)."""
    actual = tuple(value.shape)
    ok = len(actual) == len(shape) and all(s == -1 and a >= 1 or s == a for a, s in zip(actual, shape))
    if not ok:
        expected = ", ".join("F" if s == -1 else str(s) for s in shape)
        raise InputError(f"{name}: expected shape [{expected}], got {list(actual)}")
