"""The public ``render()``: Gaussians + cameras -> colour, alpha, depth and extra feature images.

Both backends composite the same per-Gaussian channel stack (SH colour evaluated here, extra features, depth)
with gsplat's conventions, so a result does not depend on which backend ran beyond float rounding;
``RenderOutput.backend`` says which one did.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from backend.core.errors import CapabilityError, InputError
from backend.gaussians.container import Gaussians
from backend.render.cameras import Cameras
from backend.render import rasterize_numba
from backend.render.gsplat_backend import gsplat_unavailable_reason, rasterize_gsplat
from backend.render.rasterize import antialias_compensation, covariances_3d, eval_sh, rasterize_torch, sh_degree_from_coeffs

log = logging.getLogger(__name__)

Backend = Literal["auto", "gsplat", "numba", "torch"]

_ANNOUNCED: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class RenderSettings:
    """How to render.

    Attributes:
        backend: "auto" (gsplat when the tensors are on CUDA and its kernels load; on the CPU the compiled
            "numba" compositor; "torch" where neither runs, with a warning), "gsplat" or "numba" (an error where
            it cannot run), or "torch" (the readable twin, everywhere).
        background: Colour behind the Gaussians, RGB in [0, 1]. Extra features get 0 behind.
        near: Gaussians whose centre is closer than this (camera-space z, metres) are culled.
        far: Gaussians whose centre is farther than this are culled.
        sh_degree: SH degree to evaluate; None = all the coefficients the Gaussians have (K = (d + 1)²).
        max_pairs: Torch backend only: (Gaussian, pixel) pairs processed at once, bounding memory
            (≈ 100 bytes per pair when gradients are needed).
        antialiased: gsplat's "antialiased" mode (Mip-Splatting's 2D filter with opacity compensation) on every
            backend: splats smaller than a pixel keep their energy instead of bloating. Off = gsplat "classic".
    """

    backend: Backend = "auto"
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    near: float = 0.01
    far: float = 1e10
    sh_degree: int | None = None
    max_pairs: int = 1 << 21
    antialiased: bool = False

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "gsplat", "numba", "torch"):
            raise InputError(
                f"RenderSettings.backend: expected 'auto', 'gsplat', 'numba' or 'torch', got {self.backend!r}")
        if len(self.background) != 3:
            raise InputError(f"RenderSettings.background: expected 3 floats, got {self.background!r}")
        if not 0 < self.near < self.far:
            raise InputError(f"RenderSettings.near/far: expected 0 < near < far, got near={self.near}, far={self.far}")
        if self.sh_degree is not None and not 0 <= self.sh_degree <= 3:
            raise InputError(f"RenderSettings.sh_degree: expected None or 0..3, got {self.sh_degree}")
        if not isinstance(self.antialiased, bool):
            raise InputError(f"RenderSettings.antialiased: expected true/false, got {self.antialiased!r}")
        if self.max_pairs < 64:
            raise InputError(f"RenderSettings.max_pairs: expected at least 64, got {self.max_pairs}")


@dataclass(frozen=True, eq=False)  # holds tensors: compare fields explicitly
class RenderOutput:
    """Rendered images for C cameras.

    Attributes:
        rgb: Colour composited over the background. [C, H, W, 3]
        alpha: Accumulated opacity ``1 − T_final``. [C, H, W, 1]
        depth: Expected camera-space depth ``Σ wᵢ zᵢ / alpha`` (gsplat's "ED"; 0 where nothing was drawn).
            [C, H, W, 1]
        features: Extra per-Gaussian channels composited like colour, 0 behind. [C, H, W, D] or None
        backend: The backend that ran: "gsplat", "numba" or "torch".
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    features: Tensor | None
    backend: str


AUTO_OVERRIDE_ENV = "ANI3D_RENDER_BACKEND"

ANTIALIAS_BELOW = 0.7
"""Render antialiased when a camera samples the subject at less than this fraction of the fit's density.
Measured (scripts/bench_reconstruct.py, docs/render.md): at 0.78 of the fit's density the classic mode scores
2.4 dB better, at 0.52 the antialiased one 2.5 dB better, at 0.5 7.7 dB better."""


def antialias_for(cameras: Cameras, subject_centre: Tensor, fit_pixels_per_metre: float | None) -> bool:
    """Whether renders with ``cameras`` should use the antialiased mode: the subject was fitted to a photo at
    ``fit_pixels_per_metre`` and some camera sees it coarser (a subject fitted at one resolution and seen at a
    lower one bloats in the classic mode; at the fit's own density the classic mode is what it was fitted in).
    No fit density (procedural or imported Gaussians): classic, as they were made."""
    if fit_pixels_per_metre is None:
        return False
    density = cameras.pixels_per_metre(subject_centre)
    return bool(float(density.min()) < ANTIALIAS_BELOW * float(fit_pixels_per_metre))


def resolve_backend(requested: Backend, device: torch.device) -> str:
    """The backend that will run for tensors on ``device``. ``"auto"`` follows ``$ANI3D_RENDER_BACKEND`` when it
    is set (``torch`` / ``numba`` / ``gsplat``: to compare paths in benchmarks, or to debug on the torch twin).

    Raises:
        CapabilityError: gsplat or numba was requested and cannot run here (the message says why).
    """
    if requested == "auto" and os.environ.get(AUTO_OVERRIDE_ENV):
        override = os.environ[AUTO_OVERRIDE_ENV]
        if override not in ("gsplat", "numba", "torch"):
            raise InputError(f"{AUTO_OVERRIDE_ENV}: expected gsplat, numba or torch, got {override!r}")
        requested = override
    if requested == "torch":
        return "torch"
    if requested == "numba":
        if device.type != "cpu" or not rasterize_numba.available():
            reason = rasterize_numba.unavailable_reason() or f"the tensors are on {device.type}, not the CPU"
            raise CapabilityError(f"render backend 'numba' cannot run: {reason}; use backend='torch' or 'auto'")
        return "numba"
    reason = gsplat_unavailable_reason(device.type)
    if requested == "gsplat":
        if reason is not None:
            raise CapabilityError(f"render backend 'gsplat' cannot run: {reason}; use backend='torch' or 'auto'")
        return "gsplat"
    if reason is None:
        return "gsplat"
    if device.type == "cpu":
        if rasterize_numba.available():
            return "numba"
        if "numba" not in _ANNOUNCED:
            _ANNOUNCED.add("numba")
            log.warning("render: the compiled CPU compositor is unavailable (%s); using the slower torch path",
                        rasterize_numba.unavailable_reason())
    return "torch"


def _colors_per_camera(gaussians: Gaussians, cameras: Cameras, degree: int) -> Tensor:
    """SH colour seen from each camera, ``max(SH + 0.5, 0)`` like gsplat. [C, N, 3]"""
    if degree == 0:
        rgb = eval_sh(gaussians.sh, gaussians.means, 0)
        return torch.clamp_min(rgb + 0.5, 0.0)[None].expand(len(cameras), -1, -1)
    out = []
    for pos in cameras.positions.to(gaussians.means.dtype):
        dirs = torch.nn.functional.normalize(gaussians.means - pos, dim=-1)
        out.append(torch.clamp_min(eval_sh(gaussians.sh, dirs, degree) + 0.5, 0.0))
    return torch.stack(out)


def render(
    gaussians: Gaussians,
    cameras: Cameras,
    *,
    features: Tensor | None = None,
    settings: RenderSettings | None = None,
) -> RenderOutput:
    """Render Gaussians from every camera of a batch (differentiable w.r.t. every Gaussian parameter).

    Args:
        gaussians: N Gaussians in world coordinates.
        cameras: C cameras sharing one image size (moved to the Gaussians' device).
        features: Extra per-Gaussian channels to composite (part labels, masks). [N, D]
        settings: Backend, background, clipping planes, SH degree.

    Returns:
        RenderOutput with [C, H, W, ·] images.

    Raises:
        InputError: ``features`` has the wrong shape, or the SH degree exceeds the coefficients present.
        CapabilityError: gsplat was requested and cannot run here.
    """
    settings = settings or RenderSettings()
    n = gaussians.num_gaussians
    device, dtype = gaussians.means.device, gaussians.means.dtype
    if features is not None and (features.ndim != 2 or features.shape[0] != n):
        raise InputError(f"render: features: expected shape [{n}, D], got {list(features.shape)}")
    try:
        available = sh_degree_from_coeffs(gaussians.sh.shape[1])
    except ValueError as exc:
        raise InputError(str(exc)) from None
    degree = available if settings.sh_degree is None else settings.sh_degree
    if degree > available:
        raise InputError(
            f"RenderSettings.sh_degree: {degree} needs {(degree + 1) ** 2} SH coefficients, "
            f"the Gaussians have {gaussians.sh.shape[1]}")
    backend = resolve_backend(settings.backend, device)
    if (settings.backend, device.type, backend) not in _ANNOUNCED:  # say once which backend "auto" picked
        _ANNOUNCED.add((settings.backend, device.type, backend))
        log.info("render: backend %r on %s -> %s", settings.backend, device.type, backend)
    log.debug("render: %d Gaussians, %d cameras %dx%d, backend %s", n, len(cameras), cameras.width,
              cameras.height, backend)

    cameras = cameras.to(device=device, dtype=dtype)
    colors = _colors_per_camera(gaussians, cameras, degree)  # [C, N, 3]
    if features is not None:
        colors = torch.cat([colors, features.to(dtype)[None].expand(len(cameras), -1, -1)], dim=-1)
    scales, opacities = gaussians.scales, gaussians.opacities
    views = cameras.view_matrices()
    w, h = cameras.width, cameras.height

    if backend == "gsplat":
        acc, alpha, acc_depth = rasterize_gsplat(
            gaussians.means, gaussians.unit_quats, scales, opacities, colors, views, cameras.intrinsics(), w, h,
            near=settings.near, far=settings.far, antialiased=settings.antialiased)
    else:
        covars = covariances_3d(gaussians.quats, scales) if backend == "torch" or settings.antialiased else None

        def opacities_for(i: int) -> Tensor:
            if not settings.antialiased:
                return opacities
            return opacities * antialias_compensation(gaussians.means, covars, views[i], cameras.fx[i],
                                                      cameras.fy[i], cameras.cx[i], cameras.cy[i], w, h)

        if backend == "numba":
            outs = [
                rasterize_numba.rasterize(gaussians.means, gaussians.quats, scales, opacities_for(i), colors[i],
                                          views[i], cameras.fx[i], cameras.fy[i], cameras.cx[i], cameras.cy[i], w,
                                          h, near=settings.near, far=settings.far)
                for i in range(len(cameras))
            ]
        else:
            outs = [
                rasterize_torch(gaussians.means, covars, opacities_for(i), colors[i], views[i], cameras.fx[i],
                                cameras.fy[i], cameras.cx[i], cameras.cy[i], w, h, near=settings.near,
                                far=settings.far, max_pairs=settings.max_pairs)
                for i in range(len(cameras))
            ]
        acc, alpha, acc_depth = (torch.stack(parts) for parts in zip(*outs))

    background = torch.tensor(settings.background, dtype=dtype, device=device)
    rgb = acc[..., :3] + (1.0 - alpha) * background
    depth = acc_depth / alpha.clamp_min(1e-10)
    extra = acc[..., 3:] if features is not None else None
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth, features=extra, backend=backend)
