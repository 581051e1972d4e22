"""The garment through a motion: simulated with newton against the body's capsules, or skinned rigidly."""

from __future__ import annotations

import pytest
import torch

from backend.dynamics.colliders import body_capsules, depth_inside, segment_distance
from backend.dynamics.garment_motion import DynamicsSettings, hem_radii, simulate_garment, skinned_layer
from backend.motion.builtin import builtin_motion
from backend.reconstruct.garment import body_levels, detect_in_gaussians
from backend.reconstruct.garment_surface import bind_garment, build_garment_surface, garment_gaussian_index
from backend.reconstruct.synthetic import skirted_subject
from backend.stages.job import JobSpec
from backend.stages.garment import warmup_joint_transforms
from backend.stages.posing import pose_body

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def garment(default_body):
    subject = skirted_subject(default_body, 6000, torch.Generator().manual_seed(0))
    levels = body_levels(default_body, None)
    surface = build_garment_surface(default_body, None, detect_in_gaussians(subject, default_body, None, levels),
                                    levels, rings=10, segments=32)
    return subject, surface, bind_garment(subject, surface, garment_gaussian_index(subject, surface))


def _simulate(default_body, garment, name, frames=16, warmup=12):
    subject, surface, binding = garment
    motion = builtin_motion(name, default_body, frames=frames)
    spec = JobSpec(motion=motion)
    jt = pose_body(motion, default_body).joint_transforms.float()
    warm = warmup_joint_transforms(spec, default_body, warmup)
    settings = DynamicsSettings(warmup_frames=warmup)
    layer, record = simulate_garment(surface, binding, default_body, None, jt, warm, motion.fps, settings)
    return motion, jt, layer, record


def test_capsules_sit_inside_the_skin(default_body):
    caps = body_capsules(default_body)
    rest = default_body.rest_joints().detach()
    a, b = rest[caps.joints[:, 0]], rest[caps.joints[:, 1]]
    assert caps.radius.min() > 0.02 and caps.radius.max() < 0.25
    skin = default_body.rest_vertices().detach()
    # every capsule's axis is inside the body: the skin stays clear of its midpoint
    mid = 0.5 * (a + b)
    assert float(segment_distance(skin[:, None], mid[None], mid[None]).min(0).values.min()) > 0.005


def test_twirl_flares_the_hem_without_entering_the_body(default_body, garment):
    _, surface, _ = garment
    motion, jt, layer, record = _simulate(default_body, garment, "twirl", frames=24)
    assert torch.isfinite(layer.vertices).all() and layer.vertices.shape[0] == motion.num_frames
    pelvis = jt[:, 0, :3, 3]
    radii = hem_radii(layer.vertices, surface, pelvis)
    rigid = hem_radii(surface.posed(jt), surface, pelvis)
    # the hem swings out as the body turns (a rigid garment keeps its radius)
    assert float(radii.max() - radii[0]) > 0.01 and float(rigid.max() - rigid.min()) < 0.01
    # pinned waist follows the skinned garment exactly
    assert torch.allclose(layer.vertices[:, surface.pinned], surface.posed(jt)[:, surface.pinned], atol=1e-5)
    # no free cloth vertex deeper in a capsule than the contact margin + 2 mm, on any frame
    caps = body_capsules(default_body)
    a, b = caps.posed(default_body, None, jt)
    margin = DynamicsSettings().sim.contact_margin
    depth = max(float(depth_inside(layer.vertices[f][~surface.pinned], a[f], b[f], caps.radius).max())
                for f in range(motion.num_frames))
    assert depth <= margin + 0.002
    assert record["max_depth_in_colliders_mm"] <= 1000 * (margin + 0.002)
    assert record["max_stretch"] < 1.5 and record["frames_per_second"] > 0


def test_reruns_are_bit_identical(default_body, garment):
    _, _, first, _ = _simulate(default_body, garment, "walk", frames=8, warmup=4)
    _, _, second, _ = _simulate(default_body, garment, "walk", frames=8, warmup=4)
    assert torch.equal(first.vertices, second.vertices)


def test_skinned_layer_is_the_rigid_surface(default_body, garment):
    _, surface, binding = garment
    motion = builtin_motion("walk", default_body, frames=3)
    jt = pose_body(motion, default_body).joint_transforms.float()
    layer = skinned_layer(surface, binding, jt)
    assert layer.source == "skinned" and torch.equal(layer.vertices, surface.posed(jt).float())


def test_settings_reject_unknown_presets():
    from backend.core.errors import InputError

    with pytest.raises(InputError, match="cloth_preset"):
        DynamicsSettings(preset="silk")
