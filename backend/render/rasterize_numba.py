"""Compiled CPU rasterization (Numba): ``rasterize.rasterize_torch``'s contract, projection and compositing
compiled, forward and backward (``render(..., backend="numba")``; the torch module is its readable twin).

- **Projection** (``_project`` / ``_project_backward``): gsplat's EWA projection with the same culling, per
  Gaussian in parallel, in float64; the backward gives the gradients w.r.t. means, quaternions (through their
  normalisation) and scales (the covariance ``R S Sᵀ Rᵀ``, the view, the clamped Jacobian, the 2D inverse).
- **Tiles.** The image is cut into 16×16 tiles; each visible Gaussian, in depth order, is listed in every tile
  its bounding box touches, so every tile's list is depth-sorted.
- **Forward**, in parallel over tiles (Gaussians front to back, each over its box's pixels in the tile): per pixel, the same rules as the torch path (alpha ``min(0.999, o·G)``,
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

from backend.render.rasterize import _EXTEND_MAX, ALPHA_MAX, ALPHA_MIN, EPS_2D, TRANSMITTANCE_MIN

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
    def _forward(data, box, feats, offsets, ids, order, width, height, tiles_x,
                 alpha_max, alpha_min, t_min):  # pragma: no cover - compiled
        """Per tile, Gaussians front to back, each over the pixels of its box in the tile (row-major); a pixel's
        sums therefore run in depth order, exactly as a per-pixel loop would."""
        hw = width * height
        f = feats.shape[1]
        acc = np.zeros((hw, f), np.float64)
        t_final = np.ones(hw, np.float64)
        last = np.zeros(hw, np.int64)
        n_tiles = offsets.shape[0] - 1
        for i in prange(n_tiles):
            t = order[i]
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
    def _backward(data, box, feats, offsets, ids, order, width, height, tiles_x, t_final, last,
                  grad_acc, grad_alpha, alpha_max, alpha_min):  # pragma: no cover - compiled
        """Per-entry gradients [P, 6 + F]: d means2d (2), d conics (3), d opacity, d features. Per tile, Gaussians
        back to front over their box's pixels that they reached (index < the pixel's ``last``)."""
        f = feats.shape[1]
        slots = np.zeros((ids.shape[0], 6 + f), np.float64)
        n_tiles = offsets.shape[0] - 1
        for i in prange(n_tiles):
            t = order[i]
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


if numba is not None:

    @njit(cache=True, error_model="numpy")
    def _rotation(q, r):  # pragma: no cover - compiled
        """Fill ``r`` [3, 3] with the rotation of the quaternion ``q`` (w, x, y, z, any norm); returns
        ``(|q|, w, x, y, z)`` of the normalised quaternion (as ``core.rotations.quaternion_to_matrix``)."""
        qn = max(math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]), 1e-12)
        w, x, y, z = q[0] / qn, q[1] / qn, q[2] / qn, q[3] / qn
        r[0, 0], r[0, 1], r[0, 2] = 1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)
        r[1, 0], r[1, 1], r[1, 2] = 2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)
        r[2, 0], r[2, 1], r[2, 2] = 2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)
        return qn, w, x, y, z

    @njit(parallel=True, cache=True, error_model="numpy")
    def _project(means, quats, scales, opac, view, fx, fy, cx, cy, width, height, near, far,
                 alpha_min, eps2d, extend_max):  # pragma: no cover - compiled
        """EWA projection of every Gaussian (``rasterize.project_gaussians``, all N kept, culled ones flagged).

        Returns:
            means2d [N, 2], conics [N, 3], depths [N], radii [N, 2] int64, valid [N] bool, and per Gaussian the
            camera-space (x, y, z) [N, 3] and covariance [N, 3, 3] the backward pass needs.
        """
        n = means.shape[0]
        means2d = np.zeros((n, 2))
        conics = np.zeros((n, 3))
        depths = np.zeros(n)
        radii = np.zeros((n, 2), np.int64)
        valid = np.zeros(n, np.bool_)
        t_cam = np.zeros((n, 3))
        cov_cam = np.zeros((n, 3, 3))
        scratch_r, scratch_m = np.empty((n, 3, 3)), np.empty((n, 3, 3))
        tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
        lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
        lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
        for i in prange(n):
            tx = view[0, 0] * means[i, 0] + view[0, 1] * means[i, 1] + view[0, 2] * means[i, 2] + view[0, 3]
            ty = view[1, 0] * means[i, 0] + view[1, 1] * means[i, 1] + view[1, 2] * means[i, 2] + view[1, 3]
            tz = view[2, 0] * means[i, 0] + view[2, 1] * means[i, 1] + view[2, 2] * means[i, 2] + view[2, 3]
            depths[i] = tz
            t_cam[i, 0], t_cam[i, 1], t_cam[i, 2] = tx, ty, tz
            if tz < near or tz > far or opac[i] < alpha_min:
                continue
            r = scratch_r[i]
            qn, w, x, y, z = _rotation(quats[i], r)
            m = scratch_m[i]  # view · R · S: the camera-space covariance is m mᵀ
            for a in range(3):
                for k in range(3):
                    m[a, k] = (view[a, 0] * r[0, k] + view[a, 1] * r[1, k] + view[a, 2] * r[2, k]) * scales[i, k]
            for a in range(3):
                for b in range(3):
                    cov_cam[i, a, b] = m[a, 0] * m[b, 0] + m[a, 1] * m[b, 1] + m[a, 2] * m[b, 2]
            rz = 1.0 / tz
            jx = tz * min(lim_xp, max(-lim_xn, tx * rz))
            jy = tz * min(lim_yp, max(-lim_yn, ty * rz))
            j00, j02 = fx * rz, -fx * jx * rz * rz
            j11, j12 = fy * rz, -fy * jy * rz * rz
            c = cov_cam[i]
            a2 = j00 * j00 * c[0, 0] + 2 * j00 * j02 * c[0, 2] + j02 * j02 * c[2, 2] + eps2d
            b2 = j00 * j11 * c[0, 1] + j00 * j12 * c[0, 2] + j02 * j11 * c[1, 2] + j02 * j12 * c[2, 2]
            c2 = j11 * j11 * c[1, 1] + 2 * j11 * j12 * c[1, 2] + j12 * j12 * c[2, 2] + eps2d
            det = a2 * c2 - b2 * b2
            mx, my = fx * tx * rz + cx, fy * ty * rz + cy
            extend = min(math.sqrt(2.0 * math.log(max(opac[i], alpha_min) / alpha_min)), extend_max)
            rx = math.ceil(extend * math.sqrt(max(a2, 0.0)))
            ry = math.ceil(extend * math.sqrt(max(c2, 0.0)))
            if not (det > 0 and (rx > 0 or ry > 0) and mx + rx > 0 and mx - rx < width and my + ry > 0
                    and my - ry < height):
                continue
            valid[i] = True
            means2d[i, 0], means2d[i, 1] = mx, my
            conics[i, 0], conics[i, 1], conics[i, 2] = c2 / det, -b2 / det, a2 / det
            radii[i, 0], radii[i, 1] = int(rx), int(ry)
        return means2d, conics, depths, radii, valid, t_cam, cov_cam

    @njit(parallel=True, cache=True, error_model="numpy")
    def _project_backward(means, quats, scales, view, fx, fy, cx, cy, width, height, valid, t_cam, cov_cam,
                          conics, g_means2d, g_conics, g_depths):  # pragma: no cover - compiled
        """Gradients of ``_project``'s outputs w.r.t. means [N, 3], quats [N, 4] and scales [N, 3]."""
        n = means.shape[0]
        g_means = np.zeros((n, 3))
        g_quats = np.zeros((n, 4))
        g_scales = np.zeros((n, 3))
        # per-Gaussian scratch matrices, allocated once (allocating inside the parallel loop is slow)
        scratch_j, scratch_k, scratch_gj = np.empty((n, 2, 3)), np.empty((n, 2, 3)), np.empty((n, 2, 3))
        scratch_gc, scratch_r, scratch_vr = np.empty((n, 3, 3)), np.empty((n, 3, 3)), np.empty((n, 3, 3))
        scratch_gm, scratch_gr = np.empty((n, 3, 3)), np.empty((n, 3, 3))
        tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
        lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
        lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
        for i in prange(n):
            if not valid[i]:
                continue
            tx, ty, tz = t_cam[i, 0], t_cam[i, 1], t_cam[i, 2]
            rz = 1.0 / tz
            # conic = inverse of cov2 = [[a, b], [b, c]]: d inv = −inv d(cov2) inv; the conic's middle entry is
            # inv's off-diagonal, used once in the quadratic form
            ia, ib, ic = conics[i, 0], conics[i, 1], conics[i, 2]
            ga, gb, gc = g_conics[i, 0], 0.5 * g_conics[i, 1], g_conics[i, 2]
            p00, p01 = ia * ga + ib * gb, ia * gb + ib * gc
            p10, p11 = ib * ga + ic * gb, ib * gb + ic * gc
            g00, g01, g11 = -(p00 * ia + p01 * ib), -(p00 * ib + p01 * ic), -(p10 * ib + p11 * ic)
            # J and the FoV clamp
            ux, uy = tx * rz, ty * rz
            clamp_x = ux > lim_xp or ux < -lim_xn
            clamp_y = uy > lim_yp or uy < -lim_yn
            jx = tz * min(lim_xp, max(-lim_xn, ux))
            jy = tz * min(lim_yp, max(-lim_yn, uy))
            j00, j02 = fx * rz, -fx * jx * rz * rz
            j11, j12 = fy * rz, -fy * jy * rz * rz
            jac = scratch_j[i]
            jac[0, 0], jac[0, 1], jac[0, 2] = j00, 0.0, j02
            jac[1, 0], jac[1, 1], jac[1, 2] = 0.0, j11, j12
            k = scratch_k[i]  # G2 J [2, 3]
            for col in range(3):
                k[0, col] = g00 * jac[0, col] + g01 * jac[1, col]
                k[1, col] = g01 * jac[0, col] + g11 * jac[1, col]
            g_c = scratch_gc[i]  # dL/dC = Jᵀ G2 J [3, 3]
            for a in range(3):
                for b in range(3):
                    g_c[a, b] = jac[0, a] * k[0, b] + jac[1, a] * k[1, b]
            c = cov_cam[i]
            g_j = scratch_gj[i]  # dL/dJ = 2 G2 J C [2, 3]
            for row in range(2):
                for col in range(3):
                    g_j[row, col] = 2.0 * (k[row, 0] * c[0, col] + k[row, 1] * c[1, col] + k[row, 2] * c[2, col])
            # J -> camera-space position
            g_tx = 0.0
            g_ty = 0.0
            g_tz = -fx * rz * rz * g_j[0, 0] - fy * rz * rz * g_j[1, 1]
            g_tz += 2.0 * fx * jx * rz * rz * rz * g_j[0, 2] + 2.0 * fy * jy * rz * rz * rz * g_j[1, 2]
            g_jx = -fx * rz * rz * g_j[0, 2]
            g_jy = -fy * rz * rz * g_j[1, 2]
            if clamp_x:
                g_tz += g_jx * jx * rz
            else:
                g_tx += g_jx
            if clamp_y:
                g_tz += g_jy * jy * rz
            else:
                g_ty += g_jy
            # means2d and depth
            gmx, gmy = g_means2d[i, 0], g_means2d[i, 1]
            g_tx += fx * rz * gmx
            g_ty += fy * rz * gmy
            g_tz += -fx * tx * rz * rz * gmx - fy * ty * rz * rz * gmy + g_depths[i]
            for kk in range(3):
                g_means[i, kk] = view[0, kk] * g_tx + view[1, kk] * g_ty + view[2, kk] * g_tz
            # C = V Σ Vᵀ with Σ = R S Sᵀ Rᵀ: with m = V R S, C = m mᵀ and dL/dm = 2 dL/dC m
            r = scratch_r[i]
            qn, w, x, y, z = _rotation(quats[i], r)
            vr = scratch_vr[i]  # V R
            for a in range(3):
                for b in range(3):
                    vr[a, b] = view[a, 0] * r[0, b] + view[a, 1] * r[1, b] + view[a, 2] * r[2, b]
            g_m = scratch_gm[i]  # 2 dL/dC m, m = V R diag(s)
            for a in range(3):
                for b in range(3):
                    g_m[a, b] = 2.0 * (g_c[a, 0] * vr[0, b] + g_c[a, 1] * vr[1, b] + g_c[a, 2] * vr[2, b]) * \
                        scales[i, b]
            # m = V R diag(s): dL/ds_k = Σ_a g_m[a, k] (V R)[a, k];  dL/dR = Vᵀ g_m diag(s)
            for kk in range(3):
                g_scales[i, kk] = g_m[0, kk] * vr[0, kk] + g_m[1, kk] * vr[1, kk] + g_m[2, kk] * vr[2, kk]
            g_r = scratch_gr[i]
            for a in range(3):
                for b in range(3):
                    g_r[a, b] = (view[0, a] * g_m[0, b] + view[1, a] * g_m[1, b] + view[2, a] * g_m[2, b]) * \
                        scales[i, b]
            gw = 2.0 * (-z * g_r[0, 1] + y * g_r[0, 2] + z * g_r[1, 0] - x * g_r[1, 2] - y * g_r[2, 0] + x * g_r[2, 1])
            gx = 2.0 * (y * g_r[0, 1] + z * g_r[0, 2] + y * g_r[1, 0] - 2 * x * g_r[1, 1] - w * g_r[1, 2]
                        + z * g_r[2, 0] + w * g_r[2, 1] - 2 * x * g_r[2, 2])
            gy = 2.0 * (-2 * y * g_r[0, 0] + x * g_r[0, 1] + w * g_r[0, 2] + x * g_r[1, 0] + z * g_r[1, 2]
                        - w * g_r[2, 0] + z * g_r[2, 1] - 2 * y * g_r[2, 2])
            gz = 2.0 * (-2 * z * g_r[0, 0] - w * g_r[0, 1] + x * g_r[0, 2] + w * g_r[1, 0] - 2 * z * g_r[1, 1]
                        + y * g_r[1, 2] + x * g_r[2, 0] + y * g_r[2, 1])
            dot = gw * w + gx * x + gy * y + gz * z  # through the normalisation q / |q|
            g_quats[i, 0] = (gw - w * dot) / qn
            g_quats[i, 1] = (gx - x * dot) / qn
            g_quats[i, 2] = (gy - y * dot) / qn
            g_quats[i, 3] = (gz - z * dot) / qn
        return g_means, g_quats, g_scales


