"""Fit Gaussians on the posed body surface to the reference photo by differentiable rendering.

Gaussians start on the body surface in the pose of the photo (area-uniform samples of the rest mesh, carried
to the posed mesh by their triangle and barycentric coordinates), coloured by the pixel they project to. The
fit optimises, per Gaussian, colour, opacity, scales, rotation and an offset from its surface anchor in the
anchor's local frame (two tangents + normal), so hair and loose clothing beyond the body silhouette are
reached. Losses: silhouette (L1 of rendered alpha vs mask), L1 and D-SSIM of the colour; regularisers: offset
smoothness over surface neighbours, a small offset magnitude penalty; bounds (projected after every step):
normal offset in ``[-normal_inward, normal_outward]``, tangent offsets within ``±tangent``, scales within
``[scale_min, scale_max] x spacing``.

The fit renders from a crop of the photo around the silhouette (and the projected body), resampled so its
longer side is ``PhotoFitSettings.resolution`` pixels; intrinsics are adjusted to match.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from backend.body.model import BodyModel
from backend.body.parts import PART_INDEX, part_ids_from_weights
from backend.core.errors import InputError
from backend.gaussians import Gaussians, rgb_to_sh_dc
from backend.core.rotations import matrix_to_quaternion, quaternion_multiply, quaternion_to_matrix
from backend.motion.skinning import blend_transforms, unskin_points
from backend.reconstruct.inputs import ReferenceView
from backend.reconstruct.surface import sample_surface, tangent_frames, triangle_areas_normals
from backend.render.cameras import Cameras
from backend.render.metrics import masked_psnr, silhouette_iou, ssim
from backend.render.render import RenderSettings, render

log = logging.getLogger(__name__)

ReportFn = Callable[..., None]


@dataclass(frozen=True)
class PhotoFitSettings:
    """Image fitting settings (lengths in metres unless said otherwise).

    Attributes:
        resolution: Longer side of the cropped fitting image, pixels.
        iterations: Optimisation steps.
        max_gaussians: Upper bound on the Gaussian count (None: no bound).
        crop_margin: Margin around the silhouette/body box, as a fraction of its size.
        lr_color: Adam step on colour logits.
        lr_opacity: Adam step on opacity logits.
        lr_scale: Adam step on log scales.
        lr_rotation: Adam step on quaternions.
        lr_offset: Adam step on offsets (metres); decays to 10 % by the last iteration.
        normal_outward: Largest offset along the surface normal.
        normal_inward: Largest offset against the normal.
        tangent: Largest offset along each tangent.
        scale_min: Smallest scale as a multiple of the sample spacing.
        scale_max: Largest scale as a multiple of the sample spacing.
        thickness: Initial normal-axis scale relative to the in-surface scale.
        opacity: Initial opacity.
        w_silhouette: Weight of L1(alpha, mask).
        w_l1: Weight of L1 colour.
        w_ssim: Weight of D-SSIM colour.
        w_smooth: Weight of the offset smoothness (mean squared neighbour difference / smooth_length²).
        w_offset: Weight of the offset magnitude penalty (mean squared offset / smooth_length²).
        smooth_length: Length unit of the regularisers.
        neighbours: Surface neighbours per Gaussian for smoothness and back fill.
        loose_threshold: A Gaussian whose offset is longer than this is labelled loose (off the body).
        report_every: Iterations between progress reports.
        antialiased: Fit with the renderer's antialiased mode (Mip-Splatting's 2D filter), the mode the
            job's renders use, so the fitted splats look the same at other resolutions.
    """

    resolution: int = 192
    iterations: int = 150
    max_gaussians: int | None = 20_000
    crop_margin: float = 0.08
    lr_color: float = 0.05
    lr_opacity: float = 0.05
    lr_scale: float = 0.02
    lr_rotation: float = 0.01
    lr_offset: float = 0.006
    normal_outward: float = 0.15
    normal_inward: float = 0.03
    tangent: float = 0.04
    scale_min: float = 0.05
    scale_max: float = 2.0
    thickness: float = 0.3
    opacity: float = 0.9
    w_silhouette: float = 1.0
    w_l1: float = 0.8
    w_ssim: float = 0.2
    w_smooth: float = 0.05
    w_offset: float = 0.0005
    smooth_length: float = 0.02
    neighbours: int = 8
    loose_threshold: float = 0.03
    report_every: int = 5
    antialiased: bool = False

    def __post_init__(self) -> None:
        if self.resolution < 16:
            raise InputError(f"PhotoFitSettings.resolution: expected ≥ 16 pixels, got {self.resolution}")
        if self.iterations < 0:
            raise InputError(f"PhotoFitSettings.iterations: expected ≥ 0, got {self.iterations}")
        if not 0 < self.scale_min < self.scale_max:
            raise InputError(f"PhotoFitSettings.scale_min/max: expected 0 < min < max, got {self.scale_min}, "
                             f"{self.scale_max}")


QUALITY = {
    # preview: ≤ 3 minutes on a 2-core CPU (measured in docs/reconstruct.md).
    "preview": PhotoFitSettings(resolution=256, iterations=120, max_gaussians=16_000),
    "standard": PhotoFitSettings(resolution=384, iterations=400, max_gaussians=40_000),
    "high": PhotoFitSettings(resolution=512, iterations=1000, max_gaussians=None),
}


GARMENT_OFFSET = 0.01
"""Largest offset (m, along each axis of its frame) of a garment Gaussian from its anchor on the garment surface:
it rides the cloth's triangle, so an offset would swing with every fold and flare."""

