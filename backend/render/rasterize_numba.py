"""Compiled CPU compositing (Numba), the fast twin of ``rasterize.composite`` with its exact contract.

Projection, SH colours and everything upstream stay in PyTorch (and in autograd); this module replaces the
expensive part, front-to-back alpha compositing of depth-sorted 2D Gaussians, forward and backward:

- **Tiles.** The image is cut into 16×16 tiles; each Gaussian is listed in every tile its bounding box touches.
  Gaussians arrive sorted by depth and are listed in that order, so every tile's list is depth-sorted.
- **Forward**, in parallel over tiles: per pixel, the same rules as the torch path (alpha ``min(0.999, o·G)``,
  contributions under 1/255 skipped, stop at the Gaussian that would take the transmittance to ≤ 1e-4, which is
  not composited); transmittance in float64. It keeps each pixel's final transmittance and the end of its list.
- **Backward**, in parallel over tiles, back to front per pixel (gsplat's scheme: ``T_i = T_{i+1} / (1 − α_i)``),
  gives the gradients w.r.t. the 2D means, conics, opacities and features. Each (tile, Gaussian) entry owns its
  own gradient slot, filled by one thread in a fixed pixel order; the slots are then summed per Gaussian in a
  fixed order. So the result is bit-identical at any thread count (no atomics, no order that depends on
  scheduling).

Threads: ``torch.get_num_threads()`` unless ``set_threads`` says otherwise. Kernels are compiled on first use
(a few seconds) and cached on disk by Numba. Where Numba cannot be imported, ``available()`` is False and
``render`` falls back to the torch path with a warning.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import Tensor

from backend.render.rasterize import ALPHA_MAX, ALPHA_MIN, TRANSMITTANCE_MIN

log = logging.getLogger(__name__)

TILE = 16
_THREADS: int | None = None

try:  # an optional accelerator: the torch twin runs everywhere
    import numba
    from numba import njit, prange

    _IMPORT_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - exercised only where Numba has no wheels
    numba = None
    _IMPORT_ERROR = str(exc)


def available() -> bool:
    """True where the compiled compositor can run (Numba imports)."""
    return numba is not None


def unavailable_reason() -> str | None:
    return None if numba is not None else f"numba is not importable ({_IMPORT_ERROR})"


def set_threads(count: int | None) -> None:
    """Threads of the compiled kernels: a number, or None to follow ``torch.get_num_threads()``."""
    global _THREADS
    _THREADS = None if count is None else max(1, int(count))


if numba is not None:

    @njit(cache=True, error_model="numpy")
    def _bin(means2d, conics, opac, radii, width, height, tiles_x, tiles_y, alpha_min):  # pragma: no cover
        """Tile lists and packed per-Gaussian data.

        Returns:
            offsets [T + 1], Gaussian per entry [P] (each tile's list in the input, i.e. depth, order), packed
            ``(x, y, a, b, c, opacity, power below which alpha < alpha_min)`` [M, 7] and the pixel box
            ``(x0, x1, y0, y1)`` [M, 4] of each Gaussian.
        """
        m = means2d.shape[0]
        n_tiles = tiles_x * tiles_y
        lo = np.empty((m, 2), np.int64)
        hi = np.empty((m, 2), np.int64)
        box = np.empty((m, 4), np.int64)
        data = np.empty((m, 7), np.float64)
        counts = np.zeros(n_tiles + 1, np.int64)
        for i in range(m):
            data[i, 0], data[i, 1] = means2d[i, 0], means2d[i, 1]
            data[i, 2], data[i, 3], data[i, 4] = conics[i, 0], conics[i, 1], conics[i, 2]
            data[i, 5] = opac[i]
            # a safe lower bound: alpha is surely below alpha_min under it (the exact test follows)
            data[i, 6] = math.log(alpha_min / max(opac[i], 1e-30)) - 1e-6
            # pixels whose centre (p + 0.5) lies within the box, as tiles
            x0 = max(int(math.floor(means2d[i, 0] - radii[i, 0] - 0.5)), 0)
            x1 = min(int(math.ceil(means2d[i, 0] + radii[i, 0] - 0.5)), width - 1)
            y0 = max(int(math.floor(means2d[i, 1] - radii[i, 1] - 0.5)), 0)
            y1 = min(int(math.ceil(means2d[i, 1] + radii[i, 1] - 0.5)), height - 1)
            box[i, 0], box[i, 1], box[i, 2], box[i, 3] = x0, x1, y0, y1
            if x1 < x0 or y1 < y0:
                lo[i, 0] = 1
                hi[i, 0] = 0
                continue
            lo[i, 0], lo[i, 1] = x0 // TILE, y0 // TILE
            hi[i, 0], hi[i, 1] = x1 // TILE, y1 // TILE
            for ty in range(lo[i, 1], hi[i, 1] + 1):
                for tx in range(lo[i, 0], hi[i, 0] + 1):
                    counts[ty * tiles_x + tx + 1] += 1
        offsets = np.cumsum(counts)
        fill = offsets[:-1].copy()
        ids = np.empty(offsets[-1], np.int64)
        for i in range(m):
            if hi[i, 0] < lo[i, 0]:
                continue
            for ty in range(lo[i, 1], hi[i, 1] + 1):
                for tx in range(lo[i, 0], hi[i, 0] + 1):
                    t = ty * tiles_x + tx
                    ids[fill[t]] = i
                    fill[t] += 1
        return offsets, ids, data, box

    @njit(parallel=True, cache=True, error_model="numpy")
    def _forward(data, box, feats, offsets, ids, width, height, tiles_x,
                 alpha_max, alpha_min, t_min):  # pragma: no cover - compiled
        """Per tile, Gaussians front to back, each over the pixels of its box in the tile (row-major); a pixel's
        sums therefore run in depth order, exactly as a per-pixel loop would."""
        hw = width * height
        f = feats.shape[1]
        acc = np.zeros((hw, f), np.float64)
        t_final = np.ones(hw, np.float64)
        last = np.zeros(hw, np.int64)
        n_tiles = offsets.shape[0] - 1
        for t in prange(n_tiles):
            start, end = offsets[t], offsets[t + 1]
            tx0, ty0 = (t % tiles_x) * TILE, (t // tiles_x) * TILE
            tx1, ty1 = min(width, tx0 + TILE) - 1, min(height, ty0 + TILE) - 1
            open_pixels = (tx1 - tx0 + 1) * (ty1 - ty0 + 1)
            done = np.zeros((TILE, TILE), np.bool_)
            trans = np.ones((TILE, TILE), np.float64)
            for py in range(ty0, ty1 + 1):
                for px in range(tx0, tx1 + 1):
                    last[py * width + px] = start
            for k in range(start, end):
                if open_pixels == 0:
                    break
                g = ids[k]
                x0, x1 = max(box[g, 0], tx0), min(box[g, 1], tx1)
                y0, y1 = max(box[g, 2], ty0), min(box[g, 3], ty1)
                gx, gy, a, b, c, o, pmin = data[g, 0], data[g, 1], data[g, 2], data[g, 3], data[g, 4], data[g, 5], \
                    data[g, 6]
                for py in range(y0, y1 + 1):
                    dy = py + 0.5 - gy
                    for px in range(x0, x1 + 1):
                        if done[py - ty0, px - tx0]:
                            continue
                        dx = px + 0.5 - gx
                        power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
                        if power > 0.0 or power < pmin:
                            continue
                        alpha = min(alpha_max, o * math.exp(power))
                        if alpha < alpha_min:
                            continue
                        tr = trans[py - ty0, px - tx0]
                        nxt = tr * (1.0 - alpha)
                        pix = py * width + px
                        if nxt <= t_min:
                            done[py - ty0, px - tx0] = True
                            open_pixels -= 1
                            continue
                        w = alpha * tr
                        for ch in range(f):
                            acc[pix, ch] += w * feats[g, ch]
                        trans[py - ty0, px - tx0] = nxt
                        last[pix] = k + 1
            for py in range(ty0, ty1 + 1):
                for px in range(tx0, tx1 + 1):
                    t_final[py * width + px] = trans[py - ty0, px - tx0]
        return acc, t_final, last

    @njit(parallel=True, cache=True, error_model="numpy")
    def _backward(data, box, feats, offsets, ids, width, height, tiles_x, t_final, last,
                  grad_acc, grad_alpha, alpha_max, alpha_min):  # pragma: no cover - compiled
        """Per-entry gradients [P, 6 + F]: d means2d (2), d conics (3), d opacity, d features. Per tile, Gaussians
        back to front over their box's pixels that they reached (index < the pixel's ``last``)."""
        f = feats.shape[1]
        slots = np.zeros((ids.shape[0], 6 + f), np.float64)
        n_tiles = offsets.shape[0] - 1
        for t in prange(n_tiles):
            start = offsets[t]
            tx0, ty0 = (t % tiles_x) * TILE, (t // tiles_x) * TILE
            tx1, ty1 = min(width, tx0 + TILE) - 1, min(height, ty0 + TILE) - 1
            trans = np.empty((TILE, TILE), np.float64)
            s = np.zeros((TILE, TILE, f), np.float64)
            stop = start
            for py in range(ty0, ty1 + 1):
                for px in range(tx0, tx1 + 1):
                    pix = py * width + px
                    trans[py - ty0, px - tx0] = t_final[pix]
                    stop = max(stop, last[pix])
            local = np.zeros(6 + f, np.float64)  # this entry's sums over its pixels, written once
            for k in range(stop - 1, start - 1, -1):
                g = ids[k]
                x0, x1 = max(box[g, 0], tx0), min(box[g, 1], tx1)
                y0, y1 = max(box[g, 2], ty0), min(box[g, 3], ty1)
                gx, gy, a, b, c, o, pmin = data[g, 0], data[g, 1], data[g, 2], data[g, 3], data[g, 4], data[g, 5], \
                    data[g, 6]
                local[:] = 0.0
                for py in range(y0, y1 + 1):
                    dy = py + 0.5 - gy
                    for px in range(x0, x1 + 1):
                        pix = py * width + px
                        if k >= last[pix]:
                            continue
                        dx = px + 0.5 - gx
                        power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
                        if power > 0.0 or power < pmin:
                            continue
                        gauss = math.exp(power)
                        vis = o * gauss
                        alpha = min(alpha_max, vis)
                        if alpha < alpha_min:
                            continue
                        inv = 1.0 / (1.0 - alpha)
                        tr = trans[py - ty0, px - tx0] * inv  # transmittance in front of this Gaussian
                        trans[py - ty0, px - tx0] = tr
                        w = alpha * tr
                        d_alpha = grad_alpha[pix] * t_final[pix] * inv
                        for ch in range(f):
                            gc = grad_acc[pix, ch]
                            local[6 + ch] += w * gc
                            d_alpha += (feats[g, ch] * tr - s[py - ty0, px - tx0, ch] * inv) * gc
                            s[py - ty0, px - tx0, ch] += w * feats[g, ch]
                        if vis > alpha_max:
                            continue  # clamped: no gradient through alpha
                        d_power = d_alpha * vis
                        local[5] += d_alpha * gauss
                        local[0] += d_power * (a * dx + b * dy)
                        local[1] += d_power * (b * dx + c * dy)
                        local[2] += d_power * (-0.5 * dx * dx)
                        local[3] += d_power * (-dx * dy)
                        local[4] += d_power * (-0.5 * dy * dy)
                for ch in range(6 + f):
                    slots[k, ch] = local[ch]
        return slots

    @njit(cache=True, error_model="numpy")
    def _reduce(slots, ids, m):  # pragma: no cover - compiled
        out = np.zeros((m, slots.shape[1]), np.float64)
        for k in range(ids.shape[0]):
            g = ids[k]
            for c in range(slots.shape[1]):
                out[g, c] += slots[k, c]
        return out


def _threads() -> int:
    count = _THREADS or torch.get_num_threads()
    return max(1, min(count, numba.config.NUMBA_NUM_THREADS))


def _np(x: Tensor, dtype=None) -> np.ndarray:
    """A contiguous numpy copy/view: float64 stays float64, other floats become float32."""
    if dtype is None:
        dtype = np.float64 if x.dtype == torch.float64 else np.float32
    return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=dtype)


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, radii, width, height):
        numba.set_num_threads(_threads())
        tiles_x, tiles_y = (width + TILE - 1) // TILE, (height + TILE - 1) // TILE
        ft = _np(features)
        offsets, ids, data, box = _bin(_np(means2d), _np(conics), _np(opacities), _np(radii, np.int64), width,
                                       height, tiles_x, tiles_y, ALPHA_MIN)
        acc, t_final, last = _forward(data, box, ft, offsets, ids, width, height, tiles_x,
                                      ALPHA_MAX, ALPHA_MIN, TRANSMITTANCE_MIN)
        ctx.arrays = (data, box, ft, offsets, ids, t_final, last)
        ctx.size = (width, height, tiles_x)
        dtype, device = features.dtype, features.device
        return (torch.from_numpy(acc).to(device, dtype), torch.from_numpy(1.0 - t_final).to(device, dtype))

    @staticmethod
    def backward(ctx, grad_acc, grad_alpha):
        numba.set_num_threads(_threads())
        data, box, ft, offsets, ids, t_final, last = ctx.arrays
        width, height, tiles_x = ctx.size
        ga = np.ascontiguousarray(grad_acc.detach().cpu().numpy(), dtype=np.float64)
        gal = np.ascontiguousarray(grad_alpha.detach().cpu().numpy(), dtype=np.float64)
        slots = _backward(data, box, ft, offsets, ids, width, height, tiles_x, t_final, last, ga, gal,
                          ALPHA_MAX, ALPHA_MIN)
        grads = torch.from_numpy(_reduce(slots, ids, data.shape[0]))
        device, dtype = grad_acc.device, grad_acc.dtype
        to = lambda x: x.to(device, dtype)  # noqa: E731
        return to(grads[:, 0:2]), to(grads[:, 2:5]), to(grads[:, 5]), to(grads[:, 6:]), None, None, None


def composite_numba(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    features: Tensor,
    radii: Tensor,
    width: int,
    height: int,
    *,
    max_pairs: int | None = None,
) -> tuple[Tensor, Tensor]:
    """``rasterize.composite`` compiled: same arguments (``max_pairs`` unused), same ``(accumulated [H·W, F],
    alpha [H·W])``, differentiable w.r.t. ``means2d``, ``conics``, ``opacities`` and ``features``."""
    if numba is None:
        raise RuntimeError(unavailable_reason())
    if means2d.shape[0] == 0:
        hw = width * height
        zero = features.sum() * 0.0  # keeps the graph connected for an empty view
        return (torch.zeros(hw, features.shape[1], dtype=features.dtype, device=features.device) + zero,
                torch.zeros(hw, dtype=features.dtype, device=features.device) + zero)
    return _Composite.apply(means2d, conics, opacities, features, radii, int(width), int(height))
