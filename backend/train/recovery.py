"""A recovery scene with known truth: a subject in a loose skirt whose true motion is skinning + a known residual.

The skirt's true residual (canonical space, body rest frame: Y up, facing +Z) is a **flare** — the hem moves
outwards with the square of the hip swing — and a **lag** — the hem swings forwards/backwards following the
hip rotation a few frames late; both grow with the square of the distance below the waist and are smooth in
time. Ground-truth videos are rendered along diagonal view–time trajectories from the true motion; held-out
cameras (other azimuths and elevations) at held-out motion frames measure how well a fitted field recovers it.

Used by the recovery test (small), ``scripts/bench_fit.py`` (bigger) and the demo's contact sheets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from backend.body import BodyModel, load_body_model
from backend.body.parts import identity_critical, part_ids_from_weights
from backend.gaussians import Gaussians
from backend.motion.builtin import builtin_motion
from backend.motion.layered import layered_frame
from backend.motion.motion import Motion
from backend.motion.residual import FieldConfig, ResidualField, bounds_from_points, normalized_time
from backend.core.rotations import matrix_to_quaternion
from backend.motion.skinning import skin_means_quats
from backend.reconstruct import sample_body_gaussians
from backend.reconstruct.surface import tangent_frames
from backend.render.cameras import Cameras
from backend.render.metrics import weighted_psnr
from backend.render.render import RenderSettings, render
from backend.render.trajectories import cameras_around, diagonal_trajectories, frame_subject
from backend.train.dataset import VideoClip, VideoDataset, even_motion_frames
from backend.train.field_fit import FieldFitSettings

_L_HIP = 0  # pose_body joint 0 = left hip


@dataclass(frozen=True)
class RecoverySettings:
    """Size of the recovery scene.

    Attributes:
        body_gaussians: Gaussians on the body surface.
        skirt_gaussians: Loose skirt Gaussians.
        motion_frames: Frames of the in-place walk (odd: the trajectories show the even ones).
        trajectories: Diagonal trajectories of training video.
        width, height: Video size.
        flare: Hem flare amplitude in metres.
        swing: Hem swing amplitude in metres.
        lag_frames: Swing delay behind the hip rotation, in motion frames.
        held_out_views: Held-out (camera, time) pairs.
        seed: Seed of the scene's random draws.
    """

    body_gaussians: int = 2500
    skirt_gaussians: int = 1500
    motion_frames: int = 33
    trajectories: int = 4
    width: int = 64
    height: int = 96
    flare: float = 0.08
    swing: float = 0.10
    lag_frames: float = 3.0
    held_out_views: int = 8
    seed: int = 0


@dataclass
class RecoveryScene:
    """The scene and its truth.

    Attributes:
        settings: How it was built.
        body: The body model.
        motion: The in-place walk.
        canonical: Body + skirt Gaussians in the rest pose (skirt ``loose``). [N]
        joint_transforms: Rest->posed transforms per motion frame. [F, J, 4, 4]
        true_offsets: The skirt's true canonical residual per motion frame (0 elsewhere). [F, N, 3]
        dataset: Ground-truth training videos (diagonal trajectories, with masks).
        held_out_cameras: One camera per held-out view. [V]
        held_out_frames: Motion frame per held-out view (odd frames: never in the training videos). [V]
    """

    settings: RecoverySettings
    body: BodyModel
    motion: Motion
    canonical: Gaussians
    joint_transforms: Tensor
    true_offsets: Tensor
    dataset: VideoDataset
    held_out_cameras: Cameras
    held_out_frames: Tensor

    @property
    def skirt(self) -> Tensor:
        return self.canonical.loose

    def true_frame(self, frame: int) -> Gaussians:
        """Ground-truth posed Gaussians at a motion frame."""
        return true_frame(self.canonical, self.true_offsets[frame], self.joint_transforms[frame])


def in_place_walk(body: BodyModel, frames: int) -> Motion:
    """The built-in walk without its forward travel (the subject stays framed)."""
    walk = builtin_motion("walk", body, frames=frames)
    trans = np.repeat(walk.trans[:1], frames, axis=0)
    trans[:, 2] = walk.trans[:, 2]
    return replace(walk, trans=trans.astype(np.float32))


def skirt_gaussians(body: BodyModel, n: int, generator: torch.Generator) -> tuple[Gaussians, Tensor]:
    """Loose skirt Gaussians around the hips (rest pose), with the skin weights of their nearest body vertex.

    Returns:
        (skirt Gaussians, per-Gaussian (height fraction d ∈ [0, 1], angle θ)) [n, 2]
    """
    vertices = body.rest_vertices().detach().float()
    pelvis = body.rest_joints().detach().float()[0]
    top, length = float(pelvis[1]) + 0.06, 0.38
    near_top = vertices[(vertices[:, 1] - top).abs() < 0.03]
    centre = near_top.mean(0)
    rx = float((near_top[:, 0] - centre[0]).abs().max()) * 1.08
    rz = float((near_top[:, 2] - centre[2]).abs().max()) * 1.15
    d = torch.rand(n, generator=generator)
    theta = torch.rand(n, generator=generator) * 2 * math.pi
    grow = 1.0 + 0.55 * d
    points = torch.stack([
        centre[0] + rx * grow * torch.cos(theta),
        top - length * d,
        centre[2] + rz * grow * torch.sin(theta),
    ], dim=-1)
    normals = torch.nn.functional.normalize(torch.stack([torch.cos(theta) / rx, torch.zeros(n),
                                                         torch.sin(theta) / rz], dim=-1), dim=-1)
    nearest = torch.cdist(points, vertices).argmin(dim=1)
    skin = body.skin_weights.detach().float()[nearest]
    area = 2 * math.pi * 0.5 * (rx + rz) * 1.27 * length
    spacing = math.sqrt(area / n)
    scales = torch.tensor([spacing * 0.8, spacing * 0.8, spacing * 0.12]).expand(n, 3).clone()
    sector = (theta / (2 * math.pi) * 10).floor().long() % 2
    colors = torch.where(sector[:, None] == 0, torch.tensor([0.95, 0.78, 0.10]), torch.tensor([0.42, 0.10, 0.60]))
    colors = torch.where((d > 0.82)[:, None], torch.tensor([0.08, 0.30, 0.25]), colors)
    gaussians = Gaussians.from_colors(
        points, colors, scales=scales, opacities=0.97, quats=matrix_to_quaternion(tangent_frames(normals)),
        skin_weights=skin, part_ids=part_ids_from_weights(skin, body.joint_names),
        loose=torch.ones(n, dtype=torch.bool))
    return gaussians, torch.stack([d, theta], dim=-1)


def true_skirt_offsets(coords: Tensor, hip_angle: np.ndarray, settings: RecoverySettings) -> Tensor:
    """The known residual of the skirt Gaussians per motion frame (canonical frame). [F, n, 3]

    Args:
        coords: Height fraction d and angle θ per skirt Gaussian. [n, 2]
        hip_angle: Left-hip flexion per motion frame (radians). [F]
        settings: Flare / swing amplitudes and the lag.
    """
    frames = np.arange(len(hip_angle), dtype=np.float64)
    h_max = max(float(np.abs(hip_angle).max()), 1e-6)
    h = hip_angle / h_max
    lagged = np.interp(frames - settings.lag_frames, frames, h)  # clamped at the start: smooth, no jump
    d, theta = coords[:, 0].double(), coords[:, 1].double()
    d2 = d.square()
    radial = torch.stack([torch.cos(theta), torch.zeros_like(theta), torch.sin(theta)], dim=-1)
    flare = settings.flare * (0.3 + 0.7 * torch.as_tensor(h).square())  # [F]
    swing = settings.swing * torch.as_tensor(lagged)  # [F]
    forward = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    out = flare[:, None, None] * d2[None, :, None] * radial[None] + swing[:, None, None] * d2[None, :, None] * forward
    return out.float()


def true_frame(canonical: Gaussians, offsets: Tensor, joint_transforms: Tensor) -> Gaussians:
    """Skin ``canonical.means + offsets`` with one frame's transforms [J, 4, 4]."""
    means, quats = skin_means_quats(canonical.means + offsets, canonical.quats, canonical.skin_weights,
                                    joint_transforms[None])
    return canonical.replace(means=means[0], quats=quats[0])