def photo_fit_settings_for(quality: str) -> PhotoFitSettings:
    """The preset for a job quality (``preview`` | ``standard`` | ``high``)."""
    if quality not in QUALITY:
        raise InputError(f"quality: expected one of {tuple(QUALITY)}, got {quality!r}")
    return QUALITY[quality]


# ---- anchors on the posed body -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Anchors:
    """Surface points the Gaussians are attached to.

    Attributes:
        rest_points: Anchor positions on the rest mesh. [N, 3]
        posed_points: The same anchors on the posed mesh (world). [N, 3]
        posed_frames: Local frames on the posed mesh, columns (tangent 1, tangent 2, normal). [N, 3, 3]
        skin_weights: Barycentric blend of the corner vertices' weights, rows sum to 1. [N, J]
        part_ids: Body part per anchor. [N]
        spacing: Mean distance between neighbouring samples, metres.
    """

    rest_points: Tensor
    posed_points: Tensor
    posed_frames: Tensor
    skin_weights: Tensor
    part_ids: Tensor
    spacing: float


def sample_anchors(body: BodyModel, betas: Tensor | None, posed_vertices: Tensor, n: int,
                   generator: torch.Generator) -> Anchors:
    """Area-uniform anchors on the rest mesh, carried to the posed mesh (same triangle and barycentrics).

    Args:
        body: The body model.
        betas: Shape. [S] or None
        posed_vertices: The body in the pose of the photo. [V, 3]
        n: Number of anchors.
        generator: Source of the random draws.
    """
    rest = body.rest_vertices(betas).detach().cpu().float()
    faces = body.faces.cpu()
    sample = sample_surface(rest, faces, n, generator)
    corners = faces[sample.triangles]
    weights = (sample.barycentric[..., None] * body.skin_weights.detach().cpu().float()[corners]).sum(dim=1)
    weights = weights / weights.sum(dim=1, keepdim=True)
    posed = posed_vertices.cpu().float()
    posed_points = (sample.barycentric[..., None] * posed[corners]).sum(dim=1)
    _, posed_normals = triangle_areas_normals(posed, faces)
    frames = tangent_frames(posed_normals[sample.triangles])
    area = triangle_areas_normals(rest, faces)[0].sum()
    return Anchors(sample.points, posed_points, frames, weights, part_ids_from_weights(weights, body.joint_names),
                   float(torch.sqrt(area / n)))


def knn(points: Tensor, k: int, *, chunk: int = 2048) -> Tensor:
    """Indices of the k nearest other points (brute force, chunked). ``[N, 3] -> [N, k]`` int64."""
    k = min(k, points.shape[0] - 1)
    out = []
    for start in range(0, points.shape[0], chunk):
        d = torch.cdist(points[start:start + chunk], points)
        d[torch.arange(d.shape[0]), torch.arange(start, start + d.shape[0])] = float("inf")
        out.append(d.topk(k, dim=1, largest=False).indices)
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.int64)


# ---- the fitting view --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitView:
    """The reference view cropped and resampled for fitting.

    Attributes:
        rgb: Straight colour. [h, w, 3]
        mask: Silhouette. [h, w]
        camera: Camera of the crop (one camera, h x w).
    """

    rgb: Tensor
    mask: Tensor
    camera: Cameras


