"""Ani3DHuman backend: one photo + an SMPL/SMPL-X motion -> animated 3D Gaussians.

The backend never imports ``bpy``; the Blender add-on never imports this package (docs/design.md §1).
"""

__version__ = "0.1.0"