def build_recovery_scene(settings: RecoverySettings | None = None, body: BodyModel | None = None) -> RecoveryScene:
    """Build the scene, its truth and its ground-truth training videos (rendered with the torch backend)."""
    settings = settings or RecoverySettings()
    body = body or load_body_model("default")
    gen = torch.Generator().manual_seed(settings.seed)
    motion = in_place_walk(body, settings.motion_frames)
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        posed = body(t(motion.betas), t(motion.root_orient), t(motion.pose_body), t(motion.trans))
    joint_transforms = posed.joint_transforms.float()
    on_body = sample_body_gaussians(body, None, settings.body_gaussians, gen)
    skirt, coords = skirt_gaussians(body, settings.skirt_gaussians, gen)
    canonical = Gaussians.concatenate([on_body, skirt])
    hip = motion.pose_body[:, 3 * _L_HIP].astype(np.float64)
    offsets = torch.zeros(settings.motion_frames, canonical.num_gaussians, 3)
    offsets[:, on_body.num_gaussians:] = true_skirt_offsets(coords, hip, settings)

    truth_means = torch.stack([
        true_frame(canonical, offsets[f], joint_transforms[f]).means for f in range(settings.motion_frames)])
    framing = frame_subject(truth_means, width=settings.width, height=settings.height, margin=1.05)
    video_frames = (settings.motion_frames + 1) // 2
    trajectories = diagonal_trajectories(framing, count=settings.trajectories, num_frames=video_frames,
                                         width=settings.width, height=settings.height)
    render_settings = RenderSettings(background=(1.0, 1.0, 1.0))
    dataset = VideoDataset([], settings.motion_frames)
    motion_frames = even_motion_frames(video_frames, settings.motion_frames)
    with torch.no_grad():
        for k, traj in enumerate(trajectories):
            rgbs, alphas = [], []
            for i, frame in enumerate(motion_frames.tolist()):
                out = render(true_frame(canonical, offsets[frame], joint_transforms[frame]), traj.cameras[i:i + 1],
                             settings=render_settings)
                rgbs.append(out.rgb[0])
                alphas.append(out.alpha[0])
            dataset.add(VideoClip(f"trajectory_{k:02d}", torch.stack(rgbs), traj.cameras, motion_frames.clone(),
                                  torch.stack(alphas)))
    # Held-out: between the trajectories' azimuths, other elevations, odd (unseen) motion frames.
    v = settings.held_out_views
    azimuths = torch.tensor([360.0 * (k + 0.5) / v + 17.0 for k in range(v)], dtype=torch.float64)
    elevations = [(-5.0 + 25.0 * (k % 3) / 2) for k in range(v)]
    cams = Cameras.concatenate([
        cameras_around(framing, azimuths[k:k + 1], elevation_deg=elevations[k], width=settings.width,
                       height=settings.height) for k in range(v)])
    odd = torch.arange(1, settings.motion_frames, 2)
    held_frames = odd[torch.linspace(0, len(odd) - 1, v).round().long()]
    return RecoveryScene(settings, body, motion, canonical, joint_transforms, offsets, dataset, cams, held_frames)


