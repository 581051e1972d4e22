"""The garment surface: a cloth mesh from waist (or chest) to hem, and the Gaussians placed on it.

The mesh is a stack of elliptical rings around the body's vertical axis in the rest pose. Each ring contains
the body's cross-section at its height (legs and pelvis, plus a clearance) and stands off it by the detected
flare; rings never narrow going down. Where the photo cannot tell the depth, the garment stands off the body
by the same amount in depth as in width. The waist ring is pinned to the body (a dress's bodice rows too).

Skinning weights blend smoothly from the body's own skin weights at the waist to half pelvis / half hips at
the hem, the hip share following the side (left hip on the left, both at the front and back), so the skinned
surface never splits between the legs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from backend.body.lbs import skin_points
from backend.body.model import BodyModel
from backend.body.parts import PART_INDEX
from backend.core.meshes import nearest_on_mesh
from backend.gaussians import Gaussians
from backend.motion.cloth import ClothBinding
from backend.reconstruct.garment import BodyLevels, GarmentDetection, trunk_vertices

CLEARANCE = 0.015
"""Gap between the body's cross-section and the garment at rest (m)."""
HIP_SHARE = 0.5
"""Share of the hips in the hem's skinning weights (the rest is the pelvis)."""
DEFAULT_FLARE = 0.15
"""Stand-off per metre below the waist when nothing was measured (an A-line, ≈ 8.5°)."""


@dataclass(frozen=True)
class GarmentSurface:
    """A garment's cloth mesh in the body's rest pose.

    Attributes:
        kind: ``skirt`` or ``dress``.
        rest_vertices: Vertices, rest frame. [M, 3]
        faces: Triangles, wound so normals point away from the body. [T, 3] int64
        skin_weights: Smooth skinning weights (rows sum to 1). [M, J]
        pinned: Vertices attached to the body (waist ring; a dress's bodice). [M] bool
        rings: Vertex rows, top to bottom.
        segments: Vertices around.
        waist_y: Height of the waist ring (rest frame, m).
        hem_y: Height of the hem (rest frame, m).
        soles_y: Height of the soles (rest frame, m), for heights above the soles.
        inner: Each vertex's distance from the vertical axis at which it would touch the body's cross-section
            plus the clearance (the narrowest the garment may get there). [M]
        hanging: The garment as it hangs in the photo (world, the photo's pose), when it was draped. [M, 3]
        hanging_transforms: The photo's joint transforms (rest -> photo pose). [J, 4, 4]
    """

    kind: str
    rest_vertices: Tensor
    faces: Tensor
    skin_weights: Tensor
    pinned: Tensor
    rings: int
    segments: int
    waist_y: float
    hem_y: float
    soles_y: float
    inner: Tensor | None = None
    hanging: Tensor | None = None
    hanging_transforms: Tensor | None = None

    def hanging_rest(self) -> Tensor:
        """Rest-pose vertices that skin exactly to ``hanging`` (the rest mesh when not draped). [M, 3]"""
        if self.hanging is None:
            return self.rest_vertices
        from backend.motion.skinning import unskin_points

        return unskin_points(self.hanging.float(), self.skin_weights, self.hanging_transforms.double()).float()

    def posed_hanging(self, joint_transforms: Tensor) -> Tensor:
        """The hanging shape skinned rigidly (the garment of ``--dynamics none``). ``[F, J, 4, 4] -> [F, M, 3]``"""
        return skin_points(self.hanging_rest().to(joint_transforms.dtype), self.skin_weights.to(joint_transforms.dtype),
                           joint_transforms)

    @property
    def hem_ring(self) -> Tensor:
        """Vertex indices of the hem. [segments]"""
        return torch.arange((self.rings - 1) * self.segments, self.rings * self.segments)

    def posed(self, joint_transforms: Tensor) -> Tensor:
        """The surface skinned rigidly. ``[F, J, 4, 4] -> [F, M, 3]`` (or ``[J, 4, 4] -> [M, 3]``)."""
        single = joint_transforms.ndim == 3
        jt = joint_transforms[None] if single else joint_transforms
        out = skin_points(self.rest_vertices.to(jt.dtype), self.skin_weights.to(jt.dtype), jt)
        return out[0] if single else out

    def record(self) -> dict:
        """JSON-able size for result.json."""
        hem = self.rest_vertices[self.hem_ring]
        centre = hem.mean(dim=0)
        return {"kind": self.kind, "vertices": int(self.rest_vertices.shape[0]), "triangles": int(self.faces.shape[0]),
                "rings": self.rings, "segments": self.segments, "pinned": int(self.pinned.sum()),
                "waist_height": round(self.waist_y - self.soles_y, 4), "hem_height": round(self.hem_y - self.soles_y, 4),
                "hem_radius": round(float((hem[:, [0, 2]] - centre[[0, 2]]).norm(dim=-1).mean()), 4)}