def crop_view(view: ReferenceView, body_points: Tensor, resolution: int, margin: float) -> FitView:
    """Crop the photo to the box around the silhouette and the projected body, resample to ``resolution``.

    Args:
        view: The full reference view.
        body_points: Posed body points whose projection must be inside the crop. [P, 3]
        resolution: Longer side of the result, pixels.
        margin: Margin as a fraction of the box size.
    """
    cam = view.camera
    h, w = view.mask.shape
    ys, xs = torch.nonzero(view.mask > 0.5, as_tuple=True)
    uv, depth = cam.project(body_points.to(cam.fx.dtype))
    uv = uv[0][depth[0] > 0]
    x0 = min(float(xs.min()), float(uv[:, 0].min()))
    x1 = max(float(xs.max()) + 1, float(uv[:, 0].max()))
    y0 = min(float(ys.min()), float(uv[:, 1].min()))
    y1 = max(float(ys.max()) + 1, float(uv[:, 1].max()))
    pad = margin * max(x1 - x0, y1 - y0)
    x0, x1 = max(0, int(math.floor(x0 - pad))), min(w, int(math.ceil(x1 + pad)))
    y0, y1 = max(0, int(math.floor(y0 - pad))), min(h, int(math.ceil(y1 + pad)))
    cw, ch = x1 - x0, y1 - y0
    s = min(1.0, resolution / max(cw, ch))
    ow, oh = max(8, int(round(cw * s))), max(8, int(round(ch * s)))
    sx, sy = ow / cw, oh / ch
    stack = torch.cat([view.rgb * view.mask[..., None], view.mask[..., None]], dim=-1)[y0:y1, x0:x1]
    small = torch.nn.functional.interpolate(stack.permute(2, 0, 1)[None], size=(oh, ow), mode="bilinear",
                                            antialias=True, align_corners=False)[0]
    small = small.permute(1, 2, 0)
    mask = small[..., 3].clamp(0, 1)
    rgb = torch.where(mask[..., None] > 1e-4, small[..., :3] / mask[..., None].clamp_min(1e-4), small[..., :3])
    camera = Cameras(width=ow, height=oh, fx=cam.fx * sx, fy=cam.fy * sy, cx=(cam.cx - x0) * sx,
                     cy=(cam.cy - y0) * sy, world_from_camera=cam.world_from_camera)
    return FitView(rgb=rgb.clamp(0, 1), mask=mask, camera=camera)


# ---- losses ------------------------------------------------------------------------------------------------
def extend_colors(rgb: Tensor, valid: Tensor, steps: int = 8) -> Tensor:
    """Fill pixels outside ``valid`` with the mean colour of valid neighbours, growing ``steps`` pixels out.

    Args:
        rgb: Colour. [H, W, 3]
        valid: Pixels whose colour is known. [H, W] bool

    Returns:
        Colour with a ``steps``-pixel rim filled (unknown pixels beyond it keep ``rgb``). [H, W, 3]
    """
    colour = (rgb * valid[..., None]).permute(2, 0, 1)[None]
    weight = valid.float()[None, None]
    for _ in range(steps):
        grown_c = torch.nn.functional.avg_pool2d(colour, 3, 1, 1, count_include_pad=False)
        grown_w = torch.nn.functional.avg_pool2d(weight, 3, 1, 1, count_include_pad=False)
        fill = (weight == 0) & (grown_w > 0)
        colour = torch.where(fill, grown_c / grown_w.clamp_min(1e-8), colour)
        weight = torch.where(fill, torch.ones_like(weight), weight)
    out = colour[0].permute(1, 2, 0)
    return torch.where(weight[0, 0, ..., None] > 0, out, rgb)


# ---- the fit -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitResult:
    """Fitted Gaussians in the pose of the photo, with their surface binding.

    Attributes:
        posed: Fitted Gaussians in the reference pose (world), with skin_weights, part_ids and loose.
        anchors: The surface anchors.
        offsets: Offset of each Gaussian from its anchor in the anchor frame (t1, t2, n). [N, 3]
        visibility: How much of each Gaussian the reference camera sees, in [0, 1] (``gaussian_visibility``). [N]
        view: The fitting view.
        metrics: ``psnr`` (masked, dB), ``iou``, ``iterations``, ``seconds``, ``iterations_per_s``.
    """

    posed: Gaussians
    anchors: Anchors
    offsets: Tensor
    visibility: Tensor
    view: FitView
    metrics: dict


