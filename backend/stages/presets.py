"""Quality presets of the prior stages: rounds, trajectories, video size, sampler steps, field size, iterations.

The paper (docs/method.md §7) fits 25k iterations with a new restored trajectory every 5k (5 rounds) at 480×832,
81 frames; ``high`` is that. ``standard`` and ``preview`` shrink every axis so a CUDA machine finishes in
minutes (standard) or a CPU in a few minutes with a tiny model (preview).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from backend.core.errors import InputError
from backend.gaussians import Gaussians
from backend.motion.residual import FieldConfig, bounds_from_points
from backend.train.field_fit import FieldFitSettings
from backend.stages.job import QUALITY_PRESETS

BACKGROUND = (1.0, 1.0, 1.0)  # the prior stages render and fit over white


@dataclass(frozen=True)
class PriorPreset:
    """One quality level of the prior stages.

    Attributes:
        rounds: Progressive rounds (each restores new trajectories, then trains).
        trajectories_per_round: Diagonal trajectories restored per round.
        iterations: Total fit iterations (split evenly over the rounds).
        video_frames: Frames per trajectory video (4k + 1 for the Wan VAE).
        width, height: Video size (multiples of 16; portrait like the paper's 480×832).
        azimuth_span_deg: Azimuth covered by one trajectory.
        restore_steps: Sampler steps of the restoration.
        restore_strength: Sampler strength s.
        spatial_resolution, temporal_resolution, features, multires: Field size.
        appearance: Also refine colours and opacities from the restored videos (``FieldFitSettings.appearance``);
            on: it helped on held-out views with ground-truth and with restored-stand-in videos (docs/fit.md).
        grid_lr, mlp_lr: Learning rates (initial, final). ``high`` uses 4DGaussians' (tuned for ~20k
            iterations); the shorter presets start 10× / 2.5× higher so that a few hundred / thousand iterations
            move the field (the 600-iteration recovery test needs ≈1e-2 on the planes).
    """

    rounds: int
    trajectories_per_round: int
    iterations: int
    video_frames: int
    width: int
    height: int
    azimuth_span_deg: float
    restore_steps: int
    restore_strength: float
    spatial_resolution: int
    temporal_resolution: int
    features: int
    multires: tuple[int, ...]
    grid_lr: tuple[float, float] = (1.6e-3, 1.6e-5)
    mlp_lr: tuple[float, float] = (1.6e-4, 1.6e-6)
    appearance: bool = True


PRESETS: dict[str, PriorPreset] = {
    "preview": PriorPreset(rounds=2, trajectories_per_round=1, iterations=400, video_frames=17, width=160,
                           height=272, azimuth_span_deg=60.0, restore_steps=4, restore_strength=0.6,
                           spatial_resolution=32, temporal_resolution=13, features=16, multires=(1, 2),
                           grid_lr=(1.6e-2, 1.6e-3), mlp_lr=(1.6e-3, 1.6e-4)),
    "standard": PriorPreset(rounds=3, trajectories_per_round=1, iterations=6000, video_frames=49, width=320,
                            height=560, azimuth_span_deg=60.0, restore_steps=10, restore_strength=0.6,
                            spatial_resolution=64, temporal_resolution=25, features=32, multires=(1, 2),
                            grid_lr=(4e-3, 4e-5), mlp_lr=(4e-4, 4e-6)),
    "high": PriorPreset(rounds=5, trajectories_per_round=1, iterations=25000, video_frames=81, width=480,
                        height=832, azimuth_span_deg=60.0, restore_steps=20, restore_strength=0.6,
                        spatial_resolution=64, temporal_resolution=25, features=32, multires=(1, 2)),
}


def preset(quality: str, overrides: dict | None = None) -> PriorPreset:
    """The preset of a quality name, with optional field overrides (``JobSpec.extras["prior_preset"]``).

    Raises:
        InputError: unknown quality or override name (the message names it).
    """
    if quality not in PRESETS:
        raise InputError(f"quality: expected one of {QUALITY_PRESETS}, got {quality!r}")
    chosen = PRESETS[quality]
    if overrides:
        if not isinstance(overrides, dict):
            raise InputError(f"extras.prior_preset: expected an object, got {type(overrides).__name__}")
        unknown = sorted(set(overrides) - set(PriorPreset.__dataclass_fields__))
        if unknown:
            raise InputError(f"extras.prior_preset: unknown field(s) {unknown}; expected some of "
                             f"{sorted(PriorPreset.__dataclass_fields__)}")
        values = dict(overrides)
        for key in ("multires", "grid_lr", "mlp_lr"):
            if key in values:
                values[key] = tuple(values[key])
        chosen = replace(chosen, **values)
    for name in ("rounds", "trajectories_per_round", "iterations", "video_frames", "width", "height",
                 "restore_steps"):
        value = getattr(chosen, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"prior preset {name}: expected a positive integer, got {value!r}")
    if (chosen.video_frames - 1) % 4 or chosen.width % 16 or chosen.height % 16:
        raise InputError(f"prior preset: video_frames must be 4k+1 and width/height multiples of 16, got "
                         f"{chosen.video_frames} frames {chosen.width}x{chosen.height}")
    return chosen


def job_preset(spec) -> PriorPreset:
    """A job's prior preset: its quality's, with the released code's video size under ``sampler="released"``,
    then the job's own overrides (``extras["prior_preset"]``) on top."""
    from backend.diffusion.restore import RELEASED_VIDEO

    video = RELEASED_VIDEO if spec.sampler == "released" else {}
    return preset(spec.quality, {**video, **(spec.extras.get("prior_preset") or {})})


def field_config_for(canonical: Gaussians, p: PriorPreset) -> FieldConfig:
    """The field of a preset, its box around the canonical Gaussians."""
    return FieldConfig(bounds=bounds_from_points(canonical.means), spatial_resolution=p.spatial_resolution,
                       temporal_resolution=p.temporal_resolution, features=p.features, multires=p.multires)


def field_fit_settings_for(p: PriorPreset, **overrides) -> FieldFitSettings:
    """The fit settings of a preset (its learning rates, checkpoints every ~10 % of the fit)."""
    iterations = int(overrides.get("iterations", p.iterations))
    base = dict(iterations=iterations, grid_lr=p.grid_lr, mlp_lr=p.mlp_lr, background=BACKGROUND, appearance=p.appearance,
                checkpoint_every=max(iterations // 10, 50),
                report_every=max(1, min(25, iterations // 20)))
    base.update(overrides)
    return FieldFitSettings(**base)
