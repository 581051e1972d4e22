"""The job's cloth layer: bind the garment's Gaussians, then simulate the garment or skin it rigidly.

``dynamics``: ``auto`` simulates when a loose garment was found; ``cloth`` asks for the simulation (a warning
in result.json when there is no garment to simulate); ``none`` keeps the garment surface skinned rigidly with
its smooth weights (it still never splits between the legs).
"""

from __future__ import annotations

import torch

from backend.body.model import BodyModel
from backend.core.progress import StageProgress, StageTimer
from backend.dynamics.garment_motion import DynamicsSettings, simulate_garment, skinned_layer, warmup_poses
from backend.gaussians import Gaussians
from backend.motion.cloth import ClothLayer
from backend.reconstruct.garment_surface import GarmentSurface, bind_garment, garment_gaussian_index
from backend.stages.job import JobSpec
from backend.stages.posing import motion_tensors, pose_body


def garment_layer(spec: JobSpec, body: BodyModel, canonical: Gaussians, garment: GarmentSurface | None,
                  report: StageProgress, timer: StageTimer, warnings: list[str]) -> tuple[ClothLayer | None, dict]:
    """The cloth layer of the job (None without a garment) and the ``dynamics`` record for result.json."""
    if garment is None:
        if spec.dynamics == "cloth":
            warnings.append("dynamics: cloth was asked for but no loose garment was found (set garment.type to "
                            "skirt or dress to force one); the subject moves with the rigid layer")
        report(1.0, "no loose garment: rigid layer")
        return None, {"mode": "none", "reason": "no loose garment"}
    index = garment_gaussian_index(canonical, garment)
    if index.numel() == 0:
        warnings.append("dynamics: a garment was found but no Gaussian lies on it; the subject moves with the "
                        "rigid layer")
        return None, {"mode": "none", "reason": "no Gaussians on the garment"}
    binding = bind_garment(canonical, garment, index)
    with timer.stage("cloth"):
        joint_transforms = pose_body(spec.motion, body).joint_transforms.float()
        if spec.dynamics == "none":
            report(1.0, f"garment skinned rigidly ({index.numel()} Gaussians)")
            return skinned_layer(garment, binding, joint_transforms), {"mode": "none", "reason": "dynamics none"}
        settings = DynamicsSettings(preset=spec.cloth_preset)
        # draped in the photo's pose, and that is frame 0's: the motion starts from the drape (frame 0 is then
        # exactly the shape the Gaussians were fitted on); otherwise a warm-up from the rest pose into frame 0
        start = garment.hanging if garment.hanging is not None and torch.allclose(
            garment.hanging_transforms, joint_transforms[0], atol=1e-5) else None
        warm = None if start is not None else warmup_joint_transforms(spec, body, settings.warmup_frames)
        layer, record = simulate_garment(garment, binding, body, torch.as_tensor(spec.motion.betas, dtype=body.dtype),
                                         joint_transforms, warm, spec.motion.fps, settings, report, start=start)
    report(1.0, f"cloth: {record['frames']} frames at {record['frames_per_second']} fps on {record['device']}")
    return layer, {"mode": "cloth", **record}


def warmup_joint_transforms(spec: JobSpec, body: BodyModel, frames: int) -> torch.Tensor:
    """Joint transforms of the warm-up: from the rest pose into the motion's first frame. [frames, J, 4, 4]"""
    t = motion_tensors(spec.motion, body)
    root, pose, trans = warmup_poses(t["root_orient"][0], t["pose_body"][0], t["trans"][0], frames)
    with torch.no_grad():
        return body(t["betas"], root, pose, trans, None).joint_transforms.float()
