"""The rigid layer: analytic expectations of skinning Gaussians (issue 2's list)."""

from __future__ import annotations

import pytest
import torch

from backend.core.rotations import axis_angle_to_matrix
from backend.core.rotations import matrix_to_quaternion, quaternion_to_matrix
from backend.motion import skin_gaussians, skin_means_quats
from backend.core.rotations import quaternion_multiply
from backend.reconstruct import sample_body_gaussians

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def subject():
    from backend.body import load_body_model

    body = load_body_model("default")
    return body, sample_body_gaussians(body, None, 4000, torch.Generator().manual_seed(0))


def pose(body, frames=1, root=None, pose_body=None, trans=None):
    zeros3 = torch.zeros(frames, 3)
    return body(None, zeros3 if root is None else root, torch.zeros(frames, 63) if pose_body is None else pose_body,
                zeros3 if trans is None else trans)


def test_zero_motion_keeps_canonical(subject):
    body, g = subject
    means, quats = skin_gaussians(g, None, pose(body).joint_transforms)
    assert torch.allclose(means[0], g.means, atol=1e-6)
    assert torch.allclose(quaternion_to_matrix(quats[0]), quaternion_to_matrix(g.quats), atol=1e-6)


def test_trans_only_moves_by_trans(subject):
    body, g = subject
    trans = torch.tensor([[0.3, -1.2, 2.5], [0.0, 0.1, 0.0]])
    means, quats = skin_gaussians(g, None, pose(body, 2, trans=trans).joint_transforms)
    assert torch.allclose(means, g.means[None] + trans[:, None], atol=1e-5)
    assert torch.allclose(quaternion_to_matrix(quats), quaternion_to_matrix(g.quats)[None].expand(2, -1, 3, 3),
                          atol=1e-5)


def test_root_rotation_rotates_about_pelvis(subject):
    body, g = subject
    root = torch.tensor([[0.4, 1.3, -0.2]])
    r = axis_angle_to_matrix(root)[0]
    pelvis = body.rest_joints()[0]
    means, quats = skin_gaussians(g, None, pose(body, root=root).joint_transforms)
    assert torch.allclose(means[0], (g.means - pelvis) @ r.T + pelvis, atol=1e-5)
    assert torch.allclose(quaternion_to_matrix(quats[0]), r @ quaternion_to_matrix(g.quats), atol=1e-5)


def test_left_elbow_leaves_unweighted_gaussians_unchanged(subject):
    body, g = subject
    names = body.joint_names
    elbow = names.index("L_Elbow")
    # every joint below the left elbow
    below = {elbow}
    for j, p in enumerate(body.parents):
        if p in below:
            below.add(j)
    weight_below = g.skin_weights[:, sorted(below)].sum(dim=1)
    pose_body = torch.zeros(1, 63)
    pose_body[0, 17 * 3:17 * 3 + 3] = torch.tensor([0.2, 1.0, 0.3])  # body joint 17 = left elbow
    means, _ = skin_gaussians(g, None, pose(body, pose_body=pose_body).joint_transforms)
    untouched = weight_below == 0
    moved = (means[0] - g.means).norm(dim=1)
    assert untouched.sum() > 1000
    assert moved[untouched].max() <= 1e-6
    assert moved[weight_below > 0.99].min() > 1e-3


def test_posed_quaternions_are_unit(subject, generator):
    body, g = subject
    out = pose(body, 3, root=torch.randn(3, 3, generator=generator), pose_body=torch.randn(3, 63, generator=generator))
    _, quats = skin_gaussians(g, None, out.joint_transforms)
    assert torch.allclose(quats.norm(dim=-1), torch.ones(3, g.num_gaussians), atol=1e-5)


def test_one_hot_weights_reproduce_the_joint_transform(generator):
    n, joints, frames = 50, 5, 2
    means = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=generator, dtype=torch.float64), dim=-1)
    owner = torch.randint(0, joints, (n,), generator=generator)
    weights = torch.nn.functional.one_hot(owner, joints).double()
    transforms = torch.eye(4, dtype=torch.float64).repeat(frames, joints, 1, 1)
    transforms[..., :3, :3] = axis_angle_to_matrix(torch.randn(frames, joints, 3, generator=generator,
                                                               dtype=torch.float64))
    transforms[..., :3, 3] = torch.randn(frames, joints, 3, generator=generator, dtype=torch.float64)
    posed_means, posed_quats = skin_means_quats(means, quats, weights, transforms)
    t = transforms[:, owner]  # [F, N, 4, 4]
    expected = (t[..., :3, :3] @ means[..., None])[..., 0] + t[..., :3, 3]
    assert torch.allclose(posed_means, expected, atol=1e-12)
    expected_rot = t[..., :3, :3] @ quaternion_to_matrix(quats)
    assert torch.allclose(quaternion_to_matrix(posed_quats), expected_rot, atol=1e-10)


def test_matrix_quaternion_round_trip_and_product(generator):
    r = axis_angle_to_matrix(torch.randn(500, 3, generator=generator, dtype=torch.float64) * 2)
    q = matrix_to_quaternion(r)
    assert torch.allclose(quaternion_to_matrix(q), r, atol=1e-12)
    r2 = axis_angle_to_matrix(torch.randn(500, 3, generator=generator, dtype=torch.float64))
    q12 = quaternion_multiply(q, matrix_to_quaternion(r2))
    assert torch.allclose(quaternion_to_matrix(q12), r @ r2, atol=1e-12)


def test_blocked_and_differentiable_paths_agree(subject, generator):
    body, g = subject
    out = pose(body, 5, root=torch.randn(5, 3, generator=generator), pose_body=torch.randn(5, 63, generator=generator))
    blocked = skin_means_quats(g.means, g.quats, g.skin_weights, out.joint_transforms,
                               frames_per_chunk=2, gaussians_per_chunk=999)
    means = g.means.clone().requires_grad_(True)
    direct = skin_means_quats(means, g.quats, g.skin_weights, out.joint_transforms)
    assert torch.allclose(blocked[0], direct[0], atol=1e-6) and torch.allclose(blocked[1], direct[1], atol=1e-6)
    direct[0].sum().backward()
    assert means.grad is not None and torch.isfinite(means.grad).all()


def test_fast_quaternion_handles_rotations_near_180_degrees(generator):
    from backend.core.rotations import shepperd_quaternion

    axis = torch.nn.functional.normalize(torch.randn(300, 3, generator=generator, dtype=torch.float64), dim=-1)
    angle = torch.pi - torch.rand(300, 1, generator=generator, dtype=torch.float64) * 0.1
    r = axis_angle_to_matrix(axis * angle)
    q = matrix_to_quaternion(r)
    assert torch.allclose(quaternion_to_matrix(q), r, atol=1e-12)
    assert torch.allclose(q, shepperd_quaternion(r), atol=1e-12)
