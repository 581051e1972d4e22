"""Import canonical Gaussians from a 3DGS PLY (LHM output or any avatar tool) and bind them to the body.

The PLY must be in the body's own rest frame (Y up, facing +Z, metres), either in the body's rest pose
(T-pose) or in an A-pose (arms lowered by ``a_pose_degrees`` at the shoulders, LHM's canonical pose). With
``pose="auto"`` the pose is detected: whichever of the two body meshes has the smaller mean distance to the
Gaussian centres wins.

Binding: each Gaussian takes the skinning weights of the closest point on the body mesh (in the detected
pose) — the barycentric blend of that triangle's vertex weights. Candidates are the triangles whose centroids
are nearest; the exact point-triangle distance picks among them. A-pose Gaussians are then carried to the rest
pose through the inverse of their blended skinning transform. Labels: part from the weights; loose when the
Gaussian is farther than ``loose_threshold`` from the body surface.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from backend.body.model import NUM_BODY_JOINTS, BodyModel
from backend.body.parts import part_ids_from_weights
from backend.core.errors import InputError
from backend.core.meshes import nearest_on_mesh
from backend.gaussians import Gaussians, load_ply
from backend.reconstruct.photo_fit import unpose

log = logging.getLogger(__name__)

POSES = ("auto", "rest", "apose")
_L_SHOULDER, _R_SHOULDER = 15, 16  # indices into pose_body's 21 joints


@dataclass(frozen=True)
class ImportSettings:
    """Attributes:
        pose: ``"auto"`` (detect), ``"rest"`` or ``"apose"``: the pose the PLY is in.
        a_pose_degrees: Shoulder angle of the A-pose (arms lowered from the T-pose).
        loose_threshold: Farther than this from the body surface (metres) = loose.
        candidates: Nearest triangle centroids examined per Gaussian.
        far_warning: Warn when the median distance to the body exceeds this (metres).
    """

    pose: str = "auto"
    a_pose_degrees: float = 45.0
    loose_threshold: float = 0.03
    candidates: int = 16
    far_warning: float = 0.05

    def __post_init__(self) -> None:
        if self.pose not in POSES:
            raise InputError(f"import pose: expected one of {POSES}, got {self.pose!r}")


def a_pose_body(degrees: float = 45.0) -> Tensor:
    """``pose_body`` of the A-pose: both arms lowered by ``degrees`` about the body's forward axis. [1, 63]"""
    pose = torch.zeros(1, NUM_BODY_JOINTS, 3)
    a = math.radians(degrees)
    pose[0, _L_SHOULDER, 2] = -a  # left arm (+X) swings down towards −Y
    pose[0, _R_SHOULDER, 2] = a
    return pose.reshape(1, NUM_BODY_JOINTS * 3)


def bind_to_body(
    gaussians: Gaussians,
    body: BodyModel,
    betas: Tensor | None = None,
    settings: ImportSettings = ImportSettings(),
    warnings: list[str] | None = None,
) -> tuple[Gaussians, dict]:
    """Bind Gaussians given in the body's rest frame (rest pose or A-pose) to the body; return them in rest pose.

    Args:
        gaussians: Gaussians in the body's rest frame.
        body: The body model.
        betas: Body shape. [S] or None
        settings: Pose, thresholds.
        warnings: Human-readable warnings are appended here.

    Returns:
        ``(canonical, info)``: rest-pose Gaussians with skin_weights, part_ids, loose; info has ``pose``,
        ``median_distance`` (metres) and ``loose_fraction``.
    """
    warnings = warnings if warnings is not None else []
    g = gaussians.detach().to("cpu", torch.float32)
    faces = body.faces.cpu()
    zeros = torch.zeros(1, 3, dtype=body.dtype)
    candidates = {}
    with torch.no_grad():
        beta = None if betas is None else torch.as_tensor(betas, dtype=body.dtype)
        for name in ("rest", "apose"):
            if settings.pose not in ("auto", name):
                continue
            pose = torch.zeros(1, NUM_BODY_JOINTS * 3, dtype=body.dtype) if name == "rest" else a_pose_body(
                settings.a_pose_degrees).to(body.dtype)
            out = body(beta, zeros, pose, zeros)
            candidates[name] = (out.vertices[0].float().cpu(), out.joint_transforms[0].float().cpu())
    scores = {}
    if len(candidates) > 1:
        probe = g.means[torch.linspace(0, g.num_gaussians - 1, min(2000, g.num_gaussians)).long()]
        for name, (verts, _) in candidates.items():
            scores[name] = float(nearest_on_mesh(probe, verts, faces, settings.candidates)[2].mean())
        pose_name = min(scores, key=scores.get)
        log.info("import: pose detected as %s (mean distance %s)", pose_name,
                 {k: round(v, 4) for k, v in scores.items()})
    else:
        pose_name = next(iter(candidates))
    verts, transforms = candidates[pose_name]
    tri, bary, dist = nearest_on_mesh(g.means, verts, faces, settings.candidates)
    corner_weights = body.skin_weights.detach().cpu().float()[faces[tri]]  # [N, 3, J]
    weights = (bary[..., None] * corner_weights).sum(dim=1).clamp_min(0)
    weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
    bound = g.replace(skin_weights=weights, part_ids=part_ids_from_weights(weights, body.joint_names),
                      loose=dist > settings.loose_threshold)
    canonical = bound if pose_name == "rest" else unpose(bound, transforms)
    median = float(dist.median())
    if median > settings.far_warning:
        warnings.append(f"import: the Gaussians lie {100 * median:.0f} cm from the body surface (median); is the "
                        "PLY in the body's rest frame (Y up, facing +Z, metres) and rest/A-pose?")
    info = {"pose": pose_name, "median_distance": median, "loose_fraction": float(bound.loose.float().mean()),
            "pose_scores": scores}
    return canonical, info


def import_gaussians(path: str | Path, body: BodyModel, betas: Tensor | None = None,
                     settings: ImportSettings = ImportSettings(), warnings: list[str] | None = None) -> Gaussians:
    """Read a canonical 3DGS PLY and bind it to ``body`` (see ``bind_to_body``).

    Raises:
        InputError: the file is missing, not a 3DGS PLY, or holds no Gaussians.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"import_gaussians: file not found: {path}")
    try:
        gaussians = load_ply(path)
    except (ValueError, OSError) as exc:
        raise InputError(f"import_gaussians: {path.name} is not a 3DGS PLY ({exc})") from None
    if gaussians.num_gaussians == 0:
        raise InputError(f"import_gaussians: {path.name} holds no Gaussians")
    if not bool(torch.isfinite(gaussians.means).all()):
        raise InputError(f"import_gaussians: {path.name} has non-finite positions")
    canonical, info = bind_to_body(gaussians, body, betas, settings, warnings)
    log.info("import: %d Gaussians from %s bound in %s pose, median distance %.3f m, %.0f%% loose",
             canonical.num_gaussians, path.name, info["pose"], info["median_distance"],
             100 * info["loose_fraction"])
    return canonical
