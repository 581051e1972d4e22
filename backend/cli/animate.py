"""``ani3dhuman animate``: run one job from files and write its output folder."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from backend.core.errors import InputError
from backend.reconstruct.garment import GARMENT_TYPES
from backend.stages.job import CLOTH_PRESET_NAMES, DYNAMICS, QUALITY_PRESETS, JobSpec
from backend.motion import load_motion
from backend.core.progress import ProgressEvent

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("animate", help="animate a subject with a motion file; writes a job folder",
                       description="Animate a subject with an SMPL/SMPL-X motion and write the job output folder "
                                   "(result.json, canonical.ply, frames/frame_%%06d.ply).")
    add_job_arguments(p)
    p.add_argument("--motion", required=True, help="motion .npz (AMASS SMPL-X, AMASS poses, or SMPL poses)")
    p.add_argument("--out", required=True, help="output job folder (written atomically)")
    p.set_defaults(run=run)


def add_job_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``animate`` and ``demo``."""
    p.add_argument("--body", default="default", help="'default' (embedded mannequin) or an SMPL/SMPL-X model file")
    p.add_argument("--gaussians", type=int, default=40_000, help="number of canonical Gaussians (default 40000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quality", choices=QUALITY_PRESETS, default="preview", help="quality preset")
    p.add_argument("--prior", default="none", help="video prior model id, or 'none' for the rigid layer only")
    p.add_argument("--image", default=None, help="reference image of the person (RGBA preferred)")
    p.add_argument("--camera", default=None, help="reference camera JSON (Blender convention)")
    p.add_argument("--reference-frame", type=int, default=None, help="motion frame whose pose matches the photo")
    p.add_argument("--import-gaussians", default=None, help="canonical 3DGS PLY to bind to the body (e.g. LHM output)")
    p.add_argument("--reference-pose", default=None,
                   help="motion file whose --reference-frame is the photo's pose (default: the job's motion)")
    p.add_argument("--align", action="store_true",
                   help="refine the body's global scale and position to the photo's silhouette before fitting")
    p.add_argument("--import-pose", choices=("auto", "rest", "apose"), default="auto",
                   help="pose of the --import-gaussians PLY: the body's rest pose, an A-pose, or detect (default)")
    p.add_argument("--renders", action="store_true", help="also write preview renders under renders/")
    add_dynamics_arguments(p)
    add_sampler_arguments(p)


def add_dynamics_arguments(p: argparse.ArgumentParser) -> None:
    """``--dynamics``, ``--cloth-preset`` and the garment override."""
    g = p.add_argument_group("clothing dynamics")
    g.add_argument("--dynamics", choices=DYNAMICS, default="auto",
                   help="cloth: simulate a loose garment (skirt, dress) with newton; none: skin it rigidly; "
                        "auto (default): cloth when a loose garment is found")
    g.add_argument("--cloth-preset", choices=CLOTH_PRESET_NAMES, default="medium", help="fabric of the simulation")
    g.add_argument("--garment", choices=GARMENT_TYPES, default="auto",
                   help="override the garment detection: skirt, dress, none (every Gaussian on the body), auto")
    g.add_argument("--waist-height", type=float, default=None,
                   help="top of the garment, metres above the soles in the rest pose (default: detected)")
    g.add_argument("--hem-height", type=float, default=None,
                   help="hem of the garment, metres above the soles in the rest pose (default: detected)")


def garment_overrides(args: argparse.Namespace) -> dict:
    """The job's ``garment`` object from the command line (only what was given)."""
    values = {"type": args.garment, "waist_height": args.waist_height, "hem_height": args.hem_height}
    return {key: value for key, value in values.items() if value is not None and value != "auto"}


def add_sampler_arguments(p: argparse.ArgumentParser) -> None:
    """``--sampler paper|released`` and the individual overrides of the restoration's sampler."""
    g = p.add_argument_group("sampler (with --prior)")
    g.add_argument("--sampler", choices=("paper", "released"), default="paper",
                   help="paper: γ = σ, steps and strength from --quality; released: the released code's "
                        "7 steps, strength 0.7, λ 0.05, γ = 1, CFG 5, 81 frames at 480x832")
    g.add_argument("--steps", type=int, default=None, help="sampler steps")
    g.add_argument("--strength", type=float, default=None, help="SDEdit strength s in (0, 1]")
    g.add_argument("--shift", type=float, default=None, help="timestep shift")
    g.add_argument("--guidance", type=float, default=None, help="self-guidance weight λ in [0, 1]")
    g.add_argument("--guidance-schedule", choices=("linear", "constant"), default=None,
                   help="λ_i = λ·(1−σ_i) (linear) or λ (constant)")
    g.add_argument("--gamma", default=None, help="fresh-noise fraction: sigma (paper), full (released) or a number")
    g.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale (>= 1)")


def sampler_overrides(args: argparse.Namespace) -> dict:
    """The sampler fields given on the command line."""
    from backend.diffusion.restore import SAMPLER_FIELDS, parse_gamma

    values = {name: getattr(args, name) for name in SAMPLER_FIELDS if getattr(args, name, None) is not None}
    if "gamma" in values:
        values["gamma"] = parse_gamma(values["gamma"])
    return values


def read_camera_json(path: str | None) -> dict | None:
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"camera file not found: {file}")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"camera: {file} is not valid JSON ({exc})") from exc


def spec_from_args(args: argparse.Namespace, motion) -> JobSpec:
    for name in ("image", "import_gaussians", "reference_pose"):
        value = getattr(args, name)
        if value is not None and not Path(value).is_file():
            raise FileNotFoundError(f"{name.replace('_', '-')} file not found: {value}")
    return JobSpec(
        motion=motion,
        body=args.body,
        gaussians=args.gaussians,
        seed=args.seed,
        quality=args.quality,
        prior=args.prior,
        image=None if args.image is None else str(Path(args.image).resolve()),
        camera=read_camera_json(args.camera),
        reference_frame=args.reference_frame,
        import_gaussians=None if args.import_gaussians is None else str(Path(args.import_gaussians).resolve()),
        renders=args.renders,
        sampler=args.sampler,
        sampler_settings=sampler_overrides(args),
        dynamics=args.dynamics,
        cloth_preset=args.cloth_preset,
        garment=garment_overrides(args),
        extras=_reconstruct_extras(args),
    )


def _reconstruct_extras(args: argparse.Namespace) -> dict:
    extras: dict = {}
    if args.align:
        extras["align"] = True
    if args.import_pose != "auto":
        extras["import_pose"] = args.import_pose
    if args.reference_pose is not None:
        extras["reference_pose"] = str(Path(args.reference_pose).resolve())
    return extras


def log_progress(event: ProgressEvent) -> None:
    eta = "" if event.eta_s is None else f", ETA {event.eta_s:.0f}s"
    log.info("[%5.1f%%] %s: %s%s", 100 * event.fraction, event.stage, event.message, eta)


def run(args: argparse.Namespace) -> int:
    from backend.stages.animate import animate

    motion = load_motion(args.motion)
    spec = spec_from_args(args, motion)
    result = animate(spec, args.out, log_progress)
    log.info("wrote %s: %d frames, %d Gaussians", args.out, result["frames"], result["gaussians"])
    return 0
