"""Body models: parity with mannequin-x and smplx, and the LBS functions' analytic properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.body import load_body_model
from backend.core.rotations import axis_angle_to_matrix
from backend.body.parts import PART_NAMES, part_of_joint
from backend.core.errors import InputError

pytestmark = pytest.mark.unit


def random_motion(generator, frames=4, scale=0.5, hands=True):
    return dict(
        root_orient=torch.randn(frames, 3, generator=generator) * scale,
        pose_body=torch.randn(frames, 63, generator=generator) * scale,
        trans=torch.randn(frames, 3, generator=generator),
        pose_hand=torch.randn(frames, 90, generator=generator) * scale if hands else None,
    )


def test_axis_angle_to_matrix_is_rotation_and_smooth_at_zero(generator):
    aa = torch.randn(100, 3, generator=generator, dtype=torch.float64)
    r = axis_angle_to_matrix(aa)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(r @ r.transpose(-1, -2), eye.expand(100, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(r), torch.ones(100, dtype=torch.float64))
    # rotating the axis itself leaves it fixed
    assert torch.allclose((r @ aa[..., None])[..., 0], aa, atol=1e-12)
    zero = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    axis_angle_to_matrix(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_body_matches_mannequin_x(default_body, seed):
    from mannequin import Mannequin

    g = torch.Generator().manual_seed(seed)
    betas = torch.randn(10, generator=g)
    motion = random_motion(g, frames=3)
    out = default_body(betas, **motion)
    reference = Mannequin("wooden", shape=betas.numpy(), flat_hand_mean=True)
    pose = reference.rest_pose(batch_dims=(3,))
    pose["body_pose"] = motion["pose_body"].numpy().reshape(3, 21, 3)
    pose["hand_pose"] = motion["pose_hand"].numpy().reshape(3, 30, 3)
    pose["pelvis_rotation"] = motion["root_orient"].numpy()
    pose["global_translation"] = motion["trans"].numpy()
    vertices = reference.vertices(pose)
    assert np.abs(vertices - out.vertices.numpy()).max() <= 1e-5
    joints = reference.joint_transforms(pose)
    assert np.abs(joints[..., :3, 3] - out.joints.numpy()).max() <= 1e-5


def test_default_body_rest_pose_is_identity(default_body):
    zeros = torch.zeros(1, 3)
    out = default_body(None, zeros, torch.zeros(1, 63), zeros)
    assert torch.allclose(out.vertices[0], default_body.rest_vertices(), atol=1e-6)
    eye = torch.eye(4).expand_as(out.joint_transforms)
    assert torch.allclose(out.joint_transforms, eye, atol=1e-6)


def test_root_orient_rotates_about_pelvis_and_trans_is_added_after(default_body, generator):
    rest = default_body.rest_vertices()
    pelvis = default_body.rest_joints()[0]
    root = torch.tensor([[0.3, -1.1, 0.7]])
    trans = torch.tensor([[0.5, -0.2, 1.5]])
    out = default_body(None, root, torch.zeros(1, 63), trans)
    r = axis_angle_to_matrix(root)[0]
    expected = (rest - pelvis) @ r.T + pelvis + trans
    assert torch.allclose(out.vertices[0], expected, atol=1e-5)


def test_smplx_path_matches_smplx_forward(synthetic_smpl_path, generator):
    import smplx

    body = load_body_model(synthetic_smpl_path)
    assert body.num_joints == 24
    reference = smplx.SMPL(model_path=str(synthetic_smpl_path), num_betas=10,
                           vertex_ids={"nose": 0, "reye": 1, "leye": 2, "rear": 3, "lear": 4, "LBigToe": 5,
                                       "LSmallToe": 6, "LHeel": 7, "RBigToe": 8, "RSmallToe": 9, "RHeel": 10,
                                       "lthumb": 11, "lindex": 12, "lmiddle": 13, "lring": 14, "lpinky": 15,
                                       "rthumb": 16, "rindex": 17, "rmiddle": 18, "rring": 19, "rpinky": 20})
    frames = 3
    motion = random_motion(generator, frames=frames, hands=False)
    betas = torch.randn(10, generator=generator)
    out = body(betas, **motion)
    body_pose = torch.cat([motion["pose_body"], torch.zeros(frames, 6)], dim=1)  # SMPL hand joints 22, 23 = 0
    ref = reference(betas=betas.expand(frames, 10), global_orient=motion["root_orient"], body_pose=body_pose,
                    transl=motion["trans"])
    assert (ref.vertices - out.vertices).abs().max() <= 1e-5
    assert (ref.joints[:, :24] - out.joints).abs().max() <= 1e-5


def test_body_forward_is_differentiable_in_pose(default_body, generator):
    motion = random_motion(generator, frames=2)
    motion["pose_body"].requires_grad_(True)
    default_body(None, **motion).vertices.square().sum().backward()
    assert motion["pose_body"].grad.abs().sum() > 0


def test_bad_shapes_name_the_field(default_body):
    with pytest.raises(InputError, match="pose_body"):
        default_body(None, torch.zeros(2, 3), torch.zeros(2, 60), torch.zeros(2, 3))
    with pytest.raises(InputError, match="trans"):
        default_body(None, torch.zeros(2, 3), torch.zeros(2, 63), torch.zeros(3, 3))


def test_missing_and_invalid_model_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_body_model(tmp_path / "nope.pkl")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="bad.pkl"):
        load_body_model(bad)


def test_every_joint_has_a_part(default_body):
    parts = {part_of_joint(name) for name in default_body.joint_names}
    assert parts == set(PART_NAMES) - {"garment"}  # garment: Gaussians on a cloth surface, no joint
