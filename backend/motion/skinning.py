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
    """Unit quaternion (w, x, y, z) of a rotation matrix, w ≥ 0 (fast path for LBS).

    Most skinning rotations are far from 180°, where the trace pivot (w) is the best one: those take the short
    formula, and only the rest go through the full Shepperd selection. ``[..., 3, 3] -> [..., 4]``.
    """
    m00, m11, m22 = matrix[..., 0, 0], matrix[..., 1, 1], matrix[..., 2, 2]
    quat = torch.stack([
        1.0 + m00 + m11 + m22,
        matrix[..., 2, 1] - matrix[..., 1, 2],
        matrix[..., 0, 2] - matrix[..., 2, 0],
        matrix[..., 1, 0] - matrix[..., 0, 1],
    ], dim=-1)
    # The w pivot 1 + trace is not the largest iff some pair of diagonal entries sums below zero.
    other = ((m11 + m22) < 0) | ((m00 + m22) < 0) | ((m00 + m11) < 0)
    if bool(other.any()):
        quat = quat.clone()
        quat[other] = shepperd_quaternion(matrix[other])
    return quat * torch.rsqrt((quat * quat).sum(dim=-1, keepdim=True))


def shepperd_quaternion(matrix: Tensor) -> Tensor:
    """Unit quaternion (w, x, y, z) of a rotation matrix, w ≥ 0.

    Shepperd's method: of the four candidate formulas, each matrix uses the one with the largest pivot
    (numerically best). Exact for a rotation; for a blended, slightly non-orthogonal LBS matrix the
    normalised result is its re-orthonormalised rotation. ``[..., 3, 3] -> [..., 4]``.
    """
    m00, m01, m02 = matrix[..., 0, 0], matrix[..., 0, 1], matrix[..., 0, 2]
    m10, m11, m12 = matrix[..., 1, 0], matrix[..., 1, 1], matrix[..., 1, 2]
    m20, m21, m22 = matrix[..., 2, 0], matrix[..., 2, 1], matrix[..., 2, 2]
    # 4·q_i² for i = w, x, y, z.
    t0 = 1.0 + m00 + m11 + m22
    t1 = 1.0 + m00 - m11 - m22
    t2 = 1.0 - m00 + m11 - m22
    t3 = 1.0 - m00 - m11 + m22
    a, b, c = m21 - m12, m02 - m20, m10 - m01
    d, e, f = m10 + m01, m02 + m20, m21 + m12
    # Pivot selection; each candidate quaternion is scaled by 4·q_pivot, removed by the normalisation.
    c0 = (t0 >= t1) & (t0 >= t2) & (t0 >= t3)
    c1 = ~c0 & (t1 >= t2) & (t1 >= t3)
    c2 = ~c0 & ~c1 & (t2 >= t3)
    w = torch.where(c0, t0, torch.where(c1, a, torch.where(c2, b, c)))
    x = torch.where(c0, a, torch.where(c1, t1, torch.where(c2, d, e)))
    y = torch.where(c0, b, torch.where(c1, d, torch.where(c2, t2, f)))
    z = torch.where(c0, c, torch.where(c1, e, torch.where(c2, f, t3)))
    quat = torch.stack([w, x, y, z], dim=-1)
    quat = quat * torch.rsqrt((quat * quat).sum(dim=-1, keepdim=True))
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
    frames_per_chunk: int = 4,
    gaussians_per_chunk: int = 32768,
) -> tuple[Tensor, Tensor]:
    """Skin Gaussian centres and rotations, blocked over frames and Gaussians.

    The blocking keeps each block's intermediates in cache (the work is memory-bound: ~60 elementwise passes
    per Gaussian-frame), so 100k Gaussians × 81 frames take well under a second on two cores.

    Args:
        canonical_means: Rest-pose centres. [N, 3]
        canonical_quats: Rest-pose rotations (w, x, y, z). [N, 4]
        skin_weights: Skinning weights, rows sum to 1. [N, J]
        joint_transforms: Rest->posed transforms. [F, J, 4, 4]
        frames_per_chunk: Frames per block.
        gaussians_per_chunk: Gaussians per block.

    Returns:
        (posed_means [F, N, 3], posed_quats [F, N, 4]) — unit quaternions.
    """
    n = canonical_means.shape[0]
    frames, joints = joint_transforms.shape[:2]
    if skin_weights.shape[0] != n:
        raise ValueError(f"skin_weights: expected {n} rows, got {skin_weights.shape[0]}")
    if joints != skin_weights.shape[1]:
        raise ValueError(f"joint_transforms: expected {skin_weights.shape[1]} joints, got {joints}")
    unit = torch.nn.functional.normalize(canonical_quats, dim=-1)
    flat = joint_transforms[..., :3, :].reshape(frames, joints, 12)
    means_out = canonical_means.new_empty(frames, n, 3)
    quats_out = canonical_means.new_empty(frames, n, 4)
    requires_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (canonical_means, canonical_quats, skin_weights, joint_transforms))
    if requires_grad:  # in-place block writes would break autograd: one unblocked pass instead
        blended = (skin_weights @ flat).reshape(frames, n, 3, 4)
        rotation = blended[..., :3]
        means = (rotation @ canonical_means[..., None])[..., 0] + blended[..., 3]
        return means, quaternion_multiply(matrix_to_quaternion(rotation), unit)
    for f0 in range(0, frames, frames_per_chunk):
        f1 = min(f0 + frames_per_chunk, frames)
        block_transforms = flat[f0:f1].permute(1, 0, 2).reshape(joints, (f1 - f0) * 12)
        for n0 in range(0, n, gaussians_per_chunk):
            n1 = min(n0 + gaussians_per_chunk, n)
            blended = (skin_weights[n0:n1] @ block_transforms).reshape(n1 - n0, f1 - f0, 3, 4).transpose(0, 1)
            rotation = blended[..., :3]
            means_out[f0:f1, n0:n1] = (rotation * canonical_means[n0:n1, None, :]).sum(-1) + blended[..., 3]
            quats_out[f0:f1, n0:n1] = quaternion_multiply(matrix_to_quaternion(rotation), unit[n0:n1])
    return means_out, quats_out


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
