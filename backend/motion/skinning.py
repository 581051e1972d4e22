"""The rigid layer: linear blend skinning of Gaussians (METHOD.md §1-2).

``mu = Σ_k w_k A_k(θ) mu_c``; rotation ``r = quat(R_blend) ⊗ r_c`` where ``R_blend`` is the rotation part of
the blended transform, re-orthonormalised; scale, opacity and colour are unchanged (so the covariance
transforms as ``R Σ Rᵀ``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from backend.gaussians import Gaussians
from backend.gaussians.rotations import (  # noqa: F401  (re-exported: backend.motion's public names)
    matrix_to_quaternion,
    quaternion_multiply,
    quaternion_to_matrix,
    shepperd_quaternion,
)


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
