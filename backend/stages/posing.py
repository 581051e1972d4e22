"""The body posed by a job's motion: the joint transforms every stage skins with."""

from __future__ import annotations

import torch

from backend.body import BodyModel, BodyOutput
from backend.motion import Motion


def motion_tensors(motion: Motion, body: BodyModel) -> dict[str, torch.Tensor | None]:
    """The motion's arrays as tensors in the body's dtype and device (``pose_hand`` may be None)."""
    as_t = lambda a: None if a is None else torch.as_tensor(a, dtype=body.dtype, device=body.device)  # noqa: E731
    return {"betas": as_t(motion.betas), "root_orient": as_t(motion.root_orient), "pose_body": as_t(motion.pose_body),
            "trans": as_t(motion.trans), "pose_hand": as_t(motion.pose_hand)}


def pose_body(motion: Motion, body: BodyModel, frames: slice | None = None) -> BodyOutput:
    """Run the body model over the motion, or a slice of its frames, without gradients.

    Returns:
        BodyOutput with ``vertices [F, V, 3]``, ``joints [F, J, 3]``, ``joint_transforms [F, J, 4, 4]`` (world).
    """
    t = motion_tensors(motion, body)
    sel = frames or slice(None)
    with torch.no_grad():
        return body(t["betas"], t["root_orient"][sel], t["pose_body"][sel], t["trans"][sel],
                    None if t["pose_hand"] is None else t["pose_hand"][sel])
