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

What ``read_clip`` also reads (capture layouts, ``LAYOUTS``):

- frames under **any image names** (PNG or JPEG), taken in natural sort order (``2.png`` before ``10.png``);
  images whose names start with ``mask`` are masks, matched to the frames in the same order;
- **RGBA** frames: the alpha is the subject mask (unless mask images are given) and the colour is composited
  over the fit's background;
- **one video file** (MP4, MOV, MKV, WebM) instead of images (no alpha);
- per-camera **``"frame"``** motion indices in ``cameras.json`` (``{"frames": [{...camera, "frame": 12}, ...]}``)
  instead of a ``motion_frames`` list.

A clip with neither is read as evenly spread over the motion (the diagonal trajectory's time axis: frame i of
F shows time −1 + 2i/(F−1)). Anything else is refused with an error that lists these layouts.
"""

from __future__ import annotations

import json
import logging
import os
import re
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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm")
LAYOUTS = ("a clip folder holds cameras.json ({\"frames\": [camera, ...]}, each camera optionally with a "
           "\"frame\" motion index, or a \"motion_frames\" list) and either image files (PNG or JPEG, any names, "
           "taken in natural sort order; RGBA alpha = the subject mask; optional mask_* images) or one video file "
           "(MP4/MOV/MKV/WebM)")


def _natural_key(path: Path) -> list:
    """``frame2.png`` before ``frame10.png``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _clip_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """(frame images, mask images) of a clip folder, each in natural order."""
    images = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
              and not p.name.startswith(".")]
    masks = sorted((p for p in images if p.name.lower().startswith("mask")), key=_natural_key)
    frames = sorted((p for p in images if not p.name.lower().startswith("mask")
                     and p.name != "contact_sheet.png"), key=_natural_key)
    return frames, masks


