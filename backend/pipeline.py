"""``animate(spec, out_dir, progress)``: stage orchestration, no sockets, no argument parsing.

Stages: body -> canonical Gaussians (procedural / reconstruct / import) -> rigid skinning -> [prior stages:
diagonal renders, restoration, residual-field fit, rounds] -> export per-frame Gaussians (+ renders) ->
result.json. The CLI (``ani3dhuman animate``) and the server run exactly this function.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from backend import __version__
from backend.body import BodyModel, load_body_model
from backend.errors import CapabilityError, InputError
from backend.gaussians import Gaussians, save_ply
from backend.jobs import SCHEMA_VERSION, JobSpec, atomic_directory, frame_filename, write_json
from backend.motion.skinning import posed_frame, skin_gaussians
from backend.progress import ProgressFn, StageProgress, no_progress

log = logging.getLogger(__name__)

FRAMES_PER_CHUNK = 32


class _Timer:
    """Collects wall-clock seconds per stage for result.json: ``with timer.stage(name): ...``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 4)


def motion_tensors(spec: JobSpec, body: BodyModel) -> dict[str, torch.Tensor | None]:
    """The motion as tensors for ``body(...)``."""
    m = spec.motion
    as_t = lambda a: None if a is None else torch.as_tensor(a, dtype=body.dtype, device=body.device)  # noqa: E731
    return {"betas": as_t(m.betas), "root_orient": as_t(m.root_orient), "pose_body": as_t(m.pose_body),
            "trans": as_t(m.trans), "pose_hand": as_t(m.pose_hand)}


def pose_body(spec: JobSpec, body: BodyModel, frames: slice | None = None):
    """Run the body model over the motion (optionally a frame slice). Returns BodyOutput."""
    t = motion_tensors(spec, body)
    sel = frames or slice(None)
    with torch.no_grad():
        return body(t["betas"], t["root_orient"][sel], t["pose_body"][sel], t["trans"][sel],
                    None if t["pose_hand"] is None else t["pose_hand"][sel])


def canonical_gaussians(spec: JobSpec, body: BodyModel, report: Callable[..., None],
                        warnings: list[str]) -> Gaussians:
    """The subject in the body's rest pose: imported, reconstructed from the photo, or procedural."""
    generator = torch.Generator().manual_seed(spec.seed)
    if spec.import_gaussians is not None or spec.image is not None:
        try:
            from backend.reconstruct import subject_from_spec
        except ImportError as exc:
            raise CapabilityError(
                "reconstruction from an image / Gaussian import is not available in this build "
                f"({exc}); run without --image/--import-gaussians") from exc
        return subject_from_spec(spec, body, generator, report, warnings)
    from backend.reconstruct import sample_body_gaussians

    report(0.0, f"sampling {spec.gaussians} Gaussians on the body surface")
    betas = torch.as_tensor(spec.motion.betas, dtype=body.dtype)
    return sample_body_gaussians(body, betas, spec.gaussians, generator)


def stage_plan(spec: JobSpec) -> dict[str, tuple[float, float]]:
    """Slice of the job's [0, 1] progress per stage, proportional to its usual share of the run time."""
    weights = {
        "body": 0.02,
        "reconstruct": 0.35 if spec.image is not None else 0.03,
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


def animate(spec: JobSpec, out_dir: str | os.PathLike, progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Run one job and write its output folder atomically (DESIGN.md §3).

    Args:
        spec: The validated job.
        out_dir: Destination folder; an existing job folder there is replaced only when this one completes.
        progress: Called with ProgressEvent; may raise ``Cancelled`` to stop (nothing is left at ``out_dir``).

    Returns:
        The result.json content.
    """
    out_dir = Path(out_dir)
    timer = _Timer()
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
            canonical = canonical_gaussians(spec, body, report, warnings)
            if canonical.skin_weights is None or canonical.skin_weights.shape[1] != body.num_joints:
                raise InputError("canonical Gaussians are not bound to this body's joints")
            save_ply(canonical, tmp / "canonical.ply")
            spec.motion.save(tmp / "motion.npz")  # lets `ani3dhuman fit` refit this job later
        report(1.0, f"{canonical.num_gaussians} canonical Gaussians")

        residual = None
        if has_prior:
            try:
                from backend.train.loop import run_prior_stages
            except ImportError as exc:
                raise CapabilityError(f"prior {spec.prior!r}: the restoration/fit stages are not available ({exc})") from exc
            report = StageProgress(progress, "restore", *plan["restore"], started)
            residual = run_prior_stages(spec, body, canonical, tmp, report, timer, warnings)

        report = StageProgress(progress, "export", *plan["export"], started)
        frames_dir = tmp / "frames"
        frames_dir.mkdir()
        num_frames = spec.motion.num_frames
        with timer.stage("skin+export"):
            for start in range(0, num_frames, FRAMES_PER_CHUNK):
                chunk = slice(start, min(start + FRAMES_PER_CHUNK, num_frames))
                posed = pose_body(spec, body, chunk)
                if residual is not None:
                    frames = residual.posed_frames(canonical, posed.joint_transforms, chunk, num_frames)
                else:
                    means, quats = skin_gaussians(canonical, None, posed.joint_transforms)
                    frames = [posed_frame(canonical, means[i], quats[i]) for i in range(means.shape[0])]
                for offset, frame in enumerate(frames):
                    index = start + offset
                    save_ply(frame, frames_dir / frame_filename(index), binding=False)
                    report((index + 1) / num_frames, f"frame {index + 1}/{num_frames}")

        if spec.renders:
            report = StageProgress(progress, "render", *plan["render"], started)
            with timer.stage("render"):
                from backend.render.previews import write_previews

                write_previews(spec, body, canonical, tmp, report)

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
            "layered": residual is not None,
            "timings": timer.timings,
            "warnings": warnings,
            "settings": spec.settings_dict(),
            "files": {"canonical": "canonical.ply", "frames": "frames/frame_%06d.ply"},
        }
        write_json(tmp / "result.json", result)
        progress_done = StageProgress(progress, "done", 1.0, 1.0, started)
        progress_done(1.0, f"wrote {num_frames} frames")
    for message in warnings:
        log.warning(message)
    return result