def _compose_means(anchors: Anchors, offsets: Tensor) -> Tensor:
    return anchors.posed_points + (anchors.posed_frames @ offsets[..., None])[..., 0]


def fit_reference(
    view: ReferenceView,
    anchors: Anchors,
    settings: PhotoFitSettings,
    report: ReportFn | None = None,
) -> FitResult:
    """Fit Gaussians bound to ``anchors`` to the reference view.

    Args:
        view: The reference view (photo, mask, camera, pose).
        anchors: Surface anchors in the pose of the photo (``sample_anchors``).
        settings: Fit settings.
        report: ``report(fraction, message, preview=None)``; may raise ``Cancelled``.

    Returns:
        FitResult.
    """
    report = report or (lambda *a, **k: None)
    fv = crop_view(view, anchors.posed_points, settings.resolution, settings.crop_margin)
    n = anchors.posed_points.shape[0]
    spacing = anchors.spacing
    render_settings = RenderSettings(background=(0.0, 0.0, 0.0), antialiased=settings.antialiased)
    target = fv.rgb * fv.mask[..., None]
    # Colour target for splats that spill over the silhouette: the photo's colour extended outwards, times the
    # rendered alpha, so edge Gaussians are not darkened towards the background (their opacity is the
    # silhouette loss's business) and do not show up as dark specks from other views.
    extended = extend_colors(fv.rgb, fv.mask > 0.5)

    # Initial colour: the pixel each anchor projects to (occluded ones are fixed by the back fill later).
    uv, _ = fv.camera.project(anchors.posed_points)
    grid = torch.stack([uv[0, :, 0] / fv.camera.width * 2 - 1, uv[0, :, 1] / fv.camera.height * 2 - 1], dim=-1)
    sampled = torch.nn.functional.grid_sample(fv.rgb.permute(2, 0, 1)[None], grid[None, None], align_corners=False,
                                              padding_mode="border")[0, :, 0].T
    color_logits = torch.logit(sampled.clamp(0.02, 0.98)).clone().requires_grad_(True)
    opacity_logits = torch.full((n,), math.log(settings.opacity / (1 - settings.opacity))).requires_grad_(True)
    s0 = 0.7 * spacing
    log_scales = torch.log(torch.tensor([s0, s0, s0 * settings.thickness])).expand(n, 3).clone().requires_grad_(True)
    quats = matrix_to_quaternion(anchors.posed_frames).clone().requires_grad_(True)
    offsets = torch.zeros(n, 3, requires_grad=True)
    neighbours = knn(anchors.rest_points, settings.neighbours)

    optim = torch.optim.Adam([
        {"params": [color_logits], "lr": settings.lr_color},
        {"params": [opacity_logits], "lr": settings.lr_opacity},
        {"params": [log_scales], "lr": settings.lr_scale},
        {"params": [quats], "lr": settings.lr_rotation},
        {"params": [offsets], "lr": settings.lr_offset},
    ], eps=1e-15)
    lo = torch.tensor([-settings.tangent, -settings.tangent, -settings.normal_inward]).expand(n, 3).clone()
    hi = torch.tensor([settings.tangent, settings.tangent, settings.normal_outward]).expand(n, 3).clone()
    on_garment = anchors.part_ids == PART_INDEX["garment"]  # they ride the cloth: they stay on its surface
    lo[on_garment], hi[on_garment] = -GARMENT_OFFSET, GARMENT_OFFSET
    log_lo, log_hi = math.log(settings.scale_min * spacing), math.log(settings.scale_max * spacing)
    unit2 = settings.smooth_length ** 2

    def current() -> Gaussians:
        return Gaussians(means=_compose_means(anchors, offsets), quats=quats, log_scales=log_scales,
                         opacity_logits=opacity_logits,
                         sh=rgb_to_sh_dc(torch.sigmoid(color_logits))[:, None, :])

    started = time.perf_counter()
    report(0.0, f"fitting {n} Gaussians to a {fv.camera.width}x{fv.camera.height} crop")
    for it in range(settings.iterations):
        out = render(current(), fv.camera, settings=render_settings)
        rgb, alpha = out.rgb[0], out.alpha[0, ..., 0]
        loss_sil = (alpha - fv.mask).abs().mean()
        colour_target = torch.where(fv.mask[..., None] > 0.5, target, alpha.detach()[..., None] * extended)
        loss_l1 = (rgb - colour_target).abs().mean()
        loss_ssim = 1.0 - ssim(rgb[None], colour_target[None])
        world_off = (anchors.posed_frames @ offsets[..., None])[..., 0]
        # index_select, not fancy indexing: its backward (index_add_) sums in a fixed order, so reruns are
        # bit-identical (fancy indexing's backward, an accumulating index_put_, is not on the CPU)
        near = world_off.index_select(0, neighbours.reshape(-1)).view(*neighbours.shape, 3)
        loss_smooth = (world_off[:, None, :] - near).pow(2).sum(-1).mean() / unit2
        loss_off = world_off.pow(2).sum(-1).mean() / unit2
        loss = (settings.w_silhouette * loss_sil + settings.w_l1 * loss_l1 + settings.w_ssim * loss_ssim
                + settings.w_smooth * loss_smooth + settings.w_offset * loss_off)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        decay = 0.1 ** (it / max(1, settings.iterations - 1))
        optim.param_groups[4]["lr"] = settings.lr_offset * decay
        optim.step()
        with torch.no_grad():
            offsets.copy_(torch.maximum(torch.minimum(offsets, hi), lo))
            log_scales.clamp_(log_lo, log_hi)
        if it % settings.report_every == 0 or it == settings.iterations - 1:
            preview = (rgb.detach().clamp(0, 1) * 255).to(torch.uint8).numpy()
            report((it + 1) / max(1, settings.iterations),
                   f"iteration {it + 1}/{settings.iterations}: loss {loss.item():.4f}, "
                   f"silhouette {loss_sil.item():.4f}", preview=preview)
    seconds = time.perf_counter() - started

    with torch.no_grad():
        fitted = current().detach()
    visibility = gaussian_visibility(fitted, fv.camera, max(0.02, 2 * spacing))
    with torch.no_grad():
        final = render(fitted, fv.camera, settings=render_settings)
    metrics = {
        "psnr": masked_psnr(final.rgb[0], target, fv.mask),
        "iou": silhouette_iou(final.alpha[0, ..., 0], fv.mask),
        "iterations": settings.iterations,
        "seconds": seconds,
        "iterations_per_s": settings.iterations / seconds if seconds > 0 else float("inf"),
        "resolution": [fv.camera.width, fv.camera.height],
        "pixels_per_metre": float(fv.camera.pixels_per_metre(anchors.posed_points.mean(0))[0]),
        "gaussians": n,
    }
    off = offsets.detach()
    posed = fitted.replace(skin_weights=anchors.skin_weights, part_ids=anchors.part_ids,
                           loose=off.norm(dim=-1) > settings.loose_threshold)
    log.info("fit: %d iterations in %.1f s (%.2f it/s), masked PSNR %.2f dB, IoU %.3f", settings.iterations,
             seconds, metrics["iterations_per_s"], metrics["psnr"], metrics["iou"])
    return FitResult(posed=posed, anchors=anchors, offsets=off, visibility=visibility, view=fv, metrics=metrics)


