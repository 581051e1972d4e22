"""The prior stages of ``animate`` (docs/method.md §3-§7): progressive rounds of render -> restore -> fit.

Each round renders new diagonal view–time trajectories from the current layered model ("coarse"), restores
them with the self-guided sampler and the video prior (``backend.diffusion.restore``), adds the restored
videos to the training set and trains the residual field further; the learning-rate schedule spans all rounds
(the paper: a round every 5k of 25k iterations). At the end the final model is rendered along every trajectory.

Job folder outputs (inside the job's temporary folder): ``renders/{coarse,restored,final}/<trajectory>/``
(PNG frames, cameras.json with motion frames, contact_sheet.png, video.mp4) and ``field/``
(``field.safetensors`` + ``config.json`` + ``fit.json``). Restored videos and fit checkpoints are kept in a
hidden sibling of the job folder (``.<job>.checkpoint/``) until the job completes, so a stopped job run again
with the same output folder and seed skips finished restorations and resumes the fit.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from backend.gaussians import Gaussians
from backend.motion.cloth import ClothLayer
from backend.motion.layered import LayeredMotion, layered_frame
from backend.motion.residual import ResidualField, normalized_time
from backend.motion.skinning import skin_gaussians
from backend.core.progress import StageProgress
from backend.render.render import RenderSettings, antialias_for, render
from backend.render.trajectories import ViewTimeTrajectory, diagonal_trajectory, frame_subject
from backend.train.dataset import VideoClip, VideoDataset, read_clip, write_clip
from backend.train.field_fit import create_fit_state, fit_field, settings_dict, with_appearance
from backend.stages.posing import pose_body
from backend.stages.presets import BACKGROUND, field_config_for, field_fit_settings_for, job_preset

log = logging.getLogger(__name__)

GOLDEN_ANGLE_DEG = 137.50776405


def trajectory_azimuths(count: int, first_deg: float = 0.0) -> list[float]:
    """Starting azimuths of successive trajectories: the golden-angle sequence (front first), so any prefix of
    rounds covers the subject roughly evenly."""
    return [(first_deg + k * GOLDEN_ANGLE_DEG) % 360.0 for k in range(count)]


def render_video(canonical: Gaussians, field_: ResidualField | None, joint_transforms: Tensor,
                 trajectory: ViewTimeTrajectory, motion_frames: Tensor, num_motion_frames: int,
                 settings: RenderSettings, cloth: ClothLayer | None = None) -> tuple[Tensor, Tensor, list[Gaussians]]:
    """Render the layered model (with the cloth layer's garment when given) along a trajectory.
    Returns (rgb [F, H, W, 3], alpha [F, H, W, 1], posed sets)."""
    rgbs, alphas, posed = [], [], []
    device = canonical.means.device
    with torch.no_grad():
        for i, frame in enumerate(motion_frames.tolist()):
            t = normalized_time(frame, num_motion_frames).item()
            g = layered_frame(canonical, field_, joint_transforms[frame].to(device), t,
                              cloth=None if cloth is None else cloth.frame(frame, device, canonical.means.dtype))
            out = render(g, trajectory.cameras[i:i + 1].to(device), settings=settings)
            rgbs.append(out.rgb[0].cpu())
            alphas.append(out.alpha[0].cpu())
            posed.append(g.detach())
    return torch.stack(rgbs).clamp(0, 1), torch.stack(alphas), posed


def write_stage_video(root: Path, clip: VideoClip, num_motion_frames: int, times: Tensor | None, fps: float) -> None:
    """``root/<clip>/``: PNG frames + cameras.json (with motion frames), ``contact_sheet.png`` and ``video.mp4``
    (the layout of ``backend.render.sequence.write_render_folder`` plus the motion-time mapping)."""
    from backend.render.video import write_contact_sheet, write_mp4

    folder = write_clip(root / clip.name, clip, num_motion_frames, times)
    write_contact_sheet(clip.frames, folder / "contact_sheet.png")
    try:
        write_mp4(clip.frames, folder / "video.mp4", fps=fps)
    except Exception as exc:  # noqa: BLE001 — the MP4 is a convenience; the PNGs are the record
        log.warning("could not write %s/video.mp4: %s", clip.name, exc)


def checkpoint_root(tmp_dir: Path) -> Path:
    """The hidden sibling that outlives a stopped job: ``.<job>.checkpoint`` next to the job folder."""
    match = re.fullmatch(r"\.(.+)\.tmp-\d+-\d+", tmp_dir.name)
    name = match.group(1) if match else tmp_dir.name
    return tmp_dir.parent / f".{name}.checkpoint"


def _reference_image(path: str | None) -> Tensor | None:
    if path is None:
        return None
    import numpy as np
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0)


@dataclass(frozen=True)
class RestoreJob:
    """One restoration of a round: the coarse video and what ``backend.diffusion.restore.restore`` needs."""

    name: str
    coarse: Tensor
    cameras: object
    conditions: object
    settings: object


class Restorer(Protocol):
    """Runs a round's restorations; the result does not depend on how (serial, or parallel tasks)."""

    name: str
    device: torch.device

    def restore_all(self, jobs: list[RestoreJob], report_for: Callable[[int], StageProgress]) -> list[Tensor]:
        """The restored videos, in the order of ``jobs``, each ``[F, H, W, 3]``; ``report_for(i)`` reports job i."""

    def release(self) -> None:
        """Free what the restorations held (GPU memory)."""


@dataclass
class LocalRestorer:
    """Restorations one after the other in this process, with the prior loaded here."""

    prior: object
    name: str = "this process"

    @classmethod
    def load(cls, prior_id: str) -> LocalRestorer:
        from backend.diffusion.wan import WanPrior

        return cls(WanPrior.from_pretrained(prior_id))

    @property
    def device(self) -> torch.device:
        return self.prior.device if self.prior.device.type == "cuda" else torch.device("cpu")

    def restore_all(self, jobs: list[RestoreJob], report_for: Callable[[int], StageProgress]) -> list[Tensor]:
        from backend.diffusion.restore import restore

        return [restore(job.coarse, job.cameras, job.conditions, job.settings, report_for(i), prior=self.prior)
                for i, job in enumerate(jobs)]

    def release(self) -> None:
        self.prior.offload_all()


def preserve_masks(posed: list[Gaussians], cameras, name: str, warnings: list[str]) -> Tensor | None:
    """The trajectory's pixel preserve mask [F, H, W] rendered from the posed Gaussians' part labels, or None
    without labels. An empty mask (no labels, or no identity region in view) makes the self-guided sampler a
    plain SDE for that video: a warning says so."""
    from backend.diffusion.conditioning import render_preserve_mask

    if posed[0].part_ids is None:
        warnings.append(f"restore {name}: the Gaussians carry no part labels, so the preserve mask is empty and "
                        "the sampler runs without self-guidance (identity may drift)")
        return None
    mask = render_preserve_mask(posed, cameras)
    if float(mask.sum()) == 0.0:
        warnings.append(f"restore {name}: the preserve mask is empty (no identity region in view), so the sampler "
                        "runs without self-guidance for this video")
    return mask


def run_prior_stages(spec, body, canonical: Gaussians, tmp_dir: Path, report: StageProgress, timer,
                     warnings: list[str], restorer: Restorer | None = None, *,
                     fit_pixels_per_metre: float | None = None,
                     cloth: ClothLayer | None = None) -> tuple[LayeredMotion, dict, Gaussians | None]:
    """Progressive rounds of coarse render -> restore -> fit; returns the fitted layered motion.

    Args:
        spec: The JobSpec (``prior``: model folder or id; ``quality``: preset; ``seed``).
        body: The body model.
        canonical: Rest-pose Gaussians bound to the body.
        tmp_dir: The job's temporary output folder.
        report: The pipeline's StageProgress for this slice of the job (may raise Cancelled).
        timer: ``timer.stage(name)`` context manager adding per-stage seconds.
        warnings: Messages for result.json.
        restorer: Runs a round's restorations (``backend.farm.RayRestorer`` spreads them over GPUs); default:
            one after the other in this process, with the prior loaded here.
        fit_pixels_per_metre: The density the subject was fitted to a photo at (None: not fitted); coarse,
            fit and final renders are antialiased when the trajectories see it coarser.
        cloth: The cloth layer (simulated or skinned garment): the coarse renders show it and the residual is
            fitted on top of it.

    Returns:
        (LayeredMotion whose ``posed_frames`` the export stage calls, the record for result.json: the sampler
        that ran, the preset, the mask term's use; the canonical Gaussians with refined colours when the preset
        refines appearance, else None).
    """
    from backend.diffusion.restore import RestoreConditions, sampler_record, sampler_settings
    from backend.train.masks import restored_subject_masks

    tmp_dir = Path(tmp_dir)
    p = job_preset(spec)
    sink, start, end, started = report.sink, report.start, report.end, report.job_started
    span = end - start

    def sub(stage: str, a: float, b: float) -> StageProgress:
        return StageProgress(sink, stage, start + span * a, start + span * b, started)

    sub("restore", 0.0, 0.02)(0.0, f"loading video prior {spec.prior!r}")
    with timer.stage("load prior"):
        restorer = restorer or LocalRestorer.load(spec.prior)
    device = restorer.device
    if device.type != "cuda":
        warnings.append(f"prior: the restorations run on {device.type}, not a CUDA GPU; real Wan weights take "
                        "minutes per sampler step there (a 24 GB+ CUDA GPU is what they need)")
    num_motion = spec.motion.num_frames
    posed_body = pose_body(spec.motion, body)
    joint_transforms = posed_body.joint_transforms.to(device, torch.float32)
    canonical = canonical.to(device)

    rigid_means, _ = skin_gaussians(canonical, None, joint_transforms[:: max(1, num_motion // 16)])
    framing = frame_subject(rigid_means, width=p.width, height=p.height)
    total_trajectories = p.rounds * p.trajectories_per_round
    azimuths = trajectory_azimuths(total_trajectories)
    trajectories = [diagonal_trajectory(framing, start_azimuth_deg=az, num_frames=p.video_frames,
                                        azimuth_span_deg=p.azimuth_span_deg, width=p.width, height=p.height)
                    for az in azimuths]

    antialiased = antialias_for(trajectories[0].cameras[0:1], framing.center.to(torch.float32),
                                fit_pixels_per_metre)
    field_ = ResidualField(field_config_for(canonical, p), torch.Generator().manual_seed(spec.seed)).to(device)
    settings = field_fit_settings_for(p, render_backend="auto", antialiased=antialiased)
    state = create_fit_state(field_, settings, spec.seed, canonical.num_gaussians)
    ckpt = checkpoint_root(tmp_dir)
    (ckpt / "videos").mkdir(parents=True, exist_ok=True)
    render_settings = RenderSettings(background=BACKGROUND, antialiased=antialiased)
    dataset = VideoDataset([], num_motion)
    reference = _reference_image(spec.image)
    fps = float(spec.motion.fps)
    per_round = 1.0 / p.rounds
    sampler = sampler_settings(spec.sampler, spec.sampler_settings, steps=p.restore_steps,
                               strength=p.restore_strength, seed=spec.seed)
    round_losses: list[dict] = []

    for r in range(p.rounds):
        base = 0.02 + 0.93 * r * per_round
        restore_share = 0.6 * 0.93 * per_round
        # A round's restorations depend only on the field as the previous round left it: render every coarse
        # video first, then restore the ones not cached from a stopped run (in parallel on a farm), in order.
        clips: dict[int, VideoClip] = {}
        coarse_alphas: dict[int, Tensor] = {}
        pending: list[tuple[int, RestoreJob]] = []
        for j in range(p.trajectories_per_round):
            k = r * p.trajectories_per_round + j
            traj = trajectories[k]
            name = f"trajectory_{k:02d}"
            frames = traj.frame_indices(num_motion)
            cached = ckpt / "videos" / name
            with timer.stage("coarse render"):
                current = with_appearance(canonical, state.appearance).detach()
                coarse, coarse_alphas[j], posed = render_video(current, state.field, joint_transforms, traj, frames,
                                                               num_motion, render_settings, cloth)
            write_stage_video(tmp_dir / "renders" / "coarse", VideoClip(name, coarse, traj.cameras, frames),
                              num_motion, traj.times, fps)
            if (cached / "cameras.json").is_file():
                clips[j] = read_clip(cached, num_motion)
                sub("restore", base + restore_share * (j + 1) / p.trajectories_per_round,
                    base + restore_share * (j + 1) / p.trajectories_per_round)(
                    1.0, f"round {r + 1}/{p.rounds}: reusing restored {name}")
                continue
            with timer.stage("coarse render"):
                mask = preserve_masks(posed, traj.cameras, name, warnings)
            conditions = RestoreConditions(
                preserve_mask=mask, joints=posed_body.joints[frames].float(),
                joint_transforms=posed_body.joint_transforms[frames].float(), joint_names=body.joint_names,
                reference_image=reference, prompt_cache=ckpt / "prompt_embeds.safetensors")
            rs = replace(sampler, seed=spec.seed + k)
            pending.append((j, RestoreJob(name, coarse, traj.cameras, conditions, rs)))

        slots = [j for j, _ in pending]

        def restore_report(i: int) -> StageProgress:
            j = slots[i]
            return sub("restore", base + restore_share * j / p.trajectories_per_round,
                       base + restore_share * (j + 1) / p.trajectories_per_round)

        sub("restore", base, base)(0.0, f"round {r + 1}/{p.rounds}: restoring {len(pending)} of "
                                        f"{p.trajectories_per_round} trajectories ({restorer.name})")
        with timer.stage("restore"):
            restored = restorer.restore_all([job for _, job in pending], restore_report) if pending else []
        for (j, job), video in zip(pending, restored):
            k = r * p.trajectories_per_round + j
            traj = trajectories[k]
            video = video.float().clamp(0, 1)
            masks = restored_subject_masks(video, coarse_alphas[j], BACKGROUND)
            clips[j] = VideoClip(job.name, video, traj.cameras, traj.frame_indices(num_motion), masks=masks)
            write_clip(ckpt / "videos" / job.name, clips[j], num_motion, traj.times)
        for j in range(p.trajectories_per_round):
            traj = trajectories[r * p.trajectories_per_round + j]
            write_stage_video(tmp_dir / "renders" / "restored", clips[j], num_motion, traj.times, fps)
            dataset.add(clips[j])
        until = settings.iterations if r == p.rounds - 1 else round(settings.iterations * (r + 1) / p.rounds)
        fit_report = sub("fit", base + restore_share, base + 0.93 * per_round)
        fit_report(0.0, f"round {r + 1}/{p.rounds}: fitting on {len(dataset.clips)} videos")
        with timer.stage("fit"):
            history = fit_field(state, canonical, joint_transforms, dataset, settings, until=until,
                                checkpoint_dir=ckpt / "fit", report=fit_report, cloth=cloth)
        round_losses.append({"round": r + 1, "iterations": len(history), **{
            term: sum(getattr(h, term) for h in history) / max(len(history), 1)
            for term in ("total", "l1", "dssim", "mask", "stillness")}})
    restorer.release()

    final_report = sub("render", 0.95, 1.0)
    with timer.stage("final render"):
        for k, traj in enumerate(trajectories):
            frames = traj.frame_indices(num_motion)
            final, _, _ = render_video(with_appearance(canonical, state.appearance).detach(), state.field,
                                       joint_transforms, traj, frames, num_motion, render_settings, cloth)
            write_stage_video(tmp_dir / "renders" / "final", VideoClip(f"trajectory_{k:02d}", final, traj.cameras,
                                                                       frames), num_motion, traj.times, fps)
            final_report((k + 1) / len(trajectories), f"final render {k + 1}/{len(trajectories)}")
    record = {"sampler": sampler_record(sampler, spec.sampler), "preset": asdict(p),
              "mask_source": "restored frames against the clean background, within the coarse silhouette ± 4 %",
              "round_losses": round_losses}
    field_dir = state.field.save(tmp_dir / "field")
    (field_dir / "fit.json").write_text(json.dumps({
        "quality": spec.quality, "prior": spec.prior, "seed": spec.seed, "iterations": state.iteration,
        "fit": settings_dict(settings), **record,
        "trajectories": [{"name": f"trajectory_{k:02d}", "start_azimuth_deg": az} for k, az in enumerate(azimuths)],
    }, indent=2) + "\n")
    shutil.rmtree(ckpt, ignore_errors=True)
    refined = None if state.appearance is None else with_appearance(canonical, state.appearance).detach().to(
        torch.device("cpu"))
    return LayeredMotion(state.field.cpu(), cloth), record, refined
