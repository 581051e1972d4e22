"""The one home of rotation conversions: axis-angle <-> matrix <-> (w, x, y, z) quaternion.

Used by the body (Rodrigues for joint rotations), motion (skinning, built-in motions), rendering and fitting;
pure, batched functions on tensors (``matrix_to_axis_angle`` also takes numpy, for writing motion files). The
add-on cannot import the backend and keeps its own numpy twin (``blender_addon/convert.py``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


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


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rodrigues' formula, smooth at zero. ``[..., 3] -> [..., 3, 3]``."""
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)
    small = theta2 < 1e-12
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(theta2_safe)
    # sin(t)/t and (1-cos(t))/t^2 with their Taylor expansions near zero.
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis_angle.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a[..., None] * k + b[..., None] * (k @ k)


def matrix_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
    """Axis-angle of rotation matrices, in float64 numpy (for authoring motion files). ``[..., 3, 3] -> [..., 3]``."""
    q = matrix_to_quaternion(torch.as_tensor(matrix, dtype=torch.float64)).numpy()
    sin_half = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, q[..., :1])
    scale = np.where(sin_half > 1e-12, angle / np.maximum(sin_half, 1e-12), 2.0)
    return q[..., 1:] * scale
