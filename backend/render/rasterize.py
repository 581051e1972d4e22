"""Pure-PyTorch Gaussian rasterizer with gsplat 1.5.3's conventions (CPU, Apple MPS, CUDA without gsplat).

Conventions (identical to gsplat's "classic" 3DGS mode, checked against its CUDA sources):

- EWA splatting: the camera-space covariance goes through the Jacobian of the perspective projection, with the
  point's x/z and y/z clamped to 1.3 × the half field of view (gsplat's ``persp_proj``); 0.3 px² is added to the
  2D covariance (low-pass filter, no opacity compensation). ``antialias_compensation`` gives gsplat's
  "antialiased" mode (the Mip-Splatting 2D filter): each opacity times ``sqrt(det Σ₂ / det(Σ₂ + 0.3 I))``, so a
  splat smaller than a pixel is blurred to the pixel *and* dimmed, keeping its energy instead of bloating.
- Culling: camera-space depth outside ``[near, far]``, opacity < 1/255, singular 2D covariance, or a bounding
  box outside the image. The box is gsplat's tight, opacity-aware one: half sizes
  ``ceil(min(3.33, sqrt(2 ln(255 · opacity))) · sqrt(Σ_xx))`` (and Σ_yy), so it holds every pixel whose
  alpha can reach 1/255.
- Pixel centres are at ``(i + 0.5, j + 0.5)``; ``alpha = min(0.999, opacity · exp(−½ dᵀ Σ⁻¹ d))`` (gsplat 1.5.3
  clamps at 0.999; the original 3DGS code used 0.99); contributions with ``alpha < 1/255`` are skipped;
  compositing runs front to back in order of camera-space depth and a pixel stops at the first Gaussian that
  would take its transmittance to ≤ 1e-4 (that Gaussian is not composited).

Algorithm (no Python loop over Gaussians or pixels): Gaussians are sorted by depth and expanded into
(Gaussian, pixel) pairs over their bounding boxes, a bounded number of pairs at a time ("chunks", in depth
order). In each chunk the pairs below the alpha threshold or on finished pixels are dropped, the rest are
stably sorted by pixel (so each pixel's pairs are contiguous and still in depth order), and the transmittance
is a segmented prefix sum of ``log(1 − alpha)``. Transmittance and the "finished" flag carry over to the next
chunk; a Gaussian row whose whole span lies on finished pixels (a row prefix-sum test) is dropped before its
pairs are made, which skips most of the hidden back of an opaque body. Everything stays in autograd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from backend.gaussians.container import SH_C0
from backend.core.rotations import quaternion_to_matrix

ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
TRANSMITTANCE_MIN = 1e-4
EPS_2D = 0.3
_EXTEND_MAX = 3.33
_LOG_T_MIN = math.log(TRANSMITTANCE_MIN)

SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


# ---- per-Gaussian geometry ---------------------------------------------------------------------------------
quat_to_rotmat = quaternion_to_matrix  # the renderer's name for it


def covariances_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariances ``R S Sᵀ Rᵀ``. quats [N, 4], scales [N, 3] -> [N, 3, 3]"""
    m = quat_to_rotmat(quats) * scales[:, None, :]
    return m @ m.transpose(-1, -2)


def sh_degree_from_coeffs(num_coeffs: int) -> int:
    """K = (degree + 1)² -> degree; raises ``ValueError`` for other K or degree > 3."""
    degree = math.isqrt(num_coeffs) - 1
    if (degree + 1) ** 2 != num_coeffs or degree > 3:
        raise ValueError(f"Gaussians.sh: expected K in (1, 4, 9, 16) coefficients, got K={num_coeffs}")
    return degree


