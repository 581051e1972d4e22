"""``ani3dhuman render``: render a job's posed frames from given cameras (PNGs, contact sheet, MP4)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from backend.core.errors import InputError

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render", help="render a job's frames/frame_*.ply with given cameras",
        description="Render every frames/frame_*.ply of a job folder (or a folder of PLY frames) with the cameras "
                    "of a camera JSON (one camera for all frames, or one per frame). Writes frame_%%06d.png, "
                    "cameras.json, contact_sheet.png and video.mp4 into --out.")
    p.add_argument("--frames", required=True, help="job folder (with frames/) or a folder of frame_*.ply")
    p.add_argument("--cameras", required=True, help="camera JSON: one camera or {\"frames\": [...]}")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--backend", choices=("auto", "gsplat", "numba", "torch"), default="auto",
                   help="rasterizer (default auto)")
    p.add_argument("--antialias", choices=("auto", "on", "off"), default="auto",
                   help="antialiased mode (Mip-Splatting's 2D filter); auto: on where the cameras see the subject "
                        "coarser than the job's photo fit (result.json subject.fit_pixels_per_metre)")
    p.add_argument("--device", default="auto", help="'auto' (CUDA if available), 'cpu', 'cuda', 'mps'")
    p.add_argument("--background", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=("R", "G", "B"),
                   help="background colour in [0, 1] (default white)")
    p.add_argument("--fps", type=float, default=None, help="video frame rate (default: the job's fps, else 24)")
    p.set_defaults(run=run)


def find_frames(path: Path) -> tuple[list[Path], float | None, float | None]:
    """The sorted frame PLYs of a job folder or frames folder, and the job's fps and fit density
    (``subject.fit_pixels_per_metre``) if its result.json says them.

    Raises:
        InputError: no frame_*.ply there.
    """
    if not path.is_dir():
        raise NotADirectoryError(f"--frames: not a folder: {path}")
    folder = path / "frames" if (path / "frames").is_dir() else path
    plys = sorted(folder.glob("frame_*.ply"))
    if not plys:
        raise InputError(f"--frames: no frame_*.ply in {folder}")
    fps = density = None
    for result in (path / "result.json", folder.parent / "result.json"):
        if result.is_file():
            try:
                data = json.loads(result.read_text())
                fps = float(data.get("fps") or 0) or None
                density = (data.get("subject") or {}).get("fit_pixels_per_metre")
                density = None if density is None else float(density)
            except (ValueError, TypeError, json.JSONDecodeError, AttributeError):
                fps = density = None
            break
    return plys, fps, density


def run(args: argparse.Namespace) -> int:
    from backend.gaussians.ply import load_ply
    from backend.render import RenderSettings, load_cameras
    from backend.render.sequence import cameras_for_frames, render_sequence, write_render_folder

    plys, job_fps, fit_density = find_frames(Path(args.frames))
    cameras = load_cameras(args.cameras)
    cameras = cameras_for_frames(cameras, len(plys))
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if any(not 0.0 <= c <= 1.0 for c in args.background):
        raise InputError(f"--background: expected three values in [0, 1], got {list(args.background)}")
    if args.antialias == "auto":
        from backend.render.render import antialias_for

        antialiased = antialias_for(cameras, load_ply(plys[0]).means.mean(0), fit_density)
    else:
        antialiased = args.antialias == "on"
    settings = RenderSettings(backend=args.backend, background=tuple(args.background), antialiased=antialiased)

    def report(fraction: float, message: str) -> None:
        log.debug("%3.0f%% %s", 100 * fraction, message)

    frames = render_sequence(lambda i: load_ply(plys[i]), cameras, num_frames=len(plys), settings=settings,
                             device=device, report=report)
    paths = write_render_folder(frames, args.out, cameras=cameras, fps=args.fps or job_fps or 24.0)
    print(f"rendered {len(plys)} frames ({cameras.width}x{cameras.height}) -> {paths['frames']}")
    print(f"contact sheet: {paths['contact_sheet']}")
    print(f"video: {paths['video']}")
    return 0
