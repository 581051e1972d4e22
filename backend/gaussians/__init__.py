"""Gaussians container (raw parameters) and 3DGS PLY I/O."""

from backend.gaussians.container import SH_C0, Gaussians, rgb_to_sh_dc, sh_dc_to_rgb
from backend.gaussians.ply import load_ply, save_ply

__all__ = ["SH_C0", "Gaussians", "load_ply", "rgb_to_sh_dc", "save_ply", "sh_dc_to_rgb"]