def _section_axes(points: Tensor, cx: float, cz: float) -> tuple[float, float]:
    """Semi-axes (x, z) of the smallest ellipse of the points' aspect around (cx, cz) that contains them (it spans
    the gap between the legs)."""
    if points.shape[0] == 0:
        return 0.05, 0.05
    ax = float((points[:, 0] - cx).abs().max()) + 1e-3
    az = float((points[:, 2] - cz).abs().max()) + 1e-3
    k = float((((points[:, 0] - cx) / ax) ** 2 + ((points[:, 2] - cz) / az) ** 2).sqrt().max())
    return ax * k, az * k


def build_garment_surface(body: BodyModel, betas: Tensor | None, detection: GarmentDetection, levels: BodyLevels,
                          *, rings: int = 16, segments: int = 48) -> GarmentSurface:
    """The cloth mesh for a detected garment.

    Args:
        body: The body model.
        betas: Shape. [S] or None
        detection: A found garment (``kind`` skirt or dress).
        levels: The body's landmark heights.
        rings: Rows from the waist to the hem (a dress adds bodice rows above at the same spacing).
        segments: Vertices around.
    """
    if not detection.found:
        raise ValueError("build_garment_surface: no garment was found")
    vertices = body.rest_vertices(betas).detach().cpu().float()
    joints = body.rest_joints(betas).detach().cpu().float()
    cx, cz = float(joints[0, 0]), float(joints[0, 2])
    keep = torch.logical_or(*trunk_vertices(body))
    waist, hem = detection.waist_y, detection.hem_y
    step = (waist - hem) / (rings - 1)
    bodice = max(0, int(math.floor((levels.chest - waist) / step))) if detection.kind == "dress" else 0
    heights = torch.tensor([waist + step * (bodice - i) for i in range(rings + bodice)])
    axes = []
    for h in heights.tolist():
        band = keep & ((vertices[:, 1] - h).abs() < max(0.015, 0.5 * step))
        ax, az = _section_axes(vertices[band], cx, cz)
        axes.append((ax + CLEARANCE, az + CLEARANCE))
    axes = torch.tensor(axes)
    below = torch.arange(rings + bodice) >= bodice
    axes[below] = torch.cummax(axes[below], dim=0).values  # never narrower going down
    flare = _flare_at(detection, heights) * below
    phi = torch.arange(segments) * (2 * math.pi / segments)
    sin, cos = torch.sin(phi)[None], torch.cos(phi)[None]
    x = cx + (axes[:, 0:1] + flare[:, None]) * sin
    z = cz + (axes[:, 1:2] + flare[:, None]) * cos
    y = heights[:, None].expand(-1, segments)
    rest = torch.stack([x, y, z], dim=-1).reshape(-1, 3)
    inner = torch.sqrt((axes[:, 0:1] * sin) ** 2 + (axes[:, 1:2] * cos) ** 2).reshape(-1)
    faces = _ring_faces(rings + bodice, segments)
    weights = _smooth_weights(body, vertices, heights, phi, bodice, waist, hem)
    pinned = torch.zeros(rest.shape[0], dtype=torch.bool)
    pinned[: (bodice + 1) * segments] = True
    return GarmentSurface(detection.kind, rest, faces, weights, pinned, rings + bodice, segments, waist, hem,
                          levels.soles, inner)


