"""Rotation math for the add-on, numpy only (no bpy, no torch) so it is testable anywhere.

Conventions: rotation matrices act on column vectors (``x' = R @ x``); quaternions are (w, x, y, z);
axis-angle vectors are ``axis * angle`` (radians), as in SMPL-X pose vectors. All functions accept a leading
batch shape ``[...]``.
"""

from __future__ import annotations

import itertools

import numpy as np

# Rotation from the body model's Y-up rest frame into Blender's Z-up world: +90 degrees about X.
# (x, y, z)_body -> (x, -z, y)_world, so body +Y (up) becomes world +Z and body +Z (forward) becomes world -Y.
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues' formula.

    Args:
        axis_angle: Rotation vectors. [..., 3]

    Returns:
        Rotation matrices. [..., 3, 3]
    """
    v = np.asarray(axis_angle, dtype=np.float64)
    if v.shape[-1] != 3:
        raise ValueError(f"axis_angle: expected shape [..., 3], got {v.shape}")
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    small = angle < 1e-12
    axis = v / np.where(small, 1.0, angle)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zeros = np.zeros_like(x)
    k = np.stack([zeros, -z, y, z, zeros, -x, -y, x, zeros], axis=-1).reshape(v.shape[:-1] + (3, 3))
    a = angle[..., None]
    eye = np.broadcast_to(np.eye(3), k.shape)
    out = eye + np.sin(a) * k + (1.0 - np.cos(a)) * (k @ k)
    return np.where(small[..., None], eye, out)


def matrix_to_quaternion(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrices to unit quaternions (w, x, y, z) with w >= 0 (Shepperd's method, stable everywhere).

    Args:
        matrix: Rotation matrices. [..., 3, 3]

    Returns:
        Quaternions. [..., 4]
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[-2:] != (3, 3):
        raise ValueError(f"matrix: expected shape [..., 3, 3], got {m.shape}")
    batch = m.shape[:-2]
    m = m.reshape(-1, 3, 3)
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    # Four candidate formulas, each well conditioned when its component is the largest.
    cand = np.stack([
        np.stack([1.0 + tr, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1),
        np.stack([m[:, 2, 1] - m[:, 1, 2], 1.0 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
                  m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0]], -1),
        np.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0],
                  1.0 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2], m[:, 1, 2] + m[:, 2, 1]], -1),
        np.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1],
                  1.0 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], -1),
    ], axis=1)  # [B, 4 candidates, 4]
    diag = np.stack([1.0 + tr, 1.0 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
                     1.0 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2], 1.0 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], -1)
    best = np.argmax(diag, axis=-1)
    q = cand[np.arange(len(m)), best]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[:, :1] < 0, -q, q)
    return q.reshape(batch + (4,))


def quaternion_to_matrix(quaternion: np.ndarray) -> np.ndarray:
    """Quaternions (w, x, y, z; normalised here) to rotation matrices.

    Args:
        quaternion: Quaternions. [..., 4]

    Returns:
        Rotation matrices. [..., 3, 3]
    """
    q = np.asarray(quaternion, dtype=np.float64)
    if q.shape[-1] != 4:
        raise ValueError(f"quaternion: expected shape [..., 4], got {q.shape}")
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm < 1e-12):
        raise ValueError("quaternion: zero-length quaternion cannot be normalised")
    w, x, y, z = np.moveaxis(q / norm, -1, 0)
    out = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1)
    return out.reshape(q.shape[:-1] + (3, 3))


def quaternion_to_axis_angle(quaternion: np.ndarray) -> np.ndarray:
    """Unit quaternions (w, x, y, z) to rotation vectors with angle in [0, pi].

    Args:
        quaternion: Quaternions. [..., 4]

    Returns:
        Rotation vectors. [..., 3]
    """
    q = np.asarray(quaternion, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[..., :1] < 0, -q, q)
    vec = q[..., 1:]
    sin_half = np.linalg.norm(vec, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, q[..., :1])
    # angle / sin(angle/2) -> 2 as the angle -> 0; use the series there.
    scale = np.where(sin_half > 1e-8, angle / np.where(sin_half > 1e-8, sin_half, 1.0), 2.0 + angle ** 2 / 12.0)
    return vec * scale


def matrix_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrices to rotation vectors (via quaternions, stable near 0 and pi).

    Args:
        matrix: Rotation matrices. [..., 3, 3]

    Returns:
        Rotation vectors. [..., 3]
    """
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def polar_rotation(linear: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split linear maps into the nearest rotation and the singular values (the scale).

    Args:
        linear: Linear maps. [..., 3, 3]

    Returns:
        (rotation [..., 3, 3], singular values [..., 3]). Raises ValueError for a reflection.
    """
    a = np.asarray(linear, dtype=np.float64)
    u, s, vt = np.linalg.svd(a)
    det = np.linalg.det(u @ vt)
    if np.any(det < 0):
        raise ValueError("transform contains a mirror (negative scale); SMPL-X poses cannot represent it")
    return u @ vt, s


def nearest_axis_rotation(matrix: np.ndarray) -> np.ndarray:
    """The proper axis-aligned rotation (signed permutation, det +1) closest to ``matrix``.

    Args:
        matrix: Approximate rotation. [3, 3]

    Returns:
        One of the 24 axis-aligned rotations. [3, 3]
    """
    m = np.asarray(matrix, dtype=np.float64)
    best, best_score = None, -np.inf
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            cand = np.zeros((3, 3))
            cand[np.arange(3), perm] = signs
            if np.linalg.det(cand) < 0:
                continue
            score = float(np.sum(cand * m))
            if score > best_score:
                best, best_score = cand, score
    return best


def affine_inverse(matrix: np.ndarray) -> np.ndarray:
    """Inverse of affine 4x4 matrices. [..., 4, 4] -> [..., 4, 4]"""
    return np.linalg.inv(np.asarray(matrix, dtype=np.float64))


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply an affine 4x4 matrix to points. matrix [4, 4], points [N, 3] -> [N, 3]"""
    m = np.asarray(matrix, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ m[:3, :3].T + m[:3, 3]
