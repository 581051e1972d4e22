"""Subject masks for restored videos, so the fit's mask term (docs/method.md §7) runs in the prior loop.

A restored frame has no alpha. Its subject mask is taken from two sources, each where it is reliable:

- **Inside** the coarse rendering's silhouette, shrunk by a band: subject. The rigid body does not vanish, and
  a prior that repaints a garment in the background colour must not punch holes into the body.
- **In the band** around the coarse silhouette (grown and shrunk by ``band`` of the image height, room for cloth
  that swings out or in): subject where the restored frame differs from the clean background the videos are
  rendered over (the prior keeps that background: the prompt asks for a clean background), so moved cloth
  counts and background the prior exposed does not.
- **Outside** the grown silhouette: background (a prior's far-away artefacts do not become subject).

So the mask term pulls the fitted silhouette to what the restored video shows in the band. Its blind spot: a
garment coloured like the background inside the band reads as background (the fit then has only colour there,
which cannot tell either).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def restored_subject_masks(restored: Tensor, coarse_alpha: Tensor, background: tuple[float, float, float], *,
                           band: float = 0.04, tolerance: float = 0.1) -> Tensor:
    """Subject masks of a restored video (module docstring).

    Args:
        restored: Restored frames, RGB in [0, 1]. [F, H, W, 3]
        coarse_alpha: The coarse rendering's alpha (what was restored). [F, H, W, 1]
        background: The colour the coarse video was rendered over, RGB in [0, 1].
        band: Half width of the band, as a fraction of the image height (at least one pixel).
        tolerance: A pixel differs from the background when any channel is farther than this.

    Returns:
        Masks in {0, 1}, 1 = subject. [F, H, W, 1] float32
    """
    if restored.shape[:3] != coarse_alpha.shape[:3]:
        raise ValueError(f"restored {list(restored.shape)} and coarse_alpha {list(coarse_alpha.shape)} differ in size")
    radius = max(1, round(band * restored.shape[1]))
    size = 2 * radius + 1
    inside = (coarse_alpha > 0.5).float().permute(0, 3, 1, 2)
    grown = F.max_pool2d(inside, size, stride=1, padding=radius)
    shrunk = 1.0 - F.max_pool2d(1.0 - inside, size, stride=1, padding=radius)
    bg = torch.tensor(background, dtype=restored.dtype, device=restored.device)
    differs = ((restored - bg).abs().amax(-1, keepdim=True) > tolerance).float().permute(0, 3, 1, 2)
    mask = torch.maximum(shrunk, differs * grown)
    return mask.permute(0, 2, 3, 1).contiguous().float()
