"""Finding a loose garment (skirt, dress): from the photo's silhouette, or from bound Gaussians.

A skirt's outline does not follow the legs: below the crotch it fills the gap between them and stands off
their outer edges. ``detect_in_photo`` compares, row by row, the photo's silhouette with the silhouette of the
posed body drawn from the same camera; ``detect_in_gaussians`` does the same with an imported subject's loose
Gaussians. Both return a ``GarmentDetection``: whether there is a garment, its waist and hem heights and how far
it stands off the body at each height (its flare). Heights are in the body's rest frame (metres, Y up); the
user's override gives them above the soles. ``backend.reconstruct.garment_surface`` turns a detection into a
cloth mesh.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from backend.body.model import BodyModel
from backend.body.parts import PART_INDEX
from backend.core.errors import InputError
from backend.gaussians import Gaussians
from backend.reconstruct.inputs import ReferenceView

GARMENT_TYPES = ("auto", "none", "skirt", "dress")
GAP_FILLED = 0.6
"""A row is garment where at least this fraction of the gap between the legs is silhouette."""
STAND_OFF = 0.03
"""... or, where the legs show no gap, where the silhouette stands off the body's outline by this much (m)."""
MIN_LENGTH = 0.05
"""A garment must reach at least this far below the crotch (m)."""
TOP_BAND = 0.06
"""The top's colour is sampled this far (m) above the natural waist."""
COLOUR_SEPARATION = 0.8
"""The garment's and the top's colours tell apart when each palette classifies at least this share of its own
held-out pixels as its own; otherwise the waistband stays at the natural waist."""


@dataclass(frozen=True)
class GarmentOverride:
    """The user's say over the garment (job spec ``garment``).

    Attributes:
        type: ``auto`` (detect), ``none`` (no garment: every Gaussian on the body), ``skirt`` or ``dress``.
        waist_height: Top of the garment's loose part, metres above the soles in the rest pose (None: detect).
        hem_height: Hem, metres above the soles in the rest pose (None: detect).
    """

    type: str = "auto"
    waist_height: float | None = None
    hem_height: float | None = None

    def __post_init__(self) -> None:
        if self.type not in GARMENT_TYPES:
            raise InputError(f"garment.type: expected one of {GARMENT_TYPES}, got {self.type!r}")
        for name in ("waist_height", "hem_height"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                      or not math.isfinite(value) or not 0.0 < value < 3.0):
                raise InputError(f"garment.{name}: expected metres above the soles in (0, 3), got {value!r}")
        if self.waist_height is not None and self.hem_height is not None and self.hem_height >= self.waist_height:
            raise InputError(f"garment.hem_height: expected below waist_height ({self.waist_height} m), got "
                             f"{self.hem_height} m")


def garment_override(data: Mapping | None) -> GarmentOverride:
    """Validate the job's ``garment`` object (keys ``type``, ``waist_height``, ``hem_height``)."""
    if data is None:
        return GarmentOverride()
    if not isinstance(data, Mapping):
        raise InputError(f"garment: expected an object, got {type(data).__name__}")
    unknown = sorted(set(data) - {"type", "waist_height", "hem_height"})
    if unknown:
        raise InputError(f"garment: unknown field(s) {unknown}")
    if "type" in data and not isinstance(data["type"], str):
        raise InputError(f"garment.type: expected one of {GARMENT_TYPES}, got {data['type']!r}")
    return GarmentOverride(**{k: v for k, v in data.items() if v is not None})


@dataclass(frozen=True)
class GarmentDetection:
    """What was found.

    Attributes:
        kind: ``none``, ``skirt`` or ``dress``.
        waist_y: Top of the loose part, rest-frame height (m).
        hem_y: Hem, rest-frame height (m).
        heights: Rest-frame heights of the flare profile, top to bottom. [K]
        flare: How far the garment stands off the body at each height (m, ≥ 0). [K]
        half_width: Half the silhouette's width at each height, seen from the photo (m; empty without a photo). [K]
        source: ``photo``, ``gaussians`` or ``override``.
        evidence: JSON-able numbers behind the decision (for result.json).
    """

    kind: str
    waist_y: float = 0.0
    hem_y: float = 0.0
    heights: Tensor = field(default_factory=lambda: torch.zeros(0))
    flare: Tensor = field(default_factory=lambda: torch.zeros(0))
    half_width: Tensor = field(default_factory=lambda: torch.zeros(0))
    source: str = "photo"
    evidence: dict = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return self.kind != "none"