def eval_sh(sh: Tensor, dirs: Tensor, degree: int) -> Tensor:
    """Colour from 3DGS-convention real spherical harmonics, before the +0.5 offset.

    Args:
        sh: Coefficients. [N, K, 3] (only the first (degree + 1)² are used)
        dirs: Unit view directions from the camera to the Gaussians. [N, 3]
        degree: SH degree to evaluate, 0..3.

    Returns:
        Colour minus 0.5. [N, 3]
    """
    out = SH_C0 * sh[:, 0]
    if degree == 0:
        return out
    x, y, z = (d[:, None] for d in dirs.unbind(-1))
    out = out - SH_C1 * y * sh[:, 1] + SH_C1 * z * sh[:, 2] - SH_C1 * x * sh[:, 3]
    if degree == 1:
        return out
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    out = (out + SH_C2[0] * xy * sh[:, 4] + SH_C2[1] * yz * sh[:, 5] + SH_C2[2] * (2 * zz - xx - yy) * sh[:, 6]
           + SH_C2[3] * xz * sh[:, 7] + SH_C2[4] * (xx - yy) * sh[:, 8])
    if degree == 2:
        return out
    return (out + SH_C3[0] * y * (3 * xx - yy) * sh[:, 9] + SH_C3[1] * xy * z * sh[:, 10]
            + SH_C3[2] * y * (4 * zz - xx - yy) * sh[:, 11] + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[:, 12]
            + SH_C3[4] * x * (4 * zz - xx - yy) * sh[:, 13] + SH_C3[5] * z * (xx - yy) * sh[:, 14]
            + SH_C3[6] * x * (xx - 3 * yy) * sh[:, 15])


@dataclass(frozen=True, eq=False)  # holds tensors: compare fields explicitly
class Projected:
    """Visible Gaussians of one camera after EWA projection (M of the N survive culling).

    Attributes:
        index: Index of each survivor into the input Gaussians. [M] int64
        means2d: Pixel-space centres. [M, 2]
        conics: Inverse 2D covariances (a, b, c) of ``[[a, b], [b, c]]``. [M, 3]
        depths: Camera-space z. [M]
        radii: Half sizes of the bounding box in pixels (x, y). [M, 2] int64
    """

    index: Tensor
    means2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor


def project_gaussians(
    means: Tensor,
    covars: Tensor,
    opacities: Tensor,
    view: Tensor,
    fx: Tensor,
    fy: Tensor,
    cx: Tensor,
    cy: Tensor,
    width: int,
    height: int,
    near: float,
    far: float,
) -> Projected:
    """EWA-project Gaussians into one OpenCV camera and cull them (gsplat's ``persp_proj`` + ``add_blur``).

    Args:
        means: World centres. [N, 3]
        covars: World covariances. [N, 3, 3]
        opacities: Opacities in (0, 1). [N]
        view: OpenCV world-to-camera matrix. [4, 4]
        fx, fy, cx, cy: Intrinsics in pixels (0-dim tensors).
        width, height: Image size in pixels.
        near, far: Depth range kept.
    """
    rot, trans = view[:3, :3], view[:3, 3]
    z_all = means @ rot[2] + trans[2]
    with torch.no_grad():
        keep = (z_all >= near) & (z_all <= far) & (opacities >= ALPHA_MIN)
    idx = keep.nonzero().squeeze(1)
    mean_c = _take(means, idx) @ rot.T + trans
    cov2 = _covariances_2d(mean_c, rot @ _take(covars, idx) @ rot.T, fx, fy, cx, cy, width, height)
    x, y, z = mean_c.unbind(-1)
    rz = 1.0 / z
    a, b, c = cov2[:, 0, 0] + EPS_2D, cov2[:, 0, 1], cov2[:, 1, 1] + EPS_2D
    det = a * c - b * b
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)
    with torch.no_grad():
        op = _take(opacities, idx)
        extend = torch.clamp(torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_MIN) / ALPHA_MIN)), max=_EXTEND_MAX)
        rx = torch.ceil(extend * torch.sqrt(a.clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(c.clamp_min(0)))
        mx, my = means2d.unbind(-1)
        ok = ((det > 0) & ((rx > 0) | (ry > 0))
              & (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height))
        sel = ok.nonzero().squeeze(1)
    det = _take(det, sel)
    conics = torch.stack([_take(c, sel) / det, -_take(b, sel) / det, _take(a, sel) / det], dim=-1)
    return Projected(
        index=_take(idx, sel),
        means2d=_take(means2d, sel),
        conics=conics,
        depths=_take(z, sel),
        radii=torch.stack([_take(rx, sel), _take(ry, sel)], dim=-1).to(torch.int64),
    )


def _covariances_2d(mean_c: Tensor, cov_c: Tensor, fx: Tensor, fy: Tensor, cx: Tensor, cy: Tensor, width: int,
                    height: int) -> Tensor:
    """EWA: camera-space covariances through the perspective Jacobian, x/z and y/z clamped to 1.3 × the half
    field of view (gsplat's ``persp_proj``); no low-pass term. mean_c [M, 3], cov_c [M, 3, 3] -> [M, 2, 2]"""
    x, y, z = mean_c.unbind(-1)
    rz = 1.0 / z
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    tx = z * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    zero = torch.zeros_like(z)
    jac = torch.stack([
        torch.stack([fx * rz, zero, -fx * tx * rz * rz], dim=-1),
        torch.stack([zero, fy * rz, -fy * ty * rz * rz], dim=-1),
    ], dim=-2)  # [M, 2, 3]
    return jac @ cov_c @ jac.transpose(-1, -2)


def antialias_compensation(means: Tensor, covars: Tensor, view: Tensor, fx: Tensor, fy: Tensor, cx: Tensor,
                           cy: Tensor, width: int, height: int) -> Tensor:
    """gsplat's "antialiased" opacity factor ``sqrt(max(det Σ₂ / det(Σ₂ + 0.3 I), 0))`` per Gaussian for one
    camera (Mip-Splatting's 2D filter); differentiable. Multiply the opacities by it before rasterizing.

    Args:
        means: World centres. [N, 3]
        covars: World covariances. [N, 3, 3]
        view: OpenCV world-to-camera matrix. [4, 4]
        fx, fy, cx, cy: Intrinsics (0-dim tensors).

    Returns:
        Factors in [0, 1]. [N] (Gaussians behind the camera get an arbitrary finite value; they are culled.)
    """
    rot, trans = view[:3, :3], view[:3, 3]
    mean_c = means @ rot.T + trans
    mean_c = torch.cat([mean_c[:, :2], mean_c[:, 2:].clamp_min(1e-6)], dim=-1)  # behind the camera: culled anyway
    cov2 = _covariances_2d(mean_c, rot @ covars @ rot.T, fx, fy, cx, cy, width, height)
    a, b, c = cov2[:, 0, 0], cov2[:, 0, 1], cov2[:, 1, 1]
    det = a * c - b * b
    det_blur = (a + EPS_2D) * (c + EPS_2D) - b * b
    return torch.sqrt(torch.clamp(det / det_blur, min=1e-12, max=1.0))


# ---- compositing -------------------------------------------------------------------------------------------
def _scan_dtype(device: torch.device) -> torch.dtype:
    """float64 transmittance bookkeeping where the device has it (MPS does not: float32 + a doubling scan)."""
    return torch.float32 if device.type == "mps" else torch.float64


def composite(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    features: Tensor,
    radii: Tensor,
    width: int,
    height: int,
    *,
    max_pairs: int = 1 << 21,
) -> tuple[Tensor, Tensor]:
    """Front-to-back alpha compositing of depth-sorted 2D Gaussians.

    Args:
        means2d: Pixel-space centres, sorted front to back. [M, 2]
        conics: Inverse 2D covariances (a, b, c). [M, 3]
        opacities: Opacities. [M]
        features: Values to composite (colour, depth, extra channels). [M, F]
        radii: Bounding-box half sizes in pixels. [M, 2] int64
        width, height: Image size.
        max_pairs: Most (Gaussian, pixel) pairs made at once; bounds memory (≈ 100 bytes per pair with
            autograd). Chunks are smaller by default (about two pairs per pixel, at least 2¹⁷) so that pixels
            finished by the front layers cull the Gaussians behind them early.

    Returns:
        ``(accumulated, alpha)``: ``Σ wᵢ fᵢ`` per pixel [H·W, F] and ``1 − T_final`` [H·W].
    """
    device = means2d.device
    m, f = features.shape
    hw = width * height
    scan = _scan_dtype(device)
    acc = torch.zeros(hw, f, dtype=features.dtype, device=device)
    log_t = torch.zeros(hw, dtype=scan, device=device)  # log transmittance so far, carries gradients
    done = torch.zeros(hw, dtype=torch.bool, device=device)
    if m == 0:
        return acc, torch.zeros(hw, dtype=features.dtype, device=device)

    with torch.no_grad():
        rows = _row_spans(means2d.detach(), conics.detach(), opacities.detach(), radii, width, height)
        counts_all = rows.pairs_per_gaussian

    budget = min(max_pairs, max(1 << 17, 2 * hw))
    raw_cum = torch.cumsum(counts_all, 0)
    window = 4  # chunks' worth of raw pairs looked at per step; grows while culling empties the windows
    start = 0
    while start < m:
        with torch.no_grad():
            # Look at a window of the next Gaussians so each step costs O(window), not O(M).
            before = int(raw_cum[start - 1]) if start > 0 else 0
            stop = max(int(torch.searchsorted(raw_cum, before + window * budget, right=True)), start + 1)
            r0, r1 = int(rows.first_row[start]), int(rows.first_row[stop])
            span = rows.span[r0:r1]
            if start > 0 and bool(done.any()):
                # Row prefix sums of unfinished pixels: a span with none left cannot contribute.
                open_px = torch.zeros(height, width + 1, dtype=torch.int32, device=device)
                open_px[:, 1:] = (~done).view(height, width).to(torch.int32).cumsum(1)
                flat = open_px.view(-1)
                base = rows.y[r0:r1] * (width + 1)
                lo = rows.x_first[r0:r1].clamp(0, width)
                hi = (lo + span).clamp(max=width)
                span = torch.where(_take(flat, base + hi) > _take(flat, base + lo), span, torch.zeros_like(span))
            counts = torch.zeros(stop - start, dtype=torch.long, device=device).index_add_(
                0, rows.gaussian[r0:r1] - start, span)
            cum = torch.cumsum(counts, 0)
            n = max(int(torch.searchsorted(cum, budget, right=True)), 1)
            total = int(cum[n - 1])
            window = min(window * 2, 1 << 12) if int(cum[-1]) < budget else 4
        if total > 0:
            span = span[: int(rows.first_row[start + n]) - r0]
            acc, log_t, done = _composite_chunk(
                rows, r0, span, total, means2d, conics, opacities, features, width, acc, log_t, done)
        start += n
    alpha = (1.0 - torch.exp(log_t)).to(features.dtype)
    return acc, alpha


@dataclass(frozen=True, eq=False)  # holds tensors: compare fields explicitly
class _Rows:
    """Per (Gaussian, image row) spans of pixels that can reach alpha ≥ 1/255, grouped by Gaussian."""

    gaussian: Tensor  # Gaussian of each row [R]
    y: Tensor  # image row [R]
    x_first: Tensor  # first pixel of the span [R]
    span: Tensor  # pixels in the span (may be 0) [R]
    first_row: Tensor  # first row of each Gaussian [M + 1]
    pairs_per_gaussian: Tensor  # [M]


def _row_spans(means2d: Tensor, conics: Tensor, opacities: Tensor, radii: Tensor, width: int, height: int) -> _Rows:
    """Solve each box row's quadratic for the x-range where ``opacity · exp(−σ) ≥ 1/255`` (slightly widened).

    The span is only a superset used to make pairs; the alpha test on the pairs decides exactly.
    """
    device = means2d.device
    mx, my = means2d.unbind(-1)
    rx, ry = radii.unbind(-1)
    x0 = torch.clamp(torch.floor(mx).long() - rx, 0, width)
    x1 = torch.clamp(torch.ceil(mx).long() + rx, 0, width)
    y0 = torch.clamp(torch.floor(my).long() - ry, 0, height)
    y1 = torch.clamp(torch.ceil(my).long() + ry, 0, height)
    rows_per = torch.where(x1 > x0, y1 - y0, torch.zeros_like(y0))
    first_row = torch.zeros(rows_per.shape[0] + 1, dtype=torch.long, device=device)
    first_row[1:] = torch.cumsum(rows_per, 0)
    r_total = int(first_row[-1])
    g = torch.repeat_interleave(torch.arange(rows_per.shape[0], device=device), rows_per, output_size=r_total)
    y = _take(y0, g) + torch.arange(r_total, device=device) - _take(first_row, g)
    a, b, c = _take(conics, g).unbind(-1)
    dy = _take(my, g) - (y.to(means2d.dtype) + 0.5)
    # σ(dx) = ½a·dx² + b·dy·dx + ½c·dy² ≤ s_max = ln(255·opacity), dx = mean_x − pixel_centre_x.
    s_max = torch.log(_take(opacities, g) / ALPHA_MIN).clamp_min(0) * (1 + 1e-4) + 1e-4
    disc = (b * dy) ** 2 - a * (c * dy * dy - 2 * s_max)
    root = torch.sqrt(disc.clamp_min(0))
    dx_lo = (-b * dy - root) / a
    dx_hi = (-b * dy + root) / a
    mx_g = _take(mx, g)
    first = torch.maximum(torch.ceil(mx_g - dx_hi - 0.5).long(), _take(x0, g))
    last = torch.minimum(torch.floor(mx_g - dx_lo - 0.5).long(), _take(x1, g) - 1)
    span = torch.where(disc >= 0, (last - first + 1).clamp_min(0), torch.zeros_like(first))
    per_gaussian = torch.zeros(rows_per.shape[0], dtype=torch.long, device=device).index_add_(0, g, span)
    return _Rows(gaussian=g, y=y, x_first=first, span=span, first_row=first_row,
                 pairs_per_gaussian=per_gaussian)


def _composite_chunk(
    rows: _Rows,
    r0: int,
    span: Tensor,
    total: int,
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    features: Tensor,
    width: int,
    acc: Tensor,
    log_t: Tensor,
    done: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite the rows ``r0 .. r0 + len(span)`` (with their live spans, ``total`` pixels) onto the running
    accumulators."""
    device = means2d.device
    r1 = r0 + span.shape[0]
    with torch.no_grad():
        row_g = rows.gaussian[r0:r1]
        keep_rows = (span > 0).nonzero().squeeze(1)
        row_g, span = _take(row_g, keep_rows), _take(span, keep_rows)
        row_y = _take(rows.y[r0:r1], keep_rows)
        row_x = _take(rows.x_first[r0:r1], keep_rows)
        starts = torch.cumsum(span, 0) - span
        r = torch.repeat_interleave(torch.arange(span.shape[0], device=device), span, output_size=total)
        local = torch.arange(total, device=device) - _take(starts, r)  # position within the row's span
        pix = _take(row_y * width + row_x, r) + local
        local_f = local.to(means2d.dtype)

    # Per-row coefficients (differentiable): alpha = exp(−((qa·dx + qb)·dx + qc)), dx = mean_x − x_centre.
    con = _take(conics, row_g)
    dy = _take(means2d[:, 1], row_g) - (row_y.to(means2d.dtype) + 0.5)
    qa = 0.5 * con[:, 0]
    qb = con[:, 1] * dy
    qc = 0.5 * con[:, 2] * dy * dy - torch.log(_take(opacities, row_g))
    dx = _take(_take(means2d[:, 0], row_g) - (row_x.to(means2d.dtype) + 0.5), r) - local_f
    alpha_all = torch.exp(-((_take(qa, r) * dx + _take(qb, r)) * dx + _take(qc, r)))
    with torch.no_grad():
        keep = alpha_all >= ALPHA_MIN
        if bool(done.any()):
            keep &= ~_take(done, pix)
        keep_idx = keep.nonzero().squeeze(1)
        if keep_idx.numel() == 0:
            return acc, log_t, done
        # Stable sort by pixel keeps each pixel's pairs in depth order (pairs were made in depth order).
        pix, order = torch.sort(_take(pix, keep_idx), stable=True)
        sel = _take(keep_idx, order)
        g = _take(row_g, _take(r, sel))
        # Runs of equal pixels: first pair of each run, and each pair's run number.
        new_run = torch.ones_like(pix, dtype=torch.bool)
        new_run[1:] = pix[1:] != pix[:-1]
        seg_first = new_run.nonzero().squeeze(1)
        seg_of_pair = torch.cumsum(new_run, 0) - 1

    alpha = torch.clamp(_take(alpha_all, sel), max=ALPHA_MAX)
    log1m = torch.log1p(-alpha.to(log_t.dtype))
    excl = _segmented_exclusive_sum(log1m, seg_first, seg_of_pair) + _take(log_t, pix)
    with torch.no_grad():
        contributes = (excl + log1m) > _LOG_T_MIN
        all_contribute = bool(contributes.all())
    if all_contribute:
        weight = alpha * torch.exp(excl).to(alpha.dtype)
        log_t = log_t.index_add(0, pix, log1m)
    else:
        weight = torch.where(contributes, alpha * torch.exp(excl).to(alpha.dtype), torch.zeros_like(alpha))
        log_t = log_t.index_add(0, pix, torch.where(contributes, log1m, torch.zeros_like(log1m)))
        with torch.no_grad():
            done = done.clone()
            done[pix[~contributes]] = True
    acc = acc.index_add(0, pix, weight[:, None] * _take(features, g))
    return acc, log_t, done


def _segmented_exclusive_sum(values: Tensor, run_first: Tensor, run_of: Tensor) -> Tensor:
    """Exclusive prefix sums restarting at every run. values [P]; run_first [R] (index of each run's first
    element); run_of [P] (run of each element) -> [P]

    float64: one global cumsum minus its value at each run start (exact to ~1e-9 here). float32 (MPS has no
    float64): the global trick would lose digits, so a segmented Hillis–Steele scan in ⌈log₂ longest run⌉
    steps.
    """
    if values.dtype == torch.float64:
        excl = torch.cumsum(values, 0) - values
        return excl - _take(_take(excl, run_first), run_of)
    with torch.no_grad():
        offset = torch.arange(values.shape[0], device=values.device) - _take(run_first, run_of)
        longest = int(offset.max()) + 1 if values.numel() else 0
    incl, k = values, 1
    while k < longest:
        shifted = torch.cat([torch.zeros_like(incl[:k]), incl[:-k]])
        incl = incl + torch.where(offset >= k, shifted, torch.zeros_like(shifted))
        k *= 2
    return incl - values


def _take(x: Tensor, index: Tensor) -> Tensor:
    """``x[index]`` along dim 0 (``index_select`` is several times faster than advanced indexing on CPU)."""
    return x.index_select(0, index)


def rasterize_torch(
    means: Tensor,
    covars: Tensor,
    opacities: Tensor,
    colors: Tensor,
    view: Tensor,
    fx: Tensor,
    fy: Tensor,
    cx: Tensor,
    cy: Tensor,
    width: int,
    height: int,
    *,
    near: float,
    far: float,
    max_pairs: int = 1 << 21,
) -> tuple[Tensor, Tensor, Tensor]:
    """Render one camera.

    Args:
        means: World centres. [N, 3]
        covars: World covariances. [N, 3, 3]
        opacities: Opacities. [N]
        colors: Per-Gaussian values to composite (for this camera). [N, F]
        view: OpenCV world-to-camera matrix. [4, 4]
        fx, fy, cx, cy: Intrinsics (0-dim tensors).
        width, height: Image size.
        near, far: Depth range.
        max_pairs: Pair budget per chunk (memory bound).

    Returns:
        ``(accumulated, alpha, accumulated_depth)``: [H, W, F], [H, W, 1], [H, W, 1] — colours are not yet
        composited over a background and depth is ``Σ wᵢ zᵢ`` (not divided by alpha).
    """
    proj = project_gaussians(means, covars, opacities, view, fx, fy, cx, cy, width, height, near, far)
    order = torch.argsort(proj.depths.detach(), stable=True)
    idx = _take(proj.index, order)
    feats = torch.cat([_take(colors, idx), _take(proj.depths, order)[:, None]], dim=-1)
    acc, alpha = composite(_take(proj.means2d, order), _take(proj.conics, order), _take(opacities, idx), feats,
                           _take(proj.radii, order), width, height, max_pairs=max_pairs)
    acc = acc.view(height, width, -1)
    return acc[..., :-1], alpha.view(height, width, 1), acc[..., -1:]