def gaussian_visibility(gaussians: Gaussians, camera: Cameras, depth_tolerance: float) -> Tensor:
    """How much of each Gaussian the camera sees, in [0, 1]. [N]

    1 where the Gaussian's centre lies on the visible surface: it projects inside the image onto a pixel with
    rendered alpha > 0.5 whose rendered depth is at most ``depth_tolerance`` in front of it. Elsewhere, the
    fraction of its splat that reaches the image unoccluded: the blending weight it receives summed over all
    pixels, ``Σ_p T_p α_p`` (the gradient of the rendered total of a per-Gaussian unit feature), divided by
    what the same splat would receive alone, ``opacity · 2π·sqrt(det Σ_2D)``.
    """
    probe = torch.ones(gaussians.num_gaussians, 1, requires_grad=True)
    out = render(gaussians.detach(), camera, features=probe, settings=RenderSettings())
    (weight,) = torch.autograd.grad(out.features.sum(), probe)
    with torch.no_grad():
        view = camera.view_matrices()[0]
        rot, trans = view[:3, :3], view[:3, 3]
        mc = gaussians.means @ rot.T + trans
        z = mc[:, 2].clamp_min(1e-6)
        fx, fy = camera.fx[0], camera.fy[0]
        zero = torch.zeros_like(z)
        jac = torch.stack([torch.stack([fx / z, zero, -fx * mc[:, 0] / z ** 2], -1),
                           torch.stack([zero, fy / z, -fy * mc[:, 1] / z ** 2], -1)], -2)
        r = quaternion_to_matrix(gaussians.quats) * gaussians.scales[:, None, :]
        cov = rot @ (r @ r.transpose(1, 2)) @ rot.T
        cov2 = jac @ cov @ jac.transpose(1, 2) + 0.3 * torch.eye(2)
        footprint = gaussians.opacities * 2 * math.pi * torch.linalg.det(cov2).clamp_min(0).sqrt()
        ratio = (weight[:, 0] / footprint.clamp_min(1e-8)).clamp(0.0, 1.0)
        u = torch.floor(fx * mc[:, 0] / z + camera.cx[0]).long()
        v = torch.floor(fy * mc[:, 1] / z + camera.cy[0]).long()
        inside = (mc[:, 2] > 0) & (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)
        uc, vc = u.clamp(0, camera.width - 1), v.clamp(0, camera.height - 1)
        alpha = out.alpha[0, vc, uc, 0]
        depth = out.depth[0, vc, uc, 0]
        on_surface = inside & (alpha > 0.5) & (mc[:, 2] <= depth + depth_tolerance)
        return torch.where(on_surface, torch.ones_like(ratio), ratio)


