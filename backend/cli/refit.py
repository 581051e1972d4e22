"""``ani3dhuman fit``: fit the residual field of an existing job folder to given videos (no prior)."""

from __future__ import annotations

import argparse
import logging

from backend.core.errors import InputError

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit", help="fit the residual field of a job folder to videos",
        description="Fit the layered motion's residual field to videos (per trajectory: PNG frames + cameras.json "
                    "with motion_frames, optional mask_*.png) for an existing job folder; writes field/ and "
                    "re-exported frames/ atomically. A stopped fit resumes when run again with the same arguments.")
    p.add_argument("--job", required=True, help="existing job folder (from 'ani3dhuman animate')")
    p.add_argument("--videos", required=True, help="folder of clip folders (or one clip folder)")
    p.add_argument("--out", default=None, help="output job folder (default: update --job in place, atomically)")
    p.add_argument("--iterations", type=int, default=None, help="fit iterations (default: the job's quality preset)")
    p.add_argument("--motion", default=None, help="the job's motion file, if the job folder has no motion.npz")
    p.add_argument("--seed", type=int, default=None, help="seed of the fit (default: the job's)")
    p.add_argument("--appearance", choices=("on", "off"), default=None,
                   help="also refine colours and opacities from the videos, identity held to the photo "
                        "(default: see docs/fit.md)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from backend.cli.animate import log_progress
    from backend.stages.refit import fit_job_folder

    if args.iterations is not None and args.iterations < 1:
        raise InputError(f"iterations: expected a positive integer, got {args.iterations}")
    from backend.stages.refit import APPEARANCE_DEFAULT

    appearance = APPEARANCE_DEFAULT if args.appearance is None else args.appearance == "on"
    result = fit_job_folder(args.job, args.videos, args.out, motion_path=args.motion, iterations=args.iterations,
                            seed=args.seed, appearance=appearance, progress=log_progress)
    log.info("wrote %s: field fitted over %d iterations, %d frames re-exported", args.out or args.job,
             result["fit"]["iterations"], result["frames"])
    return 0
