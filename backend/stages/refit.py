"""Fit the residual field of an existing job folder to given videos (``ani3dhuman fit``), no prior involved.

Reads the job's ``canonical.ply`` (with its skin binding), its motion (``motion.npz`` in the job folder, or a
motion file given explicitly) and body, fits a new field to the videos (the layout of ``backend.train.dataset``)
and writes a job folder with ``field/`` and re-exported ``frames/`` — a new one at ``out_dir``, or the given
one replaced atomically (temporary sibling + rename). Fit checkpoints live in ``.<out>.checkpoint/`` beside the
output until it completes, so a stopped fit run again with the same arguments resumes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from backend.body import load_body_model
from backend.core.errors import InputError
from backend.gaussians import load_ply, save_ply
from backend.core.files import atomic_directory, write_json
from backend.stages.export import write_frames
from backend.stages.job import CLOTH_NAME, read_result
from backend.stages.posing import pose_body
from backend.motion.cloth import ClothLayer
from backend.motion.layered import LayeredMotion
from backend.motion.motion import Motion, load_motion
from backend.motion.residual import FieldConfig, ResidualField
from backend.core.progress import ProgressFn, StageProgress, no_progress
from backend.train.dataset import load_videos
from backend.train.field_fit import FieldFitSettings, create_fit_state, fit_field, settings_dict, with_appearance
from backend.stages.presets import BACKGROUND, field_config_for, field_fit_settings_for, preset

log = logging.getLogger(__name__)

MOTION_NAME = "motion.npz"
APPEARANCE_DEFAULT = True
"""Whether ``fit`` refines colours by default (docs/fit.md has the measurement behind the choice)."""
ITERATIONS_PER_FRAME = 10
"""The fit's default budget: this many iterations per video frame given (one frame per iteration), at least
the job's quality preset."""
MAX_DEFAULT_ITERATIONS = 20_000
"""The scaled budget stops here (with a warning); ``--iterations`` goes beyond."""


def default_iterations(num_video_frames: int, preset_iterations: int, warnings: list[str]) -> int:
    """The budget rule: ``max(preset, ITERATIONS_PER_FRAME × frames)``, capped at ``MAX_DEFAULT_ITERATIONS``."""
    wanted = max(preset_iterations, ITERATIONS_PER_FRAME * num_video_frames)
    if wanted > MAX_DEFAULT_ITERATIONS:
        warnings.append(f"fit: {num_video_frames} video frames would give {wanted} iterations; capped at "
                        f"{MAX_DEFAULT_ITERATIONS} (pass --iterations for more)")
        return MAX_DEFAULT_ITERATIONS
    return wanted


def _job_motion(job_dir: Path, motion_path: str | os.PathLike | None) -> Motion:
    path = Path(motion_path) if motion_path is not None else job_dir / MOTION_NAME
    if not path.is_file():
        raise InputError(f"motion: {path} not found; this job folder has no {MOTION_NAME}, pass --motion FILE "
                         f"(the motion the job was animated with)")
    return load_motion(path)


