"""Motion files: the AMASS SMPL-X npz contract (docs/design.md §3) and the layouts it is read from.

Accepted layouts (arrays in an ``.npz``):
- SMPL-X (AMASS): ``root_orient [F,3]``, ``pose_body [F,63]``, optional ``pose_hand [F,90]``, ``trans [F,3]``,
  ``betas [S]``, ``mocap_frame_rate`` (or ``fps``);
- AMASS ``poses [F,165]`` (SMPL-X full pose: root, 21 body, jaw, 2 eyes, 30 hand joints) or ``poses [F,156]``
  (SMPL+H: root, 21 body, 30 hand joints);
- SMPL ``poses [F,72]`` (root, 23 joints; the two SMPL hand joints are dropped).
Missing ``trans`` means zero; missing ``betas`` means the mean shape; missing frame rate means 30 fps.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.core.errors import InputError

DEFAULT_FPS = 30.0


@dataclass(frozen=True)
class Motion:
    """An SMPL-X motion in the world frame (Blender world: Z up, metres).

    Attributes:
        root_orient: Root rotation about the pelvis joint, axis-angle. [F, 3]
        pose_body: 21 body joint rotations, axis-angle. [F, 63]
        trans: Translation added after posing. [F, 3]
        betas: Shape coefficients. [S]
        fps: Frames per second (> 0).
        pose_hand: 30 hand joint rotations (absolute). [F, 90] or None
    """

    root_orient: np.ndarray
    pose_body: np.ndarray
    trans: np.ndarray
    betas: np.ndarray
    fps: float = DEFAULT_FPS
    pose_hand: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(self.root_orient.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """The contract's arrays (float32), e.g. for ``np.savez`` or the wire."""
        out = {
            "root_orient": self.root_orient,
            "pose_body": self.pose_body,
            "trans": self.trans,
            "betas": self.betas,
            "mocap_frame_rate": np.asarray(self.fps, np.float32),
        }
        if self.pose_hand is not None:
            out["pose_hand"] = self.pose_hand
        return out

    def slice(self, start: int, stop: int) -> Motion:
        """Frames ``start:stop``."""
        hand = None if self.pose_hand is None else self.pose_hand[start:stop]
        return Motion(self.root_orient[start:stop], self.pose_body[start:stop], self.trans[start:stop],
                      self.betas, self.fps, hand)

    def save(self, path: str | os.PathLike) -> None:
        """Write the AMASS SMPL-X npz contract."""
        np.savez(path, **self.arrays())


def _array(data: Mapping[str, object], key: str, width: int | None, frames: int | None) -> np.ndarray:
    try:
        value = np.asarray(data[key], dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"motion: '{key}' is not numeric ({exc})") from exc
    if width is not None:
        if value.ndim != 2 or value.shape[1] != width:
            raise InputError(f"motion: '{key}' must have shape [F, {width}], got {list(value.shape)}")
        if frames is not None and value.shape[0] != frames:
            raise InputError(f"motion: '{key}' has {value.shape[0]} frames, expected {frames} like the poses")
    if not np.all(np.isfinite(value)):
        raise InputError(f"motion: '{key}' contains NaN or infinite values")
    return value


def motion_from_arrays(data: Mapping[str, object]) -> Motion:
    """Validate and normalise motion arrays in any accepted layout.

    Raises:
        InputError: naming the key, the expected and the actual shape.
    """
    keys = set(data.keys())
    pose_hand = None
    if "root_orient" in keys or "pose_body" in keys:
        missing = [k for k in ("root_orient", "pose_body") if k not in keys]
        if missing:
            raise InputError(f"motion: missing key(s) {missing} (SMPL-X layout needs root_orient and pose_body)")
        root_orient = _array(data, "root_orient", 3, None)
        frames = root_orient.shape[0]
        pose_body = _array(data, "pose_body", 63, frames)
        if "pose_hand" in keys:
            pose_hand = _array(data, "pose_hand", 90, frames)
    elif "poses" in keys:
        poses = np.asarray(data["poses"], dtype=np.float32)
        if poses.ndim != 2 or poses.shape[1] not in (72, 156, 165):
            raise InputError(
                f"motion: 'poses' must have shape [F, 165] (SMPL-X), [F, 156] (SMPL+H) or [F, 72] (SMPL), "
                f"got {list(poses.shape)}")
        poses = _array({"poses": poses}, "poses", poses.shape[1], None)
        root_orient, pose_body = poses[:, :3], poses[:, 3:66]
        if poses.shape[1] == 165:
            pose_hand = poses[:, 75:165]
        elif poses.shape[1] == 156:
            pose_hand = poses[:, 66:156]
        frames = poses.shape[0]
    else:
        raise InputError("motion: missing key 'root_orient'+'pose_body' (SMPL-X) or 'poses' (AMASS/SMPL); "
                         f"found keys {sorted(keys)}")
    if frames < 1:
        raise InputError("motion: zero frames")
    trans = _array(data, "trans", 3, frames) if "trans" in keys else np.zeros((frames, 3), np.float32)
    betas = np.zeros(10, np.float32)
    if "betas" in keys:
        betas = _array(data, "betas", None, None)
        if betas.ndim == 2 and betas.shape[0] >= 1:
            betas = betas[0]  # some files store one row per frame; a motion has one shape
        if betas.ndim != 1:
            raise InputError(f"motion: 'betas' must have shape [S], got {list(betas.shape)}")
    fps = DEFAULT_FPS
    for key in ("mocap_frame_rate", "mocap_framerate", "fps"):
        if key in keys:
            fps_array = np.asarray(data[key], dtype=np.float64).reshape(-1)
            if fps_array.size != 1 or not np.isfinite(fps_array[0]) or fps_array[0] <= 0:
                raise InputError(f"motion: '{key}' must be one positive number, got {fps_array.tolist()}")
            fps = float(fps_array[0])
            break
    return Motion(root_orient, pose_body, trans, betas, fps, pose_hand)


def load_motion(path: str | os.PathLike) -> Motion:
    """Read a motion ``.npz`` (see module docstring for the layouts).

    Raises:
        FileNotFoundError: no such file.
        InputError: unreadable file or invalid arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"motion file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"motion file {path}: not a readable .npz ({exc})") from exc
    return motion_from_arrays(data)
