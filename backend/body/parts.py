"""Body parts: the labels the preserve mask and the regularisers are built from.

A part is assigned from the joint that dominates a point's skinning weights. Identity-critical parts
(face/hair, hands, shoes) are what the sampler's preserve mask keeps (docs/method.md §5).
"""

from __future__ import annotations

import torch
from torch import Tensor

PART_NAMES = (
    "head", "torso", "left_arm", "right_arm", "left_hand", "right_hand",
    "left_leg", "right_leg", "left_foot", "right_foot", "garment",
)
"""``garment``: Gaussians that ride a loose garment's cloth surface (no joint maps to it)."""
PART_INDEX = {name: i for i, name in enumerate(PART_NAMES)}
IDENTITY_CRITICAL_PARTS = ("head", "left_hand", "right_hand", "left_foot", "right_foot")

# SMPL-family joint names (the names used by smplx, mannequin-x and our own rig).
SMPL_JOINT_NAMES = (
    "Pelvis", "L_Hip", "R_Hip", "Spine1", "L_Knee", "R_Knee", "Spine2", "L_Ankle", "R_Ankle", "Spine3",
    "L_Foot", "R_Foot", "Neck", "L_Collar", "R_Collar", "Head", "L_Shoulder", "R_Shoulder", "L_Elbow",
    "R_Elbow", "L_Wrist", "R_Wrist", "L_Hand", "R_Hand",
)
_FINGERS = ("Index", "Middle", "Pinky", "Ring", "Thumb")
HAND_JOINT_NAMES = tuple(
    f"{side}_{finger}{k}" for side in ("L", "R") for finger in _FINGERS for k in (1, 2, 3)
)
SMPLH_JOINT_NAMES = SMPL_JOINT_NAMES[:22] + HAND_JOINT_NAMES
SMPLX_JOINT_NAMES = SMPL_JOINT_NAMES[:22] + ("Jaw", "L_Eye", "R_Eye") + HAND_JOINT_NAMES


def part_of_joint(name: str) -> str:
    """The body part a joint's rigid segment belongs to (the bone it rotates)."""
    side = "left" if name.startswith("L_") else "right" if name.startswith("R_") else ""
    base = name[2:] if side else name
    if base in ("Head", "Jaw", "Eye"):
        return "head"
    if base in ("Pelvis", "Spine1", "Spine2", "Spine3", "Neck", "Collar"):
        return "torso"
    if base in ("Shoulder", "Elbow"):
        return f"{side}_arm"
    if base in ("Wrist", "Hand") or base.rstrip("123") in _FINGERS:
        return f"{side}_hand"
    if base in ("Hip", "Knee"):
        return f"{side}_leg"
    if base in ("Ankle", "Foot", "Toe"):
        return f"{side}_foot"
    raise ValueError(f"unknown joint name {name!r}")


def joint_part_ids(joint_names: tuple[str, ...]) -> Tensor:
    """Part index per joint. [J] int64"""
    return torch.tensor([PART_INDEX[part_of_joint(n)] for n in joint_names], dtype=torch.int64)


def part_ids_from_weights(skin_weights: Tensor, joint_names: tuple[str, ...]) -> Tensor:
    """Part of each point = part of its dominant joint. ``[N, J] -> [N]`` int64."""
    return joint_part_ids(joint_names).to(skin_weights.device)[skin_weights.argmax(dim=1)]


def identity_critical(part_ids: Tensor) -> Tensor:
    """True for points on identity-critical parts. ``[N] -> [N]`` bool"""
    critical = torch.tensor([PART_INDEX[p] for p in IDENTITY_CRITICAL_PARTS], device=part_ids.device)
    return torch.isin(part_ids, critical)