def recovery_field_config(scene: RecoveryScene, **overrides) -> FieldConfig:
    """A field sized for the recovery scene (small planes: the truth is smooth)."""
    base = dict(bounds=bounds_from_points(scene.canonical.means), spatial_resolution=16,
                temporal_resolution=17, features=16, multires=(1, 2), hidden=64)
    base.update(overrides)
    return FieldConfig(**base)


def recovery_fit_settings(iterations: int = 300, **overrides) -> FieldFitSettings:
    """Fit settings for a short fit on the recovery scene (higher learning rates than the 25k-iteration run)."""
    base = dict(iterations=iterations, grid_lr=(2e-2, 2e-3), mlp_lr=(2e-3, 2e-4), frames_per_step=1,
                lambda_dssim=0.2, lambda_mask=0.5, identity_weight=1.0, body_weight=0.05, lambda_tv=1e-3,
                lambda_time=1e-2, background=(1.0, 1.0, 1.0), render_backend="auto", checkpoint_every=0,
                report_every=25)
    base.update(overrides)
    return FieldFitSettings(**base)


@dataclass(frozen=True)
class RecoveryMetrics:
    """Held-out errors of rigid-only vs fitted (floats).

    Attributes:
        psnr_rigid, psnr_fit: PSNR (dB) on the skirt region of held-out views.
        error_rigid_mm, error_fit_mm: Mean 3D error of the skirt Gaussians at held-out frames (mm).
        identity_max_mm, identity_mean_mm: How far fitting moved identity-critical Gaussians, over all frames (mm).
    """

    psnr_rigid: float
    psnr_fit: float
    error_rigid_mm: float
    error_fit_mm: float
    identity_max_mm: float
    identity_mean_mm: float


