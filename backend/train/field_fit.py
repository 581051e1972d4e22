"""Fitting the residual field to videos (docs/method.md §7): the optimisation loop, learning-rate decay, checkpoints.

One iteration draws ``frames_per_step`` (clip, frame) pairs with the fit's own ``torch.Generator``, poses the
canonical Gaussians with the layered motion at each frame's motion time, renders them from that frame's camera
and steps Adam on ``L1 + λ_dssim·D-SSIM + λ_mask·mask + stillness + λ_tv·TV + λ_time·time-smoothness``.
Learning rates decay exponentially per parameter group over ``settings.iterations`` (4DGaussians: grid
1.6e-3 → 1.6e-5, MLP 1.6e-4 → 1.6e-6).

Checkpoints (field, Adam state, generator state, iteration; safetensors + JSON, no pickle) are written every
``checkpoint_every`` iterations, when the progress callback raises ``Cancelled`` and at the end; a fit started
with the same checkpoint folder resumes where it stopped and ends bit-identical to an uninterrupted fit.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from backend.core.errors import Cancelled, InputError
from backend.gaussians import Gaussians
from backend.motion.cloth import ClothLayer
from backend.motion.layered import layered_frame
from backend.motion.residual import ResidualField, normalized_time, query_field, time_smoothness, total_variation
from backend.render.render import RenderSettings, render
from backend.train.dataset import VideoDataset
from backend.train.losses import dssim_loss, l1_loss, mask_loss, stillness_loss, stillness_weights

log = logging.getLogger(__name__)

Report = Callable[..., None]


@dataclass(frozen=True)
class FieldFitSettings:
    """Optimisation settings.

    Attributes:
        iterations: Total iterations of the fit (the learning-rate schedule spans them).
        grid_lr: Feature-plane learning rate (initial, final).
        mlp_lr: MLP learning rate (initial, final).
        frames_per_step: Video frames per iteration (losses averaged).
        lambda_dssim: Weight of D-SSIM.
        lambda_mask: Weight of the mask loss (used where a clip has masks).
        identity_weight: Stillness weight of identity-critical Gaussians (offsets measured in cm).
        body_weight: Stillness weight of the other on-body Gaussians (loose ones are free).
        lambda_tv: Weight of the planes' total variation.
        lambda_time: Weight of the space-time planes' time smoothness.
        background: Render background, RGB in [0, 1] (must match the videos').
        render_backend: ``"auto"`` | ``"gsplat"`` | ``"numba"`` | ``"torch"``.
        antialiased: Render in the antialiased mode (``backend.render.antialias_for`` decides for a job).
        appearance: Also refine each Gaussian's base colour (SH DC) and opacity logit from the videos (where they
            show what the photo did not); the identity region is held to the reconstruction by ``appearance_guard``.
        appearance_lr: Adam step of the colour / opacity deltas (constant).
        appearance_guard: Weight of the mean squared colour / opacity change of identity-critical Gaussians (head,
            hands, feet); the others are free.
        checkpoint_every: Iterations between checkpoints (0 = only on cancel and at the end).
        report_every: Iterations between progress reports (a report is a point where a stop can happen).
    """

    iterations: int = 3000
    grid_lr: tuple[float, float] = (1.6e-3, 1.6e-5)
    mlp_lr: tuple[float, float] = (1.6e-4, 1.6e-6)
    frames_per_step: int = 1
    lambda_dssim: float = 0.2
    lambda_mask: float = 0.1
    identity_weight: float = 1.0
    body_weight: float = 0.01
    lambda_tv: float = 1e-4
    lambda_time: float = 1e-2
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    render_backend: str = "auto"
    antialiased: bool = False
    appearance: bool = False
    appearance_lr: float = 2.5e-3
    appearance_guard: float = 10.0
    checkpoint_every: int = 500
    report_every: int = 10

    def __post_init__(self) -> None:
        for name in ("iterations", "frames_per_step", "report_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"FieldFitSettings.{name}: expected a positive integer, got {value!r}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise InputError(f"FieldFitSettings.checkpoint_every: expected an integer ≥ 0, got {self.checkpoint_every!r}")
        for name in ("grid_lr", "mlp_lr"):
            lr = getattr(self, name)
            if len(lr) != 2 or not all(float(v) > 0 for v in lr):
                raise InputError(f"FieldFitSettings.{name}: expected (initial, final) > 0, got {lr!r}")


def learning_rate(initial: float, final: float, iteration: int, total: int) -> float:
    """Log-linear decay from ``initial`` (iteration 0) to ``final`` (iteration ``total``), then constant."""
    s = min(max(iteration / max(total, 1), 0.0), 1.0)
    return float(np.exp(np.log(initial) * (1 - s) + np.log(final) * s))


@dataclass
class FitState:
    """Everything a resumed fit needs: the field, Adam, the sampling generator and the iteration count, and the
    appearance deltas when the fit refines colours (``[N, 4]``: SH DC change (3), opacity-logit change)."""

    field: ResidualField
    optimizer: torch.optim.Adam
    generator: torch.Generator
    iteration: int = 0
    appearance: Tensor | None = None


def create_fit_state(field_: ResidualField, settings: FieldFitSettings, seed: int,
                     num_gaussians: int | None = None) -> FitState:
    """A fresh optimiser (one group per learning rate) and a generator seeded with ``seed``; with
    ``settings.appearance``, zero appearance deltas for ``num_gaussians`` Gaussians in their own group."""
    groups = [
        {"params": field_.grid_parameters(), "lr": settings.grid_lr[0], "name": "grid"},
        {"params": field_.mlp_parameters(), "lr": settings.mlp_lr[0], "name": "mlp"},
    ]
    appearance = None
    if settings.appearance:
        if num_gaussians is None:
            raise InputError("fit: appearance refinement needs the number of Gaussians")
        device = next(field_.parameters()).device
        appearance = torch.zeros(num_gaussians, 4, device=device, requires_grad=True)
        groups.append({"params": [appearance], "lr": settings.appearance_lr, "name": "appearance"})
    optimizer = torch.optim.Adam(groups, eps=1e-15)
    return FitState(field_, optimizer, torch.Generator().manual_seed(int(seed)), 0, appearance)


def with_appearance(canonical: Gaussians, delta: Tensor | None) -> Gaussians:
    """The canonical Gaussians with appearance deltas ``[N, 4]`` applied (SH DC + opacity logit)."""
    if delta is None:
        return canonical
    sh = torch.cat([canonical.sh[:, :1] + delta[:, None, :3].to(canonical.sh.dtype), canonical.sh[:, 1:]], dim=1)
    return canonical.replace(sh=sh, opacity_logits=canonical.opacity_logits + delta[:, 3].to(canonical.sh.dtype))


def appearance_guard_weights(canonical: Gaussians, guard: float) -> Tensor:
    """Per-Gaussian weight of the appearance guard: ``guard`` on identity-critical parts (head, hands, feet, not
    loose), 0 elsewhere. [N] (Adam normalises each parameter's step, so even a tiny weight would pull a delta that
    is seen in few frames back to zero; the garments get none.)"""
    return stillness_weights(canonical, guard, 0.0)  # loose Gaussians get 0 there already


def _set_learning_rates(state: FitState, settings: FieldFitSettings) -> None:
    for group in state.optimizer.param_groups:
        if group["name"] == "appearance":
            continue
        lr = settings.grid_lr if group["name"] == "grid" else settings.mlp_lr
        group["lr"] = learning_rate(lr[0], lr[1], state.iteration, settings.iterations)


# ---- checkpoints -----------------------------------------------------------------------------------------
def save_checkpoint(folder: str | os.PathLike, state: FitState) -> Path:
    """Write the fit state into ``folder`` atomically (temporary sibling + rename)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    state.field.save(tmp)
    opt = state.optimizer.state_dict()
    tensors = {"generator_state": state.generator.get_state()}
    if state.appearance is not None:
        tensors["appearance"] = state.appearance.detach().cpu().contiguous()
    for index, entry in opt["state"].items():
        for key, value in entry.items():
            tensors[f"state.{index}.{key}"] = torch.as_tensor(value).detach().cpu().reshape(-1).contiguous()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    meta = {"iteration": state.iteration, "param_groups": opt["param_groups"],
            "state_shapes": {f"{i}.{k}": list(torch.as_tensor(v).shape) for i, e in opt["state"].items()
                             for k, v in e.items()}}
    (tmp / "state.json").write_text(json.dumps(meta))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def has_checkpoint(folder: str | os.PathLike | None) -> bool:
    return folder is not None and (Path(folder) / "state.json").is_file()


