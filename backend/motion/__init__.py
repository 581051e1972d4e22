"""Motions (AMASS npz), the rigid skinning layer, and (later) the residual field and layered composition."""

from backend.motion.motion import Motion, load_motion, motion_from_arrays
from backend.motion.skinning import (
    matrix_to_quaternion,
    posed_frame,
    quaternion_multiply,
    quaternion_to_matrix,
    skin_gaussians,
    skin_means_quats,
)

__all__ = [
    "Motion",
    "load_motion",
    "matrix_to_quaternion",
    "motion_from_arrays",
    "posed_frame",
    "quaternion_multiply",
    "quaternion_to_matrix",
    "skin_gaussians",
    "skin_means_quats",
]
