"""Synthetic subjects with known truth, for the reconstruction tests and benchmark.

``skirted_subject``: the procedural body Gaussians (skin, striped shirt, trousers, shoes, hair) with an extra
sinusoidal texture, plus a flared skirt of loose Gaussians around the hips (checked pattern), bound to the body
by the skinning weights of the nearest rest vertex. ``photo_cameras``: cameras around the posed body, the
first one in front of it (the body of the built-in motions faces world −Y).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from backend.body.model import BodyModel
from backend.body.parts import PART_INDEX, part_ids_from_weights
from backend.gaussians import Gaussians
from backend.core.rotations import matrix_to_quaternion
from backend.reconstruct.surface import sample_body_gaussians, tangent_frames
from backend.render.cameras import Cameras
from backend.render.trajectories import Framing, cameras_around


def skirted_subject(body: BodyModel, num_body: int, generator: torch.Generator, *, flare: float = 0.08,
                    length: float = 0.42) -> Gaussians:
    """A textured body subject with a skirt, in the body's rest pose.

    Args:
        body: The body model (rest frame Y up, facing +Z).
        num_body: Gaussians on the body surface; the skirt gets a matching density.
        generator: Source of every random draw.
        flare: How much wider the skirt is at its hem than at the waist (metres).
        length: Skirt length from the waist down (metres).

    Returns:
        Gaussians with skin_weights, part_ids and loose (True on the skirt).
    """
    subject = sample_body_gaussians(body, None, num_body, generator)
    colors = subject.colors.clone()
    legs = (subject.part_ids == PART_INDEX["left_leg"]) | (subject.part_ids == PART_INDEX["right_leg"])
    pattern = 0.75 + 0.25 * torch.sin(subject.means[:, 0] * 2 * math.pi / 0.05) * torch.sin(
        subject.means[:, 1] * 2 * math.pi / 0.07)
    colors[legs] = colors[legs] * pattern[legs, None]
    subject = subject.replace(sh=((colors - 0.5) / 0.28209479177387814)[:, None, :])

    rest = body.rest_vertices().detach().cpu().float()
    joints = body.rest_joints().detach().cpu().float()
    weights = body.skin_weights.detach().cpu().float()
    pelvis = joints[0]
    top = float(pelvis[1]) + 0.08
    bottom = top - length
    # Waist ellipse from the torso vertices near the top of the skirt (arms are far above in the rest pose).
    band = (rest[:, 1] - top).abs() < 0.03
    cx, cz = float(rest[band, 0].mean()), float(rest[band, 2].mean())
    rx = float((rest[band, 0] - cx).abs().max()) + 0.015
    rz = float((rest[band, 2] - cz).abs().max()) + 0.015
    spacing = float(subject.scales[:, 0].mean()) / 0.75
    circumference = math.pi * (3 * (rx + rz) - math.sqrt((3 * rx + rz) * (rx + 3 * rz))) + math.pi * flare
    count = max(64, int(circumference * length / spacing ** 2))
    u = torch.rand(count, 2, generator=generator)
    theta = u[:, 0] * 2 * math.pi
    t = u[:, 1]  # 0 at the waist, 1 at the hem
    grow = flare * t
    x = cx + (rx + grow) * torch.sin(theta)
    z = cz + (rz + grow) * torch.cos(theta)
    y = top - length * t
    points = torch.stack([x, y, z], dim=-1)
    normals = torch.nn.functional.normalize(torch.stack([torch.sin(theta) / (rx + grow),
                                                         torch.full_like(t, flare / length * 0.5),
                                                         torch.cos(theta) / (rz + grow)], dim=-1), dim=-1)
    check = ((torch.floor(theta / (2 * math.pi) * 24) + torch.floor(t * 6)) % 2 == 0)
    skirt_colors = torch.where(check[:, None], torch.tensor([0.15, 0.45, 0.25]), torch.tensor([0.9, 0.8, 0.3]))
    nearest = torch.cdist(points, rest).argmin(dim=1)
    skirt_weights = weights[nearest]
    skirt = Gaussians.from_colors(
        points, skirt_colors,
        scales=torch.tensor([spacing * 0.75, spacing * 0.75, spacing * 0.12]).expand(count, 3).clone(),
        opacities=0.95,
        quats=matrix_to_quaternion(tangent_frames(normals)),
        skin_weights=skirt_weights,
        part_ids=part_ids_from_weights(skirt_weights, body.joint_names),
        loose=torch.ones(count, dtype=torch.bool),
    )
    return Gaussians.concatenate([subject, skirt])


def photo_cameras(center: Tensor, azimuths_deg: list[float], *, width: int, height: int, distance: float = 3.2,
                  fov_y_deg: float = 36.0, elevation_deg: float = 0.0) -> Cameras:
    """The synthetic photo's cameras: ``render.cameras_around`` at a fixed distance and a 36° lens, level with
    ``center`` [3] by default; azimuth 0 looks at the body from −Y (its front)."""
    return cameras_around(Framing(center=center.float(), distance=distance), torch.as_tensor(azimuths_deg),
                          elevation_deg=elevation_deg, fov_y_deg=fov_y_deg, width=width, height=height)