def fit_job_folder(
    job_dir: str | os.PathLike,
    videos_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    motion_path: str | os.PathLike | None = None,
    iterations: int | None = None,
    settings: FieldFitSettings | None = None,
    field_config: FieldConfig | None = None,
    seed: int | None = None,
    appearance: bool = APPEARANCE_DEFAULT,
    progress: ProgressFn = no_progress,
) -> dict:
    """Fit a field for ``job_dir`` to ``videos_dir`` and write the updated job folder.

    Args:
        job_dir: A finished job folder (result.json, canonical.ply with skin binding).
        videos_dir: Clip folders (PNG frames + cameras.json with motion frames, optional masks).
        out_dir: Where the updated job goes; None = replace ``job_dir`` atomically.
        motion_path: The job's motion when the folder has no ``motion.npz``.
        iterations: Fit iterations (default: ``default_iterations``, scaled with the amount of video).
        settings: Full FieldFitSettings (overrides ``iterations`` and the preset's).
        field_config: Field shape (default: the job's quality preset, box around the canonical Gaussians).
        seed: Seed of the fit (default: the job's).
        appearance: Also refine colours and opacities from the videos (``FieldFitSettings.appearance``); the
            refined Gaussians become ``canonical.ply`` and the reconstruction's are kept as
            ``canonical_reconstructed.ply``.
        progress: Progress callback (stage "fit", then "export"); may raise Cancelled.

    Returns:
        The new result.json content.
    """
    job_dir = Path(job_dir)
    out_dir = Path(out_dir) if out_dir is not None else job_dir
    started = time.monotonic()
    settings_given = settings is not None
    result = read_result(job_dir)
    canonical = load_ply(job_dir / "canonical.ply")
    if canonical.skin_weights is None:
        raise InputError(f"job: {job_dir / 'canonical.ply'} carries no skin weights (not a job canonical)")
    motion = _job_motion(job_dir, motion_path)
    if "frames" in result and int(result["frames"]) != motion.num_frames:
        raise InputError(f"motion: the job has {result['frames']} frames, the motion {motion.num_frames}")
    body = load_body_model(result.get("body", "default"))
    if canonical.skin_weights.shape[1] != body.num_joints:
        raise InputError(f"job: canonical.ply is bound to {canonical.skin_weights.shape[1]} joints, the body "
                         f"'{result.get('body', 'default')}' has {body.num_joints}")
    quality = result.get("quality", "preview")
    p = preset(quality)
    background = settings.background if settings is not None else BACKGROUND
    dataset = load_videos(videos_dir, motion.num_frames, background)
    warnings: list[str] = []
    if settings is None:
        budget = iterations if iterations is not None else default_iterations(len(dataset), p.iterations, warnings)
        settings = field_fit_settings_for(p, iterations=budget, appearance=appearance)
    config = field_config or field_config_for(canonical, p)
    seed = int(result.get("seed", 0) if seed is None else seed)

    posed = pose_body(motion, body)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    canonical = canonical.to(device)
    joint_transforms = posed.joint_transforms.float().to(device)

    timings: dict[str, float] = {}
    ckpt = out_dir.parent / f".{out_dir.name}.checkpoint"
    field_ = ResidualField(config, torch.Generator().manual_seed(seed)).to(device)
    state = create_fit_state(field_, settings, seed, canonical.num_gaussians)
    t0 = time.perf_counter()
    cloth = ClothLayer.load(job_dir / CLOTH_NAME) if (job_dir / CLOTH_NAME).is_file() else None
    if cloth is not None and cloth.num_frames != motion.num_frames:
        raise InputError(f"job: {CLOTH_NAME} has {cloth.num_frames} frames, the motion {motion.num_frames}")
    fit_field(state, canonical, joint_transforms, dataset, settings, checkpoint_dir=ckpt,
              report=StageProgress(progress, "fit", 0.0, 0.85, started), cloth=cloth)
    timings["fit"] = round(time.perf_counter() - t0, 4)

    layered = LayeredMotion(state.field, cloth)
    fitted = with_appearance(canonical, state.appearance).detach()
    report = StageProgress(progress, "export", 0.85, 1.0, started)
    t0 = time.perf_counter()
    with atomic_directory(out_dir) as tmp:
        for entry in job_dir.iterdir():
            if entry.name in ("frames", "field", "result.json"):
                continue
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, tmp / entry.name)
        if state.appearance is not None:
            if not (tmp / "canonical_reconstructed.ply").exists():
                os.replace(tmp / "canonical.ply", tmp / "canonical_reconstructed.ply")
            save_ply(fitted.to(torch.device("cpu")), tmp / "canonical.ply")
        if not (tmp / MOTION_NAME).exists():
            motion.save(tmp / MOTION_NAME)
        state.field.save(tmp / "field")
        (tmp / "field" / "fit.json").write_text(json.dumps({
            "videos": str(Path(videos_dir).resolve()), "clips": [c.name for c in dataset.clips],
            "frames": len(dataset), "seed": seed, "iterations": state.iteration, "fit": settings_dict(settings),
            "field": asdict(config)}, indent=2) + "\n")
        (tmp / "frames").mkdir()
        write_frames(fitted, layered, lambda chunk: joint_transforms[chunk], motion.num_frames, tmp / "frames",
                     report)
        timings["export"] = round(time.perf_counter() - t0, 4)
        new_result = dict(result)
        new_result["layered"] = True
        new_result["timings"] = {**result.get("timings", {}), **{f"refit {k}": v for k, v in timings.items()}}
        new_result["fit"] = {"videos": str(Path(videos_dir).resolve()), "iterations": state.iteration,
                             "cloth_layer": None if cloth is None else cloth.source,
                             "appearance": state.appearance is not None,
                             "video_frames": len(dataset), "budget": "given" if iterations is not None or
                             settings_given else f"max(preset {p.iterations}, {ITERATIONS_PER_FRAME} per frame)"}
        new_result["warnings"] = list(result.get("warnings", [])) + warnings
        write_json(tmp / "result.json", new_result)
    shutil.rmtree(ckpt, ignore_errors=True)
    StageProgress(progress, "done", 1.0, 1.0, started)(1.0, f"fitted on {len(dataset)} frames")
    return new_result