def _read_frames(folder: Path, frame_files: list[Path], cameras: Cameras, background: tuple[float, float, float]
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """Frames [F, H, W, 3] in [0, 1] from ``frame_files`` (or the folder's one video file when there are none;
    RGBA composited over ``background``) and the alpha masks [F, H, W] of RGBA frames (None where opaque)."""
    from PIL import Image

    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not frame_files and len(videos) == 1:
        import imageio.v3 as iio

        try:
            data = np.asarray(iio.imread(videos[0]), dtype=np.float32)[..., :3] / 255.0
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the user's file
            raise InputError(f"{videos[0]}: cannot read the video ({exc})") from None
        if data.shape[0] != len(cameras):
            raise InputError(f"{videos[0]}: {data.shape[0]} frames, cameras.json has {len(cameras)} cameras")
        if data.shape[1:3] != (cameras.height, cameras.width):
            raise InputError(f"{videos[0]}: expected {cameras.width}x{cameras.height} like its cameras, got "
                             f"{data.shape[2]}x{data.shape[1]}")
        return data, None
    if not frame_files:
        found = f"{len(videos)} video files" if videos else "no images or video"
        raise InputError(f"{folder}: {found}; {LAYOUTS}")
    if len(frame_files) != len(cameras):
        raise InputError(f"{folder}: {len(frame_files)} images ({frame_files[0].name} ... {frame_files[-1].name}) "
                         f"but {len(cameras)} cameras in cameras.json (one per frame expected)")
    frames, alphas = [], []
    bg = np.asarray(background, dtype=np.float32)
    for f in frame_files:
        with Image.open(f) as image:
            has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            img = np.asarray(image.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
        if img.shape[:2] != (cameras.height, cameras.width):
            raise InputError(f"{f}: expected {cameras.width}x{cameras.height} like its camera, got "
                             f"{img.shape[1]}x{img.shape[0]}")
        if img.shape[-1] == 4:
            alpha = img[..., 3:]
            frames.append(img[..., :3] * alpha + bg * (1.0 - alpha))
            alphas.append(alpha[..., 0])
        else:
            frames.append(img)
            alphas.append(None)
    if all(a is None for a in alphas):
        return np.stack(frames), None
    if any(a is None for a in alphas):
        raise InputError(f"{folder}: some frames have an alpha channel and some do not; use one kind")
    return np.stack(frames), np.stack(alphas)


def _motion_frames(entries: list, data: dict, path: Path, count: int, num_motion_frames: int) -> Tensor:
    """Motion frame per video frame: per-camera ``"frame"`` indices, a ``motion_frames`` list, or even spread."""
    per_camera = [e.get("frame") if isinstance(e, dict) else None for e in entries]
    if any(v is not None for v in per_camera):
        if any(v is None for v in per_camera):
            missing = per_camera.index(None)
            raise InputError(f"{path}: frames[{missing}].frame: missing (give every camera a \"frame\" or none)")
        if "motion_frames" in data:
            raise InputError(f"{path}: give either per-camera \"frame\" indices or \"motion_frames\", not both")
        values = per_camera
        where = "frames[*].frame"
    elif "motion_frames" in data:
        values = data["motion_frames"]
        where = "motion_frames"
    else:
        return even_motion_frames(count, num_motion_frames)
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise InputError(f"{path}: {where}: expected integers")
    motion_frames = torch.as_tensor(values, dtype=torch.int64)
    if tuple(motion_frames.shape) != (count,):
        raise InputError(f"{path}: {where}: expected {count} integers, got {list(motion_frames.shape)}")
    if int(motion_frames.min()) < 0 or int(motion_frames.max()) >= num_motion_frames:
        raise InputError(f"{path}: {where}: expected values in [0, {num_motion_frames - 1}], got "
                         f"[{int(motion_frames.min())}, {int(motion_frames.max())}]")
    return motion_frames


def read_clip(folder: str | os.PathLike, num_motion_frames: int,
              background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> VideoClip:
    """Read one clip folder in any of the ``LAYOUTS`` (InputError naming the file and field on anything else).

    Args:
        folder: The clip folder.
        num_motion_frames: Frames of the job's motion.
        background: The fit's background: RGBA frames are composited over it (their alpha becomes the mask).
    """
    from PIL import Image

    folder = Path(folder)
    path = folder / CAMERAS_NAME
    if not path.is_file():
        raise InputError(f"videos: {folder} has no {CAMERAS_NAME}; {LAYOUTS}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise InputError(f"{path}: expected {{\"frames\": [camera, ...], ...}}")
    entries = data["frames"]
    cameras = Cameras.from_dicts([{k: v for k, v in e.items() if k != "frame"} if isinstance(e, dict) else e
                                  for e in entries], where=f"{path}: frames")
    frame_files, mask_files = _clip_images(folder)
    frames, alphas = _read_frames(folder, frame_files, cameras, background)
    masks = None
    if mask_files:
        if len(mask_files) != len(cameras):
            raise InputError(f"{folder}: expected {len(cameras)} mask images (one per frame) or none, found "
                             f"{len(mask_files)}")
        masks = torch.from_numpy(np.stack([
            np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255.0 for f in mask_files]))[..., None]
    elif alphas is not None:
        masks = torch.from_numpy(alphas)[..., None]
    declared = data.get("num_motion_frames")
    if declared is not None and int(declared) != num_motion_frames:
        raise InputError(f"{path}: num_motion_frames: the videos show a motion of {declared} frames, the job has "
                         f"{num_motion_frames}")
    motion_frames = _motion_frames(entries, data, path, len(cameras), num_motion_frames)
    return VideoClip(name=folder.name, frames=torch.from_numpy(frames.astype(np.float32)), cameras=cameras,
                     motion_frames=motion_frames, masks=masks)


def load_videos(root: str | os.PathLike, num_motion_frames: int,
                background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> VideoDataset:
    """Read every clip folder under ``root`` (a folder holding ``cameras.json`` is itself one clip); RGBA frames
    are composited over ``background``."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"videos: {root} is not a directory")
    folders = [root] if (root / CAMERAS_NAME).is_file() else sorted(
        p for p in root.iterdir() if p.is_dir() and (p / CAMERAS_NAME).is_file())
    if not folders:
        raise InputError(f"videos: no clip folders (with {CAMERAS_NAME}) under {root}")
    dataset = VideoDataset([], num_motion_frames)
    for folder in folders:
        dataset.add(read_clip(folder, num_motion_frames, background))
    log.info("loaded %d clips, %d frames from %s", len(dataset.clips), len(dataset), root)
    return dataset
