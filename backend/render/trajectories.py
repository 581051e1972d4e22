"""Camera paths around a subject: turntable/orbit and the paper's diagonal view–time trajectories.

Azimuth convention (Blender world, Z up): azimuth 0° puts the camera on the −Y side of the subject looking
towards +Y (Blender's front view; the body faces −Y), positive azimuth turns the camera counter-clockwise seen
from above (90° = camera on +X). Elevation lifts the camera above the look-at point.

Diagonal trajectories (docs/method.md §3, the authors' ``diagloader.py``): 81 frames, frame i has azimuth
``start − 30° + 60°·i/80`` and normalised time ``−1 + 2i/80``; elevation 10°, vertical FoV 40°, look-at the
body centre, 480×832 portrait (width 480, height 832).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from backend.core.errors import InputError
from backend.render.cameras import Cameras, look_at


@dataclass(frozen=True, eq=False)  # holds tensors: compare fields explicitly
class Framing:
    """Where to look and from how far so that a subject fills the frame from every azimuth.

    Attributes:
        center: Look-at point (centre of the subject's bounding box). [3]
        distance: Camera distance from ``center`` in metres.
    """

    center: Tensor
    distance: float


@dataclass(frozen=True, eq=False)  # holds tensors: compare fields explicitly
class ViewTimeTrajectory:
    """Cameras paired with animation times.

    Attributes:
        cameras: One camera per frame. [F]
        times: Normalised animation time per frame in [−1, 1]. [F]
        azimuths_deg: Camera azimuth per frame in degrees. [F]
    """

    cameras: Cameras
    times: Tensor
    azimuths_deg: Tensor

    def frame_indices(self, num_motion_frames: int) -> Tensor:
        """Nearest motion frame for each time (−1 -> first, +1 -> last). [F] int64"""
        return torch.round((self.times + 1.0) / 2.0 * (num_motion_frames - 1)).long()


def frame_subject(
    points_world: Tensor,
    *,
    fov_y_deg: float = 40.0,
    width: int = 480,
    height: int = 832,
    margin: float = 1.1,
) -> Framing:
    """Look-at centre and distance that fit a subject in view from any azimuth (camera near the horizon).

    Args:
        points_world: Points on the subject (Gaussian means, body vertices). [P, 3] (or [F, P, 3] for a
            whole animation: the union is framed)
        fov_y_deg: Vertical field of view.
        width, height: Image size (sets the horizontal field of view).
        margin: Extra room around the subject (1.1 = 10 %).
    """
    pts = points_world.detach().reshape(-1, 3).to(torch.float64)
    if pts.shape[0] == 0:
        raise InputError("frame_subject: points_world: expected at least one point, got none")
    lo, hi = pts.min(0).values, pts.max(0).values
    center = (lo + hi) / 2
    r_xy = float((pts[:, :2] - center[:2]).norm(dim=-1).max())
    half_z = float((hi[2] - lo[2]) / 2)
    tan_y = math.tan(math.radians(fov_y_deg) / 2)
    tan_x = tan_y * width / height
    # Nearest subject point is r_xy closer than the centre, so frame the extents at (distance − r_xy).
    distance = max(half_z / tan_y, r_xy / tan_x) * margin + r_xy
    return Framing(center=center.to(torch.float32), distance=max(distance, 1e-3))


def _cameras_at(
    center: Tensor,
    distance: float,
    azimuths_deg: Tensor,
    elevation_deg: float,
    fov_y_deg: float,
    width: int,
    height: int,
) -> Cameras:
    az = torch.deg2rad(azimuths_deg.to(torch.float64))
    el = math.radians(elevation_deg)
    offset = torch.stack([
        torch.sin(az) * math.cos(el),
        -torch.cos(az) * math.cos(el),
        torch.full_like(az, math.sin(el)),
    ], dim=-1)
    c = torch.as_tensor(center, dtype=torch.float64).reshape(3)
    eye = c + distance * offset
    return Cameras.from_fov(look_at(eye, c), width=width, height=height, fov_y_deg=fov_y_deg)


def cameras_around(
    framing: Framing,
    azimuths_deg: Tensor,
    *,
    elevation_deg: float = 10.0,
    fov_y_deg: float = 40.0,
    width: int = 512,
    height: int = 512,
) -> Cameras:
    """One camera per azimuth (degrees) [C], all at ``framing.distance`` from ``framing.center`` looking at it."""
    return _cameras_at(framing.center, framing.distance, torch.as_tensor(azimuths_deg, dtype=torch.float64),
                       elevation_deg, fov_y_deg, width, height)


def orbit_cameras(
    framing: Framing,
    *,
    num_frames: int,
    start_azimuth_deg: float = 0.0,
    sweep_deg: float = 360.0,
    elevation_deg: float = 10.0,
    fov_y_deg: float = 40.0,
    width: int = 512,
    height: int = 512,
) -> Cameras:
    """Turntable/orbit: azimuth ``start + sweep·i/num_frames`` (a full turn does not repeat its first view)."""
    if num_frames < 1:
        raise InputError(f"orbit_cameras: num_frames: expected >= 1, got {num_frames}")
    az = start_azimuth_deg + sweep_deg * torch.arange(num_frames, dtype=torch.float64) / num_frames
    return _cameras_at(framing.center, framing.distance, az, elevation_deg, fov_y_deg, width, height)


def diagonal_trajectory(
    framing: Framing,
    *,
    start_azimuth_deg: float = 0.0,
    num_frames: int = 81,
    azimuth_span_deg: float = 60.0,
    elevation_deg: float = 10.0,
    fov_y_deg: float = 40.0,
    width: int = 480,
    height: int = 832,
) -> ViewTimeTrajectory:
    """One diagonal of the view × time matrix: azimuth and time advance together.

    Frame i: azimuth ``start − span/2 + span·i/(F−1)``, time ``−1 + 2i/(F−1)``.
    """
    if num_frames < 2:
        raise InputError(f"diagonal_trajectory: num_frames: expected >= 2, got {num_frames}")
    s = torch.arange(num_frames, dtype=torch.float64) / (num_frames - 1)
    az = start_azimuth_deg - azimuth_span_deg / 2 + azimuth_span_deg * s
    cams = _cameras_at(framing.center, framing.distance, az, elevation_deg, fov_y_deg, width, height)
    return ViewTimeTrajectory(cameras=cams, times=(-1.0 + 2.0 * s).to(torch.float32), azimuths_deg=az.float())


def diagonal_trajectories(
    framing: Framing,
    *,
    count: int = 5,
    first_azimuth_deg: float = 0.0,
    **kwargs: float | int,
) -> list[ViewTimeTrajectory]:
    """``count`` diagonal trajectories with starting azimuths spread evenly around the subject."""
    if count < 1:
        raise InputError(f"diagonal_trajectories: count: expected >= 1, got {count}")
    return [
        diagonal_trajectory(framing, start_azimuth_deg=first_azimuth_deg + 360.0 * k / count, **kwargs)
        for k in range(count)
    ]
