"""The body as the cloth sees it: capsules along the bones, sized from the body's own skin.

Each capsule runs between two joints. Its radius is measured on the skin vertices the segment's bone drives
and that lie alongside the segment: around the segment in ``SECTORS`` directions, the ``RADIUS_QUANTILE``
quantile of their distances in each, and the capsule takes the median direction's. A round limb gets its
radius; a flat or lopsided section (the pelvis across the hips: wide, shallow, the belly above) gets a typical
one instead of its farthest point, so the capsule does not stand centimetres out of the skin where the body is
thin (the largest radius over all skin, the earlier rule, put the hip capsule 9 cm outside the hips).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from backend.body.model import BodyModel

BONES = (
    # (from, to, skin of): legs, hips across the pelvis, the trunk, the arms (hands swing by a skirt)
    ("L_Hip", "L_Knee", "L_Hip"), ("R_Hip", "R_Knee", "R_Hip"),
    ("L_Knee", "L_Ankle", "L_Knee"), ("R_Knee", "R_Ankle", "R_Knee"),
    ("L_Hip", "R_Hip", "Pelvis"),
    ("Pelvis", "Spine2", "Spine1"), ("Spine2", "Spine3", "Spine2"),
    ("L_Shoulder", "L_Elbow", "L_Shoulder"), ("R_Shoulder", "R_Elbow", "R_Shoulder"),
    ("L_Elbow", "L_Wrist", "L_Elbow"), ("R_Elbow", "R_Wrist", "R_Elbow"),
)
RADIUS_QUANTILE = 0.85
SECTORS = 8


@dataclass(frozen=True)
class BodyCapsules:
    """Capsules in the rest pose. joints [C, 2] (joint indices of the end points), radius [C] (m)."""

    joints: Tensor
    radius: Tensor

    def posed(self, body: BodyModel, betas: Tensor | None, joint_transforms: Tensor) -> tuple[Tensor, Tensor]:
        """End points per frame: ``joint_transforms [F, J, 4, 4] -> (a [F, C, 3], b [F, C, 3])`` (world)."""
        rest = body.rest_joints(betas).detach().to(joint_transforms.dtype).cpu()
        jt = joint_transforms.cpu()
        posed = (jt[..., :3, :3] @ rest[None, ..., None])[..., 0] + jt[..., :3, 3]  # [F, J, 3]
        return posed[:, self.joints[:, 0]], posed[:, self.joints[:, 1]]


def segment_distance(points: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Distance from points [..., 3] to the segments a-b [..., 3] (broadcast)."""
    ab = b - a
    t = (((points - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    return (points - (a + t[..., None] * ab)).norm(dim=-1)


def body_capsules(body: BodyModel, betas: Tensor | None = None) -> BodyCapsules:
    """The capsules of ``BONES`` that this body has, sized from its rest skin."""
    names = body.joint_names
    vertices = body.rest_vertices(betas).detach().cpu().float()
    joints = body.rest_joints(betas).detach().cpu().float()
    dominant = body.skin_weights.detach().cpu().float().argmax(dim=1)
    ends, radii = [], []
    for start, end, skin in BONES:
        if not {start, end, skin} <= set(names):
            continue
        i, j, k = names.index(start), names.index(end), names.index(skin)
        driven = vertices[dominant == k]
        if driven.shape[0] < 8:
            continue
        radius = section_radius(driven, joints[i], joints[j])
        if radius is None:
            continue
        ends.append((i, j))
        radii.append(radius)
    if not ends:
        raise ValueError("body_capsules: the body has none of the SMPL joints the capsules need")
    return BodyCapsules(torch.tensor(ends, dtype=torch.int64), torch.tensor(radii))


def section_radius(points: Tensor, a: Tensor, b: Tensor) -> float | None:
    """The capsule radius for skin ``points`` [P, 3] around the segment a-b (see the module doc); None when too
    few points lie alongside it."""
    axis = b - a
    length2 = float((axis * axis).sum())
    t = ((points - a) @ axis) / max(length2, 1e-12)
    alongside = points[(t > 0.0) & (t < 1.0)]
    if alongside.shape[0] < 8:
        return None
    unit = axis / max(length2, 1e-12) ** 0.5
    radial = alongside - a - ((alongside - a) @ unit)[:, None] * unit
    helper = torch.tensor([0.0, 0.0, 1.0]) if abs(float(unit[2])) < 0.9 else torch.tensor([1.0, 0.0, 0.0])
    e1 = torch.nn.functional.normalize(torch.linalg.cross(unit, helper), dim=0)
    e2 = torch.linalg.cross(unit, e1)
    angle = torch.atan2(radial @ e2, radial @ e1)
    sector = ((angle + torch.pi) / (2 * torch.pi) * SECTORS).long().clamp(0, SECTORS - 1)
    distance = radial.norm(dim=-1)
    per_sector = [float(torch.quantile(distance[sector == k], RADIUS_QUANTILE))
                  for k in range(SECTORS) if int((sector == k).sum()) >= 4]
    return float(torch.tensor(per_sector).median()) if per_sector else None


def depth_inside(points: Tensor, a: Tensor, b: Tensor, radius: Tensor) -> Tensor:
    """How deep each point is inside the nearest capsule (≤ 0 outside). points [P, 3], a/b [C, 3], radius [C] -> [P]"""
    d = segment_distance(points[:, None, :], a[None], b[None])  # [P, C]
    return (radius[None] - d).amax(dim=1)
