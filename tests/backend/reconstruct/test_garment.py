"""Garment detection (photo silhouette and loose Gaussians), the garment surface, binding and the cloth layer."""

from __future__ import annotations

import json

import pytest
import torch

from backend.core.errors import InputError
from backend.motion.builtin import builtin_motion
from backend.motion.cloth import ClothLayer, cloth_transforms
from backend.motion.layered import layered_frame
from backend.motion.skinning import skin_gaussians
from backend.reconstruct.garment import (
    GarmentOverride,
    apply_override,
    body_levels,
    detect_in_gaussians,
    detect_in_photo,
    garment_override,
    waistband_row,
)
from backend.reconstruct.garment_surface import (
    bind_garment,
    build_garment_surface,
    covered_by_garment,
    garment_gaussian_index,
)
from backend.reconstruct.inputs import load_reference_view
from backend.reconstruct.surface import sample_body_gaussians, triangle_areas_normals
from backend.reconstruct.synthetic import skirted_subject

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def walk(default_body):
    return builtin_motion("walk", default_body, frames=4)


@pytest.fixture(scope="module")
def skirted(default_body):
    return skirted_subject(default_body, 8000, torch.Generator().manual_seed(0))


def _photo_of(subject, body, motion, folder):
    """A front photo (RGBA + camera JSON) of ``subject`` posed at frame 0, as the demo writes it."""
    import imageio.v3 as iio
    import numpy as np

    from backend.motion import posed_frame
    from backend.reconstruct.synthetic import photo_cameras
    from backend.render import RenderSettings, render, save_cameras

    with torch.no_grad():
        posed = body(torch.as_tensor(motion.betas), torch.as_tensor(motion.root_orient[:1]),
                     torch.as_tensor(motion.pose_body[:1]), torch.as_tensor(motion.trans[:1]))
        means, quats = skin_gaussians(subject, None, posed.joint_transforms)
        camera = photo_cameras(posed.vertices[0].mean(0), [0.0], width=288, height=384)
        out = render(posed_frame(subject, means[0], quats[0]), camera, settings=RenderSettings())
    alpha = out.alpha[0]
    rgb = torch.where(alpha > 1e-4, out.rgb[0] / alpha.clamp_min(1e-4), torch.zeros_like(out.rgb[0]))
    rgba = torch.cat([rgb.clamp(0, 1), alpha], -1)
    iio.imwrite(folder / "photo.png", (rgba.numpy() * 255 + 0.5).astype(np.uint8))
    save_cameras(camera, folder / "camera.json")
    return load_reference_view(folder / "photo.png", json.loads((folder / "camera.json").read_text()), body, motion,
                               0, [])


def test_photo_detection_finds_the_skirt_and_its_hem(default_body, walk, skirted, tmp_path):
    view = _photo_of(skirted, default_body, walk, tmp_path)
    levels = body_levels(default_body, None)
    found = detect_in_photo(view, default_body, None, levels)
    assert found.kind == "skirt"
    true_hem = float(default_body.rest_joints()[0, 1]) + 0.08 - 0.42  # skirted_subject: 8 cm above the pelvis, 42 cm long
    assert abs(found.hem_y - true_hem) < 0.05
    assert float(found.flare.max()) > 0.02  # it stands off the legs
    # the skirt's top is 8 cm above the pelvis, below the natural waist: the colour finds it
    assert found.evidence["waist_from"] == "colour"
    assert abs(found.waist_y - (float(default_body.rest_joints()[0, 1]) + 0.08)) < 0.03 < levels.waist - found.waist_y


def _two_colour_photo(top_rgb, skirt_rgb, band_row=40, size=100):
    """A 100 x 100 'photo': a trunk filling columns 30..69, the top's colour above ``band_row``, the skirt's below."""
    rgb = torch.zeros(size, size, 3)
    rgb[:band_row, 30:70] = torch.tensor(top_rgb)
    rgb[band_row:, 30:70] = torch.tensor(skirt_rgb)
    rgb[band_row:, 30:70:4] = torch.tensor(skirt_rgb) * 0.5  # a pattern: the palettes hold several colours
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[:, 30:70] = True
    return rgb, mask


