"""Writers for rendered frames: numbered PNGs, a contact sheet PNG and an H.264 MP4 (imageio-ffmpeg)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from backend.core.errors import InputError

log = logging.getLogger(__name__)

Frames = Tensor | np.ndarray | Sequence[np.ndarray]


def to_uint8(frames: Frames) -> np.ndarray:
    """Frames in [0, 1] (float) or uint8 -> uint8 RGB. [F, H, W, 3] (a single [H, W, 3] image becomes F = 1)

    Raises:
        InputError: the frames are not [F, H, W, 3] / [F, H, W, 1] (or a list of such images).
    """
    if isinstance(frames, Tensor):
        arr = frames.detach().cpu().numpy()
    elif isinstance(frames, np.ndarray):
        arr = frames
    else:
        arr = np.stack([np.asarray(f) for f in frames])
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
        raise InputError(f"frames: expected shape [F, H, W, 3] (or 1/4 channels), got {list(arr.shape)}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def write_png_frames(frames: Frames, out_dir: str | Path, *, prefix: str = "frame_", start: int = 0) -> list[Path]:
    """Write ``out_dir/{prefix}{i:06d}.png`` for every frame; returns the paths."""
    from PIL import Image

    arr = to_uint8(frames)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(arr):
        path = out_dir / f"{prefix}{start + i:06d}.png"
        Image.fromarray(frame).save(path)
        paths.append(path)
    return paths


def contact_sheet(frames: Frames, *, columns: int | None = None, max_frames: int = 16, pad: int = 2,
                  pad_value: int = 255) -> np.ndarray:
    """Tile up to ``max_frames`` evenly spaced frames into one image. -> [H', W', 3] uint8

    Args:
        frames: Frames to pick from. [F, H, W, 3]
        columns: Tiles per row (default: about square).
        max_frames: Most tiles; frames are picked evenly from first to last.
        pad: Pixels between tiles.
        pad_value: Grey level of the padding.
    """
    arr = to_uint8(frames)
    count = arr.shape[0]
    picks = np.unique(np.round(np.linspace(0, count - 1, min(count, max_frames))).astype(int))
    tiles = arr[picks]
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    h, w = tiles.shape[1:3]
    sheet = np.full((rows * h + (rows + 1) * pad, columns * w + (columns + 1) * pad, 3), pad_value, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y:y + h, x:x + w] = tile
    return sheet


def write_contact_sheet(frames: Frames, path: str | Path, **kwargs: int) -> Path:
    """Save ``contact_sheet(frames, **kwargs)`` as a PNG."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(contact_sheet(frames, **kwargs)).save(path)
    return path


def write_mp4(frames: Frames, path: str | Path, *, fps: float = 24.0, quality: int = 8) -> Path:
    """Encode frames as H.264 MP4 (yuv420p, playable everywhere). Odd sizes are padded by one pixel.

    Args:
        frames: [F, H, W, 3] in [0, 1] or uint8.
        path: Output file.
        fps: Frames per second.
        quality: imageio-ffmpeg quality 0..10.
    """
    import imageio.v2 as imageio

    arr = to_uint8(frames)
    if arr.shape[1] % 2 or arr.shape[2] % 2:  # yuv420p needs even sizes
        arr = np.pad(arr, ((0, 0), (0, arr.shape[1] % 2), (0, arr.shape[2] % 2), (0, 0)), mode="edge")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=quality,
                            pixelformat="yuv420p", macro_block_size=1) as writer:
        for frame in arr:
            writer.append_data(frame)
    log.info("wrote %s (%d frames, %dx%d, %.1f fps)", path, arr.shape[0], arr.shape[2], arr.shape[1], fps)
    return path
