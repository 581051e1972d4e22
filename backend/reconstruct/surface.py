"""Canonical Gaussians sampled on the body's rest surface — the default subject without a photo.

Each Gaussian sits on a triangle (area-weighted), takes the barycentric blend of its vertices' skinning
weights, lies flat in the surface (thin along the normal) and gets a procedural outfit colour by body part,
so motion and orientation are readable in renders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from backend.body.model import BodyModel
from backend.body.parts import PART_INDEX, part_ids_from_weights
from backend.gaussians import Gaussians
from backend.core.rotations import matrix_to_quaternion


@dataclass(frozen=True)
class SurfaceSample:
    """Points on a mesh: triangle index [N], barycentric coordinates [N, 3], positions [N, 3], normals [N, 3]."""

    triangles: Tensor
    barycentric: Tensor
    points: Tensor
    normals: Tensor


def triangle_areas_normals(vertices: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
    """Areas [T] and unit normals [T, 3] of a triangle mesh (vertices [V, 3], faces [T, 3])."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    cross = torch.linalg.cross(b - a, c - a)
    norm = cross.norm(dim=-1)
    return 0.5 * norm, cross / norm.clamp_min(1e-12)[:, None]


def sample_surface(vertices: Tensor, faces: Tensor, n: int, generator: torch.Generator) -> SurfaceSample:
    """Area-weighted uniform samples on a triangle mesh."""
    areas, normals = triangle_areas_normals(vertices, faces)
    tri = torch.multinomial(areas, n, replacement=True, generator=generator)
    u = torch.rand(n, 2, generator=generator, dtype=vertices.dtype)
    su = u[:, 0].sqrt()
    bary = torch.stack([1.0 - su, su * (1.0 - u[:, 1]), su * u[:, 1]], dim=-1)
    corners = vertices[faces[tri]]  # [N, 3, 3]
    points = (bary[..., None] * corners).sum(dim=1)
    return SurfaceSample(tri, bary, points, normals[tri])


def tangent_frames(normals: Tensor) -> Tensor:
    """Rotation matrices whose third column is the normal. ``[N, 3] -> [N, 3, 3]``."""
    helper = torch.zeros_like(normals)
    helper[:, 0] = 1.0
    near_x = normals[:, 0].abs() > 0.9
    helper[near_x] = torch.tensor([0.0, 1.0, 0.0], dtype=normals.dtype)
    t1 = torch.nn.functional.normalize(torch.linalg.cross(helper, normals), dim=-1)
    t2 = torch.linalg.cross(normals, t1)
    return torch.stack([t1, t2, normals], dim=-1)


# Procedural outfit: base colour per part (linear RGB in [0, 1]).
_SKIN = (0.87, 0.67, 0.55)
_OUTFIT = {
    "head": _SKIN, "left_hand": _SKIN, "right_hand": _SKIN,
    "torso": (0.80, 0.22, 0.18), "left_arm": (0.80, 0.22, 0.18), "right_arm": (0.80, 0.22, 0.18),
    "left_leg": (0.18, 0.25, 0.48), "right_leg": (0.18, 0.25, 0.48),
    "left_foot": (0.12, 0.10, 0.09), "right_foot": (0.12, 0.10, 0.09),
}


def procedural_colors(points: Tensor, normals: Tensor, part_ids: Tensor, head_top: float) -> Tensor:
    """Outfit colours: skin, a striped shirt, trousers, shoes, and hair on the top/back of the head.

    Args:
        points: Rest-pose positions (body frame, Y up, face towards +Z). [N, 3]
        normals: Rest-pose normals. [N, 3]
        part_ids: Body part per point. [N]
        head_top: Height (Y) of the top of the head.
    """
    table = torch.tensor([_OUTFIT[name] for name in sorted(_OUTFIT, key=PART_INDEX.get)], dtype=points.dtype)
    colors = table[part_ids].clone()
    shirt = (part_ids == PART_INDEX["torso"]) | (part_ids == PART_INDEX["left_arm"]) | (
        part_ids == PART_INDEX["right_arm"])
    stripe = torch.sin(points[:, 1] * 2 * math.pi / 0.08) > 0.3
    colors[shirt & stripe] = torch.tensor([0.95, 0.92, 0.85], dtype=points.dtype)
    head = part_ids == PART_INDEX["head"]
    hair = head & ((points[:, 1] > head_top - 0.09) | ((normals[:, 2] < -0.2) & (points[:, 1] > head_top - 0.2)))
    colors[hair] = torch.tensor([0.20, 0.12, 0.07], dtype=points.dtype)
    return colors


def sample_body_gaussians(
    body: BodyModel,
    betas: Tensor | None,
    num_gaussians: int,
    generator: torch.Generator,
    *,
    thickness: float = 0.15,
    opacity: float = 0.95,
) -> Gaussians:
    """Canonical Gaussians on the body's rest surface, bound to its skeleton.

    Args:
        body: The body model.
        betas: Shape coefficients [S] or None.
        num_gaussians: N (≥ 1).
        generator: Source of every random draw.
        thickness: Normal-axis scale relative to the in-surface scale.
        opacity: Initial opacity.

    Returns:
        Gaussians in the rest pose with ``skin_weights [N, J]``, ``part_ids`` and ``loose`` (all False).
    """
    if num_gaussians < 1:
        raise ValueError(f"num_gaussians must be ≥ 1, got {num_gaussians}")
    vertices = body.rest_vertices(betas).detach().cpu().float()
    faces = body.faces.cpu()
    sample = sample_surface(vertices, faces, num_gaussians, generator)
    corner_weights = body.skin_weights.detach().cpu().float()[faces[sample.triangles]]  # [N, 3, J]
    skin_weights = (sample.barycentric[..., None] * corner_weights).sum(dim=1)
    skin_weights = skin_weights / skin_weights.sum(dim=1, keepdim=True)
    part_ids = part_ids_from_weights(skin_weights, body.joint_names)
    total_area = triangle_areas_normals(vertices, faces)[0].sum()
    spacing = float(torch.sqrt(total_area / num_gaussians))
    scales = torch.tensor([spacing * 0.75, spacing * 0.75, spacing * 0.75 * thickness]).expand(num_gaussians, 3)
    quats = matrix_to_quaternion(tangent_frames(sample.normals))
    colors = procedural_colors(sample.points, sample.normals, part_ids, float(vertices[:, 1].max()))
    return Gaussians.from_colors(
        sample.points,
        colors,
        scales=scales.clone(),
        opacities=opacity,
        quats=quats,
        skin_weights=skin_weights,
        part_ids=part_ids,
        loose=torch.zeros(num_gaussians, dtype=torch.bool),
    )
