"""Writing a job's per-frame Gaussians: ``frames/frame_%06d.ply``, posed by the rigid or the layered motion."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import Tensor

from backend.gaussians import Gaussians, save_ply
from backend.motion.layered import LayeredMotion
from backend.motion.skinning import posed_frame, skin_gaussians
from backend.stages.job import frame_filename

FRAMES_PER_CHUNK = 32


def write_frames(canonical: Gaussians, layered: LayeredMotion | None,
                 joint_transforms_of: Callable[[slice], Tensor], num_frames: int, frames_dir: Path,
                 report: Callable[[float, str], None]) -> None:
    """Pose the canonical Gaussians for every motion frame and write one PLY per frame (world coordinates).

    Args:
        canonical: Rest-pose Gaussians with skin weights ``[N, J]``.
        layered: The residual field's layered motion, or None for the rigid layer only.
        joint_transforms_of: Joint transforms of a slice of motion frames, ``[len(slice), J, 4, 4]``; called
            once per chunk of ``FRAMES_PER_CHUNK`` frames, so long motions never hold every frame at once.
        num_frames: Frames of the motion.
        frames_dir: Existing folder that receives ``frame_%06d.ply``.
        report: ``report(fraction, message)`` after each frame; may raise Cancelled.
    """
    for start in range(0, num_frames, FRAMES_PER_CHUNK):
        chunk = slice(start, min(start + FRAMES_PER_CHUNK, num_frames))
        joint_transforms = joint_transforms_of(chunk)
        if layered is not None:
            frames = layered.posed_frames(canonical, joint_transforms, chunk, num_frames)
        else:
            means, quats = skin_gaussians(canonical, None, joint_transforms)
            frames = [posed_frame(canonical, means[i], quats[i]) for i in range(means.shape[0])]
        for offset, frame in enumerate(frames):
            index = start + offset
            save_ply(frame, frames_dir / frame_filename(index), binding=False)
            report((index + 1) / num_frames, f"frame {index + 1}/{num_frames}")
