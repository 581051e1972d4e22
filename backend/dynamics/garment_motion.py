"""A garment through a motion: rigidly skinned (``--dynamics none``) or simulated (``--dynamics cloth``).

The simulation starts from the garment skinned in the rest pose, placed where the motion's first frame stands,
and runs ``warmup_frames`` frames in which the body eases from the rest pose into frame 0 (the cloth settles
under gravity and around the legs), then the motion. The waist ring (a dress's bodice) follows the rigidly
skinned garment exactly; the body collides as capsules (``colliders.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from backend.body.model import BodyModel
from backend.dynamics.colliders import body_capsules, depth_inside
from backend.dynamics.simulate import CLOTH_PRESETS, DEFAULT_PRESET, Capsules, SimSettings, simulate_cloth
from backend.motion.cloth import ClothBinding, ClothLayer
from backend.reconstruct.garment_surface import GarmentSurface

DYNAMICS = ("auto", "cloth", "none")


@dataclass(frozen=True)
class DynamicsSettings:
    """Attributes:
        preset: Fabric (``CLOTH_PRESETS``: light, medium, heavy).
        warmup_frames: Frames from the rest pose into the motion's first frame before it starts.
        sim: Solver settings (substeps, iterations, contact margin, device).
    """

    preset: str = DEFAULT_PRESET
    warmup_frames: int = 24
    sim: SimSettings = field(default_factory=SimSettings)

    def __post_init__(self) -> None:
        from backend.core.errors import InputError

        if self.preset not in CLOTH_PRESETS:
            raise InputError(f"cloth_preset: expected one of {tuple(CLOTH_PRESETS)}, got {self.preset!r}")
        if not isinstance(self.warmup_frames, int) or self.warmup_frames < 1:
            raise InputError(f"cloth warm-up: expected ≥ 1 frames, got {self.warmup_frames!r}")


def warmup_poses(root_orient: Tensor, pose_body: Tensor, trans: Tensor, frames: int) -> tuple[Tensor, Tensor, Tensor]:
    """Body poses easing from the rest pose into the first motion frame (smoothstep over the first two
    thirds, then held). Inputs are the first frame's ``[3]``, ``[63]``, ``[3]``; outputs ``[frames, ...]``."""
    s = torch.linspace(0, 1, frames, dtype=pose_body.dtype)
    s = (s * 1.5).clamp(max=1.0)
    s = s * s * (3 - 2 * s)
    return (root_orient.expand(frames, -1).clone(), s[:, None] * pose_body[None], trans.expand(frames, -1).clone())


def skinned_layer(surface: GarmentSurface, binding: ClothBinding, joint_transforms: Tensor) -> ClothLayer:
    """The rigid garment: the surface as it hangs in the photo (or at rest) skinned with its smooth weights.
    joint_transforms [F, J, 4, 4]."""
    return ClothLayer(binding, surface.posed_hanging(joint_transforms.float()).float(), source="skinned")


def hem_radii(vertices: Tensor, surface: GarmentSurface, axis_points: Tensor) -> Tensor:
    """Mean horizontal distance (world XY) of the hem from the vertical axis through ``axis_points`` [F, 3]. [F]"""
    hem = vertices[:, surface.hem_ring]  # [F, S, 3]
    return (hem[..., :2] - axis_points[:, None, :2]).norm(dim=-1).mean(dim=1)


def drape(surface: GarmentSurface, body: BodyModel, betas: Tensor | None, warmup_transforms: Tensor, fps: float,
          settings: DynamicsSettings = DynamicsSettings(), report: Callable[[float, str], None] | None = None) -> Tensor:
    """The garment settled under gravity on the body at the warm-up's last pose (world). ``-> [M, 3]``"""
    transforms = warmup_transforms.float()
    capsules = body_capsules(body, betas)
    a, b = capsules.posed(body, betas, transforms)
    result = simulate_cloth(surface.rest_vertices, surface.faces, surface.pinned, surface.posed(transforms),
                            Capsules(a=a, b=b, radius=capsules.radius), fps, CLOTH_PRESETS[settings.preset],
                            settings.sim, report)
    return torch.from_numpy(result.vertices[-1]).float()


