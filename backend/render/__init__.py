"""Differentiable Gaussian rendering: cameras (Blender convention), ``render()`` with a gsplat CUDA path and a
portable pure-PyTorch rasterizer, camera trajectories and image/video writers.

Public API::

    from backend.render import Cameras, load_cameras, save_cameras, render, RenderSettings, RenderOutput
"""

from backend.render.cameras import Cameras, load_cameras, look_at, save_cameras
from backend.render.render import RenderOutput, RenderSettings, render, resolve_backend
from backend.render.sequence import render_sequence, render_turntable, write_render_folder
from backend.render.trajectories import (
    Framing,
    ViewTimeTrajectory,
    cameras_around,
    diagonal_trajectories,
    diagonal_trajectory,
    frame_subject,
    orbit_cameras,
)
from backend.render.video import contact_sheet, write_contact_sheet, write_mp4, write_png_frames

__all__ = [
    "Cameras",
    "Framing",
    "RenderOutput",
    "RenderSettings",
    "ViewTimeTrajectory",
    "cameras_around",
    "contact_sheet",
    "diagonal_trajectories",
    "diagonal_trajectory",
    "frame_subject",
    "load_cameras",
    "look_at",
    "orbit_cameras",
    "render",
    "render_sequence",
    "render_turntable",
    "resolve_backend",
    "save_cameras",
    "write_contact_sheet",
    "write_mp4",
    "write_png_frames",
    "write_render_folder",
]