# ---- posed -> rest -----------------------------------------------------------------------------------------
def unpose(posed: Gaussians, joint_transforms: Tensor) -> Gaussians:
    """Map Gaussians from a pose back to the rest pose through the inverse of each one's blended transform.

    The exact inverse of ``backend.motion.skin_means_quats``: skinning the result with the same
    ``joint_transforms`` gives back ``posed`` (means through the full blended affine map, rotations through
    its re-orthonormalised rotation).

    Args:
        posed: Gaussians with ``skin_weights [N, J]``.
        joint_transforms: Rest->posed transforms of the pose. [J, 4, 4]
    """
    if posed.skin_weights is None:
        raise ValueError("unpose: the Gaussians carry no skin_weights")
    blended = blend_transforms(posed.skin_weights.to(joint_transforms.dtype), joint_transforms[None])[0]  # [N,3,4]
    means = unskin_points(posed.means, posed.skin_weights, joint_transforms)
    q = matrix_to_quaternion(blended[..., :3])
    q_inv = q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q.dtype)
    quats = quaternion_multiply(q_inv, torch.nn.functional.normalize(posed.quats, dim=-1))
    return posed.replace(means=means, quats=quats)


def label_loose(offsets: Tensor, threshold: float) -> Tensor:
    """Loose = offset from the body surface longer than ``threshold`` metres. ``[N, 3] -> [N]`` bool."""
    return offsets.norm(dim=-1) > threshold


def with_settings(settings: PhotoFitSettings, **changes) -> PhotoFitSettings:
    """A copy of ``settings`` with some fields changed."""
    return replace(settings, **changes)


BEHIND_AXIS = 0.02
"""A garment splat more than this (m) farther from the photo's camera than the garment's axis is on its far
side: the photo never shows it (the front half and the legs hide it), whatever its fitted visibility. By depth,
not by the surface normal, so the folds of the near side, which face sideways, keep what the fit gave them."""


# ---- the whole photo -> canonical path ---------------------------------------------------------------------
@dataclass(frozen=True)
class Reconstruction:
    """Result of ``reconstruct_photo``.

    Attributes:
        canonical: Gaussians in the body's rest pose, bound to it (skin_weights, part_ids, loose).
        posed: The same Gaussians in the pose of the photo (after the back fill).
        fit: The image fit (metrics, visibility, fitting view).
        seen: Gaussians the reference camera sees (the others were back-filled). [N] bool
    """

    canonical: Gaussians
    posed: Gaussians
    fit: FitResult
    seen: Tensor