def load_checkpoint(folder: str | os.PathLike, state: FitState) -> FitState:
    """Restore ``state`` (field, optimiser, generator, iteration) in place from ``folder``; returns it."""
    from safetensors.torch import load_file

    folder = Path(folder)
    field_ = ResidualField.load(folder)
    if field_.config != state.field.config:
        raise InputError(f"checkpoint {folder}: its field config differs from this fit's "
                         f"({field_.config} vs {state.field.config})")
    device = next(state.field.parameters()).device
    state.field.load_state_dict(field_.state_dict())
    meta = json.loads((folder / "state.json").read_text())
    tensors = load_file(str(folder / "optimizer.safetensors"))
    opt_state: dict[int, dict[str, Tensor]] = {}
    for key, shape in meta["state_shapes"].items():
        index, name = key.split(".", 1)
        value = tensors[f"state.{key}"].reshape(shape)
        opt_state.setdefault(int(index), {})[name] = value if name == "step" else value.to(device)
    state.optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    state.generator.set_state(tensors["generator_state"])
    if state.appearance is not None:
        if "appearance" not in tensors or tuple(tensors["appearance"].shape) != tuple(state.appearance.shape):
            raise InputError(f"checkpoint {folder}: no appearance deltas of shape {list(state.appearance.shape)}")
        with torch.no_grad():
            state.appearance.copy_(tensors["appearance"].to(state.appearance.device))
    state.iteration = int(meta["iteration"])
    return state