@dataclass(frozen=True)
class BodyLevels:
    """Rest-frame heights (m) of the body landmarks the garment is placed by."""

    soles: float
    crotch: float
    pelvis: float
    waist: float
    chest: float
    knee: float
    ankle: float


def body_levels(body: BodyModel, betas: Tensor | None) -> BodyLevels:
    """Landmark heights of the rest pose: the natural waist is the narrowest torso section between the pelvis
    and the chest; the crotch is the lowest point of the torso's skin (where the legs part)."""
    vertices = body.rest_vertices(betas).detach().cpu().float()
    joints = body.rest_joints(betas).detach().cpu().float()
    names = body.joint_names
    y = lambda name: float(joints[names.index(name), 1])  # noqa: E731
    pelvis, chest = y("Pelvis"), y("Spine3")
    knee = 0.5 * (y("L_Knee") + y("R_Knee"))
    ankle = 0.5 * (y("L_Ankle") + y("R_Ankle"))
    hip = 0.5 * (y("L_Hip") + y("R_Hip"))
    torso, legs = trunk_vertices(body)
    width = []
    levels = torch.linspace(pelvis + 0.04, chest, 24)
    for level in levels.tolist():
        band = torso & ((vertices[:, 1] - level).abs() < 0.015)
        width.append(float(vertices[band, 0].max() - vertices[band, 0].min()) if bool(band.any()) else math.inf)
    waist = float(levels[int(torch.tensor(width).argmin())])
    inner = legs & (vertices[:, 0].abs() < 0.02) & (vertices[:, 1] < hip)
    crotch = float(vertices[inner, 1].max()) if bool(inner.any()) else hip - 0.08
    return BodyLevels(float(vertices[:, 1].min()), crotch, pelvis, waist, chest, knee, ankle)


def trunk_vertices(body: BodyModel) -> tuple[Tensor, Tensor]:
    """(torso, legs): body vertices whose dominant joint is on the torso, on either leg. [V] bool each"""
    from backend.body.parts import part_ids_from_weights

    parts = part_ids_from_weights(body.skin_weights.detach().cpu().float(), body.joint_names)
    return parts == PART_INDEX["torso"], (parts == PART_INDEX["left_leg"]) | (parts == PART_INDEX["right_leg"])


# ---- the photo -----------------------------------------------------------------------------------------------
def body_silhouette(view: ReferenceView, faces: Tensor, *, points: int = 60_000,
                    generator: torch.Generator | None = None) -> Tensor:
    """The posed body's (or some of its ``faces``') silhouette in the reference camera (flat splats on the mesh),
    alpha in [0, 1]. [H, W]"""
    from backend.core.rotations import matrix_to_quaternion
    from backend.reconstruct.surface import sample_surface, tangent_frames, triangle_areas_normals
    from backend.render.render import RenderSettings, render

    generator = generator or torch.Generator().manual_seed(0)
    verts = view.pose.vertices.detach().cpu().float()
    sample = sample_surface(verts, faces.cpu(), points, generator)
    spacing = float(triangle_areas_normals(verts, faces.cpu())[0].sum() / points) ** 0.5
    splats = Gaussians.from_colors(sample.points, torch.ones_like(sample.points),
                                   quats=matrix_to_quaternion(tangent_frames(sample.normals)),
                                   scales=torch.tensor([0.7 * spacing, 0.7 * spacing, 0.1 * spacing]).expand(
                                       points, 3), opacities=0.95)
    with torch.no_grad():
        return render(splats, view.camera, settings=RenderSettings()).alpha[0, ..., 0]


def _row_stats(subject: Tensor, body: Tensor) -> tuple[float, float, float, float, float]:
    """One image row: (body left, body right, silhouette left, silhouette right, fraction of the gap between the
    body's runs that the silhouette covers; nan when the body shows no gap)."""
    cols = body.nonzero().squeeze(1)
    bl, br = int(cols.min()), int(cols.max())
    span = subject.clone()
    # the silhouette run(s) overlapping the body's extent, grown outwards while contiguous
    left, right = bl, br
    while left > 0 and bool(span[left - 1]):
        left -= 1
    while right < span.shape[0] - 1 and bool(span[right + 1]):
        right += 1
    inside = body[bl:br + 1]
    gap = ~inside
    filled = float(subject[bl:br + 1][gap].float().mean()) if int(gap.sum()) >= 3 else math.nan
    return float(bl), float(br), float(left), float(right), filled