def test_waistband_is_where_the_garment_colour_starts():
    rgb, mask = _two_colour_photo((0.1, 0.3, 0.8), (0.9, 0.1, 0.1))
    row, evidence = waistband_row(rgb, mask, mask, list(range(70, 95)), 20, 60, 200.0, palette=64)
    assert row == 40 and evidence["waist_from"] == "colour"
    # a top in the skirt's colours cannot be told apart: the caller keeps the natural waist
    rgb, mask = _two_colour_photo((0.9, 0.1, 0.1), (0.9, 0.1, 0.1))
    row, evidence = waistband_row(rgb, mask, mask, list(range(70, 95)), 20, 60, 200.0, palette=64)
    assert row is None and "alike" in evidence["waist_from"]


def test_photo_detection_says_none_without_a_skirt(default_body, walk, tmp_path):
    plain = sample_body_gaussians(default_body, None, 8000, torch.Generator().manual_seed(0))
    view = _photo_of(plain, default_body, walk, tmp_path)
    found = detect_in_photo(view, default_body, None)
    assert found.kind == "none" and "reason" in found.evidence


def test_gaussian_detection_with_and_without_a_skirt(default_body, skirted):
    assert detect_in_gaussians(skirted, default_body, None).kind == "skirt"
    plain = sample_body_gaussians(default_body, None, 4000, torch.Generator().manual_seed(1))
    assert detect_in_gaussians(plain, default_body, None).kind == "none"


def test_override_validation_and_application(default_body):
    with pytest.raises(InputError, match="garment.type"):
        garment_override({"type": "kilt"})
    with pytest.raises(InputError, match="garment.hem_height"):
        garment_override({"waist_height": 0.6, "hem_height": 0.9})
    with pytest.raises(InputError, match="garment.waist_height"):
        GarmentOverride(waist_height=float("nan"))
    levels = body_levels(default_body, None)
    none = detect_in_gaussians(sample_body_gaussians(default_body, None, 500, torch.Generator().manual_seed(0)),
                               default_body, None, levels)
    forced = apply_override(none, GarmentOverride("dress", hem_height=0.5), levels)
    assert forced.kind == "dress" and abs(forced.hem_y - (levels.soles + 0.5)) < 1e-6
    assert apply_override(forced, GarmentOverride("none"), levels).kind == "none"


def test_surface_is_closed_around_the_legs_and_never_narrows(default_body, skirted):
    levels = body_levels(default_body, None)
    found = detect_in_gaussians(skirted, default_body, None, levels)
    surface = build_garment_surface(default_body, None, found, levels)
    rings = surface.rest_vertices.view(surface.rings, surface.segments, 3)
    centre = rings[0].mean(0)
    radius = (rings[..., [0, 2]] - centre[[0, 2]]).norm(dim=-1).mean(1)
    assert bool((radius[1:] >= radius[:-1] - 1e-5).all())
    # normals point away from the vertical axis
    _, normals = triangle_areas_normals(surface.rest_vertices, surface.faces)
    mids = surface.rest_vertices[surface.faces].mean(1)
    outward = ((mids - centre)[:, [0, 2]] * normals[:, [0, 2]]).sum(-1)
    assert bool((outward > 0).all())
    # the legs' skin in the band is inside it; weights are smooth and sum to one
    legs = default_body.rest_vertices().detach()
    band = (legs[:, 1] < surface.waist_y - 0.05) & (legs[:, 1] > surface.hem_y + 0.02) & (legs[:, 0].abs() < 0.25)
    assert float(covered_by_garment(legs[band], surface).float().mean()) > 0.97
    assert torch.allclose(surface.skin_weights.sum(1), torch.ones(surface.rest_vertices.shape[0]))
    assert surface.pinned.sum() == surface.segments
    # the waistband turns with the skin under it (the body's own weights there), the hem with pelvis and hips
    pelvis = default_body.joint_names.index("Pelvis")
    hips = [default_body.joint_names.index(n) for n in ("L_Hip", "R_Hip")]
    waist_weights = surface.skin_weights[: surface.segments]
    assert float(waist_weights[:, hips].sum(1).max()) < 1e-6 and float(waist_weights[:, pelvis].max()) < 1.0
    hem = surface.skin_weights[-surface.segments:]
    assert torch.allclose(hem[:, pelvis], torch.full((surface.segments,), 0.5)) and torch.allclose(
        hem[:, hips].sum(1), torch.full((surface.segments,), 0.5))