def _flare_at(detection: GarmentDetection, heights: Tensor) -> Tensor:
    """Stand-off at each height from the detected profile (linear interpolation; monotone going down)."""
    if detection.heights.numel() < 2:
        return (DEFAULT_FLARE * (detection.waist_y - heights)).clamp_min(0.0)
    order = torch.argsort(detection.heights)
    hs, fs = detection.heights[order], detection.flare[order]
    idx = torch.searchsorted(hs, heights.clamp(float(hs[0]), float(hs[-1]))).clamp(1, hs.numel() - 1)
    t = ((heights - hs[idx - 1]) / (hs[idx] - hs[idx - 1]).clamp_min(1e-6)).clamp(0, 1)
    out = fs[idx - 1] + t * (fs[idx] - fs[idx - 1])
    return torch.cummax(out, dim=0).values  # heights run top to bottom: the stand-off never shrinks going down


def _ring_faces(rows: int, segments: int) -> Tensor:
    """Quads between consecutive rings split in two triangles, wound outwards (normals away from the axis)."""
    faces = []
    for i in range(rows - 1):
        for j in range(segments):
            a, b = i * segments + j, i * segments + (j + 1) % segments
            c, d = a + segments, b + segments
            faces += [(a, c, b), (b, c, d)]
    return torch.tensor(faces, dtype=torch.int64)


def _smooth_weights(body: BodyModel, vertices: Tensor, heights: Tensor, phi: Tensor, bodice: int, waist: float,
                    hem: float) -> Tensor:
    """The waistband takes the body's own skin weights at the waist (it sits on the skin and turns with the
    spine's twist there), blending to (1 − HIP_SHARE) pelvis + HIP_SHARE hips at the hem; the hip share goes to
    the left hip on the body's left (+X) side. A dress's bodice rows take the torso's own weights too."""
    names = body.joint_names
    j = body.num_joints
    t = ((waist - heights) / max(waist - hem, 1e-6)).clamp(0, 1)  # [R]
    left = 0.5 * (1 + torch.sin(phi))  # [S]  (+X is the body's left)
    lower = torch.zeros(phi.shape[0], j)
    lower[:, names.index("Pelvis")] = 1 - HIP_SHARE
    lower[:, names.index("L_Hip")] = HIP_SHARE * left
    lower[:, names.index("R_Hip")] = HIP_SHARE * (1 - left)
    upper = torch.zeros(j)
    upper[names.index("Pelvis")] = 1.0
    torso = trunk_vertices(body)[0]
    skin = body.skin_weights.detach().cpu().float()

    def skin_at(height: float, half_width: float) -> Tensor | None:
        band = torso & ((vertices[:, 1] - height).abs() < half_width)
        return skin[band].mean(dim=0) if bool(band.any()) else None

    band = skin_at(waist, 0.02)
    upper = band if band is not None else upper
    w = (1 - t)[:, None, None] * upper[None, None] + t[:, None, None] * lower[None]
    for row in range(bodice):
        above = skin_at(float(heights[row]), 0.03)
        w[row] = above[None] if above is not None else w[row]
    return w.reshape(-1, j)


# ---- Gaussians on the garment ----------------------------------------------------------------------------------
def covered_by_garment(points: Tensor, surface: GarmentSurface) -> Tensor:
    """Rest-frame points inside the garment (between its top and hem rings, within its ring at that height). [N]"""
    verts = surface.rest_vertices.view(surface.rings, surface.segments, 3)
    top, bottom = float(verts[0, 0, 1]), float(verts[-1, 0, 1])
    centre = verts[0].mean(dim=0)
    inside_band = (points[:, 1] <= top) & (points[:, 1] >= bottom)
    ring_heights = verts[:, 0, 1]
    row = torch.searchsorted(-ring_heights, -points[:, 1].clamp(bottom, top)).clamp(0, surface.rings - 1)
    rx = (verts[:, :, 0] - centre[0]).abs().amax(dim=1)[row]
    rz = (verts[:, :, 2] - centre[2]).abs().amax(dim=1)[row]
    inside_ring = ((points[:, 0] - centre[0]) / rx) ** 2 + ((points[:, 2] - centre[2]) / rz) ** 2 <= 1.0
    return inside_band & inside_ring


