"""``animate(spec, out_dir, progress)``: stage orchestration, no sockets, no argument parsing.

Stages: body -> canonical Gaussians (procedural / reconstruct / import) + garment -> cloth layer (simulated or
skinned garment) -> rigid skinning -> [prior stages:
diagonal renders, restoration, residual-field fit, rounds] -> export per-frame Gaussians (+ renders) ->
result.json. The CLI (``ani3dhuman animate``) and the server run exactly this function.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from backend import __version__
from backend.body import load_body_model
from backend.core.errors import InputError
from backend.core.files import atomic_directory, write_json
from backend.core.progress import ProgressFn, StageProgress, StageTimer, no_progress
from backend.gaussians import save_ply
from backend.stages.export import write_frames
from backend.motion.layered import LayeredMotion
from backend.stages.job import CLOTH_NAME, SCHEMA_VERSION, JobSpec
from backend.stages.posing import pose_body
from backend.stages.previews import write_previews
from backend.stages.prior_rounds import Restorer, run_prior_stages
from backend.stages.garment import garment_layer
from backend.stages.subject import job_subject

log = logging.getLogger(__name__)


def stage_plan(spec: JobSpec) -> dict[str, tuple[float, float]]:
    """Slice of the job's [0, 1] progress per stage, proportional to its usual share of the run time."""
    weights = {
        "body": 0.02,
        "reconstruct": 0.35 if spec.image is not None else 0.03,
        "cloth": 0.15 if spec.dynamics != "none" else 0.01,
        "restore": 0.55 if spec.prior != "none" else 0.0,
        "export": 0.1,
        "render": 0.3 if spec.renders else 0.0,
    }
    total = sum(weights.values())
    plan, start = {}, 0.0
    for name, weight in weights.items():
        plan[name] = (start, start + weight / total)
        start += weight / total
    return plan


def animate(spec: JobSpec, out_dir: str | os.PathLike, progress: ProgressFn = no_progress, *,
            restorer: Restorer | None = None) -> dict[str, Any]:
    """Run one job and write its output folder atomically (docs/design.md §3).

    Args:
        spec: The validated job.
        out_dir: Destination folder; an existing job folder there is replaced only when this one completes.
        progress: Called with ProgressEvent; may raise ``Cancelled`` to stop (nothing is left at ``out_dir``).
        restorer: Where the prior's restorations run (``backend.farm.RayRestorer``); default in this process.

    Returns:
        The result.json content.
    """
    out_dir = Path(out_dir)
    timer = StageTimer()
    warnings: list[str] = []
    started = time.monotonic()
    torch.manual_seed(spec.seed)  # for any library code that draws from the global generator
    has_prior = spec.prior != "none"
    plan = stage_plan(spec)

    with atomic_directory(out_dir) as tmp:
        report = StageProgress(progress, "body", *plan["body"], started)
        report(0.0, f"loading body model '{spec.body}'")
        with timer.stage("body"):
            body = load_body_model(spec.body)
        report(1.0, f"body model: {body.num_vertices} vertices, {body.num_joints} joints")

        report = StageProgress(progress, "reconstruct", *plan["reconstruct"], started)
        with timer.stage("reconstruct"):
            subject: dict = {}
            found = job_subject(spec, body, report, warnings, subject)
            canonical = found.canonical
            if canonical.skin_weights is None or canonical.skin_weights.shape[1] != body.num_joints:
                raise InputError("canonical Gaussians are not bound to this body's joints")
            spec.motion.save(tmp / "motion.npz")  # lets `ani3dhuman fit` refit this job later
        report(1.0, f"{canonical.num_gaussians} canonical Gaussians")

        report = StageProgress(progress, "cloth", *plan["cloth"], started)
        cloth, dynamics_record = garment_layer(spec, body, canonical, found.garment, report, timer, warnings)
        subject["garment"] = {**subject.get("garment", {}), "gaussians": 0 if cloth is None else
                              cloth.binding.num_bound}
        if cloth is not None:
            cloth.save(tmp / CLOTH_NAME)

        layered = None if cloth is None else LayeredMotion(None, cloth)
        prior_record = None
        if has_prior:
            report = StageProgress(progress, "restore", *plan["restore"], started)
            layered, prior_record, refined = run_prior_stages(
                spec, body, canonical, tmp, report, timer, warnings, restorer,
                fit_pixels_per_metre=subject["fit_pixels_per_metre"], cloth=cloth)
            if refined is not None:  # colours refined from the restored videos: keep the reconstruction's too
                save_ply(canonical, tmp / "canonical_reconstructed.ply")
                canonical = refined
        save_ply(canonical, tmp / "canonical.ply")

        report = StageProgress(progress, "export", *plan["export"], started)
        frames_dir = tmp / "frames"
        frames_dir.mkdir()
        num_frames = spec.motion.num_frames
        with timer.stage("skin+export"):
            write_frames(canonical, layered, lambda chunk: pose_body(spec.motion, body, chunk).joint_transforms,
                         num_frames, frames_dir, report)

        if spec.renders:
            report = StageProgress(progress, "render", *plan["render"], started)
            with timer.stage("render"):
                write_previews(spec, body, canonical, tmp, report,
                               fit_pixels_per_metre=subject["fit_pixels_per_metre"])

        result = {
            "schema_version": SCHEMA_VERSION,
            "status": "complete",
            "backend_version": __version__,
            "frames": num_frames,
            "fps": spec.motion.fps,
            "gaussians": canonical.num_gaussians,
            "body": spec.body,
            "joints": body.num_joints,
            "prior": spec.prior,
            "seed": spec.seed,
            "quality": spec.quality,
            "layered": layered is not None and layered.field is not None,
            "dynamics": dynamics_record,
            "subject": subject,
            "sampler": None if prior_record is None else prior_record["sampler"],
            "prior_stages": None if prior_record is None else {
                "mask_source": prior_record["mask_source"], "round_losses": prior_record["round_losses"]},
            "timings": timer.timings,
            "warnings": warnings,
            "settings": spec.settings_dict(),
            "files": {"canonical": "canonical.ply", "frames": "frames/frame_%06d.ply",
                      **({"cloth": CLOTH_NAME} if cloth is not None else {})},
        }
        write_json(tmp / "result.json", result)
        progress_done = StageProgress(progress, "done", 1.0, 1.0, started)
        progress_done(1.0, f"wrote {num_frames} frames")
    for message in warnings:
        log.warning(message)
    return result