def simulate_garment(
    surface: GarmentSurface,
    binding: ClothBinding,
    body: BodyModel,
    betas: Tensor | None,
    joint_transforms: Tensor,
    warmup_transforms: Tensor | None,
    fps: float,
    settings: DynamicsSettings = DynamicsSettings(),
    report: Callable[[float, str], None] | None = None,
    start: Tensor | None = None,
) -> tuple[ClothLayer, dict]:
    """Simulate the garment over the motion.

    Args:
        surface: The garment surface (rest frame).
        binding: Its Gaussians' binding.
        body: The body model (for the colliders).
        betas: Body shape. [S] or None
        joint_transforms: Rest->posed transforms of every motion frame. [F, J, 4, 4]
        warmup_transforms: The warm-up's transforms, ending at frame 0's pose (``warmup_poses``). [W, J, 4, 4]
            None (unused) with ``start``.
        fps: Frames per second of the motion.
        settings: Preset, warm-up, solver.
        report: ``report(fraction, message)``.
        start: The garment already settled in frame 0's pose (world, ``drape``'s result): the motion starts
            from it at rest, with no second warm-up, so frame 0 is exactly that shape. [M, 3]

    Returns:
        (ClothLayer with ``F`` frames of simulated vertices, record for result.json: preset, device, vertices,
        frames, warm-up frames, seconds, frames per second, hem radii, deepest contact, largest stretch).
    """
    if start is None and warmup_transforms is None:
        raise ValueError("simulate_garment: give warmup_transforms or start")
    if start is None:  # the warm-up ends in frame 0's pose: its last frame is frame 0
        all_transforms = torch.cat([warmup_transforms[:-1], joint_transforms]).float()
        pinned_positions = surface.posed(all_transforms)  # [W + F, M, 3]
    else:
        all_transforms = joint_transforms.float()
        pinned_positions = surface.posed(all_transforms)
        pinned_positions[0] = start.to(pinned_positions.dtype)
    capsules = body_capsules(body, betas)
    a, b = capsules.posed(body, betas, all_transforms)
    result = simulate_cloth(surface.rest_vertices, surface.faces, surface.pinned, pinned_positions,
                            Capsules(a=a, b=b, radius=capsules.radius), fps, CLOTH_PRESETS[settings.preset],
                            settings.sim, report)
    warm = warmup_transforms.shape[0] - 1 if start is None else 0
    vertices = torch.from_numpy(result.vertices[warm:]).float()
    pelvis = all_transforms[warm:, body.joint_names.index("Pelvis"), :3, 3]
    radii = hem_radii(vertices, surface, pelvis)
    rigid = hem_radii(pinned_positions[warm:], surface, pelvis)
    free = ~surface.pinned
    depth = max(float(depth_inside(vertices[f][free], a[warm + f], b[warm + f], capsules.radius).max())
                for f in range(vertices.shape[0]))
    seconds = dict(result.seconds)
    total_frames = result.vertices.shape[0] - 1
    record = {
        "preset": settings.preset, "device": result.device, "vertices": int(surface.rest_vertices.shape[0]),
        "frames": int(vertices.shape[0]), "warmup_frames": int(warm + 1) if start is None else 0,
        "start": "warm-up from the rest pose" if start is None else "the garment as draped in the photo", "substeps": settings.sim.substeps,
        "iterations": settings.sim.iterations,
        "seconds": {k: round(float(v), 4) for k, v in seconds.items()},
        "frames_per_second": round(1.0 / seconds["per_frame"], 3) if seconds.get("per_frame") else None,
        "simulated_frames": int(total_frames),
        "hem_radius": {"rest": round(float(rigid[0]), 4), "first": round(float(radii[0]), 4),
                       "min": round(float(radii.min()), 4), "max": round(float(radii.max()), 4),
                       "rigid_max": round(float(rigid.max()), 4)},
        "max_depth_in_colliders_mm": round(1000 * max(0.0, depth), 2),
        "max_stretch": round(float(result.max_stretch), 4),
    }
    if not math.isfinite(record["max_stretch"]):
        raise FloatingPointError("cloth simulation: non-finite stretch")
    return ClothLayer(binding, vertices, source="cloth"), record
