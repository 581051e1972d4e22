"""Training videos for the residual field: frames + cameras + motion times (+ optional masks) per trajectory.

Folder layout (what ``write_clip`` writes and the restore stage's output uses; ``ani3dhuman fit --videos``
reads it)::

    videos/
      <clip name>/                 one trajectory
        frame_000000.png ...       RGB frames (8-bit PNG)
        mask_000000.png ...        optional: subject mask (8-bit grey, white = subject)
        cameras.json               {"frames": [camera, ...],            camera JSON (docs/design.md §3), one per frame
                                    "motion_frames": [int, ...],        motion frame shown in each video frame
                                    "num_motion_frames": int,           frames of the whole motion
                                    "times": [float, ...]}              optional: normalised view-time of the
                                                                        trajectory (informational)

A clip whose ``cameras.json`` has no ``motion_frames`` is read as evenly spread over the motion (the
diagonal trajectory's time axis: frame i of F shows time −1 + 2i/(F−1)).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from backend.core.errors import InputError
from backend.render.cameras import Cameras

log = logging.getLogger(__name__)

CAMERAS_NAME = "cameras.json"


@dataclass(frozen=True)
class VideoClip:
    """One trajectory's video.

    Attributes:
        name: Clip name (its folder name).
        frames: RGB in [0, 1]. [F, H, W, 3] float32
        cameras: One camera per frame (size W×H).
        motion_frames: Motion frame index shown in each video frame. [F] int64
        masks: Subject masks in [0, 1], or None. [F, H, W, 1] float32
    """

    name: str
    frames: Tensor
    cameras: Cameras
    motion_frames: Tensor
    masks: Tensor | None = None

    def __post_init__(self) -> None:
        f = self.frames.shape[0]
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise InputError(f"clip {self.name}: frames: expected [F, H, W, 3], got {list(self.frames.shape)}")
        h, w = self.frames.shape[1:3]
        if len(self.cameras) != f:
            raise InputError(f"clip {self.name}: cameras: expected {f} (one per frame), got {len(self.cameras)}")
        if (self.cameras.width, self.cameras.height) != (w, h):
            raise InputError(f"clip {self.name}: cameras: size {self.cameras.width}x{self.cameras.height} does not "
                             f"match the frames {w}x{h}")
        if tuple(self.motion_frames.shape) != (f,):
            raise InputError(f"clip {self.name}: motion_frames: expected [{f}], got {list(self.motion_frames.shape)}")
        if self.masks is not None and tuple(self.masks.shape) != (f, h, w, 1):
            raise InputError(f"clip {self.name}: masks: expected [{f}, {h}, {w}, 1], got {list(self.masks.shape)}")

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]


@dataclass
class VideoDataset:
    """All training clips; items are (clip, frame) pairs drawn uniformly over every frame of every clip.

    Attributes:
        clips: The clips (a progressive round appends one).
        num_motion_frames: Frames of the motion the clips show.
    """

    clips: list[VideoClip]
    num_motion_frames: int

    def __len__(self) -> int:
        return sum(c.num_frames for c in self.clips)

    def add(self, clip: VideoClip) -> None:
        """Append a clip (checked against the motion length)."""
        if int(clip.motion_frames.max()) >= self.num_motion_frames or int(clip.motion_frames.min()) < 0:
            raise InputError(f"clip {clip.name}: motion_frames must lie in [0, {self.num_motion_frames - 1}], got "
                             f"[{int(clip.motion_frames.min())}, {int(clip.motion_frames.max())}]")
        self.clips.append(clip)

    def item(self, index: int) -> tuple[VideoClip, int]:
        """The (clip, frame) of a flat index in [0, len)."""
        for clip in self.clips:
            if index < clip.num_frames:
                return clip, index
            index -= clip.num_frames
        raise IndexError(index)

    @property
    def has_masks(self) -> bool:
        return any(c.masks is not None for c in self.clips)


def even_motion_frames(num_video_frames: int, num_motion_frames: int) -> Tensor:
    """Motion frame of each video frame when the video spans the motion evenly (diagonal trajectory). [F]"""
    if num_video_frames < 2:
        return torch.zeros(num_video_frames, dtype=torch.int64)
    s = torch.arange(num_video_frames, dtype=torch.float64) / (num_video_frames - 1)
    return torch.round(s * (num_motion_frames - 1)).long()


def write_clip(folder: str | os.PathLike, clip: VideoClip, num_motion_frames: int,
               times: Tensor | None = None) -> Path:
    """Write a clip in the folder layout of the module docstring (PNG frames, masks, cameras.json)."""
    from backend.render.video import write_png_frames

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_png_frames(clip.frames, folder, prefix="frame_")
    if clip.masks is not None:
        write_png_frames(clip.masks, folder, prefix="mask_")
    data = {"frames": clip.cameras.to_dicts(), "motion_frames": [int(v) for v in clip.motion_frames],
            "num_motion_frames": int(num_motion_frames)}
    if times is not None:
        data["times"] = [float(v) for v in times]
    tmp = folder / f".{CAMERAS_NAME}.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, folder / CAMERAS_NAME)
    return folder


def read_clip(folder: str | os.PathLike, num_motion_frames: int) -> VideoClip:
    """Read one clip folder (InputError naming the file and field on anything malformed)."""
    from PIL import Image

    folder = Path(folder)
    path = folder / CAMERAS_NAME
    if not path.is_file():
        raise InputError(f"videos: {folder} has no {CAMERAS_NAME}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise InputError(f"{path}: expected {{\"frames\": [camera, ...], ...}}")
    cameras = Cameras.from_dicts(data["frames"], where=f"{path}: frames")
    frame_files = sorted(folder.glob("frame_*.png"))
    if len(frame_files) != len(cameras):
        raise InputError(f"{folder}: expected {len(cameras)} frame_*.png (one per camera), found {len(frame_files)}")
    frames = []
    for f in frame_files:
        img = np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0
        if img.shape[:2] != (cameras.height, cameras.width):
            raise InputError(f"{f}: expected {cameras.width}x{cameras.height} like its camera, got "
                             f"{img.shape[1]}x{img.shape[0]}")
        frames.append(img)
    mask_files = sorted(folder.glob("mask_*.png"))
    masks = None
    if mask_files:
        if len(mask_files) != len(frame_files):
            raise InputError(f"{folder}: expected {len(frame_files)} mask_*.png or none, found {len(mask_files)}")
        masks = torch.from_numpy(np.stack([
            np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255.0 for f in mask_files]))[..., None]
    declared = data.get("num_motion_frames")
    if declared is not None and int(declared) != num_motion_frames:
        raise InputError(f"{path}: num_motion_frames: the videos show a motion of {declared} frames, the job has "
                         f"{num_motion_frames}")
    if "motion_frames" in data:
        motion_frames = torch.as_tensor(data["motion_frames"], dtype=torch.int64)
        if tuple(motion_frames.shape) != (len(cameras),):
            raise InputError(f"{path}: motion_frames: expected {len(cameras)} integers, got {list(motion_frames.shape)}")
        if int(motion_frames.min()) < 0 or int(motion_frames.max()) >= num_motion_frames:
            raise InputError(f"{path}: motion_frames: expected values in [0, {num_motion_frames - 1}], got "
                             f"[{int(motion_frames.min())}, {int(motion_frames.max())}]")
    else:
        motion_frames = even_motion_frames(len(cameras), num_motion_frames)
    return VideoClip(name=folder.name, frames=torch.from_numpy(np.stack(frames)), cameras=cameras,
                     motion_frames=motion_frames, masks=masks)


def load_videos(root: str | os.PathLike, num_motion_frames: int) -> VideoDataset:
    """Read every clip folder under ``root`` (a folder holding ``cameras.json`` is itself one clip)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"videos: {root} is not a directory")
    folders = [root] if (root / CAMERAS_NAME).is_file() else sorted(
        p for p in root.iterdir() if p.is_dir() and (p / CAMERAS_NAME).is_file())
    if not folders:
        raise InputError(f"videos: no clip folders (with {CAMERAS_NAME}) under {root}")
    dataset = VideoDataset([], num_motion_frames)
    for folder in folders:
        dataset.add(read_clip(folder, num_motion_frames))
    log.info("loaded %d clips, %d frames from %s", len(dataset.clips), len(dataset), root)
    return dataset
