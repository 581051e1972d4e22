"""The gsplat CUDA path: availability check and a thin call into ``gsplat.rasterization``.

Colours (SH already evaluated by ``render``), extra features and depth all go through gsplat as one
channel stack, so both backends share the SH code and the background handling; only the projection and
compositing differ.
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import Tensor

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def gsplat_unavailable_reason(device_type: str = "cuda") -> str | None:
    """Why gsplat cannot rasterize on this device type, or None if it can (cached; builds its kernels once)."""
    if device_type != "cuda":
        return f"gsplat's kernels are CUDA-only; the tensors are on '{device_type}'"
    if not torch.cuda.is_available():
        return "CUDA is not available to PyTorch"
    try:
        import gsplat  # noqa: F401
        from gsplat.cuda._backend import _C
    except Exception as exc:  # noqa: BLE001 - any import/JIT failure means "cannot run"
        return f"gsplat could not be imported or its CUDA kernels could not be built ({exc})"
    if _C is None:
        return "gsplat's CUDA kernels are not available (no prebuilt extension and the JIT build failed)"
    return None


def rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    ks: Tensor,
    width: int,
    height: int,
    *,
    near: float,
    far: float,
    antialiased: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Render C cameras with gsplat (eps2d 0.3, no background): "classic" 3DGS mode, or "antialiased" (the
    Mip-Splatting 2D filter with opacity compensation) when ``antialiased``.

    Args:
        means: [N, 3]; quats: (w, x, y, z) [N, 4]; scales: standard deviations [N, 3]; opacities: [N]
        colors: Per-camera values to composite. [C, N, F]
        viewmats: OpenCV world-to-camera. [C, 4, 4]
        ks: Intrinsics. [C, 3, 3]

    Returns:
        ``(accumulated, alpha, accumulated_depth)``: [C, H, W, F], [C, H, W, 1], [C, H, W, 1] (depth not
        divided by alpha, colours not over a background), like ``rasterize_torch``.
    """
    from gsplat import rasterization

    out, alpha, _meta = rasterization(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=colors,
        viewmats=viewmats,
        Ks=ks,
        width=width,
        height=height,
        near_plane=near,
        far_plane=far,
        sh_degree=None,
        render_mode="RGB+D",
        rasterize_mode="antialiased" if antialiased else "classic",
        eps2d=0.3,
        packed=False,
    )
    return out[..., :-1], alpha, out[..., -1:]
