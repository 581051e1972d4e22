"""Losses of the field fit (docs/method.md §7): L1, D-SSIM, mask, stillness regulariser, HexPlane TV/time smoothness.

LPIPS needs pretrained weights, which are never downloaded at run time; the SSIM-family term stands in for it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from backend.body.parts import identity_critical
from backend.gaussians import Gaussians
from backend.motion.residual import Residual
from backend.render.metrics import ssim


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error. [..., 3] x [..., 3] -> []"""
    return (pred - target).abs().mean()


def dssim_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Structural dissimilarity ``(1 − SSIM) / 2``. [B, H, W, C] -> []"""
    return (1.0 - ssim(pred, target)) / 2.0


def mask_loss(alpha: Tensor, mask: Tensor) -> Tensor:
    """Mean |rendered alpha − mask|. [B, H, W, 1] -> []"""
    return (alpha - mask).abs().mean()


def stillness_weights(canonical: Gaussians, identity_weight: float, body_weight: float) -> Tensor:
    """Per-Gaussian weight of the stillness regulariser. [N]

    Identity-critical parts (head, hands, feet; ``backend.body.parts``) get ``identity_weight``, other on-body
    Gaussians ``body_weight``; loose Gaussians (``canonical.loose``) are free (0).
    """
    n = canonical.num_gaussians
    device = canonical.means.device
    weights = torch.full((n,), float(body_weight), device=device)
    if canonical.part_ids is not None:
        weights[identity_critical(canonical.part_ids.to(device))] = float(identity_weight)
    if canonical.loose is not None:
        weights[canonical.loose.to(device)] = 0.0
    return weights


def stillness_loss(residual: Residual, weights: Tensor, unit: float = 0.01) -> Tensor:
    """Weighted mean of squared residual offsets (in ``unit`` metres) and rotation deltas. [N] -> []

    Keeps identity-critical and on-body Gaussians where skinning puts them (the paper regularises rigid regions).
    """
    offset = (residual.d_means / unit).square().sum(-1)
    rotation = residual.raw_rotation.square().sum(-1) if residual.raw_rotation is not None else 0.0
    scale = residual.d_log_scales.square().sum(-1) if residual.d_log_scales is not None else 0.0
    return (weights * (offset + rotation + scale)).sum() / weights.numel()
