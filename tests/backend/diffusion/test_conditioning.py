"""Pose video and preserve mask, checked against analytic projections of known joints and labelled points."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend.body.parts import PART_INDEX
from backend.diffusion.conditioning import (
    FACE_OFFSETS,
    LIMB_DIM,
    OPENPOSE_COLORS,
    OPENPOSE_KEYPOINTS,
    PoseStyle,
    draw_pose_frame,
    mask_to_latent,
    openpose_keypoints,
    preserve_labels,
    render_pose_video,
    render_preserve_mask,
)
from backend.core.errors import InputError
from backend.gaussians.container import Gaussians
from backend.render.cameras import Cameras
from backend.render.render import RenderSettings

pytestmark = pytest.mark.unit

NAMES = ("Pelvis", "L_Hip", "R_Hip", "Spine1", "L_Knee", "R_Knee", "Spine2", "L_Ankle", "R_Ankle", "Spine3",
         "L_Foot", "R_Foot", "Neck", "L_Collar", "R_Collar", "Head", "L_Shoulder", "R_Shoulder", "L_Elbow",
         "R_Elbow", "L_Wrist", "R_Wrist")
# A standing person in world coordinates (Z up), facing -Y (towards a camera on the -Y side); their left is +X.
WORLD_JOINTS = {
    "Pelvis": (0.0, 0.0, 0.0), "L_Hip": (0.1, 0.0, -0.05), "R_Hip": (-0.1, 0.0, -0.05),
    "Spine1": (0.0, 0.0, 0.1), "L_Knee": (0.12, 0.0, -0.45), "R_Knee": (-0.12, 0.0, -0.45),
    "Spine2": (0.0, 0.0, 0.2), "L_Ankle": (0.13, 0.0, -0.85), "R_Ankle": (-0.13, 0.0, -0.85),
    "Spine3": (0.0, 0.0, 0.3), "L_Foot": (0.13, -0.1, -0.9), "R_Foot": (-0.13, -0.1, -0.9),
    "Neck": (0.0, 0.0, 0.45), "L_Collar": (0.05, 0.0, 0.4), "R_Collar": (-0.05, 0.0, 0.4),
    "Head": (0.0, 0.0, 0.6), "L_Shoulder": (0.2, 0.0, 0.4), "R_Shoulder": (-0.2, 0.0, 0.4),
    "L_Elbow": (0.45, 0.0, 0.4), "R_Elbow": (-0.45, 0.0, 0.4), "L_Wrist": (0.7, 0.0, 0.4),
    "R_Wrist": (-0.7, 0.0, 0.4),
}
# Rest frame (Y up, +Z forward) -> world (Z up, facing -Y): a +90 degree rotation about X.
REST_TO_WORLD = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def _front_camera(frames: int, size: int, focal: float, distance: float, height: float = 0.0) -> Cameras:
    """Cameras at (0, -distance, height) looking along +Y, up +Z (columns: right, up, back, position)."""
    m = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, -distance], [0.0, 1.0, 0.0, height],
                      [0.0, 0.0, 0.0, 1.0]])
    return Cameras.create(m.expand(frames, 4, 4).clone(), width=size, height=size, fx=focal)


def _analytic_uv(point, size, focal, distance, height=0.0):
    x, y, z = point
    depth = y + distance
    return size / 2 + focal * x / depth, size / 2 - focal * (z - height) / depth


def _body(frames=1):
    joints = torch.tensor([WORLD_JOINTS[n] for n in NAMES]).expand(frames, -1, -1).clone()
    transforms = torch.eye(4).repeat(frames, len(NAMES), 1, 1)
    transforms[..., :3, :3] = REST_TO_WORLD
    return joints, transforms


def _expected_keypoints():
    """The 18 OpenPose keypoints of the test body, written out by hand."""
    j = {n: np.array(p) for n, p in WORLD_JOINTS.items()}
    head = j["Head"]

    def face(k):  # rest offset (x, y, z) -> world (x, -z, y) for the +90 degree X rotation
        ox, oy, oz = FACE_OFFSETS[k]
        return head + np.array([ox, -oz, oy])

    return np.stack([
        face(0), (j["L_Shoulder"] + j["R_Shoulder"]) / 2, j["R_Shoulder"], j["R_Elbow"], j["R_Wrist"],
        j["L_Shoulder"], j["L_Elbow"], j["L_Wrist"], j["R_Hip"], j["R_Knee"], j["R_Ankle"], j["L_Hip"],
        j["L_Knee"], j["L_Ankle"], face(14), face(15), face(16), face(17),
    ])


def test_openpose_keypoints_from_joints():
    joints, transforms = _body(2)
    kp = openpose_keypoints(joints, transforms, NAMES)
    assert kp.shape == (2, 18, 3)
    torch.testing.assert_close(kp[0], torch.tensor(_expected_keypoints(), dtype=torch.float32))
    # The person's right eye/ear are on the person's right (-X here), the nose in front (-Y).
    assert kp[0, 14, 0] < 0 < kp[0, 15, 0] and kp[0, 16, 0] < kp[0, 14, 0]
    assert kp[0, 0, 1] < joints[0, NAMES.index("Head"), 1]


def test_face_keypoints_turn_with_the_head():
    joints, transforms = _body(1)
    yaw = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # +90 degrees about world Z
    transforms[0, NAMES.index("Head"), :3, :3] = yaw @ REST_TO_WORLD
    kp = openpose_keypoints(joints, transforms, NAMES)
    head = joints[0, NAMES.index("Head")]
    nose = head + yaw @ (REST_TO_WORLD @ torch.tensor(FACE_OFFSETS[0]))
    torch.testing.assert_close(kp[0, 0], nose)
    assert kp[0, 0, 0] > head[0] + 0.1  # the face now points along +X
    torch.testing.assert_close(kp[0, 2], joints[0, NAMES.index("R_Shoulder")])  # body keypoints unaffected


def test_keypoints_need_smpl_names():
    joints, transforms = _body(1)
    with pytest.raises(InputError, match="Head"):
        openpose_keypoints(joints, transforms, tuple(n if n != "Head" else "Skull" for n in NAMES))
    with pytest.raises(InputError, match="joint_transforms"):
        openpose_keypoints(joints, transforms[:, :3], NAMES)


def test_pose_video_pixels_at_analytic_projections():
    size, focal, distance, height = 256, 256.0, 2.2, 0.0
    joints, transforms = _body(1)
    cameras = _front_camera(1, size, focal, distance, height)
    video = render_pose_video(joints, transforms, NAMES, cameras, PoseStyle(stick_width=1.5, radius=2.0))
    assert video.shape == (1, size, size, 3) and video.dtype == torch.float32
    image = (video[0].numpy() * 255).round().astype(int)
    expected = _expected_keypoints()
    for k, point in enumerate(expected):
        u, v = _analytic_uv(point, size, focal, distance, height)
        assert 0 <= u < size and 0 <= v < size, OPENPOSE_KEYPOINTS[k]
        assert tuple(image[int(v), int(u)]) == OPENPOSE_COLORS[k], OPENPOSE_KEYPOINTS[k]
    # Limb pixels: right upper arm (limb 2: right shoulder -> right elbow) at its midpoint, dimmed to 60 %.
    mid = (expected[2] + expected[3]) / 2
    u, v = _analytic_uv(mid, size, focal, distance, height)
    dimmed = np.floor(np.array(OPENPOSE_COLORS[2]) * LIMB_DIM + 1e-3)
    assert np.abs(image[int(v), int(u)] - dimmed).max() <= 1
    # Background stays black away from the skeleton.
    assert image[5, 5].sum() == 0 and image[size - 5, size // 2].sum() == 0


def test_draw_pose_frame_skips_invisible_keypoints():
    # Keypoints on a circle: limbs are chords, so none crosses another keypoint's pixel.
    angles = 2 * np.pi * np.arange(18) / 18
    uv = np.stack([32.5 + 25 * np.cos(angles), 32.5 + 25 * np.sin(angles)], axis=1).round() + 0.5
    visible = np.ones(18, dtype=bool)
    visible[4] = False  # right wrist: neither its disc nor the elbow-wrist limb is drawn
    image = draw_pose_frame(uv, visible, 66, 66, PoseStyle(stick_width=1.0, radius=2.0))
    assert image.shape == (66, 66, 3) and image.dtype == np.uint8
    px = uv.astype(int)
    assert tuple(image[px[3, 1], px[3, 0]]) == OPENPOSE_COLORS[3]
    assert image[px[4, 1], px[4, 0]].sum() == 0
    assert image[1, 1].sum() == 0


def test_points_behind_the_camera_are_not_drawn():
    joints, transforms = _body(1)
    joints[0, NAMES.index("L_Wrist")] = torch.tensor([0.7, -3.0, 0.4])  # behind a camera at y = -2.2
    cameras = _front_camera(1, 128, 128.0, 2.2)
    video = render_pose_video(joints, transforms, NAMES, cameras, PoseStyle(1.0, 2.0))
    u, v = _analytic_uv(WORLD_JOINTS["L_Wrist"], 128, 128.0, 2.2)
    assert video[0, int(v), int(u)].sum() == 0
    with pytest.raises(InputError, match="one per frame"):
        render_pose_video(joints, transforms, NAMES, _front_camera(2, 128, 128.0, 2.2))


def test_preserve_labels():
    parts = torch.tensor([PART_INDEX[p] for p in ("head", "torso", "left_hand", "right_foot", "left_arm")])
    loose = torch.tensor([False, False, True, False, False])
    torch.testing.assert_close(preserve_labels(parts, loose), torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(preserve_labels(parts, None), torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]))


def _labelled_points(xs, parts, loose):
    means = torch.tensor([[x, 0.0, 0.0] for x in xs])
    return Gaussians.from_colors(
        means, torch.full((len(xs), 3), 0.5), scales=0.05, opacities=0.99,
        part_ids=torch.tensor([PART_INDEX[p] for p in parts]), loose=torch.tensor(loose),
    )


def test_preserve_mask_at_analytic_projections():
    size, focal, distance = 32, 32.0, 2.0
    # u = 16 + 16 x: pixel centres 8.5, 16.5, 24.5
    xs = [(u - 16.0) / 16.0 for u in (8.5, 16.5, 24.5)]
    gaussians = _labelled_points(xs, ("head", "torso", "left_hand"), [False, False, True])
    cameras = _front_camera(1, size, focal, distance)
    mask = render_preserve_mask(gaussians, cameras, settings=RenderSettings(backend="torch"))
    assert mask.shape == (1, size, size)
    for x, expected in zip(xs, (1.0, 0.0, 0.0)):
        u, v = _analytic_uv((x, 0.0, 0.0), size, focal, distance)
        assert mask[0, int(v), int(u)] == expected
    assert mask.sum() >= 1 and mask[0, :, :4].sum() == 0 and mask[0, :4].sum() == 0

    # One posed set per frame: the head point moves 8 pixels right in frame 1.
    moved = _labelled_points([xs[0] + 0.5, xs[1], xs[2]], ("head", "torso", "left_hand"), [False, False, True])
    two = render_preserve_mask([gaussians, moved], _front_camera(2, size, focal, distance),
                               settings=RenderSettings(backend="torch"))
    assert two[0, 16, 8] == 1 and two[0, 16, 16] == 0 and two[1, 16, 8] == 0 and two[1, 16, 16] == 1


def test_preserve_mask_needs_labels():
    plain = Gaussians.from_colors(torch.zeros(1, 3), torch.full((1, 3), 0.5))
    with pytest.raises(InputError, match="part_ids"):
        render_preserve_mask(plain, _front_camera(1, 16, 16.0, 2.0), settings=RenderSettings(backend="torch"))


def test_mask_to_latent_brute_force():
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(9, 32, 48, generator=g) > 0.995).float()
    out = mask_to_latent(mask)
    assert out.shape == (3, 4, 6)
    expected = torch.zeros(3, 4, 6)
    for f, i, j in mask.nonzero().tolist():
        expected[0 if f == 0 else (f - 1) // 4 + 1, i // 8, j // 8] = 1.0
    torch.testing.assert_close(out, expected)


def test_mask_to_latent_groups():
    mask = torch.zeros(5, 16, 16)
    mask[0, 0, 0] = 1.0  # first frame alone
    mask[4, 15, 15] = 0.5  # frames 1-4 -> latent frame 1, max kept
    out = mask_to_latent(mask)
    assert out.shape == (2, 2, 2)
    assert out[0, 0, 0] == 1 and out[0].sum() == 1 and out[1, 1, 1] == 0.5 and out[1].sum() == 0.5
    with pytest.raises(InputError, match="4k\\+1"):
        mask_to_latent(torch.zeros(4, 16, 16))
    with pytest.raises(InputError, match="multiples of 8"):
        mask_to_latent(torch.zeros(5, 12, 16))


def test_pose_on_a_real_body_and_trajectory():
    """The default body posed along a diagonal trajectory: every frame draws a skeleton in the frame."""
    from backend.body import load_body_model
    from backend.render.trajectories import Framing, diagonal_trajectory

    body = load_body_model("default")
    frames = 5
    out = body(None, torch.tensor([math.pi / 2, 0.0, 0.0]).repeat(frames, 1), torch.zeros(frames, 63),
               torch.zeros(frames, 3))
    trajectory = diagonal_trajectory(Framing(out.joints[0].mean(0), 3.0), num_frames=frames, width=64, height=112)
    video = render_pose_video(out.joints, out.joint_transforms, body.joint_names, trajectory.cameras,
                              PoseStyle(1.0, 1.5))
    assert video.shape == (frames, 112, 64, 3)
    coloured = (video.sum(-1) > 0).flatten(1).float().mean(1)
    assert torch.all(coloured > 0.01) and torch.all(coloured < 0.5)
