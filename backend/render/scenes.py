"""Synthetic, body-like Gaussian scenes for tests and benchmarks (no body model needed).

A standing figure ~1.75 m tall in the Blender world (Z up, facing −Y): head, torso, two arms and two legs as
spheres, ellipsoids and capsules, with Gaussians sampled area-uniformly on their surfaces. Scales of 1–2 cm
and high opacities make an opaque "skin", which is what the renderer sees in practice (not random fog).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from backend.gaussians.container import Gaussians, rgb_to_sh_dc

# (kind, params, rgb): capsules are (start, end, radius); ellipsoids (centre, radii).
_PARTS: tuple[tuple[str, tuple, tuple[float, float, float]], ...] = (
    ("ellipsoid", ((0.0, 0.0, 1.62), (0.095, 0.11, 0.12)), (0.85, 0.65, 0.5)),   # head
    ("ellipsoid", ((0.0, 0.0, 1.15), (0.17, 0.11, 0.3)), (0.2, 0.35, 0.75)),     # torso
    ("capsule", ((-0.2, 0.0, 1.38), (-0.42, 0.0, 0.95), 0.045), (0.85, 0.65, 0.5)),  # right arm (body's right)
    ("capsule", ((0.2, 0.0, 1.38), (0.42, 0.0, 0.95), 0.045), (0.85, 0.65, 0.5)),    # left arm
    ("capsule", ((-0.09, 0.0, 0.88), (-0.11, 0.0, 0.06), 0.065), (0.25, 0.25, 0.3)),  # right leg
    ("capsule", ((0.09, 0.0, 0.88), (0.11, 0.0, 0.06), 0.065), (0.25, 0.25, 0.3)),   # left leg
    ("ellipsoid", ((0.0, -0.085, 1.63), (0.02, 0.03, 0.025)), (0.9, 0.3, 0.3)),   # nose: marks the front (−Y)
)


def _area(kind: str, params: tuple) -> float:
    if kind == "capsule":
        a, b, r = params
        return 2 * math.pi * r * math.dist(a, b) + 4 * math.pi * r * r
    _, (a, b, c) = params
    p = 1.6075  # Knud Thomsen's approximation of the ellipsoid's area
    return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)


def _sample(kind: str, params: tuple, n: int, gen: torch.Generator) -> Tensor:
    if kind == "ellipsoid":
        centre, radii = (torch.tensor(p) for p in params)
        d = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
        return centre + d * radii
    a, b, r = params
    a, b = torch.tensor(a), torch.tensor(b)
    axis = b - a
    length = axis.norm()
    u = axis / length
    ref = torch.tensor([1.0, 0.0, 0.0]) if abs(float(u[0])) < 0.9 else torch.tensor([0.0, 1.0, 0.0])
    e1 = torch.nn.functional.normalize(torch.linalg.cross(u, ref), dim=0)
    e2 = torch.linalg.cross(u, e1)
    t = torch.rand(n, generator=gen) * (length + 4 * r / 2) - r  # caps approximated by extending the tube
    phi = torch.rand(n, generator=gen) * 2 * math.pi
    radial = torch.cos(phi)[:, None] * e1 + torch.sin(phi)[:, None] * e2
    beyond = torch.clamp(t - length, min=0) + torch.clamp(-t, min=0)
    shrink = torch.sqrt(torch.clamp(1 - (beyond / r) ** 2, min=0))
    return a + t.clamp(-r, float(length) + r)[:, None] * u + (r * shrink)[:, None] * radial


def body_gaussians(
    n: int,
    *,
    generator: torch.Generator,
    scale_range: tuple[float, float] = (0.01, 0.02),
    opacity_range: tuple[float, float] = (0.6, 0.95),
    sh_degree: int = 0,
) -> Gaussians:
    """N Gaussians on a synthetic standing figure (Z up, facing −Y, feet at z≈0, ~1.75 m tall).

    Args:
        n: Number of Gaussians.
        generator: Random source (every draw uses it).
        scale_range: Range of standard deviations in metres (log-uniform).
        opacity_range: Range of opacities (uniform).
        sh_degree: SH degree of the colour; higher bands get small random coefficients.

    Returns:
        Gaussians with ``part_ids`` set to the index of the primitive each was sampled on.
    """
    areas = torch.tensor([_area(kind, params) for kind, params, _ in _PARTS])
    counts = torch.floor(areas / areas.sum() * n).long()
    counts[1] += n - int(counts.sum())
    means, colors, part_ids = [], [], []
    for i, ((kind, params, rgb), k) in enumerate(zip(_PARTS, counts.tolist())):
        means.append(_sample(kind, params, k, generator))
        shade = 0.85 + 0.15 * torch.rand(k, 1, generator=generator)
        colors.append(torch.tensor(rgb) * shade)
        part_ids.append(torch.full((k,), i, dtype=torch.int64))
    lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
    log_scales = lo + (hi - lo) * torch.rand(n, 3, generator=generator)
    quats = torch.randn(n, 4, generator=generator)
    opac = opacity_range[0] + (opacity_range[1] - opacity_range[0]) * torch.rand(n, generator=generator)
    k_sh = (sh_degree + 1) ** 2
    sh = torch.zeros(n, k_sh, 3)
    sh[:, 0] = rgb_to_sh_dc(torch.cat(colors))
    if k_sh > 1:
        sh[:, 1:] = 0.05 * torch.randn(n, k_sh - 1, 3, generator=generator)
    return Gaussians(
        means=torch.cat(means),
        quats=quats,
        log_scales=log_scales,
        opacity_logits=torch.logit(opac),
        sh=sh,
        part_ids=torch.cat(part_ids),
    )
