"""The unseen-back fill rule: what a Gaussian the photo does not show looks like.

Rule (documented in docs/reconstruct.md): a Gaussian is *seen* when at least ``min_visibility`` of its splat
reaches the reference image unoccluded (``photo_fit.gaussian_visibility``). Every unseen Gaussian takes the
inverse-squared-distance-weighted mean, over its ``k`` nearest seen Gaussians **of the same body part** (distance
between their anchors on the rest surface), of

- the colour, and
- the offset along the surface normal (so a skirt or hair seen at the silhouette closes around the back
  instead of collapsing onto the body), bounded like the fit's offsets.

A part with no seen Gaussian at all (e.g. a hand hidden behind the back) borrows from the nearest seen
Gaussians of any part. Opacity and scales of unseen Gaussians stay at the fit's initial values.

Depth rule (``fill_depth``, clothing parts only — torso, arms, legs): one photo cannot tell how far a skirt
stands off the body towards the camera, only how far it does at the silhouette. So a Gaussian that faces the
camera (|normal · view| ≥ ``facing``) gets at least the inverse-squared-distance-weighted mean normal offset
of its ``k`` nearest seen *silhouette* Gaussians (|normal · view| < ``silhouette``) of the same part:
clothing is assumed to stand off the body as far in front as at the sides. Moving a camera-facing Gaussian
along its normal barely changes the reference view. Head, hands and feet are left alone (a face must not be
pushed forward by hair seen at the sides).
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
        depth: Apply the depth rule (``fill_depth``).
        facing: |normal · view| from which a Gaussian faces the camera (depth rule).
        silhouette: |normal · view| below which a seen Gaussian is on the silhouette (depth rule).
    """

    min_visibility: float = 0.1
    k: int = 4
    fill_offsets: bool = True
    depth: bool = False
    facing: float = 0.85
    silhouette: float = 0.35


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
    sources: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Apply the fill rule.

    Args:
        anchors_rest: Anchor of each Gaussian on the rest surface. [N, 3]
        part_ids: Body part per Gaussian. [N]
        visibility: Seen fraction per Gaussian in [0, 1]. [N]
        colors: Colour per Gaussian. [N, 3]
        normal_offsets: Offset along the normal per Gaussian. [N]
        settings: Threshold, neighbour count, whether offsets are filled.
        sources: Which seen Gaussians may lend their colour (default: all seen). [N] bool

    Returns:
        ``(colors [N, 3], normal_offsets [N], seen [N] bool)`` — seen Gaussians unchanged.
    """
    seen = visibility >= settings.min_visibility
    colors, normal_offsets = colors.clone(), normal_offsets.clone()
    if not bool(seen.any()) or bool(seen.all()):
        return colors, normal_offsets, seen
    unseen = ~seen
    lenders = seen if sources is None or not bool((seen & sources).any()) else seen & sources
    done = torch.zeros_like(seen)
    for part in torch.unique(part_ids[unseen]).tolist():
        q = unseen & (part_ids == part)
        src = lenders & (part_ids == part)
        if not bool(src.any()):
            continue
        _fill(anchors_rest, q, src, colors, normal_offsets, settings)
        done |= q
    rest = unseen & ~done
    if bool(rest.any()):
        _fill(anchors_rest, rest, lenders, colors, normal_offsets, settings)
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


def fill_depth(
    anchors_rest: Tensor,
    part_ids: Tensor,
    seen: Tensor,
    facing: Tensor,
    normal_offsets: Tensor,
    settings: BackfillSettings = BackfillSettings(),
) -> Tensor:
    """The depth rule: camera-facing clothing Gaussians stand off the body at least as far as the silhouette.

    Args:
        anchors_rest: Anchor of each Gaussian on the rest surface. [N, 3]
        part_ids: Body part per Gaussian. [N]
        seen: Seen from the reference camera. [N] bool
        facing: |posed normal · view direction| per Gaussian, in [0, 1]. [N]
        normal_offsets: Offset along the normal. [N]
        settings: ``k``, ``facing``, ``silhouette``.

    Returns:
        New normal offsets [N] (never smaller than the given ones).
    """
    from backend.body.parts import PART_INDEX

    out = normal_offsets.clone()
    for name in ("torso", "left_arm", "right_arm", "left_leg", "right_leg"):
        part = part_ids == PART_INDEX[name]
        target = part & (facing >= settings.facing)
        source = part & seen & (facing < settings.silhouette)
        if not bool(target.any()) or not bool(source.any()):
            continue
        ti, si = target.nonzero().squeeze(1), source.nonzero().squeeze(1)
        dist, idx = _nearest(anchors_rest[ti], anchors_rest[si], settings.k)
        w = 1.0 / dist.clamp_min(1e-4) ** 2
        w = w / w.sum(dim=1, keepdim=True)
        out[ti] = torch.maximum(out[ti], (w * normal_offsets[si[idx]]).sum(dim=1))
    return out
