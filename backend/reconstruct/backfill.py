"""The unseen-back fill rule: what a Gaussian the photo does not show looks like.

Rule (documented in docs/reconstruct.md): a Gaussian is *seen* when at least ``min_visibility`` of its splat
reaches the reference image unoccluded (``fit.gaussian_visibility``). Every unseen Gaussian takes the
inverse-squared-distance-weighted mean, over its ``k`` nearest seen Gaussians **of the same body part** (distance
between their anchors on the rest surface), of

- the colour, and
- the offset along the surface normal (so a skirt or hair seen at the silhouette closes around the back
  instead of collapsing onto the body), bounded like the fit's offsets.

A part with no seen Gaussian at all (e.g. a hand hidden behind the back) borrows from the nearest seen
Gaussians of any part. Opacity and scales of unseen Gaussians stay at the fit's initial values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class BackfillSettings:
    """Attributes:
        min_visibility: Seen when this fraction of the splat is visible.
        k: Seen neighbours averaged per unseen Gaussian.
        fill_offsets: Also copy the normal offset (not only the colour).
    """

    min_visibility: float = 0.3
    k: int = 4
    fill_offsets: bool = True


def _nearest(query: Tensor, points: Tensor, k: int, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    k = min(k, points.shape[0])
    dists, idx = [], []
    for start in range(0, query.shape[0], chunk):
        d = torch.cdist(query[start:start + chunk], points)
        top = d.topk(k, dim=1, largest=False)
        dists.append(top.values)
        idx.append(top.indices)
    return torch.cat(dists), torch.cat(idx)


def fill_unseen(
    anchors_rest: Tensor,
    part_ids: Tensor,
    visibility: Tensor,
    colors: Tensor,
    normal_offsets: Tensor,
    settings: BackfillSettings = BackfillSettings(),
) -> tuple[Tensor, Tensor, Tensor]:
    """Apply the fill rule.

    Args:
        anchors_rest: Anchor of each Gaussian on the rest surface. [N, 3]
        part_ids: Body part per Gaussian. [N]
        visibility: Seen fraction per Gaussian in [0, 1]. [N]
        colors: Colour per Gaussian. [N, 3]
        normal_offsets: Offset along the normal per Gaussian. [N]
        settings: Threshold, neighbour count, whether offsets are filled.

    Returns:
        ``(colors [N, 3], normal_offsets [N], seen [N] bool)`` — seen Gaussians unchanged.
    """
    seen = visibility >= settings.min_visibility
    colors, normal_offsets = colors.clone(), normal_offsets.clone()
    if not bool(seen.any()) or bool(seen.all()):
        return colors, normal_offsets, seen
    unseen = ~seen
    done = torch.zeros_like(seen)
    for part in torch.unique(part_ids[unseen]).tolist():
        q = unseen & (part_ids == part)
        src = seen & (part_ids == part)
        if not bool(src.any()):
            continue
        _fill(anchors_rest, q, src, colors, normal_offsets, settings)
        done |= q
    rest = unseen & ~done
    if bool(rest.any()):
        _fill(anchors_rest, rest, seen, colors, normal_offsets, settings)
    return colors, normal_offsets, seen


def _fill(points: Tensor, query: Tensor, source: Tensor, colors: Tensor, offsets: Tensor,
          settings: BackfillSettings) -> None:
    qi, si = query.nonzero().squeeze(1), source.nonzero().squeeze(1)
    dist, idx = _nearest(points[qi], points[si], settings.k)
    w = 1.0 / dist.clamp_min(1e-4) ** 2
    w = w / w.sum(dim=1, keepdim=True)
    src = si[idx]  # [Q, k]
    colors[qi] = (w[..., None] * colors[src]).sum(dim=1)
    if settings.fill_offsets:
        offsets[qi] = (w * offsets[src]).sum(dim=1)