# ---- the loop --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepLosses:
    """Loss terms of one iteration (floats, for logs and tests)."""

    total: float
    l1: float
    dssim: float
    mask: float
    stillness: float
    tv: float
    time: float


def fit_step(
    state: FitState,
    canonical: Gaussians,
    joint_transforms: Tensor,
    dataset: VideoDataset,
    settings: FieldFitSettings,
    still_weights: Tensor,
    guard_weights: Tensor | None = None,
    cloth: ClothLayer | None = None,
) -> tuple[StepLosses, Tensor]:
    """One optimisation step. Returns the loss terms and the last rendered frame ([H, W, 3], detached)."""
    field_ = state.field
    device = canonical.means.device
    _set_learning_rates(state, settings)
    picks = torch.randint(len(dataset), (settings.frames_per_step,), generator=state.generator)
    render_settings = RenderSettings(backend=settings.render_backend, background=settings.background,
                                     antialiased=settings.antialiased)
    terms = {"l1": 0.0, "dssim": 0.0, "mask": 0.0, "stillness": 0.0}
    loss = torch.zeros((), device=device)
    last = None
    if state.appearance is not None:
        canonical = with_appearance(canonical, state.appearance)
    for pick in picks.tolist():
        clip, k = dataset.item(pick)
        frame = int(clip.motion_frames[k])
        t = normalized_time(frame, dataset.num_motion_frames).item()
        residual = query_field(field_, canonical.means, t)
        posed = layered_frame(canonical, field_, joint_transforms[frame], t, residual=residual,
                              cloth=None if cloth is None else cloth.frame(frame, device, canonical.means.dtype))
        out = render(posed, clip.cameras[k:k + 1].to(device), settings=render_settings)
        target = clip.frames[k:k + 1].to(device)
        l1 = l1_loss(out.rgb, target)
        ds = dssim_loss(out.rgb, target) if settings.lambda_dssim > 0 else torch.zeros((), device=device)
        mk = mask_loss(out.alpha, clip.masks[k:k + 1].to(device)) if clip.masks is not None else torch.zeros(
            (), device=device)
        still = stillness_loss(residual, still_weights)
        loss = loss + l1 + settings.lambda_dssim * ds + settings.lambda_mask * mk + still
        for name, value in (("l1", l1), ("dssim", ds), ("mask", mk), ("stillness", still)):
            terms[name] += float(value.detach()) / settings.frames_per_step
        last = out.rgb[0].detach()
    loss = loss / settings.frames_per_step
    tv = total_variation(field_) if settings.lambda_tv > 0 else torch.zeros((), device=device)
    ts = time_smoothness(field_) if settings.lambda_time > 0 else torch.zeros((), device=device)
    loss = loss + settings.lambda_tv * tv + settings.lambda_time * ts
    if state.appearance is not None and guard_weights is not None:
        loss = loss + (guard_weights * state.appearance.square().sum(-1)).mean()
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    state.iteration += 1
    return StepLosses(float(loss.detach()), terms["l1"], terms["dssim"], terms["mask"], terms["stillness"], float(tv.detach()),
                      float(ts.detach())), last


