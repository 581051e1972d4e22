"""The demo's photo journey: a synthetic reference photo with known truth -> reconstruct -> animate.

The "photo" is a render of a textured subject with a skirt (``backend.reconstruct.synthetic``) posed at the
first frame of the walk and seen from a front camera; it is written as an RGBA PNG with its camera JSON, then
animated exactly as a user would: ``ani3dhuman animate --image photo.png --camera camera.json
--reference-frame 0 --motion walk.npz``.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from backend.body.model import BodyModel
from backend.motion import Motion, posed_frame, skin_gaussians
from backend.render import RenderSettings, render, save_cameras
from backend.render.video import to_uint8
from backend.reconstruct.synthetic import photo_cameras, skirted_subject

PHOTO_WIDTH = 384
PHOTO_HEIGHT = 512


def write_reference_photo(body: BodyModel, motion: Motion, out_dir: Path, *, frame: int = 0, seed: int = 0,
                          num_gaussians: int = 30_000) -> tuple[Path, Path]:
    """Render the truth subject at ``motion`` frame ``frame`` from the front; returns (photo.png, camera.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    subject = skirted_subject(body, num_gaussians, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        posed = body(torch.as_tensor(motion.betas), torch.as_tensor(motion.root_orient[frame:frame + 1]),
                     torch.as_tensor(motion.pose_body[frame:frame + 1]), torch.as_tensor(motion.trans[frame:frame + 1]))
        means, quats = skin_gaussians(subject, None, posed.joint_transforms)
        center = posed.vertices[0].mean(dim=0)
        camera = photo_cameras(center, [0.0], width=PHOTO_WIDTH, height=PHOTO_HEIGHT)
        image = render(posed_frame(subject, means[0], quats[0]), camera, settings=RenderSettings())
    # The render is premultiplied over black; a PNG stores straight colour.
    alpha = image.alpha[0]
    straight = torch.where(alpha > 1e-4, image.rgb[0] / alpha.clamp_min(1e-4), torch.zeros_like(image.rgb[0]))
    rgba = np.concatenate([to_uint8(straight.clamp(0, 1))[0], to_uint8(alpha)[0][..., :1]], axis=-1)
    photo = out_dir / "photo.png"
    iio.imwrite(photo, rgba)
    camera_path = out_dir / "camera.json"
    save_cameras(camera, camera_path)
    return photo, camera_path


def write_dynamics_comparison(with_cloth: Path, without: Path, out_dir: Path, *, fps: float = 24.0,
                              width: int = 240, height: int = 320) -> dict[str, Path]:
    """Side by side, frame by frame: [cloth | rigid garment] seen from behind, then [cloth | rigid] from the side
    (fixed world cameras: behind = azimuth 180°, side = 90°), from the two jobs' exported frames. Written with
    ``render.sequence.write_render_folder`` (PNG frames, contact sheet, MP4)."""
    from backend.gaussians import load_ply
    from backend.render.sequence import render_sequence, write_render_folder
    from backend.render.trajectories import frame_subject, orbit_cameras
    from backend.stages.job import frame_filename

    count = len(list((with_cloth / "frames").glob("frame_*.ply")))
    probe = torch.unique(torch.linspace(0, count - 1, min(count, 8)).round().long())
    points = torch.cat([load_ply(with_cloth / "frames" / frame_filename(int(i))).means for i in probe])
    framing = frame_subject(points, fov_y_deg=40.0, width=width, height=height)
    settings = RenderSettings(background=(0.12, 0.13, 0.16))
    columns = []
    for azimuth in (180.0, 90.0):
        camera = orbit_cameras(framing, num_frames=1, start_azimuth_deg=azimuth, elevation_deg=10.0, width=width,
                               height=height)
        for job in (with_cloth, without):
            columns.append(render_sequence(lambda i, job=job: load_ply(job / "frames" / frame_filename(i)), camera,
                                           num_frames=count, settings=settings))
    side_by_side = np.concatenate([np.asarray(c) for c in columns], axis=2)
    return write_render_folder(side_by_side, out_dir, fps=fps)
