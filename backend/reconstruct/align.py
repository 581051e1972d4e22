"""Optional auto-alignment: refine the posed body's global scale and translation to the photo's silhouette.

For a rough manual line-up in Blender. The body is drawn as small opaque Gaussians on its posed surface from the
reference camera; a similarity ``x -> s·(x − c) + c + t`` (c = the body's centroid, t in the camera's image
plane: size and depth are ambiguous in one view, so the depth stays where the user put the body) is optimised
by Adam on the silhouette L1 loss at low resolution. The result replaces the reference pose: every joint transform is
premultiplied by the similarity, so the fit and the inverse skinning use the aligned body and the canonical
result still sits on the body's own rest shape. If the refinement does not improve the silhouette IoU the
original pose is kept. Per-joint refinement is not done (see docs/reconstruct.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from backend.gaussians import Gaussians
from backend.reconstruct.inputs import ReferencePose, ReferenceView
from backend.render.render import RenderSettings, render

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignSettings:
    """Attributes:
        iterations: Adam steps.
        resolution: Longer side of the silhouette image, pixels.
        lr: Adam step (log-scale and metres).
        max_scale_change: Scale stays within ``[1/(1+m), 1+m]``.
        points: Body surface points drawn.
    """

    iterations: int = 40
    resolution: int = 96
    lr: float = 0.01
    max_scale_change: float = 0.3
    points: int = 3000


def similarity(scale: Tensor, translation: Tensor, center: Tensor) -> Tensor:
    """4x4 matrix of ``x -> scale·(x − center) + center + translation``."""
    m = torch.eye(4, dtype=translation.dtype)
    m = m.clone()
    m[:3, :3] = torch.eye(3, dtype=translation.dtype) * scale
    m[:3, 3] = (1 - scale) * center + translation
    return m


def align_to_silhouette(view: ReferenceView, body_faces: Tensor, settings: AlignSettings = AlignSettings(),
                        generator: torch.Generator | None = None) -> tuple[ReferenceView, dict]:
    """Refine the reference pose's global scale and translation to the photo's silhouette.

    Args:
        view: The reference view.
        body_faces: The body's triangles. [T, 3]
        settings: Alignment settings.
        generator: Source of the surface samples.

    Returns:
        ``(view, info)``: the view with the aligned pose (or the original one) and ``scale``,
        ``translation``, ``iou_before``, ``iou_after``, ``applied``.
    """
    from backend.core.rotations import matrix_to_quaternion
    from backend.reconstruct.photo_fit import crop_view
    from backend.render.metrics import silhouette_iou
    from backend.reconstruct.surface import sample_surface, tangent_frames, triangle_areas_normals

    generator = generator or torch.Generator().manual_seed(0)
    verts = view.pose.vertices.float()
    sample = sample_surface(verts, body_faces.cpu(), settings.points, generator)
    points = sample.points
    center = verts.mean(dim=0)
    fv = crop_view(view, verts, settings.resolution, 0.15)
    # Flat splats in the surface, about one sample spacing wide: the drawn silhouette is the mesh's.
    spacing = float(triangle_areas_normals(verts, body_faces.cpu())[0].sum() / settings.points) ** 0.5
    quats = matrix_to_quaternion(tangent_frames(sample.normals))
    flat = torch.tensor([0.6 * spacing, 0.6 * spacing, 0.1 * spacing])
    rs = RenderSettings()

    def draw(scale: Tensor, translation: Tensor) -> Tensor:
        means = scale * (points - center) + center + translation
        g = Gaussians.from_colors(means, torch.ones_like(means), quats=quats,
                                  scales=(flat * float(scale.detach())).expand(means.shape[0], 3), opacities=0.9)
        return render(g, fv.camera, settings=rs).alpha[0, ..., 0]

    log_s = torch.zeros((), requires_grad=True)
    plane = torch.zeros(2, requires_grad=True)  # along the camera's right and up axes
    axes = view.camera.world_from_camera[0, :3, :2].float()  # [3, 2]
    with torch.no_grad():
        iou_before = silhouette_iou(draw(torch.ones(()), torch.zeros(3)), fv.mask)
    optim = torch.optim.Adam([log_s, plane], lr=settings.lr)
    bound = float(torch.log(torch.tensor(1 + settings.max_scale_change)))
    for _ in range(settings.iterations):
        alpha = draw(torch.exp(log_s), axes @ plane)
        loss = (alpha - fv.mask).abs().mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        with torch.no_grad():
            log_s.clamp_(-bound, bound)
    scale, translation = torch.exp(log_s.detach()), (axes @ plane).detach()
    with torch.no_grad():
        iou_after = silhouette_iou(draw(scale, translation), fv.mask)
    info = {"scale": float(scale), "translation": translation.tolist(), "iou_before": iou_before,
            "iou_after": iou_after, "applied": iou_after > iou_before}
    log.info("align: scale %.3f, translation %s, IoU %.3f -> %.3f", info["scale"], info["translation"],
             iou_before, iou_after)
    if not info["applied"]:
        return view, info
    m = similarity(scale, translation, center)
    pose = ReferencePose(
        joint_transforms=m @ view.pose.joint_transforms,
        vertices=(verts @ m[:3, :3].T) + m[:3, 3],
        frame=view.pose.frame,
    )
    return ReferenceView(rgb=view.rgb, mask=view.mask, camera=view.camera, pose=pose), info
