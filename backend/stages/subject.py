"""The job's subject in the body's rest pose: an imported 3DGS PLY, a photo reconstruction, or the default.

This is where a job's settings meet the reconstruction algorithms (``backend.reconstruct``), which know nothing
of jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from backend.body import BodyModel
from backend.core.errors import InputError
from backend.core.progress import StageProgress
from backend.gaussians import Gaussians
from backend.motion import load_motion
from backend.reconstruct.align import align_to_silhouette
from backend.reconstruct.importer import ImportSettings, import_gaussians
from backend.reconstruct.inputs import load_reference_view
from backend.reconstruct.photo_fit import photo_fit_settings_for, reconstruct_photo
from backend.reconstruct.surface import sample_body_gaussians
from backend.reconstruct.garment import (
    GarmentDetection,
    apply_override,
    body_levels,
    detect_in_gaussians,
    detect_in_photo,
    garment_override,
)
from backend.reconstruct.garment_surface import GarmentSurface, build_garment_surface
from backend.stages.job import JobSpec


@dataclass(frozen=True)
class Subject:
    """The job's subject: canonical Gaussians and, when it wears a loose garment, the garment's surface."""

    canonical: Gaussians
    garment: GarmentSurface | None = None


def canonical_gaussians(spec: JobSpec, body: BodyModel, report: StageProgress, warnings: list[str],
                        details: dict | None = None) -> Gaussians:
    """The subject's canonical Gaussians (``job_subject(...).canonical``)."""
    return job_subject(spec, body, report, warnings, details).canonical


def job_subject(spec: JobSpec, body: BodyModel, report: StageProgress, warnings: list[str],
                details: dict | None = None) -> Subject:
    """The subject in the body's rest pose: imported, reconstructed from the photo, or procedural, with its loose
    garment when one is found (or the job's ``garment`` override asks for one). ``details`` (when given) receives
    ``fit_pixels_per_metre``, the density the subject was fitted at (None unless it was reconstructed from a
    photo; renders coarser than that are antialiased), the fit's metrics and ``garment`` (what was found)."""
    generator = torch.Generator().manual_seed(spec.seed)
    details = {} if details is None else details
    details["fit_pixels_per_metre"] = None
    if spec.import_gaussians is not None or spec.image is not None:
        return subject_from_spec(spec, body, generator, report, warnings, details)
    report(0.0, f"sampling {spec.gaussians} Gaussians on the body surface")
    betas = torch.as_tensor(spec.motion.betas, dtype=body.dtype)
    canonical = sample_body_gaussians(body, betas, spec.gaussians, generator)
    return Subject(canonical, _garment_of_gaussians(spec, body, betas, canonical, details))


def _garment_of_gaussians(spec: JobSpec, body: BodyModel, betas: torch.Tensor, canonical: Gaussians,
                          details: dict) -> GarmentSurface | None:
    override = garment_override(spec.garment)
    if override.type == "none":
        return _surface(body, betas, GarmentDetection("none", source="override"), details)
    levels = body_levels(body, betas)
    detection = apply_override(detect_in_gaussians(canonical, body, betas, levels), override, levels)
    return _surface(body, betas, detection, details, levels)


def _surface(body: BodyModel, betas: torch.Tensor, detection: GarmentDetection, details: dict,
             levels=None) -> GarmentSurface | None:
    """The garment surface of a detection (None when there is none); ``details["garment"]`` says what was found."""
    record = {"found": detection.found, "kind": detection.kind, "source": detection.source,
              "evidence": detection.evidence}
    surface = None
    if detection.found:
        surface = build_garment_surface(body, betas, detection, levels or body_levels(body, betas))
        record["surface"] = surface.record()
    details["garment"] = record
    return surface


def draped(spec: JobSpec, body: BodyModel, betas: torch.Tensor, motion, garment: GarmentSurface,
           reference_transforms: torch.Tensor, view=None, detection: GarmentDetection | None = None,
           levels=None) -> GarmentSurface:
    """The garment as it hangs in the photo: settled by the cloth simulation from the rest pose into the photo's
    pose, then carried back to the rest pose, so the Gaussians are fitted on the shape the simulation starts from
    (whatever the job's ``dynamics``). With the photo's ``view`` and ``detection``, the rest shape is corrected
    once so the hanging garment is as wide as the photo's silhouette (``match_silhouette``)."""
    from backend.dynamics.garment_motion import DynamicsSettings, drape, warmup_poses
    from backend.reconstruct.garment_surface import match_silhouette, with_hanging
    from backend.stages.posing import motion_tensors

    frame = spec.reference_frame or 0
    t = motion_tensors(motion, body)
    settings = DynamicsSettings(preset=spec.cloth_preset)
    root, pose, trans = warmup_poses(t["root_orient"][frame], t["pose_body"][frame], t["trans"][frame],
                                     settings.warmup_frames)
    with torch.no_grad():
        warm = body(t["betas"], root, pose, trans, None).joint_transforms.float()
    hanging = drape(garment, body, betas, warm, motion.fps, settings)
    if view is not None and detection is not None:  # fit the hanging width to the silhouette, then drape again
        garment = match_silhouette(garment, hanging, view.camera, detection, levels.pelvis)
        hanging = drape(garment, body, betas, warm, motion.fps, settings)
    return with_hanging(garment, hanging, reference_transforms.float())


