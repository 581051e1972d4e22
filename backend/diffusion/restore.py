"""The restoration stage: coarse rendering -> video prior with self-guided stochastic sampling -> restored video.

``restore(coarse_video, cameras, conditions, settings, progress, prior=...)`` encodes the coarse video with the
prior's VAE, runs ``backend.diffusion.sampling.sample_self_guided`` in latent space with the preserve mask on the
latent grid (paper Algorithm 1), and decodes. Conditions (pose video, preserve mask) are taken as given or
rendered from our 3D state with the trajectory's cameras. Every input is checked before any heavy work.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from backend.diffusion import conditioning
from backend.diffusion.sampling import flow_sigmas, sample_self_guided
from backend.diffusion.wan import DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPT, WanPrior, check_video_size
from backend.core.errors import InputError

logger = logging.getLogger(__name__)

StageReport = Callable[..., None]
"""``report(fraction, message)`` with fraction in [0, 1] of this stage, e.g. ``backend.core.progress.StageProgress``.
May raise ``backend.core.errors.Cancelled``; it is called before any heavy work and after every sampler step."""


@dataclass(frozen=True)
class RestoreSettings:
    """Sampler settings for one restoration (docs/method.md §5).

    Attributes:
        steps: Sampler steps N (the authors: 10-36).
        strength: SDEdit strength s in [0, 1]; σ_0 = shift·s / (1 + (shift-1)·s) (0.6 -> 0.88 with shift 5).
        shift: Wan's timestep shift.
        guidance: Self-guidance weight λ (the code's ``sgs``); λ_i = λ·(1-σ_i) with the linear schedule.
        guidance_schedule: ``"linear"`` (released code) or ``"constant"``.
        gamma: Fresh-noise fraction: ``"sigma"`` (γ_i = σ_i, paper), ``"full"`` (γ = 1, released code) or a
            number in [0, 1].
        cfg: Classifier-free guidance scale; None = the model's default (5 VACE, 2 T2V).
        conditioning_scale: VACE control strength.
        seed: Seed of every random draw (start noise, per-step noise, the VACE reference slot's noise).
    """

    steps: int = 10
    strength: float = 0.6
    shift: float = 5.0
    guidance: float = 0.1
    guidance_schedule: str = "linear"
    gamma: str | float = "sigma"
    cfg: float | None = None
    conditioning_scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise InputError(f"RestoreSettings.steps: expected an integer >= 1, got {self.steps!r}")
        if not 0.0 < float(self.strength) <= 1.0:
            raise InputError(f"RestoreSettings.strength: expected a number in (0, 1], got {self.strength!r}")
        if not float(self.shift) > 0.0:
            raise InputError(f"RestoreSettings.shift: expected a number > 0, got {self.shift!r}")
        if not 0.0 <= float(self.guidance) <= 1.0:
            raise InputError(f"RestoreSettings.guidance: expected a number in [0, 1], got {self.guidance!r}")
        if self.guidance_schedule not in ("linear", "constant"):
            raise InputError(
                f"RestoreSettings.guidance_schedule: expected 'linear' or 'constant', got {self.guidance_schedule!r}")
        if not (self.gamma in ("sigma", "full") or (
                isinstance(self.gamma, (int, float)) and not isinstance(self.gamma, bool)
                and 0.0 <= float(self.gamma) <= 1.0)):
            raise InputError(f"RestoreSettings.gamma: expected 'sigma', 'full' or a number in [0, 1], got {self.gamma!r}")
        if self.cfg is not None and not float(self.cfg) >= 1.0:
            raise InputError(f"RestoreSettings.cfg: expected None or a number >= 1, got {self.cfg!r}")


SAMPLER_FIELDS = ("steps", "strength", "shift", "guidance", "guidance_schedule", "gamma", "cfg")
"""The sampler settings a job may set (``JobSpec.sampler_settings``, ``--steps`` ... ``--cfg``)."""

SAMPLER_PRESETS: dict[str, dict] = {
    # The paper (docs/method.md §5): γ_i = σ_i; steps and strength follow the job's quality preset (10-36 steps,
    # s 0.5-0.7 in the authors' runs); λ is not published, ours is 0.1 on the released code's linear schedule.
    "paper": {"shift": 5.0, "guidance": 0.1, "guidance_schedule": "linear", "gamma": "sigma", "cfg": None},
    # The released code's defaults: strength 0.7, int(10·0.7) = 7 steps, sgs 0.05 with λ_i = sgs·(1−σ_i),
    # noise fully redrawn each step (γ = 1), CFG 5, shift 5 (and 81 frames at 480×832: RELEASED_VIDEO).
    "released": {"steps": 7, "strength": 0.7, "shift": 5.0, "guidance": 0.05, "guidance_schedule": "linear",
                 "gamma": "full", "cfg": 5.0},
}
RELEASED_VIDEO = {"video_frames": 81, "width": 480, "height": 832}
"""The released code's trajectory videos (``--sampler released`` sets them unless the job overrides them)."""


def parse_gamma(value: str | float) -> str | float:
    """``"sigma"``, ``"full"`` or a number (also given as text, e.g. on the command line) for ``RestoreSettings.gamma``.

    Raises:
        InputError: anything else (naming ``sampler_settings.gamma``).
    """
    if value in ("sigma", "full") or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"sampler_settings.gamma: expected 'sigma', 'full' or a number in [0, 1], got {value!r}"
                         ) from None


def sampler_settings(name: str, overrides: dict | None = None, *, steps: int, strength: float,
                     seed: int = 0) -> RestoreSettings:
    """The restoration settings of a named sampler preset with per-job overrides.

    Args:
        name: ``"paper"`` or ``"released"`` (``SAMPLER_PRESETS``).
        overrides: Some of ``SAMPLER_FIELDS`` (a job's ``sampler_settings``); they win over the preset.
        steps, strength: The quality preset's values, used where the sampler preset does not set them.
        seed: Seed of the restoration.

    Raises:
        InputError: unknown preset or field, or a value out of range (the message names ``sampler_settings.<field>``).
    """
    if name not in SAMPLER_PRESETS:
        raise InputError(f"sampler: expected one of {sorted(SAMPLER_PRESETS)}, got {name!r}")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(SAMPLER_FIELDS))
    if unknown:
        raise InputError(f"sampler_settings: unknown field(s) {unknown}; expected some of {list(SAMPLER_FIELDS)}")
    values = {"steps": steps, "strength": strength, **SAMPLER_PRESETS[name], **overrides}
    for key in ("strength", "shift", "guidance", "cfg"):
        value = values[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InputError(f"sampler_settings.{key}: expected a number, got {value!r}")
    values["gamma"] = parse_gamma(values["gamma"])
    try:
        return RestoreSettings(**values, seed=seed)
    except InputError as exc:
        raise InputError(str(exc).replace("RestoreSettings.", "sampler_settings.")) from None


def sampler_record(settings: RestoreSettings, name: str) -> dict:
    """What result.json records of the sampler that ran: the preset name and every value used."""
    return {"preset": name, **{key: getattr(settings, key) for key in SAMPLER_FIELDS}}


@dataclass(frozen=True)
class RestoreConditions:
    """What the restoration is conditioned on: given directly, or as 3D state rendered with the cameras.

    Attributes:
        prompt: Text prompt (docs/method.md §4's default).
        negative_prompt: Negative prompt (CFG's unconditional branch).
        prompt_embeds: Precomputed prompt embeddings [1, L, D]; with ``negative_prompt_embeds`` the text
            encoder is never used.
        negative_prompt_embeds: [1, L, D]
        prompt_cache: A safetensors file next to the job where embeddings are cached (read if it holds these
            prompts, written otherwise).
        preserve_mask: Pixel preserve mask, 1 = keep the coarse video (identity). [F, H, W]
        gaussians: Labelled Gaussians to render the preserve mask from when ``preserve_mask`` is None: one
            ``Gaussians`` or one posed set per frame (``part_ids`` and ``loose`` set).
        pose_video: VACE control video, RGB in [0, 1]. [F, H, W, 3]
        joints: Posed body joints per frame, to draw the pose video from when ``pose_video`` is None. [F, J, 3]
        joint_transforms: Rest -> posed world joint transforms per frame. [F, J, 4, 4]
        joint_names: SMPL-family joint names (J).
        reference_image: The input photo, RGB in [0, 1] (any size; padded, never stretched). [h, w, 3]
    """

    prompt: str = DEFAULT_PROMPT
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    prompt_embeds: Tensor | None = None
    negative_prompt_embeds: Tensor | None = None
    prompt_cache: str | os.PathLike | None = None
    preserve_mask: Tensor | None = None
    gaussians: object | None = None
    pose_video: Tensor | None = None
    joints: Tensor | None = None
    joint_transforms: Tensor | None = None
    joint_names: Sequence[str] | None = None
    reference_image: Tensor | None = None
    pose_style: conditioning.PoseStyle = field(default_factory=conditioning.PoseStyle)


def _check_inputs(prior: WanPrior, coarse_video: Tensor, cameras, conditions: RestoreConditions) -> None:
    if not isinstance(coarse_video, Tensor) or coarse_video.ndim != 4 or coarse_video.shape[-1] != 3:
        shape = list(coarse_video.shape) if isinstance(coarse_video, Tensor) else type(coarse_video).__name__
        raise InputError(f"coarse_video: expected a tensor [F, H, W, 3] in [0, 1], got {shape}")
    num_frames, height, width = coarse_video.shape[:3]
    check_video_size(num_frames, height, width, "coarse_video")
    if cameras is not None:
        if len(cameras) != num_frames:
            raise InputError(f"cameras: expected {num_frames} (one per frame), got {len(cameras)}")
        if (cameras.width, cameras.height) != (width, height):
            raise InputError(f"cameras: image size {cameras.width}x{cameras.height} does not match the video "
                             f"{width}x{height}")
    c = conditions
    if c.preserve_mask is not None and tuple(c.preserve_mask.shape) != (num_frames, height, width):
        raise InputError(
            f"preserve_mask: expected [{num_frames}, {height}, {width}], got {list(c.preserve_mask.shape)}")
    if c.preserve_mask is None and c.gaussians is not None and cameras is None:
        raise InputError("cameras: needed to render the preserve mask from the Gaussians")
    if (c.prompt_embeds is None) != (c.negative_prompt_embeds is None):
        raise InputError("prompt_embeds / negative_prompt_embeds: give both or neither")
    if c.prompt_embeds is None and prior.text_encoder is None:
        cached = None
        if c.prompt_cache is not None:
            from backend.diffusion.wan_loading import load_prompt_embeds

            cached = load_prompt_embeds(c.prompt_cache, prompt=c.prompt, negative_prompt=c.negative_prompt)
        if cached is None or cached[1] is None:
            raise InputError("prompt_embeds: the model has no text encoder loaded and no cached embeddings "
                             "match the prompt; pass prompt_embeds or load the text encoder")
    if prior.kind == "vace":
        if c.pose_video is not None and tuple(c.pose_video.shape) != (num_frames, height, width, 3):
            raise InputError(
                f"pose_video: expected [{num_frames}, {height}, {width}, 3], got {list(c.pose_video.shape)}")
        if c.pose_video is None and c.joints is not None:
            if cameras is None or c.joint_transforms is None or c.joint_names is None:
                raise InputError("joints: drawing the pose video needs cameras, joint_transforms and joint_names")
            if c.joints.shape[0] != num_frames:
                raise InputError(f"joints: expected {num_frames} frames, got {c.joints.shape[0]}")


def render_conditions(prior: WanPrior, coarse_video: Tensor, cameras, conditions: RestoreConditions
                      ) -> tuple[Tensor, Tensor | None]:
    """The pixel preserve mask [F, H, W] and (VACE) pose video [F, H, W, 3] for a restoration.

    Given conditions are used as they are; missing ones are rendered from the 3D state with ``cameras``.
    Without a mask source the mask is all zeros (no self-guidance).
    """
    num_frames, height, width = coarse_video.shape[:3]
    c = conditions
    if c.preserve_mask is not None:
        mask = c.preserve_mask.float().clamp(0, 1).cpu()
    elif c.gaussians is not None:
        mask = conditioning.render_preserve_mask(c.gaussians, cameras)
    else:
        logger.warning("restore: no preserve mask: self-guidance is off")
        mask = torch.zeros(num_frames, height, width)
    pose = None
    if prior.kind == "vace":
        if c.pose_video is not None:
            pose = c.pose_video.float().cpu()
        elif c.joints is not None:
            pose = conditioning.render_pose_video(c.joints, c.joint_transforms, c.joint_names, cameras,
                                                  c.pose_style)
    elif c.pose_video is not None or c.joints is not None or c.reference_image is not None:
        logger.info("restore: %s is text-to-video; pose and reference image are not used", prior.name)
    return mask, pose


def restore(
    coarse_video: Tensor,
    cameras,
    conditions: RestoreConditions,
    settings: RestoreSettings | None = None,
    progress: StageReport | None = None,
    *,
    prior: WanPrior,
) -> Tensor:
    """Restore a coarse rendering with the video prior (self-guided stochastic sampling).

    Args:
        coarse_video: The rigid-layer rendering, RGB in [0, 1]. [F, H, W, 3], F = 4k+1, H, W multiples of 16.
        cameras: ``backend.render.Cameras`` of the video (F cameras), used to render missing conditions; may be
            None when every condition is given.
        conditions: Prompt, preserve mask / labelled Gaussians, pose video / joints, reference image.
        settings: Sampler settings.
        progress: ``report(fraction, message)`` for this stage; may raise ``Cancelled``.
        prior: A loaded ``WanPrior``.

    Returns:
        The restored video, RGB in [0, 1], float32 on the CPU. [F, H, W, 3]

    Raises:
        InputError: Bad sizes or shapes (before any heavy work).
        Cancelled: Raised by ``progress``.
    """
    settings = settings or RestoreSettings()
    report = progress or (lambda *args, **kwargs: None)
    _check_inputs(prior, coarse_video, cameras, conditions)
    report(0.0, "restore: preparing conditions")
    started = time.monotonic()
    mask, pose = render_conditions(prior, coarse_video, cameras, conditions)
    c = conditions
    if c.prompt_embeds is not None:
        pos, neg = c.prompt_embeds, c.negative_prompt_embeds
    else:
        pos, neg = prior.prompt_embeddings(c.prompt, c.negative_prompt, cache_path=c.prompt_cache)
    num_frames, height, width = coarse_video.shape[:3]
    wan_conditions = prior.prepare_conditions(
        prompt_embeds=pos, negative_prompt_embeds=neg, num_frames=num_frames, height=height, width=width,
        pose_video=pose, reference_image=c.reference_image if prior.kind == "vace" else None,
        conditioning_scale=settings.conditioning_scale,
    )
    report(0.05, "restore: encoding the coarse video")
    y = prior.encode(coarse_video)
    latent_mask = conditioning.mask_to_latent(mask, prior.spatial_factor, prior.temporal_factor)
    latent_mask = latent_mask[None, None].to(y.device, y.dtype)

    sampler_gen = torch.Generator(y.device).manual_seed(settings.seed)
    reference_gen = torch.Generator(y.device).manual_seed(settings.seed + 1)
    velocity = prior.velocity(wan_conditions, settings.cfg, generator=reference_gen)
    sigmas = flow_sigmas(settings.steps, float(settings.strength), float(settings.shift))
    sampling_started = time.monotonic()

    def on_step(info) -> None:
        elapsed = time.monotonic() - sampling_started
        report(round(0.1 + 0.8 * (info.index + 1) / info.total, 6),
               f"restore: step {info.index + 1}/{info.total} (sigma {info.sigma:.3f}, {elapsed:.1f} s)")

    x0 = sample_self_guided(
        velocity, y, sigmas.to(y.device), mask=latent_mask, guidance=float(settings.guidance),
        gamma=settings.gamma, guidance_schedule=settings.guidance_schedule, generator=sampler_gen,
        callback=on_step,
    )
    report(0.9, "restore: decoding")
    video = prior.decode(x0)
    prior.offload_all()
    report(1.0, f"restore: done in {time.monotonic() - started:.1f} s")
    return video
