"""Render a sequence of Gaussian frames (an animation) and write the ``renders/<stage>/`` folder.

Folder layout (docs/design.md §3, ``renders/<stage>/``): ``frame_000000.png`` …, ``cameras.json`` (one camera per
frame, the JSON contract), ``contact_sheet.png`` and ``video.mp4``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from backend.core.errors import InputError
from backend.gaussians.container import Gaussians
from backend.render.cameras import Cameras, save_cameras
from backend.render.render import RenderSettings, render
from backend.render.video import to_uint8, write_contact_sheet, write_mp4, write_png_frames

log = logging.getLogger(__name__)

FrameSource = Sequence[Gaussians] | Callable[[int], Gaussians]


def cameras_for_frames(cameras: Cameras, num_frames: int) -> Cameras:
    """One camera per frame: a single camera is repeated; otherwise the counts must match.

    Raises:
        InputError: the camera count is neither 1 nor ``num_frames``.
    """
    if len(cameras) == num_frames:
        return cameras
    if len(cameras) == 1:
        return cameras[torch.zeros(num_frames, dtype=torch.long)]
    raise InputError(f"cameras: expected 1 camera or one per frame ({num_frames}), got {len(cameras)}")


def render_sequence(
    frames: FrameSource,
    cameras: Cameras,
    *,
    num_frames: int | None = None,
    settings: RenderSettings | None = None,
    device: torch.device | str = "cpu",
    report: Callable[[float, str], None] | None = None,
) -> np.ndarray:
    """Render frame i of an animation with camera i (or one shared camera), without gradients.

    Args:
        frames: Gaussians per frame, or a function ``i -> Gaussians`` (loads lazily, e.g. from PLY).
        cameras: 1 camera, or one per frame.
        num_frames: Needed when ``frames`` is a function.
        settings: Render settings.
        device: Device to render on.
        report: Optional ``report(fraction, message)`` called after every frame (may raise ``Cancelled``).

    Returns:
        RGB frames. [F, H, W, 3] uint8
    """
    if callable(frames):
        if num_frames is None:
            raise InputError("render_sequence: num_frames is required when frames is a function")
        get = frames
    else:
        num_frames = len(frames) if num_frames is None else num_frames
        get = frames.__getitem__
    if num_frames < 1:
        raise InputError("render_sequence: expected at least one frame, got none")
    cams = cameras_for_frames(cameras, num_frames)
    out = np.empty((num_frames, cams.height, cams.width, 3), dtype=np.uint8)
    started = time.monotonic()
    backend = None
    for i in range(num_frames):
        gaussians = get(i).to(device)
        with torch.no_grad():
            result = render(gaussians, cams[i].to(device), settings=settings)
        out[i] = to_uint8(result.rgb)[0]
        if backend is None:
            backend = result.backend
            log.info("rendering %d frames at %dx%d with the %s backend", num_frames, cams.width, cams.height,
                     backend)
        if report is not None:
            report((i + 1) / num_frames, f"rendered frame {i + 1}/{num_frames}")
    log.info("rendered %d frames in %.1f s", num_frames, time.monotonic() - started)
    return out


def write_render_folder(
    frames: np.ndarray,
    out_dir: str | Path,
    *,
    cameras: Cameras | None = None,
    fps: float = 24.0,
    contact_frames: int = 16,
) -> dict[str, Path]:
    """Write PNG frames, ``cameras.json`` (one per frame), ``contact_sheet.png`` and ``video.mp4``.

    Args:
        frames: RGB frames. [F, H, W, 3] uint8 or float in [0, 1]
        out_dir: Folder to write into (created).
        cameras: The cameras used (1 or F); written per frame.
        fps: Video frame rate.
        contact_frames: Most frames on the contact sheet.

    Returns:
        Paths by name: ``frames`` (the folder), ``cameras``, ``contact_sheet``, ``video``.
    """
    out_dir = Path(out_dir)
    arr = to_uint8(frames)
    write_png_frames(arr, out_dir)
    paths = {"frames": out_dir}
    if cameras is not None:
        paths["cameras"] = save_cameras(cameras_for_frames(cameras, arr.shape[0]), out_dir / "cameras.json")
    paths["contact_sheet"] = write_contact_sheet(arr, out_dir / "contact_sheet.png", max_frames=contact_frames)
    paths["video"] = write_mp4(arr, out_dir / "video.mp4", fps=fps)
    return paths


def render_turntable(
    frames: FrameSource,
    out_dir: str | Path,
    *,
    num_frames: int | None = None,
    width: int = 512,
    height: int = 512,
    turns: float = 1.0,
    elevation_deg: float = 10.0,
    fov_y_deg: float = 40.0,
    fps: float = 24.0,
    settings: RenderSettings | None = None,
    device: torch.device | str = "cpu",
    report: Callable[[float, str], None] | None = None,
) -> dict[str, Path]:
    """Render an animation while the camera circles it (frame i at azimuth ``360°·turns·i/F``) and write the
    ``renders/<stage>/`` folder (PNGs, cameras.json, contact_sheet.png, video.mp4).

    The framing covers every frame's Gaussians (sampled), so a walking subject stays in view.

    Args:
        frames: Gaussians per frame, or ``i -> Gaussians`` with ``num_frames``.
        out_dir: Output folder.
        num_frames: Needed when ``frames`` is a function.
        width, height: Image size.
        turns: Full turns over the animation.
        elevation_deg, fov_y_deg: Camera elevation and vertical field of view.
        fps: Video frame rate.
        settings: Render settings (default: white background).
        device: Device to render on.
        report: Optional ``report(fraction, message)`` per frame.

    Returns:
        Paths by name: ``frames``, ``cameras``, ``contact_sheet``, ``video``.
    """
    from backend.render.trajectories import frame_subject, orbit_cameras

    get = frames if callable(frames) else frames.__getitem__
    count = num_frames if num_frames is not None else (None if callable(frames) else len(frames))
    if count is None or count < 1:
        raise InputError("render_turntable: expected at least one frame (pass num_frames with a function)")
    probe = torch.linspace(0, count - 1, min(count, 8)).round().long().unique().tolist()
    gen = torch.Generator().manual_seed(0)
    points = []
    for i in probe:
        means = get(i).means.detach().cpu()
        pick = torch.randperm(means.shape[0], generator=gen)[:20000]
        points.append(means[pick])
    framing = frame_subject(torch.cat(points), fov_y_deg=fov_y_deg, width=width, height=height, margin=1.05)
    cams = orbit_cameras(framing, num_frames=count, sweep_deg=360.0 * turns, elevation_deg=elevation_deg,
                         fov_y_deg=fov_y_deg, width=width, height=height)
    settings = settings or RenderSettings(background=(1.0, 1.0, 1.0))
    rgb = render_sequence(get, cams, num_frames=count, settings=settings, device=device, report=report)
    return write_render_folder(rgb, out_dir, cameras=cams, fps=fps)
