"""Image metrics and the structural-similarity term shared by the photo fit and the field fit.

One SSIM (3DGS's: Gaussian window 11, sigma 1.5, zero padding, constants 0.01² and 0.03²), masked PSNR and
silhouette IoU. Images are float in [0, 1], channels last.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor


@functools.lru_cache(maxsize=8)
def _gaussian_window(size: int, sigma: float) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()


def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM (3DGS's Gaussian-window SSIM, zero padding). Images [B, H, W, C] in [0, 1] -> []"""
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"ssim: expected two [B, H, W, C] images of one shape, got {list(pred.shape)} and "
                         f"{list(target.shape)}")
    c = pred.shape[-1]
    x, y = pred.permute(0, 3, 1, 2), target.permute(0, 3, 1, 2)
    w = _gaussian_window(window, sigma).to(pred.device, pred.dtype)[None, None].expand(c, 1, window, window)
    conv = functools.partial(F.conv2d, weight=w, padding=window // 2, groups=c)
    mu_x, mu_y = conv(x), conv(y)
    sxx = conv(x * x) - mu_x.square()
    syy = conv(y * y) - mu_y.square()
    sxy = conv(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x.square() + mu_y.square() + c1) * (sxx + syy + c2))
    return s.mean()


def masked_psnr(pred: Tensor, target: Tensor, mask: Tensor) -> float:
    """PSNR (dB) over the pixels where ``mask`` > 0.5. ``pred``, ``target`` [H, W, 3] in [0, 1]."""
    m = mask > 0.5
    mse = float(((pred - target) ** 2)[m].mean()) if bool(m.any()) else 0.0
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)


def silhouette_iou(alpha: Tensor, mask: Tensor) -> float:
    """Intersection over union of ``alpha > 0.5`` and ``mask > 0.5``. [H, W]"""
    a, b = alpha > 0.5, mask > 0.5
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def weighted_psnr(a: Tensor, b: Tensor, weights: Tensor) -> float:
    """PSNR (dB) of the per-pixel MSE averaged with ``weights`` (e.g. a soft region). [..., H, W, C] x [..., H, W, 1]"""
    mse = ((a - b).square().mean(-1, keepdim=True) * weights).sum() / weights.sum().clamp_min(1)
    return float(-10.0 * torch.log10(mse.clamp_min(1e-12)))