def test_binding_round_trip_is_the_rigid_garment(default_body, skirted):
    """Riding the rest mesh gives the canonical Gaussians back; riding a rigidly moved garment moves them exactly
    as the rigid layer does (a whole-body rigid motion: every bone, every triangle moves the same)."""
    levels = body_levels(default_body, None)
    surface = build_garment_surface(default_body, None, detect_in_gaussians(skirted, default_body, None, levels),
                                    levels)
    index = garment_gaussian_index(skirted, surface)
    assert 0 < index.numel() <= int(skirted.loose.sum())
    binding = bind_garment(skirted, surface, index)
    identity = cloth_transforms(binding, binding.rest_vertices)
    assert torch.allclose(identity[..., :3], torch.eye(3).expand_as(identity[..., :3]), atol=1e-5)
    angle = torch.tensor(0.7)
    rot = torch.tensor([[torch.cos(angle), 0, torch.sin(angle)], [0, 1, 0], [-torch.sin(angle), 0, torch.cos(angle)]])
    rigid = torch.eye(4).repeat(default_body.num_joints, 1, 1)
    rigid[:, :3, :3] = rot
    rigid[:, :3, 3] = torch.tensor([0.3, -0.1, 0.2])
    layer = ClothLayer(binding, surface.posed(rigid[None]))
    riding = layered_frame(skirted, None, rigid, 0.0, cloth=layer.frame(0))
    means, quats = skin_gaussians(skirted, None, rigid[None])
    assert torch.allclose(riding.means, means[0], atol=2e-5)
    same_sign = torch.where((riding.quats * quats[0]).sum(-1, keepdim=True) < 0, -riding.quats, riding.quats)
    assert torch.allclose(same_sign, quats[0], atol=2e-5)


def test_cloth_layer_saves_and_loads(default_body, skirted, tmp_path):
    levels = body_levels(default_body, None)
    surface = build_garment_surface(default_body, None, detect_in_gaussians(skirted, default_body, None, levels),
                                    levels)
    binding = bind_garment(skirted, surface, garment_gaussian_index(skirted, surface))
    layer = ClothLayer(binding, surface.posed(torch.eye(4).repeat(2, default_body.num_joints, 1, 1)))
    layer.save(tmp_path / "cloth.npz")
    back = ClothLayer.load(tmp_path / "cloth.npz")
    assert torch.equal(back.vertices, layer.vertices) and torch.equal(back.binding.index, binding.index)
    assert back.source == "cloth"


@pytest.mark.slow
def test_animate_from_a_skirt_photo_simulates_the_skirt(default_body, skirted, tmp_path):
    """The whole job: the skirt found in the photo, its Gaussians on the cloth, the twirl simulated, frame 0
    exactly the fitted shape, and the hem swinging out (a rigid garment keeps its radius)."""
    from backend.gaussians import load_ply
    from backend.stages.animate import animate
    from backend.stages.job import JobSpec

    twirl = builtin_motion("twirl", default_body, frames=12)
    _photo_of(skirted, default_body, twirl, tmp_path)
    common = dict(motion=twirl, image=str(tmp_path / "photo.png"), camera=json.loads((tmp_path / "camera.json")
                  .read_text()), reference_frame=0, gaussians=3000, quality="preview")
    result = animate(JobSpec(dynamics="auto", **common), tmp_path / "cloth")
    assert result["subject"]["garment"]["found"] and result["subject"]["garment"]["gaussians"] > 300
    dyn = result["dynamics"]
    assert dyn["mode"] == "cloth" and dyn["frames"] == 12 and dyn["start"] == "the garment as draped in the photo"
    assert dyn["hem_radius"]["max"] > dyn["hem_radius"]["first"] + 0.01
    layer = ClothLayer.load(tmp_path / "cloth" / "cloth.npz")
    assert torch.allclose(layer.vertices[0], layer.binding.rest_vertices, atol=1e-5)
    rigid = animate(JobSpec(dynamics="none", **common), tmp_path / "rigid")
    assert rigid["dynamics"]["mode"] == "none"
    first = [load_ply(tmp_path / job / "frames" / "frame_000000.ply").means for job in ("cloth", "rigid")]
    last = [load_ply(tmp_path / job / "frames" / "frame_000011.ply").means for job in ("cloth", "rigid")]
    assert torch.allclose(first[0], first[1], atol=1e-4)  # same reconstruction, same frame 0
    assert float((last[0] - last[1]).norm(dim=-1).max()) > 0.02  # the cloth moved the skirt