def bind_garment(canonical: Gaussians, surface: GarmentSurface, index: Tensor) -> ClothBinding:
    """Bind the Gaussians ``index`` [G] to their closest garment triangle (exact closest point): on the rest mesh,
    or, for a draped surface, on its hanging shape in the photo's pose, where the photo placed them."""
    if surface.hanging is None:
        rest = surface.rest_vertices.to(canonical.means.dtype).cpu()
        tri, bary, _ = nearest_on_mesh(canonical.means[index].detach().cpu(), rest, surface.faces, candidates=24)
        return ClothBinding(index.long().cpu(), tri, bary, surface.faces, rest)
    from backend.motion.skinning import blend_transforms

    weights = canonical.skin_weights[index].detach().cpu().float()
    reference = blend_transforms(weights, surface.hanging_transforms[None])[0]  # [G, 3, 4]
    means = canonical.means[index].detach().cpu().float()
    posed = (reference[..., :3] @ means[..., None])[..., 0] + reference[..., 3]
    tri, bary, _ = nearest_on_mesh(posed, surface.hanging, surface.faces, candidates=24)
    return ClothBinding(index.long().cpu(), tri, bary, surface.faces, surface.hanging, reference)


def garment_gaussian_index(canonical: Gaussians, surface: GarmentSurface) -> Tensor:
    """Rows that ride the garment: those labelled ``garment`` (a photo reconstruction places them on the surface);
    without labels, loose ones within 6 cm of the surface (an imported or synthetic subject). [G] int64"""
    chosen = torch.zeros(canonical.num_gaussians, dtype=torch.bool)
    if canonical.part_ids is not None and bool((canonical.part_ids == PART_INDEX["garment"]).any()):
        return (canonical.part_ids.cpu() == PART_INDEX["garment"]).nonzero().squeeze(1)
    if canonical.loose is not None:
        means = canonical.means.detach().cpu().float()
        _, _, dist = nearest_on_mesh(means, surface.rest_vertices, surface.faces)
        top = float(surface.rest_vertices[:, 1].max())
        chosen |= canonical.loose.cpu() & (dist < 0.06) & (means[:, 1] <= top + 0.02)
    return chosen.nonzero().squeeze(1)


def garment_anchors(anchors, surface: GarmentSurface, joint_transforms: Tensor, generator: torch.Generator,
                    total: int | None = None) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor, Tensor]]:
    """Which body anchors stay, and anchors on the garment: as many as bring the count to ``total``, or (None)
    at the body anchors' density.

    Torso anchors the garment covers are dropped (the photo cannot see them and they would poke through the
    cloth); leg anchors under it stay, so a flaring skirt shows legs. Garment anchors carry the surface's smooth
    weights and the ``garment`` part.

    Args:
        anchors: Body anchors (``photo_fit.sample_anchors``).
        surface: The garment surface (rest frame).
        joint_transforms: Rest->posed transforms of the photo's pose. [J, 4, 4]
        generator: Source of the draws.

    Returns:
        (keep [N] bool over the body anchors, (rest points, posed points, posed frames, skin weights, part ids)
        of the garment anchors).
    """
    from backend.reconstruct.surface import sample_surface, tangent_frames, triangle_areas_normals

    covered = covered_by_garment(anchors.rest_points, surface) & (anchors.part_ids == PART_INDEX["torso"])
    keep = ~covered
    rest = surface.hanging_rest()
    area = float(triangle_areas_normals(rest, surface.faces)[0].sum())
    count = max(16, int(round(area / anchors.spacing ** 2)) if total is None else total - int(keep.sum()))
    sample = sample_surface(rest, surface.faces, count, generator)
    corners = surface.faces[sample.triangles]
    posed_vertices = surface.hanging if surface.hanging is not None else surface.posed(joint_transforms.float())
    posed_points = (sample.barycentric[..., None] * posed_vertices[corners]).sum(dim=1)
    _, posed_normals = triangle_areas_normals(posed_vertices, surface.faces)
    weights = (sample.barycentric[..., None] * surface.skin_weights.float()[corners]).sum(dim=1)
    parts = torch.full((count,), PART_INDEX["garment"], dtype=anchors.part_ids.dtype)
    return keep, (sample.points, posed_points, tangent_frames(posed_normals[sample.triangles]),
                  weights / weights.sum(dim=1, keepdim=True), parts)


