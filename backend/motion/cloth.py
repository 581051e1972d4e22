"""The cloth layer: Gaussians that ride a garment mesh instead of the body's bones.

A garment Gaussian is bound to one triangle of the garment mesh in the rest pose: the triangle, the
barycentric coordinates of its anchor point ``P`` and the triangle's orthonormal frame ``F`` (columns: first
edge, in-plane perpendicular, normal). When the mesh moves to vertices ``V_t`` (skinned, or simulated), the
triangle's rest -> current rigid map is

    ``A_t = F_t F_restᵀ``,  ``b_t = P_t − A_t P_rest``,

so a Gaussian at ``mu_c`` goes to ``A_t mu_c + b_t`` (anchor + the same offset in the moving triangle frame)
and turns by ``quat(A_t)``. These per-Gaussian transforms take the place of the blended bone transforms of
the rigid layer (``motion/layered.py``), so the residual field, rendering and export work unchanged on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def triangle_frames(vertices: Tensor, faces: Tensor) -> Tensor:
    """Orthonormal frame per triangle, columns (edge v0->v1, normal × edge, normal). ``[..., M, 3] -> [..., T, 3, 3]``."""
    v0, v1, v2 = vertices[..., faces[:, 0], :], vertices[..., faces[:, 1], :], vertices[..., faces[:, 2], :]
    e1 = torch.nn.functional.normalize(v1 - v0, dim=-1)
    n = torch.nn.functional.normalize(torch.linalg.cross(v1 - v0, v2 - v0), dim=-1)
    e2 = torch.linalg.cross(n, e1)
    return torch.stack([e1, e2, n], dim=-1)


def anchor_points(vertices: Tensor, faces: Tensor, triangles: Tensor, barycentric: Tensor) -> Tensor:
    """Points given by triangle + barycentric coordinates. ``[M, 3] -> [G, 3]``."""
    corners = vertices[faces[triangles]]  # [G, 3, 3]
    return (barycentric[..., None] * corners).sum(dim=-2)


@dataclass(frozen=True)
class ClothBinding:
    """Which canonical Gaussians ride which garment triangle.

    Attributes:
        index: Rows of the canonical Gaussians that are bound to the garment. [G] int64
        triangles: Garment triangle of each. [G] int64
        barycentric: Anchor point in its triangle. [G, 3]
        faces: Garment mesh triangles. [T, 3] int64
        rest_vertices: Garment mesh in the pose the Gaussians were bound in (the rest pose, or the photo's). [M, 3]
        reference: Per-Gaussian canonical -> binding-pose transforms (the rigid layer's blended transforms in the
            photo's pose), or None when the binding pose is the rest pose. [G, 3, 4]
    """

    index: Tensor
    triangles: Tensor
    barycentric: Tensor
    faces: Tensor
    rest_vertices: Tensor
    reference: Tensor | None = None

    @property
    def num_bound(self) -> int:
        return int(self.index.shape[0])

    def rest_anchor_frames(self) -> tuple[Tensor, Tensor]:
        """(anchor points [G, 3], triangle frames [G, 3, 3]) on the rest mesh."""
        points = anchor_points(self.rest_vertices, self.faces, self.triangles, self.barycentric)
        return points, triangle_frames(self.rest_vertices, self.faces)[self.triangles]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ClothBinding:
        dtype = dtype or self.rest_vertices.dtype
        return ClothBinding(self.index.to(device), self.triangles.to(device), self.barycentric.to(device, dtype),
                            self.faces.to(device), self.rest_vertices.to(device, dtype),
                            None if self.reference is None else self.reference.to(device, dtype))


def cloth_transforms(binding: ClothBinding, vertices: Tensor) -> Tensor:
    """Canonical -> current map of each bound Gaussian: its triangle's rigid map from the binding mesh to
    ``vertices``, after ``binding.reference`` when given. ``vertices [M, 3] -> [G, 3, 4]``.

    With ``vertices == binding.rest_vertices`` this is the identity (or ``reference``) up to rounding.
    """
    rest_points, rest_frames = binding.rest_anchor_frames()
    points = anchor_points(vertices, binding.faces, binding.triangles, binding.barycentric)
    frames = triangle_frames(vertices, binding.faces)[binding.triangles]
    rotation = frames @ rest_frames.transpose(-1, -2)
    translation = points - (rotation @ rest_points[..., None])[..., 0]
    if binding.reference is not None:
        ref = binding.reference
        translation = (rotation @ ref[..., 3:])[..., 0] + translation
        rotation = rotation @ ref[..., :3]
    return torch.cat([rotation, translation[..., None]], dim=-1)


@dataclass(frozen=True)
class ClothFrame:
    """One frame of the cloth layer: per-Gaussian transforms for the rows ``index``. index [G], transforms [G, 3, 4]."""

    index: Tensor
    transforms: Tensor


@dataclass
class ClothLayer:
    """The garment mesh through the motion, and the Gaussians bound to it.

    Attributes:
        binding: The binding of garment Gaussians to the mesh.
        vertices: Garment mesh per motion frame (world). [F, M, 3]
        source: ``"cloth"`` (simulated) or ``"skinned"`` (the rigid garment surface).
    """

    binding: ClothBinding
    vertices: Tensor
    source: str = "cloth"

    @property
    def num_frames(self) -> int:
        return int(self.vertices.shape[0])

    def frame(self, index: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
              ) -> ClothFrame:
        """The cloth transforms of motion frame ``index``."""
        if not 0 <= index < self.num_frames:
            raise IndexError(f"cloth layer: frame {index} outside [0, {self.num_frames})")
        device = device or self.vertices.device
        binding = self.binding.to(device, dtype)
        return ClothFrame(binding.index, cloth_transforms(binding, self.vertices[index].to(device, dtype or
                                                                                          self.vertices.dtype)))

    def save(self, path: str | Path) -> None:
        """Write ``cloth.npz`` (float32 vertices; the caller writes it inside an atomic job folder)."""
        b = self.binding
        extra = {} if b.reference is None else {"reference": b.reference.cpu().float().numpy()}
        np.savez(path, **extra, index=b.index.cpu().numpy(), triangles=b.triangles.cpu().numpy(),
                 barycentric=b.barycentric.cpu().float().numpy(), faces=b.faces.cpu().numpy(),
                 rest_vertices=b.rest_vertices.cpu().float().numpy(),
                 vertices=self.vertices.cpu().float().numpy(), source=np.array(self.source))

    @staticmethod
    def load(path: str | Path) -> ClothLayer:
        with np.load(path, allow_pickle=False) as data:
            binding = ClothBinding(torch.from_numpy(data["index"]).long(), torch.from_numpy(data["triangles"]).long(),
                                   torch.from_numpy(data["barycentric"]), torch.from_numpy(data["faces"]).long(),
                                   torch.from_numpy(data["rest_vertices"]),
                                   torch.from_numpy(data["reference"]) if "reference" in data else None)
            return ClothLayer(binding, torch.from_numpy(data["vertices"]), str(data["source"]))
