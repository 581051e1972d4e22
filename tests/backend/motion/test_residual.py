"""Residual field and layered motion: identity at init, plane sampling, save/load, posed-space option."""

from __future__ import annotations

import pytest
import torch

from backend.core.errors import InputError
from backend.motion.layered import LayeredMotion, layered_frame
from backend.motion.residual import (
    FieldConfig,
    ResidualField,
    apply_residual,
    bounds_from_points,
    hexplane_features,
    normalized_time,
    query_field,
    sample_plane,
    time_smoothness,
    total_variation,
)
from backend.core.rotations import quaternion_multiply
from backend.motion.skinning import skin_gaussians
from backend.reconstruct import sample_body_gaussians

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def posed_scene(default_body):
    from backend.motion.builtin import builtin_motion

    canonical = sample_body_gaussians(default_body, None, 600, torch.Generator().manual_seed(3))
    motion = builtin_motion("walk", default_body, frames=6)
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        out = default_body(as_t(motion.betas), as_t(motion.root_orient), as_t(motion.pose_body), as_t(motion.trans))
    return canonical, out.joint_transforms.float()


def small_config(points: torch.Tensor, **kw) -> FieldConfig:
    return FieldConfig(bounds=bounds_from_points(points), spatial_resolution=8, temporal_resolution=5, features=4,
                       multires=(1, 2), hidden=16, **kw)


@pytest.mark.parametrize("predict_scale", [False, True])
def test_zero_init_layered_equals_rigid_exactly(posed_scene, predict_scale):
    canonical, transforms = posed_scene
    field = ResidualField(small_config(canonical.means, predict_scale=predict_scale), torch.Generator().manual_seed(0))
    rigid_means, rigid_quats = skin_gaussians(canonical, None, transforms)
    frames = LayeredMotion(field).posed_frames(canonical, transforms[2:5], slice(2, 5), transforms.shape[0])
    assert len(frames) == 3
    for k, frame in enumerate(frames):
        assert torch.equal(frame.means, rigid_means[2 + k])
        assert torch.equal(frame.quats, rigid_quats[2 + k])
        assert torch.equal(frame.log_scales, canonical.log_scales)
        assert torch.equal(frame.sh, canonical.sh)


def test_field_heads_are_trainable_from_zero(posed_scene):
    canonical, transforms = posed_scene
    canonical = canonical.subset(torch.arange(150))
    field = ResidualField(small_config(canonical.means), torch.Generator().manual_seed(0))
    target = torch.tensor([0.0, 0.0, 0.05])
    opt = torch.optim.Adam(field.parameters(), lr=1e-2)
    for _ in range(60):
        res = query_field(field, canonical.means, 0.3)
        loss = (res.d_means - target).square().sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 1e-4
    # the learned offset is carried through skinning: posed centres move by the rotated offset
    frame = layered_frame(canonical, field, transforms[1], 0.3)
    rigid = layered_frame(canonical, None, transforms[1], 0.3)
    moved = (frame.means - rigid.means).norm(dim=-1)
    assert torch.allclose(moved, torch.full_like(moved, 0.05), atol=5e-3)


def test_sample_plane_bilinear_and_corners():
    plane = torch.arange(6.0).reshape(1, 1, 2, 3)  # H=2 (v), W=3 (u)
    coords = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [0.0, 0.0], [5.0, 0.0]])
    out = sample_plane(plane, coords)[:, 0]
    assert out.tolist() == pytest.approx([0.0, 2.0, 3.0, 2.5, 3.5])  # last: border clamp at u = +1


def test_time_planes_start_neutral():
    config = FieldConfig(spatial_resolution=4, temporal_resolution=3, features=2, multires=(1,), hidden=8)
    field = ResidualField(config, torch.Generator().manual_seed(1))
    points = torch.rand(10, 3) * 2 - 1
    f0 = hexplane_features(field, points, -1.0)
    f1 = hexplane_features(field, points, 0.7)
    assert torch.equal(f0, f1)  # time planes are all ones at init: features depend on space only
    assert float(time_smoothness(field).detach()) == 0.0
    assert float(total_variation(field).detach()) > 0.0


def test_apply_residual_quaternion_composition():
    quats = torch.nn.functional.normalize(torch.randn(5, 4, generator=torch.Generator().manual_seed(2)), dim=-1)
    field = ResidualField(FieldConfig(spatial_resolution=4, temporal_resolution=3, features=2, multires=(1,),
                                      hidden=8))
    with torch.no_grad():
        field.heads["rotation"][1].bias.copy_(torch.tensor([0.0, 0.3, 0.0, 0.0]))
    res = query_field(field, torch.zeros(5, 3), 0.0)
    _, out, _ = apply_residual(torch.zeros(5, 3), quats, torch.zeros(5, 3), res)
    expected = quaternion_multiply(torch.nn.functional.normalize(torch.tensor([1.0, 0.3, 0.0, 0.0]), dim=0).expand(5, 4),
                                   quats)
    assert torch.allclose(out, expected, atol=1e-6)


def test_posed_space_option(posed_scene):
    canonical, transforms = posed_scene
    field = ResidualField(small_config(canonical.means, space="posed"), torch.Generator().manual_seed(0))
    with torch.no_grad():
        field.heads["position"][1].bias.copy_(torch.tensor([0.0, 0.0, 0.1]))
    frame = layered_frame(canonical, field, transforms[3], 0.0)
    rigid = layered_frame(canonical, None, transforms[3], 0.0)
    assert torch.allclose(frame.means - rigid.means, torch.tensor([0.0, 0.0, 0.1]).expand_as(frame.means), atol=1e-5)


def test_save_load_roundtrip(tmp_path, posed_scene):
    canonical, _ = posed_scene
    field = ResidualField(small_config(canonical.means, predict_scale=True), torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in field.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    field.save(tmp_path / "field")
    loaded = ResidualField.load(tmp_path / "field")
    assert loaded.config == field.config
    a = query_field(field, canonical.means, 0.25)
    b = query_field(loaded, canonical.means, 0.25)
    assert torch.equal(a.d_means, b.d_means) and torch.equal(a.d_quats, b.d_quats)
    assert torch.equal(a.d_log_scales, b.d_log_scales)


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(InputError, match="config.json"):
        ResidualField.load(tmp_path)
    with pytest.raises(InputError, match="bounds"):
        FieldConfig(bounds=(0, 0, 0, 1, -1, 1))
    with pytest.raises(InputError, match="space"):
        FieldConfig(space="world")


def test_normalized_time():
    assert normalized_time(0, 5).item() == -1.0
    assert normalized_time(4, 5).item() == 1.0
    assert normalized_time(2, 5).item() == 0.0
    assert normalized_time(0, 1).item() == 0.0
