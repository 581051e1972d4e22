"""Preview renders of a finished job: the animation from a fixed front camera and a turntable.

Written under ``renders/animation/`` and ``renders/turntable/`` (PNG frames, cameras.json, contact sheet, MP4),
from the job's own exported frames, so the previews show exactly what the PLYs hold.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from backend.body.model import BodyModel
from backend.gaussians import Gaussians, load_ply
from backend.stages.job import JobSpec, frame_filename
from backend.render.render import RenderSettings, antialias_for
from backend.render.sequence import render_sequence, write_render_folder
from backend.render.trajectories import frame_subject, orbit_cameras

PREVIEW_WIDTH = 360
PREVIEW_HEIGHT = 480
PREVIEW_BACKGROUND = (0.12, 0.13, 0.16)


def write_previews(
    spec: JobSpec,
    body: BodyModel,
    canonical: Gaussians,
    job_dir: Path,
    report: Callable[[float, str], None],
    *,
    width: int = PREVIEW_WIDTH,
    height: int = PREVIEW_HEIGHT,
    fit_pixels_per_metre: float | None = None,
) -> dict[str, Path]:
    """Render the exported frames of ``job_dir`` (front view + turntable). Returns the written folders.
    Antialiased where the preview sees the subject coarser than it was fitted (``render.antialias_for``)."""
    num_frames = spec.motion.num_frames
    frames_dir = job_dir / "frames"

    def load(i: int) -> Gaussians:
        return load_ply(frames_dir / frame_filename(i))

    # Frame the whole animation: a sparse set of frames' means is enough for the bounding box.
    probe = torch.unique(torch.linspace(0, num_frames - 1, min(num_frames, 8)).round().long())
    points = torch.cat([load(int(i)).means for i in probe])
    framing = frame_subject(points, fov_y_deg=40.0, width=width, height=height)
    front = orbit_cameras(framing, num_frames=1, elevation_deg=10.0, width=width, height=height)
    settings = RenderSettings(background=PREVIEW_BACKGROUND,
                              antialiased=antialias_for(front, framing.center, fit_pixels_per_metre))
    # Clockwise seen from above, against the twirl's turn, so a subject that spins is still seen from all sides.
    turntable = orbit_cameras(framing, num_frames=num_frames, sweep_deg=-360.0, elevation_deg=10.0, width=width,
                              height=height)
    written = {}
    for index, (name, cameras) in enumerate((("animation", front), ("turntable", turntable))):
        def stage_report(fraction: float, message: str, index: int = index, name: str = name) -> None:
            report((index + fraction) / 2, f"{name}: {message}")

        images = render_sequence(load, cameras, num_frames=num_frames, settings=settings, report=stage_report)
        folder = job_dir / "renders" / name
        write_render_folder(images, folder, cameras=cameras, fps=spec.motion.fps)
        written[name] = folder
    return written