def _run_end(rows: Iterable[tuple[int, bool | None]], max_misses: int) -> int | None:
    """The last True row of a run read in the given order (None if none): rows that cannot tell (None) neither
    extend nor break it; more than ``max_misses`` False rows in a row end it. ``rows`` is read lazily."""
    end, misses = None, 0
    for v, flag in rows:
        if flag is True:
            end, misses = v, 0
        elif flag is False:
            misses += 1
            if misses > max_misses:
                break
    return end


def detect_in_photo(view: ReferenceView, body: BodyModel, betas: Tensor | None,
                    levels: BodyLevels | None = None) -> GarmentDetection:
    """Is there a skirt in the photo, and where are its waist and hem?

    Rows are read from the posed body's hip joints downwards. The body must stand roughly upright in the photo
    (knees below the pelvis on the image); otherwise the answer is ``none`` with the reason in ``evidence``.
    """
    levels = levels or body_levels(body, betas)
    rest_joints = body.rest_joints(betas).detach().cpu().float()
    transforms = view.pose.joint_transforms.detach().cpu().float()
    posed_joints = (transforms[:, :3, :3] @ rest_joints[..., None])[..., 0] + transforms[:, :3, 3]
    names = body.joint_names
    pelvis = posed_joints[names.index("Pelvis")]
    uv, _ = view.camera.project(posed_joints)
    uv = uv[0]
    v_of = lambda name: float(uv[names.index(name), 1])  # noqa: E731
    v_pelvis = v_of("Pelvis")
    v_knee = 0.5 * (v_of("L_Knee") + v_of("R_Knee"))
    v_ankle = 0.5 * (v_of("L_Ankle") + v_of("R_Ankle"))
    ppm = float(view.camera.pixels_per_metre(pelvis)[0])
    if v_knee - v_pelvis < 0.2 * ppm:
        return GarmentDetection("none", source="photo", evidence={"reason": "the body is not upright in the photo"})
    height_of = lambda v: levels.pelvis + (v_pelvis - v) / ppm  # noqa: E731  rest height of an image row
    row_of = lambda h: v_pelvis - (h - levels.pelvis) * ppm  # noqa: E731
    subject = view.mask.detach().cpu() > 0.5
    trunk = torch.logical_or(*trunk_vertices(body))
    trunk_faces = body.faces[trunk.to(body.faces.device)[body.faces].all(dim=1)]  # no arms: hands hang by the hips
    body_mask = body_silhouette(view, trunk_faces) > 0.5
    h_img = subject.shape[0]
    first = max(0, int(round(row_of(levels.waist))))
    last = min(h_img - 1, int(round(max(v_ankle, row_of(levels.soles + 0.05)))))
    rows, garment_rows, profile = [], [], []
    for v in range(first, last + 1):
        if not bool(body_mask[v].any()):
            continue
        bl, br, sl, sr, filled = _row_stats(subject[v], body_mask[v])
        stand_off = 0.5 * ((bl - sl) + (sr - br)) / ppm
        # True: garment; False: the legs' gap is open; None: no gap and no stand-off, this row cannot tell
        is_garment = (filled >= GAP_FILLED) if not math.isnan(filled) else (True if stand_off >= STAND_OFF else None)
        rows.append(v)
        garment_rows.append(is_garment)
        profile.append((height_of(v), max(0.0, stand_off), 0.5 * (sr - sl + 1) / ppm))
    crotch_row = row_of(levels.crotch)
    below = [(v, g) for v, g in zip(rows, garment_rows) if v >= crotch_row]
    # the garment runs down from the crotch; rows that cannot tell (no gap) do not break it
    hem_row = _run_end(below, max(2, int(0.02 * ppm)))
    evidence = {"rows": len(rows), "pixels_per_metre": ppm,
                "gap_rows_filled": int(sum(1 for v, g in below if g is True)), "rows_below_crotch": len(below)}
    if hem_row is None or (hem_row - crotch_row) / ppm < MIN_LENGTH:
        evidence["reason"] = "the silhouette follows the legs below the crotch"
        return GarmentDetection("none", source="photo", evidence=evidence)
    hem_y = height_of(hem_row)
    garment_rows_below = [v for v, g in below if g is True and v <= hem_row]
    top_row, colour_evidence = waistband_row(view.rgb.detach().cpu().float(), subject, body_mask,
                                             garment_rows_below, first, int(math.floor(crotch_row)), ppm)
    evidence.update(colour_evidence)
    waist_y = levels.waist if top_row is None else min(levels.waist, height_of(top_row))
    keep = [row for row in profile if hem_y - 1e-6 <= row[0] <= waist_y + 1e-6]
    heights = torch.tensor([row[0] for row in keep], dtype=torch.float32)
    flare = torch.tensor([row[1] for row in keep], dtype=torch.float32)
    half_width = torch.tensor([row[2] for row in keep], dtype=torch.float32)
    evidence["hem_below_crotch_m"] = (hem_row - crotch_row) / ppm
    evidence["pelvis_row"] = v_pelvis
    return GarmentDetection("skirt", waist_y, hem_y, heights, flare, half_width, "photo", evidence)