def held_out_renders(scene: RecoveryScene, field_: ResidualField | None) -> tuple[Tensor, Tensor, Tensor]:
    """(truth rgb, model rgb, skirt region) at the held-out views. [V, H, W, 3], [V, H, W, 3], [V, H, W, 1]"""
    settings = RenderSettings(background=(1.0, 1.0, 1.0))
    skirt = scene.skirt.float()[:, None]
    truths, preds, regions = [], [], []
    with torch.no_grad():
        for k, frame in enumerate(scene.held_out_frames.tolist()):
            cam = scene.held_out_cameras[k:k + 1]
            gt = render(scene.true_frame(frame), cam, features=skirt, settings=settings)
            t = normalized_time(frame, scene.settings.motion_frames).item()
            rigid = render(layered_frame(scene.canonical, None, scene.joint_transforms[frame], t), cam,
                           features=skirt, settings=settings)
            model = rigid if field_ is None else render(
                layered_frame(scene.canonical, field_, scene.joint_transforms[frame], t), cam, features=skirt,
                settings=settings)
            truths.append(gt.rgb[0])
            preds.append(model.rgb[0])
            regions.append(((gt.features[0] > 0.5) | (rigid.features[0] > 0.5)).float())
    return torch.stack(truths), torch.stack(preds), torch.stack(regions)


def evaluate_recovery(scene: RecoveryScene, field_: ResidualField) -> RecoveryMetrics:
    """Held-out PSNR on the skirt region, skirt 3D error and identity-critical motion, rigid vs fitted."""
    truth, rigid, region = held_out_renders(scene, None)
    _, fitted, _ = held_out_renders(scene, field_)
    skirt = scene.skirt
    critical = identity_critical(scene.canonical.part_ids) & ~skirt
    err_rigid, err_fit = [], []
    with torch.no_grad():
        for frame in scene.held_out_frames.tolist():
            t = normalized_time(frame, scene.settings.motion_frames).item()
            gt = scene.true_frame(frame).means[skirt]
            rig = layered_frame(scene.canonical, None, scene.joint_transforms[frame], t).means[skirt]
            fit = layered_frame(scene.canonical, field_, scene.joint_transforms[frame], t).means[skirt]
            err_rigid.append((rig - gt).norm(dim=-1).mean())
            err_fit.append((fit - gt).norm(dim=-1).mean())
        moves = []
        for frame in range(scene.settings.motion_frames):
            t = normalized_time(frame, scene.settings.motion_frames).item()
            rig = layered_frame(scene.canonical, None, scene.joint_transforms[frame], t).means[critical]
            fit = layered_frame(scene.canonical, field_, scene.joint_transforms[frame], t).means[critical]
            moves.append((fit - rig).norm(dim=-1))
        moves_t = torch.stack(moves)
    return RecoveryMetrics(
        psnr_rigid=weighted_psnr(rigid, truth, region), psnr_fit=weighted_psnr(fitted, truth, region),
        error_rigid_mm=1000 * float(torch.stack(err_rigid).mean()),
        error_fit_mm=1000 * float(torch.stack(err_fit).mean()),
        identity_max_mm=1000 * float(moves_t.max()), identity_mean_mm=1000 * float(moves_t.mean()))
