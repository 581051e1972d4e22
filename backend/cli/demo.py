"""``ani3dhuman demo``: the main job on embedded defaults, one job folder per built-in motion."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from backend.cli.animate import add_job_arguments, garment_overrides, log_progress, spec_from_args
from backend.motion.builtin import BUILTIN_MOTIONS

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on embedded defaults (built-in motions)",
                       description="Animate the default subject with the built-in motions; writes "
                                   "OUT/<motion>/ job folders (plus renders).")
    add_job_arguments(p)
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--motions", nargs="+", choices=BUILTIN_MOTIONS, default=list(BUILTIN_MOTIONS))
    p.add_argument("--frames", type=int, default=48, help="frames per motion (default 48)")
    p.add_argument("--no-renders", dest="renders", action="store_false", help="skip preview renders")
    p.add_argument("--no-photo-demo", dest="photo_demo", action="store_false",
                   help="skip the photo journey (reference photo -> reconstruct -> animate)")
    p.add_argument("--no-fit-demo", dest="fit_demo", action="store_false",
                   help="skip the residual-field recovery demo (rigid vs fitted contact sheets, ~1-2 min)")
    p.set_defaults(run=run, renders=True)


def run_photo_demo(args: argparse.Namespace, body, out: Path) -> None:
    """Reference photo (synthetic, known truth) -> reconstruct -> animate, as a user would: the walk, and the twirl
    with and without clothing dynamics, compared side by side from behind and from the side."""
    import json

    from backend.stages.demo_photo import write_dynamics_comparison, write_reference_photo
    from backend.stages.job import JobSpec
    from backend.motion.builtin import builtin_motion
    from backend.stages.animate import animate

    walk = builtin_motion("walk", body, frames=args.frames)
    twirl = builtin_motion("twirl", body, frames=args.frames)
    photo, camera = write_reference_photo(body, walk, out / "photo_input", frame=0, seed=args.seed)
    log.info("demo: photo journey — reconstructing the person in %s, then animating the walk and the twirl", photo)
    common = dict(body=args.body, gaussians=args.gaussians, seed=args.seed, quality=args.quality,
                  image=str(photo.resolve()), camera=json.loads(camera.read_text()), reference_frame=0,
                  cloth_preset=args.cloth_preset, garment=garment_overrides(args))
    animate(JobSpec(motion=walk, renders=args.renders, dynamics=args.dynamics, **common), out / "photo_walk",
            log_progress)
    # The twirl's first frame stands like the walk's: the same photo serves both.
    animate(JobSpec(motion=twirl, renders=args.renders, dynamics="cloth", **common), out / "photo_twirl",
            log_progress)
    animate(JobSpec(motion=twirl, dynamics="none", **common), out / "photo_twirl_rigid", log_progress)
    folder = write_dynamics_comparison(out / "photo_twirl", out / "photo_twirl_rigid", out / "dynamics_twirl",
                                       fps=twirl.fps)["frames"]
    log.info("demo: clothing dynamics side by side (behind: cloth | rigid, side: cloth | rigid) in %s", folder)


def run(args: argparse.Namespace) -> int:
    from backend.body import load_body_model
    from backend.core.errors import InputError
    from backend.motion.builtin import builtin_motion
    from backend.stages.animate import animate

    if args.frames < 1:
        raise InputError(f"frames: expected ≥ 1, got {args.frames}")
    out = Path(args.out)
    body = load_body_model(args.body)
    for name in args.motions:
        motion = builtin_motion(name, body, frames=args.frames)
        spec = spec_from_args(args, motion)
        log.info("demo: %s (%d frames)", name, motion.num_frames)
        motions_dir = out / "motions"
        motions_dir.mkdir(parents=True, exist_ok=True)
        motion.save(motions_dir / f"{name}.npz")  # reusable with `ani3dhuman animate --motion`
        animate(spec, out / name, log_progress)
    if args.photo_demo:
        run_photo_demo(args, body, out)
    if args.fit_demo:
        from backend.stages.demo_recovery import write_recovery_demo

        log.info("demo: residual-field recovery scene (truth vs rigid vs fitted)")
        metrics = write_recovery_demo(out / "fit_recovery")
        log.info("demo: recovery metrics %s", metrics)
    log.info("demo: results under %s", out)
    return 0
