"""Closest-point queries on triangle meshes (torch, any device)."""

from __future__ import annotations

import torch
from torch import Tensor


def closest_point_barycentric(p: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Barycentric coordinates of the point of triangle (a, b, c) closest to p (Ericson's regions).

    All inputs ``[..., 3]``; returns ``[..., 3]``.
    """
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = p - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = p - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    safe = lambda x: torch.where(x.abs() < 1e-20, torch.full_like(x, 1e-20), x)  # noqa: E731
    denom = safe(va + vb + vc)
    v, w = vb / denom, vc / denom
    out = torch.stack([1 - v - w, v, w], dim=-1)

    def put(cond: Tensor, value: Tensor) -> Tensor:
        return torch.where(cond[..., None], value, out)

    t = (d4 - d3) / safe((d4 - d3) + (d5 - d6))
    out = put((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), torch.stack([torch.zeros_like(t), 1 - t, t], -1))
    t = d2 / safe(d2 - d6)
    out = put((vb <= 0) & (d2 >= 0) & (d6 <= 0), torch.stack([1 - t, torch.zeros_like(t), t], -1))
    one, zero = torch.ones_like(d1), torch.zeros_like(d1)
    out = put((d6 >= 0) & (d5 <= d6), torch.stack([zero, zero, one], -1))
    t = d1 / safe(d1 - d3)
    out = put((vc <= 0) & (d1 >= 0) & (d3 <= 0), torch.stack([1 - t, t, zero], -1))
    out = put((d3 >= 0) & (d4 <= d3), torch.stack([zero, one, zero], -1))
    out = put((d1 <= 0) & (d2 <= 0), torch.stack([one, zero, zero], -1))
    return out


def nearest_on_mesh(points: Tensor, vertices: Tensor, faces: Tensor, candidates: int = 16,
                    chunk: int = 2048) -> tuple[Tensor, Tensor, Tensor]:
    """Closest point on a triangle mesh for each point.

    Args:
        points: Query points. [N, 3]
        vertices: Mesh vertices. [V, 3]
        faces: Triangles. [T, 3]
        candidates: Triangles (nearest centroids) examined per point.
        chunk: Points per batch (bounds memory at chunk x T distances).

    Returns:
        ``(triangle [N], barycentric [N, 3], distance [N])``.
    """
    corners = vertices[faces]  # [T, 3, 3]
    centroids = corners.mean(dim=1)
    k = min(candidates, faces.shape[0])
    tris, barys, dists = [], [], []
    for start in range(0, points.shape[0], chunk):
        p = points[start:start + chunk]
        cand = torch.cdist(p, centroids).topk(k, dim=1, largest=False).indices  # [n, k]
        tri = corners[cand]  # [n, k, 3, 3]
        q = p[:, None, :].expand(-1, k, -1)
        bary = closest_point_barycentric(q, tri[..., 0, :], tri[..., 1, :], tri[..., 2, :])
        closest = (bary[..., None] * tri).sum(dim=-2)
        d = (closest - q).norm(dim=-1)
        best = d.argmin(dim=1)
        rows = torch.arange(p.shape[0])
        tris.append(cand[rows, best])
        barys.append(bary[rows, best])
        dists.append(d[rows, best])
    if not tris:
        return (torch.zeros(0, dtype=torch.int64), points.new_zeros(0, 3), points.new_zeros(0))
    return torch.cat(tris), torch.cat(barys), torch.cat(dists)