def waistband_row(rgb: Tensor, subject: Tensor, body_mask: Tensor, garment_rows: list[int], first: int,
                  crotch_row: int, ppm: float, *, palette: int = 256) -> tuple[int | None, dict]:
    """The image row where the garment's colour starts, read upwards from the crotch.

    Skirts sit anywhere from the natural waist down to the hips; the silhouette cannot tell where (the waistband
    hugs the body), the colour usually can. The garment's colours are sampled from its rows below the crotch, the
    top's from a band above the natural waist (inside the body's outline, so hanging hands count little). Each
    row between the natural waist (``first``) and the crotch is garment when most of its pixels are nearer a
    garment colour than a top colour; the waistband is the highest row of the run of garment rows that reaches
    down to the crotch.

    Args:
        rgb: The photo's straight colour. [H, W, 3]
        subject: The person's silhouette. [H, W] bool
        body_mask: The posed trunk's silhouette in the same camera. [H, W] bool
        garment_rows: Rows known to be garment (below the crotch).
        first: The natural waist's row; crotch_row: the crotch's row.
        ppm: Pixels per metre at the pelvis.
        palette: Pixels sampled per palette.

    Returns:
        (row or None when the colours do not tell the garment from the top, evidence for result.json).
    """
    def pixels(rows) -> Tensor:
        out = []
        for v in rows:
            if 0 <= v < rgb.shape[0] and bool(body_mask[v].any()):
                cols = body_mask[v].nonzero().squeeze(1)
                inside = subject[v, int(cols.min()):int(cols.max()) + 1]
                out.append(rgb[v, int(cols.min()):int(cols.max()) + 1][inside])
        return torch.cat(out) if out else rgb.new_zeros(0, 3)

    band = max(2, int(round(TOP_BAND * ppm)))
    garment_px, top_px = pixels(garment_rows), pixels(range(first - band, first))
    if garment_px.shape[0] < 2 * palette or top_px.shape[0] < 2 * palette:
        return None, {"waist_from": "natural waist (too few pixels to compare colours)"}
    generator = torch.Generator().manual_seed(0)
    g_perm = torch.randperm(garment_px.shape[0], generator=generator)
    t_perm = torch.randperm(top_px.shape[0], generator=generator)
    g_pal, g_test = garment_px[g_perm[:palette]], garment_px[g_perm[palette:2 * palette]]
    t_pal, t_test = top_px[t_perm[:palette]], top_px[t_perm[palette:2 * palette]]

    def is_garment(px: Tensor) -> Tensor:
        return torch.cdist(px, g_pal).min(dim=1).values < torch.cdist(px, t_pal).min(dim=1).values

    own = min(float(is_garment(g_test).float().mean()), float((~is_garment(t_test)).float().mean()))
    evidence = {"waist_colour_separation": round(own, 3)}
    if own < COLOUR_SEPARATION:
        return None, {**evidence, "waist_from": "natural waist (the garment's and the top's colours are alike)"}
    def row_is_garment(v: int) -> bool | None:
        px = pixels([v])
        return None if px.shape[0] == 0 else float(is_garment(px).float().mean()) > 0.5

    top = _run_end(((v, row_is_garment(v)) for v in range(crotch_row, first - 1, -1)), max(2, int(0.01 * ppm)))
    if top is None:
        return None, {**evidence, "waist_from": "natural waist (no garment colour above the crotch)"}
    return top, {**evidence, "waist_from": "colour"}