def _tile_order(n_tiles: int) -> np.ndarray:
    """A fixed shuffle of the tiles: the parallel loop hands each thread a contiguous run of it, and a shuffled
    run mixes busy tiles (the subject) with idle ones (background), so the threads finish together. Results do
    not depend on it: every tile's work is independent."""
    return np.random.default_rng(0).permutation(n_tiles).astype(np.int64)


def _threads() -> int:
    count = _THREADS or torch.get_num_threads()
    return max(1, min(count, numba.config.NUMBA_NUM_THREADS))


class _Rasterize(torch.autograd.Function):
    """Projection and compositing of one camera, both compiled (``rasterize_torch``'s contract)."""

    @staticmethod
    def forward(ctx, means, quats, scales, opacities, colors, view, intrinsics, width, height, near, far):
        numba.set_num_threads(_threads())
        f64 = lambda x: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float64)  # noqa: E731
        mu, q, s, op, col, v = f64(means), f64(quats), f64(scales), f64(opacities), f64(colors), f64(view)
        fx, fy, cx, cy = (float(x) for x in intrinsics)
        means2d, conics, depths, radii, valid, t_cam, cov_cam = _project(
            mu, q, s, op, v, fx, fy, cx, cy, width, height, near, far, ALPHA_MIN, EPS_2D, _EXTEND_MAX)
        visible = np.nonzero(valid)[0]
        order = visible[np.argsort(depths[visible], kind="stable")]  # front to back, ties in input order
        feats = np.ascontiguousarray(np.concatenate([col[order], depths[order, None]], axis=1))
        tiles_x, tiles_y = (width + TILE - 1) // TILE, (height + TILE - 1) // TILE
        offsets, ids, data, box = _bin(means2d[order], conics[order], op[order], radii[order], width, height,
                                       tiles_x, tiles_y, ALPHA_MIN)
        tiles = _tile_order(tiles_x * tiles_y)
        acc, t_final, last = _forward(data, box, feats, offsets, ids, tiles, width, height, tiles_x,
                                      ALPHA_MAX, ALPHA_MIN, TRANSMITTANCE_MIN)
        ctx.saved = (mu, q, s, v, (fx, fy, cx, cy), valid, t_cam, cov_cam, conics, order, data, box, feats,
                     offsets, ids, tiles, t_final, last)
        ctx.size = (width, height, tiles_x)
        ctx.meta = (means.dtype, means.device, colors.shape[1])
        dtype, device = colors.dtype, colors.device
        nf = colors.shape[1]
        out = torch.from_numpy(acc).to(device, dtype).view(height, width, nf + 1)
        alpha = torch.from_numpy(1.0 - t_final).to(device, dtype).view(height, width, 1)
        return out[..., :nf], alpha, out[..., nf:]

    @staticmethod
    def backward(ctx, g_acc, g_alpha, g_depth):
        numba.set_num_threads(_threads())
        (mu, q, s, v, (fx, fy, cx, cy), valid, t_cam, cov_cam, conics, order, data, box, feats, offsets, ids,
         tiles, t_final, last) = ctx.saved
        width, height, tiles_x = ctx.size
        dtype, device, nf = ctx.meta
        hw = width * height
        ga = np.ascontiguousarray(np.concatenate([
            g_acc.detach().cpu().numpy().reshape(hw, nf), g_depth.detach().cpu().numpy().reshape(hw, 1)], axis=1),
            dtype=np.float64)
        gal = np.ascontiguousarray(g_alpha.detach().cpu().numpy().reshape(hw), dtype=np.float64)
        slots = _backward(data, box, feats, offsets, ids, tiles, width, height, tiles_x, t_final, last, ga, gal,
                          ALPHA_MAX, ALPHA_MIN)
        per_visible = _reduce(slots, ids, order.shape[0])  # [M, 6 + F + 1], in depth order
        n = mu.shape[0]
        g_means2d, g_conics = np.zeros((n, 2)), np.zeros((n, 3))
        g_opac, g_colors, g_depths = np.zeros(n), np.zeros((n, nf)), np.zeros(n)
        g_means2d[order], g_conics[order], g_opac[order] = per_visible[:, 0:2], per_visible[:, 2:5], per_visible[:, 5]
        g_colors[order], g_depths[order] = per_visible[:, 6:6 + nf], per_visible[:, 6 + nf]
        g_means, g_quats, g_scales = _project_backward(mu, q, s, v, fx, fy, cx, cy, width, height, valid, t_cam,
                                                       cov_cam, conics, g_means2d, g_conics, g_depths)
        to = lambda x: torch.from_numpy(x).to(device, dtype)  # noqa: E731
        return (to(g_means), to(g_quats), to(g_scales), to(g_opac), to(g_colors), None, None, None, None, None,
                None)


def rasterize(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, view: Tensor,
              fx: Tensor, fy: Tensor, cx: Tensor, cy: Tensor, width: int, height: int, *, near: float,
              far: float) -> tuple[Tensor, Tensor, Tensor]:
    """One camera, projection and compositing compiled: ``rasterize.rasterize_torch``'s outputs
    ``(accumulated [H, W, F], alpha [H, W, 1], accumulated depth [H, W, 1])``, differentiable w.r.t. means [N, 3],
    quats (w, x, y, z, any norm) [N, 4], scales [N, 3], opacities [N] and colors [N, F]."""
    if numba is None:
        raise RuntimeError(unavailable_reason())
    intrinsics = (float(fx), float(fy), float(cx), float(cy))
    return _Rasterize.apply(means, quats, scales, opacities, colors, view, intrinsics, int(width), int(height),
                            float(near), float(far))
