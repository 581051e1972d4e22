"""Clothing dynamics: a loose garment's cloth mesh simulated with newton (VBD) against capsule colliders from the
body, or skinned rigidly; produces the cloth layer (``backend.motion.cloth.ClothLayer``) the Gaussians ride."""

from backend.dynamics.colliders import BodyCapsules, body_capsules
from backend.dynamics.garment_motion import DynamicsSettings, drape, simulate_garment, skinned_layer, warmup_poses
from backend.dynamics.simulate import CLOTH_PRESETS, DEFAULT_PRESET, ClothPreset, SimSettings, simulate_cloth

__all__ = ["CLOTH_PRESETS", "DEFAULT_PRESET", "BodyCapsules", "ClothPreset", "DynamicsSettings", "SimSettings",
           "body_capsules", "drape", "simulate_cloth", "simulate_garment", "skinned_layer", "warmup_poses"]