# ---- bound Gaussians -------------------------------------------------------------------------------------------
def detect_in_gaussians(canonical: Gaussians, body: BodyModel, betas: Tensor | None,
                        levels: BodyLevels | None = None) -> GarmentDetection:
    """A skirt among rest-pose Gaussians: loose ones below the crotch that span the gap between the legs."""
    levels = levels or body_levels(body, betas)
    if canonical.loose is None:
        return GarmentDetection("none", source="gaussians", evidence={"reason": "the Gaussians carry no loose labels"})
    means = canonical.means.detach().cpu().float()
    joints = body.rest_joints(betas).detach().cpu().float()
    cx = float(joints[0, 0])
    gap = 0.5 * float((joints[body.joint_names.index("L_Hip"), 0] - joints[body.joint_names.index("R_Hip"), 0]).abs())
    loose = canonical.loose.cpu() & (means[:, 1] < levels.waist) & (means[:, 1] > levels.soles + 0.05)
    between = loose & ((means[:, 0] - cx).abs() < 0.5 * gap) & (means[:, 1] < levels.crotch)
    evidence = {"loose": int(loose.sum()), "between_legs": int(between.sum())}
    if int(between.sum()) < 20:
        evidence["reason"] = "no loose Gaussians between the legs below the crotch"
        return GarmentDetection("none", source="gaussians", evidence=evidence)
    hem_y = float(torch.quantile(means[loose, 1], 0.02))
    if levels.crotch - hem_y < MIN_LENGTH:
        evidence["reason"] = "the loose Gaussians end at the crotch"
        return GarmentDetection("none", source="gaussians", evidence=evidence)
    heights = torch.linspace(levels.waist, hem_y, 16)
    body_r = _body_radius_at(body, betas, heights, cx, float(joints[0, 2]))
    flare = []
    for h, r in zip(heights.tolist(), body_r.tolist()):
        band = loose & ((means[:, 1] - h).abs() < 0.03)
        radius = float(torch.quantile((means[band][:, [0, 2]] - torch.tensor([cx, float(joints[0, 2])])).norm(dim=-1),
                                      0.9)) if int(band.sum()) >= 8 else r
        flare.append(max(0.0, radius - r))
    return GarmentDetection("skirt", levels.waist, hem_y, heights, torch.tensor(flare), source="gaussians",
                            evidence=evidence)


def _body_radius_at(body: BodyModel, betas: Tensor | None, heights: Tensor, cx: float, cz: float) -> Tensor:
    """Largest horizontal distance of torso/leg skin from the vertical axis through (cx, cz), per height. [K]"""
    vertices = body.rest_vertices(betas).detach().cpu().float()
    keep = torch.logical_or(*trunk_vertices(body))
    out = []
    for h in heights.tolist():
        band = keep & ((vertices[:, 1] - h).abs() < 0.015)
        d = (vertices[band][:, [0, 2]] - torch.tensor([cx, cz])).norm(dim=-1)
        out.append(float(d.max()) if d.numel() else 0.0)
    return torch.tensor(out)


def apply_override(detection: GarmentDetection, override: GarmentOverride, levels: BodyLevels) -> GarmentDetection:
    """The detection with the user's type and heights (heights above the soles -> rest frame)."""
    if override.type == "none":
        return GarmentDetection("none", source="override", evidence={"reason": "garment.type is none"})
    kind = detection.kind if override.type == "auto" else override.type
    if kind == "none":
        return detection
    waist = levels.soles + override.waist_height if override.waist_height is not None else (
        detection.waist_y if detection.found else levels.waist)
    hem = levels.soles + override.hem_height if override.hem_height is not None else (
        detection.hem_y if detection.found else levels.knee + 0.07)
    if hem >= waist:
        raise InputError(f"garment.hem_height: the hem ({hem - levels.soles:.2f} m above the soles) must be below the "
                         f"waist ({waist - levels.soles:.2f} m)")
    source = detection.source if override == GarmentOverride(type=override.type) and detection.found else "override"
    return GarmentDetection(kind, waist, hem, detection.heights, detection.flare, detection.half_width, source,
                            dict(detection.evidence))