def with_hanging(surface: GarmentSurface, hanging: Tensor, joint_transforms: Tensor) -> GarmentSurface:
    """The surface with the shape it hangs in, in the photo's pose: ``hanging`` [M, 3] under ``joint_transforms``
    [J, 4, 4]. The simulation keeps the rest mesh; the Gaussians are placed on, and bound to, the hanging shape."""
    from dataclasses import replace

    return replace(surface, hanging=hanging.float(), hanging_transforms=joint_transforms.float())


def match_silhouette(surface: GarmentSurface, hanging: Tensor, camera, detection: GarmentDetection,
                     pelvis_y: float, *, gain: float = 1.0) -> GarmentSurface:
    """Widen or narrow each free ring of the rest surface by how far its hanging shape's width, seen from the
    photo's camera, misses the photo's silhouette at the same image row (additively, the same in depth; never
    inside the body's cross-section plus the clearance; never narrowing going down).

    Args:
        surface: The surface the hanging shape was draped from.
        hanging: The draped garment in the photo's pose (world). [M, 3]
        camera: The photo's camera (``render.cameras.Cameras``, one camera).
        detection: A photo detection (``half_width`` per rest height, ``evidence``: pixels per metre and the
            pelvis's image row).
        pelvis_y: The pelvis's rest-frame height (m).
    """
    if detection.half_width.numel() < 2:
        return surface
    ppm, v_pelvis = float(detection.evidence["pixels_per_metre"]), float(detection.evidence["pelvis_row"])
    uv, _ = camera.project(hanging.to(camera.fx.dtype))
    uv = uv[0].view(surface.rings, surface.segments, 2)
    order = torch.argsort(detection.heights)
    hs, ws = detection.heights[order], detection.half_width[order]
    rest = surface.rest_vertices.view(surface.rings, surface.segments, 3).clone()
    centre = rest[0].mean(dim=0)
    floor = surface.inner.view(surface.rings, surface.segments) if surface.inner is not None else torch.zeros(
        surface.rings, surface.segments)
    prev_delta = 0.0
    for r in range(surface.rings):
        if bool(surface.pinned.view(surface.rings, surface.segments)[r].all()):
            continue
        v = float(uv[r, :, 1].mean())
        height = pelvis_y + (v_pelvis - v) / ppm
        if not float(hs[0]) <= height <= float(hs[-1]):
            delta = prev_delta  # below the measured hem: keep the last correction
        else:
            k = int(torch.searchsorted(hs, torch.tensor([height])).clamp(1, hs.numel() - 1))
            t = (height - float(hs[k - 1])) / max(float(hs[k] - hs[k - 1]), 1e-6)
            target = float(ws[k - 1]) + t * float(ws[k] - ws[k - 1])
            delta = gain * (target - 0.5 * float(uv[r, :, 0].max() - uv[r, :, 0].min()) / ppm)
        prev_delta = delta
        radial = rest[r, :, [0, 2]] - centre[[0, 2]]
        radius = radial.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        new_radius = torch.maximum(radius + delta, floor[r][:, None])
        rest[r, :, [0, 2]] = centre[[0, 2]] + radial / radius * new_radius
    return replace(surface, rest_vertices=rest.view(-1, 3), hanging=None, hanging_transforms=None)