def fit_field(
    state: FitState,
    canonical: Gaussians,
    joint_transforms: Tensor,
    dataset: VideoDataset,
    settings: FieldFitSettings,
    *,
    until: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    report: Report | None = None,
    cloth: ClothLayer | None = None,
) -> list[StepLosses]:
    """Run iterations ``state.iteration .. until`` (default ``settings.iterations``).

    Args:
        state: Field, optimiser, generator, iteration (updated in place). If ``checkpoint_dir`` holds a
            checkpoint further along than ``state``, it is loaded first (resume).
        canonical: Rest-pose Gaussians with skin_weights, part_ids, loose (on the field's device).
        joint_transforms: Rest->posed transforms of every motion frame. [F_motion, J, 4, 4]
        dataset: Training clips.
        settings: FieldFitSettings.
        until: Stop after this iteration (progressive rounds stop between rounds).
        checkpoint_dir: Where checkpoints go, or None.
        report: ``report(fraction, message, preview)`` over this call's iterations; may raise ``Cancelled``
            (a checkpoint is written first).
        cloth: The cloth layer under the residual (garment Gaussians ride it), or None.

    Returns:
        The loss terms of every iteration run.
    """
    if len(dataset) == 0:
        raise InputError("fit: the dataset has no frames")
    if joint_transforms.shape[0] != dataset.num_motion_frames:
        raise InputError(f"fit: joint_transforms: expected {dataset.num_motion_frames} motion frames, got "
                         f"{joint_transforms.shape[0]}")
    until = settings.iterations if until is None else min(until, settings.iterations)
    if has_checkpoint(checkpoint_dir):
        saved = json.loads((Path(checkpoint_dir) / "state.json").read_text())["iteration"]
        if saved > state.iteration:
            load_checkpoint(checkpoint_dir, state)
            log.info("fit: resumed from %s at iteration %d", checkpoint_dir, state.iteration)
    report = report or (lambda *args, **kwargs: None)
    joint_transforms = joint_transforms.to(canonical.means.device, canonical.means.dtype)
    weights = stillness_weights(canonical, settings.identity_weight, settings.body_weight)
    guard = appearance_guard_weights(canonical, settings.appearance_guard) if state.appearance is not None else None
    history: list[StepLosses] = []
    first = state.iteration
    started = time.perf_counter()
    try:
        while state.iteration < until:
            losses, last = fit_step(state, canonical, joint_transforms, dataset, settings, weights, guard, cloth)
            history.append(losses)
            done = state.iteration - first
            if checkpoint_dir is not None and settings.checkpoint_every and \
                    state.iteration % settings.checkpoint_every == 0:
                save_checkpoint(checkpoint_dir, state)
            if state.iteration % settings.report_every == 0 or state.iteration == until:
                rate = done / max(time.perf_counter() - started, 1e-9)
                preview = (last.clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
                report(done / max(until - first, 1),
                       f"fit: iteration {state.iteration}/{settings.iterations}, loss {losses.total:.4f} "
                       f"({rate:.1f} it/s)", preview)
    except Cancelled:
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, state)
        raise
    if checkpoint_dir is not None:
        save_checkpoint(checkpoint_dir, state)
    return history


def settings_dict(settings: FieldFitSettings) -> dict:
    """JSON-able FieldFitSettings (for result.json / field config)."""
    return asdict(settings)
