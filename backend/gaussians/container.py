"""The Gaussians container: raw, unconstrained parameters plus the binding to the body.

Conventions (docs/design.md §3): ``quats`` are (w, x, y, z) and need not be unit (normalise before use),
``log_scales`` are natural logs of the three standard deviations, ``opacity_logits`` go through a sigmoid,
``sh`` holds spherical-harmonic coefficients in the 3DGS convention (degree 0 is ``(rgb - 0.5) / SH_C0``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814


def rgb_to_sh_dc(rgb: Tensor) -> Tensor:
    """Colour in [0, 1] -> degree-0 SH coefficient. ``[..., 3] -> [..., 3]``."""
    return (rgb - 0.5) / SH_C0


def sh_dc_to_rgb(sh_dc: Tensor) -> Tensor:
    """Degree-0 SH coefficient -> colour (unclamped). ``[..., 3] -> [..., 3]``."""
    return sh_dc * SH_C0 + 0.5


@dataclass
class Gaussians:
    """A set of N 3D Gaussians.

    Attributes:
        means: Centres. [N, 3]
        quats: Rotations as quaternions (w, x, y, z), not necessarily unit. [N, 4]
        log_scales: Log standard deviations along the local axes. [N, 3]
        opacity_logits: Opacity before the sigmoid. [N]
        sh: Spherical-harmonic colour coefficients, K = (degree + 1)^2. [N, K, 3]
        skin_weights: Linear-blend-skinning weights over the body's joints, rows sum to 1. [N, J] or None
        part_ids: Body part index per Gaussian (``backend.body.parts.PART_NAMES``). [N] int64 or None
        loose: True where the Gaussian is loose clothing/hair (off the body surface). [N] bool or None
    """

    means: Tensor
    quats: Tensor
    log_scales: Tensor
    opacity_logits: Tensor
    sh: Tensor
    skin_weights: Tensor | None = None
    part_ids: Tensor | None = None
    loose: Tensor | None = None

    def __post_init__(self) -> None:
        self.validate()

    # ---- shape checks ------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the field whose shape does not fit N."""
        n = self.means.shape[0] if self.means.ndim == 2 else -1
        expected = {
            "means": (n, 3),
            "quats": (n, 4),
            "log_scales": (n, 3),
            "opacity_logits": (n,),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if tuple(value.shape) != shape:
                raise ValueError(f"Gaussians.{name}: expected shape {list(shape)}, got {list(value.shape)}")
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise ValueError(f"Gaussians.sh: expected shape [{n}, K, 3], got {list(self.sh.shape)}")
        if self.skin_weights is not None and (self.skin_weights.ndim != 2 or self.skin_weights.shape[0] != n):
            raise ValueError(f"Gaussians.skin_weights: expected shape [{n}, J], got {list(self.skin_weights.shape)}")
        for name in ("part_ids", "loose"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (n,):
                raise ValueError(f"Gaussians.{name}: expected shape [{n}], got {list(value.shape)}")

    # ---- derived quantities ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[0]

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def scales(self) -> Tensor:
        """Standard deviations. [N, 3]"""
        return torch.exp(self.log_scales)

    @property
    def opacities(self) -> Tensor:
        """Opacities in (0, 1). [N]"""
        return torch.sigmoid(self.opacity_logits)

    @property
    def colors(self) -> Tensor:
        """View-independent colour from the degree-0 SH term, clamped to [0, 1]. [N, 3]"""
        return sh_dc_to_rgb(self.sh[:, 0]).clamp(0.0, 1.0)

    @property
    def unit_quats(self) -> Tensor:
        """Normalised quaternions (w, x, y, z). [N, 4]"""
        return torch.nn.functional.normalize(self.quats, dim=-1)

    # ---- functional updates ------------------------------------------------------------------------------
    def replace(self, **changes: Tensor | None) -> Gaussians:
        """A copy with some fields replaced (the others are shared, not cloned)."""
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Gaussians:
        """Move every tensor; ``dtype`` applies to floating-point fields only."""

        def move(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        return Gaussians(**{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def detach(self) -> Gaussians:
        return Gaussians(
            **{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).detach())
               for f in dataclasses.fields(self)}
        )

    def subset(self, index: Tensor) -> Gaussians:
        """Gaussians selected by a boolean mask [N] or an index tensor [M]."""
        return Gaussians(
            **{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[index])
               for f in dataclasses.fields(self)}
        )

    @staticmethod
    def concatenate(parts: list[Gaussians]) -> Gaussians:
        """Join several sets; optional fields are kept only if every part has them."""
        if not parts:
            raise ValueError("Gaussians.concatenate: need at least one part")
        fields = {}
        for f in dataclasses.fields(Gaussians):
            values = [getattr(p, f.name) for p in parts]
            fields[f.name] = None if any(v is None for v in values) else torch.cat(values, dim=0)
        return Gaussians(**fields)

    @staticmethod
    def from_colors(
        means: Tensor,
        colors: Tensor,
        *,
        scales: Tensor | float = 0.01,
        opacities: Tensor | float = 0.9,
        quats: Tensor | None = None,
        **extra: Tensor | None,
    ) -> Gaussians:
        """Convenience constructor from activated values. ``means``, ``colors``: [N, 3]."""
        n = means.shape[0]
        dtype, device = means.dtype, means.device
        scales_t = torch.as_tensor(scales, dtype=dtype, device=device).expand(n, 3) if not isinstance(
            scales, Tensor) or scales.ndim < 2 else scales
        if isinstance(scales, Tensor) and scales.ndim == 1:
            scales_t = scales[:, None].expand(n, 3)
        opac = torch.as_tensor(opacities, dtype=dtype, device=device).expand(n).clamp(1e-6, 1 - 1e-6)
        if quats is None:
            quats = torch.zeros(n, 4, dtype=dtype, device=device)
            quats[:, 0] = 1.0
        return Gaussians(
            means=means,
            quats=quats,
            log_scales=torch.log(scales_t).clone(),
            opacity_logits=torch.logit(opac).clone(),
            sh=rgb_to_sh_dc(colors)[:, None, :].clone(),
            **extra,
        )
