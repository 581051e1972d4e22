"""The body as the cloth sees it: capsules along the bones, sized from the body's own skin.

Each capsule runs between two joints; its radius is the ``RADIUS_QUANTILE`` quantile of the distances from the
segment to the skin vertices the segment's bone drives (so most of the skin lies inside it, and a garment
resting on it sits on the body, not in it).
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
        d = segment_distance(driven, joints[i], joints[j])
        ends.append((i, j))
        radii.append(float(torch.quantile(d, RADIUS_QUANTILE)))
    if not ends:
        raise ValueError("body_capsules: the body has none of the SMPL joints the capsules need")
    return BodyCapsules(torch.tensor(ends, dtype=torch.int64), torch.tensor(radii))


def depth_inside(points: Tensor, a: Tensor, b: Tensor, radius: Tensor) -> Tensor:
    """How deep each point is inside the nearest capsule (≤ 0 outside). points [P, 3], a/b [C, 3], radius [C] -> [P]"""
    d = segment_distance(points[:, None, :], a[None], b[None])  # [P, C]
    return (radius[None] - d).amax(dim=1)
