"""Motions (AMASS npz, built-in procedural ones), the rigid skinning layer, the residual field (HexPlane + MLP
heads) and the layered composition rigid + residual."""

from backend.motion.layered import LayeredMotion, layered_frame
from backend.motion.motion import Motion, load_motion, motion_from_arrays
from backend.motion.residual import FieldConfig, ResidualField
from backend.motion.skinning import posed_frame, skin_gaussians, skin_means_quats

__all__ = [
    "FieldConfig",
    "LayeredMotion",
    "Motion",
    "ResidualField",
    "layered_frame",
    "load_motion",
    "motion_from_arrays",
    "posed_frame",
    "skin_gaussians",
    "skin_means_quats",
]
