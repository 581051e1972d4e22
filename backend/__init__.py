"""Ani3DHuman backend: one photo + an SMPL/SMPL-X motion -> animated 3D Gaussians.

The backend never imports ``bpy``; the Blender add-on never imports this package (docs/design.md §1). The
packages, bottom to top: core, wire · body, gaussians · motion · render · reconstruct · diffusion · train ·
stages · service · cli (docs/design.md §2).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
