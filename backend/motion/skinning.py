"""The rigid layer: linear blend skinning of Gaussians (METHOD.md §1-2).

``mu = Σ_k w_k A_k(θ) mu_c``; rotation ``r = quat(R_blend) ⊗ r_c`` where ``R_blend`` is the rotation part of
the blended transform, re-orthonormalised; scale, opacity and colour are unchanged (so the covariance
transforms as ``R Σ Rᵀ``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from backend.gaussians import Gaussians


def matrix_to_quaternion(matrix: Tensor) -> Tensor:
    """Unit quaternion (w, x, y, z) of the rotation nearest-in-spirit to ``matrix``, w ≥ 0.

    Uses the four Shepperd candidates and keeps, per matrix, the numerically best one; for an exact
    rotation it is exact, for a blended (slightly non-orthogonal) matrix it is its re-orthonormalised rotation
    (the quaternion is normalised). ``[..., 3, 3] -> [..., 4]``.
    """
    m00, m01, m02 = matrix[..., 0, 0], matrix[..., 0, 1], matrix[..., 0, 2]
    m10, m11, m12 = matrix[..., 1, 0], matrix[..., 1, 1], matrix[..., 1, 2]
    m20, m21, m22 = matrix[..., 2, 0], matrix[..., 2, 1], matrix[..., 2, 2]
    # 4*q_i^2 for each component, from the diagonal.
    squares = torch.stack([
        1.0 + m00 + m11 + m22,
        1.0 + m00 - m11 - m22,
        1.0 - m00 + m11 - m22,
        1.0 - m00 - m11 + m22,
    ], dim=-1)
    best = squares.argmax(dim=-1, keepdim=True)
    # Candidate quaternions, each scaled by 4*q_i (divide by it after picking one).
    candidates = torch.stack([
        torch.stack([squares[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, squares[..., 1], m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, squares[..., 2], m21 + m12], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, squares[..., 3]], dim=-1),
    ], dim=-2)
    quat = torch.gather(candidates, -2, best[..., None].expand(*best.shape[:-1], 1, 4))[..., 0, :]
    quat = torch.nn.functional.normalize(quat, dim=-1)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def quaternion_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a ⊗ b`` of (w, x, y, z) quaternions. ``[..., 4] x [..., 4] -> [..., 4]``."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)


def quaternion_to_matrix(quat: Tensor) -> Tensor:
    """Rotation matrix of a (w, x, y, z) quaternion (normalised first). ``[..., 4] -> [..., 3, 3]``."""
    w, x, y, z = torch.nn.functional.normalize(quat, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*quat.shape[:-1], 3, 3)


def blend_transforms(skin_weights: Tensor, joint_transforms: Tensor) -> Tensor:
    """Per-point blended affine transforms. ``[N, J] x [F, J, 4, 4] -> [F, N, 3, 4]``."""
    frames, joints = joint_transforms.shape[:2]
    flat = joint_transforms[..., :3, :].reshape(frames, joints, 12)
    return (skin_weights @ flat).reshape(frames, -1, 3, 4)


def skin_means_quats(
    canonical_means: Tensor,
    canonical_quats: Tensor,
    skin_weights: Tensor,
    joint_transforms: Tensor,
    *,
    frames_per_chunk: int = 8,
) -> tuple[Tensor, Tensor]:
    """Skin Gaussian centres and rotations, frame-chunked to bound memory.

    Args:
        canonical_means: Rest-pose centres. [N, 3]
        canonical_quats: Rest-pose rotations (w, x, y, z). [N, 4]
        skin_weights: Skinning weights, rows sum to 1. [N, J]
        joint_transforms: Rest->posed transforms. [F, J, 4, 4]
        frames_per_chunk: Frames blended at once (memory ≈ 48·N·chunk bytes in float32).

    Returns:
        (posed_means [F, N, 3], posed_quats [F, N, 4]) — quaternions unit, w ≥ 0 for the blend part.
    """
    if skin_weights.shape[0] != canonical_means.shape[0]:
        raise ValueError(f"skin_weights: expected {canonical_means.shape[0]} rows, got {skin_weights.shape[0]}")
    if joint_transforms.shape[1] != skin_weights.shape[1]:
        raise ValueError(
            f"joint_transforms: expected {skin_weights.shape[1]} joints, got {joint_transforms.shape[1]}")
    unit = torch.nn.functional.normalize(canonical_quats, dim=-1)
    means_out, quats_out = [], []
    for start in range(0, joint_transforms.shape[0], frames_per_chunk):
        blended = blend_transforms(skin_weights, joint_transforms[start:start + frames_per_chunk])
        rotation = blended[..., :3]
        means_out.append((rotation @ canonical_means[..., None])[..., 0] + blended[..., 3])
        quats_out.append(quaternion_multiply(matrix_to_quaternion(rotation), unit))
    return torch.cat(means_out), torch.cat(quats_out)


def skin_gaussians(
    canonical: Gaussians, skin_weights: Tensor | None, joint_transforms: Tensor
) -> tuple[Tensor, Tensor]:
    """Skin canonical Gaussians with the body's joint transforms.

    Args:
        canonical: Gaussians in the body's rest pose.
        skin_weights: [N, J]; None uses ``canonical.skin_weights``.
        joint_transforms: Rest->posed transforms from the body model. [F, J, 4, 4]

    Returns:
        (posed_means [F, N, 3], posed_quats [F, N, 4]).
    """
    weights = canonical.skin_weights if skin_weights is None else skin_weights
    if weights is None:
        raise ValueError("skin_gaussians: the Gaussians carry no skin_weights and none were given")
    return skin_means_quats(canonical.means, canonical.quats, weights.to(canonical.means.dtype), joint_transforms)


def posed_frame(canonical: Gaussians, posed_means: Tensor, posed_quats: Tensor) -> Gaussians:
    """One frame's Gaussians: canonical appearance with posed centres [N, 3] and rotations [N, 4]."""
    return canonical.replace(means=posed_means, quats=posed_quats)
