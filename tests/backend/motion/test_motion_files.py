"""Motion files: every accepted layout, and every rejection names the problem."""

from __future__ import annotations

import numpy as np
import pytest

from backend.core.errors import InputError
from backend.motion import load_motion, motion_from_arrays

pytestmark = pytest.mark.unit


def smplx_arrays(frames=5):
    rng = np.random.default_rng(0)
    return {
        "root_orient": rng.normal(size=(frames, 3)),
        "pose_body": rng.normal(size=(frames, 63)),
        "pose_hand": rng.normal(size=(frames, 90)),
        "trans": rng.normal(size=(frames, 3)),
        "betas": rng.normal(size=16),
        "mocap_frame_rate": np.array(60.0),
    }


def test_smplx_npz_round_trip(tmp_path):
    data = smplx_arrays()
    np.savez(tmp_path / "m.npz", **data)
    motion = load_motion(tmp_path / "m.npz")
    assert motion.num_frames == 5 and motion.fps == 60.0
    np.testing.assert_allclose(motion.pose_body, data["pose_body"].astype(np.float32))
    motion.save(tmp_path / "again.npz")
    again = load_motion(tmp_path / "again.npz")
    np.testing.assert_array_equal(again.pose_hand, motion.pose_hand)


def test_amass_poses_layouts():
    rng = np.random.default_rng(1)
    poses = rng.normal(size=(4, 165))
    m = motion_from_arrays({"poses": poses, "trans": np.zeros((4, 3))})
    np.testing.assert_allclose(m.root_orient, poses[:, :3].astype(np.float32))
    np.testing.assert_allclose(m.pose_body, poses[:, 3:66].astype(np.float32))
    np.testing.assert_allclose(m.pose_hand, poses[:, 75:].astype(np.float32))
    smplh = motion_from_arrays({"poses": rng.normal(size=(4, 156))})
    assert smplh.pose_hand.shape == (4, 90)
    smpl = motion_from_arrays({"poses": rng.normal(size=(4, 72))})
    assert smpl.pose_hand is None and smpl.pose_body.shape == (4, 63)
    assert np.all(smpl.trans == 0) and smpl.fps == 30.0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("pose_body"), "pose_body"),
        (lambda d: d.update(pose_body=np.zeros((5, 60))), r"pose_body.*\[F, 63\].*\[5, 60\]"),
        (lambda d: d.update(trans=np.zeros((4, 3))), "trans"),
        (lambda d: d["root_orient"].__setitem__((1, 1), np.nan), "root_orient.*NaN"),
        (lambda d: d.update(mocap_frame_rate=np.array(0.0)), "mocap_frame_rate"),
        (lambda d: d.update(root_orient=np.zeros((0, 3)), pose_body=np.zeros((0, 63)), pose_hand=np.zeros((0, 90)),
                            trans=np.zeros((0, 3))), "zero frames"),
    ],
)
def test_invalid_motion_names_the_problem(change, message):
    data = smplx_arrays()
    change(data)
    with pytest.raises(InputError, match=message):
        motion_from_arrays(data)


def test_unknown_layout_and_bad_files(tmp_path):
    with pytest.raises(InputError, match="root_orient"):
        motion_from_arrays({"foo": np.zeros(3)})
    with pytest.raises(FileNotFoundError):
        load_motion(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(InputError, match="bad.npz"):
        load_motion(tmp_path / "bad.npz")
