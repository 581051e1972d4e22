"""The rigid layer: linear blend skinning of Gaussians (docs/method.md §1-2).

``mu = Σ_k w_k A_k(θ) mu_c``; rotation ``r = quat(R_blend) ⊗ r_c`` where ``R_blend`` is the rotation part of
the blended transform, re-orthonormalised; scale, opacity and colour are unchanged (so the covariance
transforms as ``R Σ Rᵀ``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from backend.core.rotations import matrix_to_quaternion, quaternion_multiply, shepperd_quaternion
from backend.gaussians import Gaussians


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
    gaussians_per_chunk: int = 32768,
) -> tuple[Tensor, Tensor]:
    """Skin Gaussian centres and rotations.

    Without gradients the work is blocked over frames and Gaussians and laid out component-major (each of the
    12 blended-transform entries is a contiguous [frames, gaussians] slab), because it is memory-bound: ~60
    elementwise passes per Gaussian-frame. 100k Gaussians × 81 frames take ≈0.65 s on two cores.

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
    requires_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (canonical_means, canonical_quats, skin_weights, joint_transforms))
    if requires_grad:  # in-place block writes would break autograd: one plain pass instead
        blended = blend_transforms(skin_weights, joint_transforms)
        rotation = blended[..., :3]
        means = (rotation @ canonical_means[..., None])[..., 0] + blended[..., 3]
        return means, quaternion_multiply(matrix_to_quaternion(rotation), unit)

    means_t = canonical_means.t().contiguous()  # [3, N]
    unit_t = unit.t().contiguous()  # [4, N]
    weights_t = skin_weights.t().contiguous()  # [J, N]
    rows = joint_transforms[..., :3, :].reshape(frames, joints, 12).transpose(1, 2).contiguous()  # [F, 12, J]
    means_out = canonical_means.new_empty(frames, n, 3)
    quats_out = canonical_means.new_empty(frames, n, 4)
    for f0 in range(0, frames, frames_per_chunk):
        f1 = min(f0 + frames_per_chunk, frames)
        lhs = rows[f0:f1].reshape((f1 - f0) * 12, joints)
        for n0 in range(0, n, gaussians_per_chunk):
            n1 = min(n0 + gaussians_per_chunk, n)
            m = (lhs @ weights_t[:, n0:n1]).reshape(f1 - f0, 12, n1 - n0)
            m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23 = m.unbind(1)
            x, y, z = means_t[:, n0:n1]
            means_out[f0:f1, n0:n1] = torch.stack([
                m00 * x + m01 * y + m02 * z + m03,
                m10 * x + m11 * y + m12 * z + m13,
                m20 * x + m21 * y + m22 * z + m23,
            ], dim=-1)
            rotation_quat = _blended_quaternion(m00, m01, m02, m10, m11, m12, m20, m21, m22)
            quats_out[f0:f1, n0:n1] = quaternion_multiply(rotation_quat, unit_t[:, n0:n1].t())
    return means_out, quats_out


def _blended_quaternion(m00: Tensor, m01: Tensor, m02: Tensor, m10: Tensor, m11: Tensor, m12: Tensor,
                        m20: Tensor, m21: Tensor, m22: Tensor) -> Tensor:
    """``matrix_to_quaternion`` on matrices given as nine component slabs [...]; returns [..., 4]."""
    quat = torch.stack([1.0 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], dim=-1)
    other = ((m11 + m22) < 0) | ((m00 + m22) < 0) | ((m00 + m11) < 0)
    if bool(other.any()):
        matrix = torch.stack([m00, m01, m02, m10, m11, m12, m20, m21, m22], dim=-1)[other].reshape(-1, 3, 3)
        quat[other] = shepperd_quaternion(matrix)
    return quat * torch.rsqrt((quat * quat).sum(dim=-1, keepdim=True))


def unskin_points(points: Tensor, skin_weights: Tensor, joint_transforms: Tensor) -> Tensor:
    """The exact inverse of skinning points: rest positions that ``skin_weights`` [N, J] under
    ``joint_transforms`` [J, 4, 4] carry to ``points`` [N, 3] (each through the inverse of its own blended affine
    transform, solved in float64). Returns [N, 3] in the points' dtype."""
    blended = blend_transforms(skin_weights.to(joint_transforms.dtype), joint_transforms[None])[0].double()
    rest = torch.linalg.solve(blended[..., :3], (points.double() - blended[..., 3])[..., None])[..., 0]
    return rest.to(points.dtype)


def transform_means_quats(means: Tensor, quats: Tensor, transforms: Tensor) -> tuple[Tensor, Tensor]:
    """Apply per-point affine transforms ``[N, 3, 4]`` to centres ``[N, 3]`` and rotations ``[N, 4]`` (the
    rotation part re-orthonormalised as in the rigid layer). Differentiable."""
    rotation = transforms[..., :3]
    moved = (rotation @ means[..., None])[..., 0] + transforms[..., 3]
    return moved, quaternion_multiply(matrix_to_quaternion(rotation), torch.nn.functional.normalize(quats, dim=-1))


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
