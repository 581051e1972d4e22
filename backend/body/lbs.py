"""Pure, batched, differentiable linear-blend-skinning functions (the smplx ``lbs`` family, our own).

Every function works on tensors only; the body modules hold buffers and call these.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def forward_kinematics(
    local_rotations: Tensor, rest_joints: Tensor, parents: Sequence[int], translation: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """World joint frames from local joint rotations (root rotation about the root joint).

    Args:
        local_rotations: Rotation of each joint relative to its parent, in the rest frame;
            joint 0's is the global (root) rotation. [F, J, 3, 3]
        rest_joints: Joint positions in the rest pose. [J, 3] or [F, J, 3]
        parents: Parent index per joint, -1 for the root; parents precede children.
        translation: Added to every joint after posing (SMPL-X ``trans``). [F, 3] or None

    Returns:
        (joints, transforms): posed joint positions [F, J, 3] and the rest->posed transforms
        ``A_j = G_j · translate(-rest_joint_j)`` that map rest-pose points to posed points. [F, J, 4, 4]
    """
    frames, num_joints = local_rotations.shape[:2]
    rest = rest_joints.expand(frames, num_joints, 3) if rest_joints.ndim == 2 else rest_joints
    offsets = rest.clone()
    parent_index = torch.as_tensor([max(p, 0) for p in parents], device=rest.device)
    offsets[:, 1:] = rest[:, 1:] - rest[:, parent_index[1:]]
    world_rot: list[Tensor] = [local_rotations[:, 0]]
    world_pos: list[Tensor] = [rest[:, 0]]
    for j in range(1, num_joints):
        p = parents[j]
        world_rot.append(world_rot[p] @ local_rotations[:, j])
        world_pos.append(world_pos[p] + (world_rot[p] @ offsets[:, j, :, None])[..., 0])
    rot = torch.stack(world_rot, dim=1)
    pos = torch.stack(world_pos, dim=1)
    if translation is not None:
        pos = pos + translation[:, None, :]
    t = pos - (rot @ rest[..., None])[..., 0]
    transforms = torch.zeros(frames, num_joints, 4, 4, dtype=rot.dtype, device=rot.device)
    transforms[..., :3, :3] = rot
    transforms[..., :3, 3] = t
    transforms[..., 3, 3] = 1.0
    return pos, transforms


def skin_points(points: Tensor, weights: Tensor, transforms: Tensor) -> Tensor:
    """Linear blend skinning of rest-pose points.

    Args:
        points: Rest-pose points. [V, 3] or [F, V, 3] (per-frame, e.g. with pose blend shapes)
        weights: Skinning weights. [V, J]
        transforms: Rest->posed joint transforms. [F, J, 4, 4]

    Returns:
        Posed points. [F, V, 3]
    """
    frames, num_joints = transforms.shape[:2]
    blended = (weights @ transforms[..., :3, :].reshape(frames, num_joints, 12)).reshape(frames, -1, 3, 4)
    pts = points if points.ndim == 3 else points[None]
    return (blended[..., :3] @ pts[..., None])[..., 0] + blended[..., 3]