def subject_from_spec(spec: JobSpec, body: BodyModel, generator: torch.Generator, report: StageProgress,
                      warnings: list[str], details: dict | None = None) -> Subject:
    """The job's subject in the body's rest pose, bound to the body (imported or reconstructed from the photo),
    with its loose garment (detected, or as the job's ``garment`` override says).

    Job fields used: ``import_gaussians`` (PLY path; wins over ``image``), ``image``, ``camera``,
    ``reference_frame``, ``gaussians``, ``quality``; ``extras``: ``align`` (bool, refine the body's global
    scale/translation to the silhouette first), ``import_pose`` (``auto`` | ``rest`` | ``apose``),
    ``import_a_pose_degrees`` (shoulder angle of the A-pose, default 45),
    ``reference_pose`` (a motion file whose frame ``reference_frame`` (default 0) is the pose of the photo,
    instead of the job's motion); ``garment``.

    Args:
        spec: The job.
        body: The body model.
        generator: Source of every random draw.
        report: ``report(fraction, message, preview=None)`` (a StageProgress); may raise Cancelled.
        warnings: Human-readable warnings are appended here.
        details: Receives ``fit_pixels_per_metre`` and ``fit`` (the photo fit's metrics) when given.

    Returns:
        Subject: Gaussians in the body's rest pose with ``skin_weights [N, body.num_joints]``, ``part_ids``,
        ``loose``; the garment surface or None.

    Raises:
        InputError: bad image / camera / pose / PLY (one line naming the field).
    """
    extras = dict(spec.extras or {})
    betas = torch.as_tensor(spec.motion.betas, dtype=body.dtype)
    if spec.import_gaussians is not None:
        if spec.image is not None:
            warnings.append("image: ignored because import_gaussians is given (the imported Gaussians are used)")
        report(0.0, f"importing {Path(spec.import_gaussians).name}")
        try:
            degrees = float(extras.get("import_a_pose_degrees", 45.0))
        except (TypeError, ValueError):
            raise InputError("import_a_pose_degrees: expected a number, "
                             f"got {extras['import_a_pose_degrees']!r}") from None
        settings = ImportSettings(pose=str(extras.get("import_pose", "auto")), a_pose_degrees=degrees)
        canonical = import_gaussians(spec.import_gaussians, body, betas, settings, warnings)
        report(1.0, f"imported {canonical.num_gaussians} Gaussians")
        return Subject(canonical, _garment_of_gaussians(spec, body, betas, canonical, details or {}))

    motion = spec.motion
    if extras.get("reference_pose") is not None:
        path = Path(str(extras["reference_pose"]))
        if not path.is_file():
            raise InputError(f"reference_pose: file not found: {path}")
        motion = load_motion(path)
    report(0.0, "loading the reference image")
    view = load_reference_view(spec.image, spec.camera, body, motion, spec.reference_frame, warnings)
    if extras.get("align"):
        report(0.02, "aligning the body to the silhouette")
        view, info = align_to_silhouette(view, body.faces, generator=generator)
        if info["applied"]:
            warnings.append(f"align: body scaled by {info['scale']:.3f} and moved by "
                            f"{[round(v, 3) for v in info['translation']]} m to fit the silhouette "
                            f"(IoU {info['iou_before']:.2f} -> {info['iou_after']:.2f})")
    override = garment_override(spec.garment)
    detection = GarmentDetection("none", source="override", evidence={"reason": "garment.type is none"})
    if override.type != "none":
        report(0.03, "looking for a loose garment in the silhouette")
        levels = body_levels(body, betas)
        detection = apply_override(detect_in_photo(view, body, betas, levels), override, levels)
    garment = _surface(body, betas, detection, details if details is not None else {})
    if garment is not None:
        report(0.04, "draping the garment on the body in the photo's pose")
        garment = draped(spec, body, betas, motion, garment, view.pose.joint_transforms, view, detection, levels)
    settings = photo_fit_settings_for(spec.quality)
    if settings.max_gaussians is not None and spec.gaussians > settings.max_gaussians:
        warnings.append(f"gaussians: quality '{spec.quality}' fits at most {settings.max_gaussians} Gaussians "
                        f"(asked for {spec.gaussians})")
    rec = reconstruct_photo(view, body, betas, spec.gaussians, generator, settings,
                            lambda f, msg, preview=None: report(0.05 + 0.9 * f, msg, preview), garment=garment)
    m = rec.fit.metrics
    if details is not None:
        details["fit_pixels_per_metre"] = m["pixels_per_metre"]
        details["fit"] = {key: m[key] for key in ("psnr", "iou", "iterations", "resolution", "gaussians")}
    if m["iou"] < 0.9:
        warnings.append(f"reconstruct: the fit covers the photo's silhouette poorly (IoU {m['iou']:.2f}); check the "
                        "camera and the reference pose, or enable alignment")
    report(1.0, f"reconstructed {rec.canonical.num_gaussians} Gaussians: masked PSNR {m['psnr']:.1f} dB, "
                f"IoU {m['iou']:.3f}, {100 * float(rec.seen.float().mean()):.0f}% seen")
    return Subject(rec.canonical, garment)