def reconstruct_photo(
    view: ReferenceView,
    body: BodyModel,
    betas: Tensor | None,
    num_gaussians: int,
    generator: torch.Generator,
    settings: PhotoFitSettings,
    report: ReportFn | None = None,
    backfill=None,
    garment=None,
) -> Reconstruction:
    """Photo -> canonical Gaussians: anchors on the posed body, image fit, back fill, inverse skinning, labels.

    Args:
        view: The validated reference view.
        body: The body model.
        betas: Body shape. [S] or None
        num_gaussians: Requested count (capped by ``settings.max_gaussians``).
        generator: Source of the anchor draws.
        settings: Fit settings.
        report: Progress callback ``report(fraction, message, preview=None)``.
        backfill: ``backfill.BackfillSettings`` (None: defaults).
        garment: A ``garment_surface.GarmentSurface``: its Gaussians are placed and fitted on it (part
            ``garment``, always loose) instead of being left to the thighs.
    """
    from backend.reconstruct.backfill import BackfillSettings, fill_depth, fill_unseen

    backfill = backfill or BackfillSettings()
    n = num_gaussians if settings.max_gaussians is None else min(num_gaussians, settings.max_gaussians)
    n_body = n
    if garment is not None:  # the body's share of the count, at one density over body and garment
        rest = body.rest_vertices(betas).detach().cpu().float()
        body_area = float(triangle_areas_normals(rest, body.faces.cpu())[0].sum())
        garment_area = float(triangle_areas_normals(garment.rest_vertices.float(), garment.faces)[0].sum())
        n_body = max(1, round(n * body_area / (body_area + garment_area)))
    anchors = sample_anchors(body, betas, view.pose.vertices, n_body, generator)
    if garment is not None:
        from backend.reconstruct.garment_surface import garment_anchors

        keep, extra = garment_anchors(anchors, garment, view.pose.joint_transforms, generator, total=n)
        anchors = Anchors(*(torch.cat([mine[keep], theirs]) for mine, theirs in zip(
            (anchors.rest_points, anchors.posed_points, anchors.posed_frames, anchors.skin_weights, anchors.part_ids),
            extra)), anchors.spacing)
    fit = fit_reference(view, anchors, settings, report)
    visibility = fit.visibility
    if garment is not None:  # a closed garment hides its own back: splats behind its axis are never "seen"
        is_garment = anchors.part_ids == PART_INDEX["garment"]
        depth = anchors.posed_points @ view.camera.view_matrices()[0, 2, :3].to(anchors.posed_points.dtype)
        axis_depth = float(depth[is_garment].mean())
        back = is_garment & (depth > axis_depth + BEHIND_AXIS)
        visibility = torch.where(back, torch.zeros_like(visibility), visibility)
    # A faint splat (the fit turned it transparent, e.g. it stood outside the silhouette) lends no colour.
    colors, normal_offsets, seen = fill_unseen(anchors.rest_points, anchors.part_ids, visibility,
                                               fit.posed.colors, fit.offsets[:, 2], backfill,
                                               sources=fit.posed.opacities >= 0.5)
    if backfill.depth:
        eye = view.camera.positions[0].to(anchors.posed_points.dtype)
        to_anchor = torch.nn.functional.normalize(anchors.posed_points - eye, dim=-1)
        facing = (anchors.posed_frames[:, :, 2] * to_anchor).sum(-1).abs()
        normal_offsets = fill_depth(anchors.rest_points, anchors.part_ids, seen, facing, normal_offsets, backfill)
    offsets = fit.offsets.clone()
    offsets[:, 2] = normal_offsets.clamp(-settings.normal_inward, settings.normal_outward)
    posed = fit.posed
    if garment is not None:
        # The garment is its surface: a garment splat the photo does not show lies flat on it, as first placed
        # (no offset, the surface's orientation, the initial size and opacity), with its back-filled colour.
        # (faint splats keep their fitted transparency: the fit removed them from outside the silhouette)
        hidden = torch.zeros_like(back)
        offsets[hidden] = 0.0
        s0 = 0.7 * anchors.spacing
        posed = posed.replace(
            quats=torch.where(hidden[:, None], matrix_to_quaternion(anchors.posed_frames), posed.quats),
            log_scales=torch.where(hidden[:, None], torch.log(torch.tensor([s0, s0, s0 * settings.thickness])),
                                   posed.log_scales),
            opacity_logits=torch.where(hidden, torch.full_like(posed.opacity_logits, math.log(
                settings.opacity / (1 - settings.opacity))), posed.opacity_logits))
    posed = posed.replace(
        means=_compose_means(anchors, offsets),
        sh=rgb_to_sh_dc(colors)[:, None, :],
        loose=label_loose(offsets, settings.loose_threshold) | (anchors.part_ids == PART_INDEX["garment"]),
    )
    canonical = unpose(posed, view.pose.joint_transforms)
    return Reconstruction(canonical=canonical, posed=posed, fit=fit, seen=seen)
