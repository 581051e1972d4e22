"""rig_export reproduces Blender's own skinned mesh through SMPL-X LBS (max vertex error <= 1e-4 m)."""

from __future__ import annotations

import bpy
import numpy as np
import pytest

from blender_addon import convert, rig_export
from rigs import animate_rig, build_rig, evaluated_world_vertices, smplx_lbs, synthetic_joints

pytestmark = pytest.mark.bpy


def _check_rig(arm, mesh_obj, rest_arm, weights, joints_body, parents, frames, expect_kind, expect_hands,
               world_scale=1.0):
    scene = bpy.context.scene
    binding = rig_export.bind_rig(arm)
    assert binding.kind == expect_kind
    assert binding.has_hands == expect_hands
    motion = rig_export.export_motion(scene, arm, frames[0], frames[-1], binding)
    num = len(frames)
    assert motion["root_orient"].shape == (num, 3)
    assert motion["pose_body"].shape == (num, 63)
    assert motion["trans"].shape == (num, 3)
    assert ("pose_hand" in motion) == expect_hands
    k = binding.body_to_armature
    rest_body = rest_arm @ k.T.T * world_scale  # x_body = s K^T x_arm
    pose = motion["pose_body"].reshape(num, 21, 3)
    if expect_hands:
        pose = np.concatenate([pose, motion["pose_hand"].reshape(num, 30, 3)], axis=1)
    worst = 0.0
    for i, frame in enumerate(frames):
        scene.frame_set(frame)
        blender = evaluated_world_vertices(mesh_obj)
        ours = smplx_lbs(rest_body, weights, joints_body, parents, motion["root_orient"][i], pose[i],
                         motion["trans"][i])
        worst = max(worst, float(np.abs(blender - ours).max()))
        # The pose actually moves vertices (the test could fail).
        assert np.abs(blender - rest_body).max() > 0.05
    print(f"max vertex error {worst:.2e} m")
    assert worst <= 1e-4, f"max vertex error {worst:.2e} m"


@pytest.mark.parametrize("hands", [False, True])
def test_smplx_named_rig_matches_blender_skinning(hands):
    rng = np.random.default_rng(3 + hands)
    names, joints_body, parents = synthetic_joints(rng, hands)
    k = convert.Y_UP_TO_Z_UP  # armature space Z up, like a rig built in Blender
    arm, mesh_obj, rest_arm, weights = build_rig("SMPLX", names, joints_body @ k.T, parents, rng)
    frames = [1, 2, 3, 4]
    animate_rig(arm, names, frames, rng)
    stored_joints = np.stack([np.asarray(arm.data.bones[n].head_local) for n in names]) @ k
    _check_rig(arm, mesh_obj, rest_arm, weights, stored_joints, parents, frames, "smplx", hands)


def test_smpl_fbx_rig_in_centimetres_matches_blender_skinning():
    """FBX-style: Y-up armature in centimetres, object rotated +90 deg about X and scaled 0.01."""
    rng = np.random.default_rng(7)
    names, joints_body, parents = synthetic_joints(rng, hands=False)
    bone_names = ["f_avg_" + s for s in rig_export.SMPL_FBX_BODY]
    arm, mesh_obj, rest_arm, weights = build_rig("SMPL", bone_names, joints_body * 100.0, parents, rng,
                                                bone_length=8.0)
    arm.rotation_euler = (np.pi / 2, 0.0, 0.0)
    arm.scale = (0.01, 0.01, 0.01)
    frames = [1, 2, 3]
    animate_rig(arm, bone_names, frames, rng, object_motion=False)
    stored_joints = np.stack([np.asarray(arm.data.bones[n].head_local) for n in bone_names]) * 0.01
    _check_rig(arm, mesh_obj, rest_arm, weights, stored_joints, parents, frames, "smpl_fbx", False,
               world_scale=0.01)


def test_unsupported_rig_lists_missing_bones():
    rng = np.random.default_rng(0)
    names, joints_body, parents = synthetic_joints(rng, hands=False)
    keep = [n for n in names if n not in ("left_knee", "spine3")]
    idx = [names.index(n) for n in keep]
    remap = {old: new for new, old in enumerate(idx)}
    sub_parents = [remap.get(parents[i], 0) if parents[i] >= 0 else -1 for i in idx]
    sub_parents[0] = -1
    arm, *_ = build_rig("Broken", keep, joints_body[idx], sub_parents, rng)
    with pytest.raises(rig_export.RigError, match="left_knee, spine3"):
        rig_export.bind_rig(arm)
    with pytest.raises(rig_export.RigError, match="no armature"):
        rig_export.bind_rig(None)


def test_estimate_body_to_armature_snaps_to_axes():
    heads = {"pelvis": np.array([0.0, 0.0, 0.9]), "left_hip": np.array([0.08, 0.01, 0.82]),
             "right_hip": np.array([-0.08, -0.01, 0.82]), "neck": np.array([0.0, 0.04, 1.4])}
    np.testing.assert_array_equal(rig_export.estimate_body_to_armature(heads), convert.Y_UP_TO_Z_UP)


@pytest.mark.parametrize("hands", [False, True])
def test_apply_motion_round_trips_through_export(hands):
    """apply_motion keys a motion; export_motion reads the same rotations and translations back."""
    rng = np.random.default_rng(21)
    names, joints_body, parents = synthetic_joints(rng, hands)
    k = convert.Y_UP_TO_Z_UP
    arm, *_ = build_rig("RT", names, joints_body @ k.T, parents, rng)
    arm.location = (0.3, -0.2, 0.1)
    arm.rotation_euler = (0.0, 0.0, 0.4)
    frames = 3
    motion = {"root_orient": rng.normal(scale=0.8, size=(frames, 3)),
              "pose_body": rng.normal(scale=0.4, size=(frames, 63)),
              "trans": rng.normal(scale=0.3, size=(frames, 3)), "betas": np.zeros(10)}
    if hands:
        motion["pose_hand"] = rng.normal(scale=0.3, size=(frames, 90))
    bpy.context.view_layer.update()
    rig_export.apply_motion(bpy.context.scene, arm, motion, frame_start=5)
    back = rig_export.export_motion(bpy.context.scene, arm, 5, 5 + frames - 1)
    fields = ["root_orient", "pose_body"] + (["pose_hand"] if hands else [])
    for name in fields:
        ours = convert.axis_angle_to_matrix(back[name].reshape(frames, -1, 3))
        theirs = convert.axis_angle_to_matrix(motion[name].reshape(frames, -1, 3))
        np.testing.assert_allclose(ours, theirs, atol=5e-5, err_msg=name)  # Blender poses in float32
    np.testing.assert_allclose(back["trans"], motion["trans"], atol=1e-5)
