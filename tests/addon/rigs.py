"""Synthetic rigs and a numpy SMPL-X LBS for the exactness tests (no backend, no torch)."""

from __future__ import annotations

import bpy
import numpy as np

from blender_addon import convert, rig_export

# Offsets from the parent (body frame: Y up, +X = body's left, +Z = front), metres; a rough SMPL-X rest pose.
_BODY_OFFSETS = {
    "pelvis": (0.0, 0.95, 0.0), "left_hip": (0.08, -0.08, 0.0), "right_hip": (-0.08, -0.08, 0.0),
    "spine1": (0.0, 0.11, -0.01), "left_knee": (0.03, -0.38, 0.0), "right_knee": (-0.03, -0.38, 0.0),
    "spine2": (0.0, 0.13, 0.02), "left_ankle": (-0.01, -0.40, -0.03), "right_ankle": (0.01, -0.40, -0.03),
    "spine3": (0.0, 0.06, 0.0), "left_foot": (0.03, -0.06, 0.11), "right_foot": (-0.03, -0.06, 0.11),
    "neck": (0.0, 0.21, -0.03), "left_collar": (0.07, 0.12, -0.01), "right_collar": (-0.07, 0.12, -0.01),
    "head": (0.0, 0.09, 0.05), "left_shoulder": (0.11, 0.04, -0.01), "right_shoulder": (-0.11, 0.04, -0.01),
    "left_elbow": (0.26, -0.01, -0.02), "right_elbow": (-0.26, -0.01, -0.02),
    "left_wrist": (0.25, 0.01, 0.0), "right_wrist": (-0.25, 0.01, 0.0),
}


def synthetic_joints(rng: np.random.Generator, hands: bool) -> tuple[list[str], np.ndarray, tuple[int, ...]]:
    """(names, rest joints in the body frame [J, 3], parents) with a little per-joint jitter."""
    names = list(rig_export.BODY_JOINTS) + (list(rig_export.HAND_JOINTS) if hands else [])
    parents = rig_export.ALL_PARENTS[: len(names)]
    joints = np.zeros((len(names), 3))
    for j, name in enumerate(names):
        if name in _BODY_OFFSETS:
            offset = np.asarray(_BODY_OFFSETS[name])
        else:  # finger joints: 3 cm steps outwards from the wrist, fanned by finger
            side = 1.0 if name.startswith("left") else -1.0
            finger = rig_export._FINGERS.index(name.split("_")[1][:-1])
            offset = np.array([side * 0.03, 0.0, 0.02 * (finger - 2)])
        joints[j] = offset + rng.normal(scale=0.005, size=3) + (joints[parents[j]] if parents[j] >= 0 else 0)
    return names, joints, parents


def build_rig(name: str, bone_names: list[str], joints_arm: np.ndarray, parents, rng: np.random.Generator,
              points_per_joint: int = 6, bone_length: float = 0.08):
    """An armature with arbitrary bone directions and rolls (rest orientation != identity) and a skinned
    point mesh around the joints. Returns (armature object, mesh object, rest vertices (armature space) [V, 3],
    weights [V, J])."""
    arm_data = bpy.data.armatures.new(name)
    arm = bpy.data.objects.new(name, arm_data)
    bpy.context.scene.collection.objects.link(arm)
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    edit = arm_data.edit_bones
    for j, bone_name in enumerate(bone_names):
        bone = edit.new(bone_name)
        bone.head = joints_arm[j]
        direction = rng.normal(size=3)
        bone.tail = joints_arm[j] + bone_length * direction / np.linalg.norm(direction)
        bone.roll = float(rng.uniform(-np.pi, np.pi))
    for j, bone_name in enumerate(bone_names):
        if parents[j] >= 0:
            edit[bone_name].parent = edit[bone_names[parents[j]]]
    bpy.ops.object.mode_set(mode="OBJECT")

    num_joints = len(bone_names)
    verts = (np.repeat(joints_arm, points_per_joint, axis=0)
             + rng.normal(scale=0.04 * bone_length / 0.08, size=(num_joints * points_per_joint, 3)))
    weights = np.zeros((len(verts), num_joints))
    owner = np.repeat(np.arange(num_joints), points_per_joint)
    for v, j in enumerate(owner):
        weights[v, j] = rng.uniform(0.4, 1.0)
        if parents[j] >= 0:
            weights[v, parents[j]] = rng.uniform(0.0, 0.6)
        other = rng.integers(num_joints)
        weights[v, other] += rng.uniform(0.0, 0.3)
    weights /= weights.sum(axis=1, keepdims=True)

    mesh = bpy.data.meshes.new(name + "_mesh")
    mesh.from_pydata(verts.tolist(), [], [])
    obj = bpy.data.objects.new(name + "_mesh", mesh)
    bpy.context.scene.collection.objects.link(obj)
    for j, bone_name in enumerate(bone_names):
        group = obj.vertex_groups.new(name=bone_name)
        for v in np.nonzero(weights[:, j])[0]:
            group.add([int(v)], float(weights[v, j]), "REPLACE")
    obj.parent = arm
    modifier = obj.modifiers.new("Armature", "ARMATURE")
    modifier.object = arm
    # Blender stores the rest positions as float32; use what it stores.
    stored = np.empty(len(verts) * 3, np.float32)
    mesh.vertices.foreach_get("co", stored)
    return arm, obj, stored.reshape(-1, 3).astype(np.float64), weights


def animate_rig(arm, bone_names: list[str], frames: list[int], rng: np.random.Generator, max_angle: float = 1.0,
                object_motion: bool = True) -> None:
    """Key random bone rotations, a pelvis offset and (optionally) an object transform on ``frames``."""
    scene = bpy.context.scene
    for frame in frames:
        scene.frame_set(frame)
        for name in bone_names:
            pb = arm.pose.bones[name]
            pb.rotation_mode = "QUATERNION"
            axis = rng.normal(size=3)
            aa = axis / np.linalg.norm(axis) * rng.uniform(0.0, max_angle)
            pb.rotation_quaternion = convert.matrix_to_quaternion(convert.axis_angle_to_matrix(aa))
            pb.keyframe_insert("rotation_quaternion", frame=frame)
        root = arm.pose.bones[bone_names[0]]
        root.location = rng.normal(scale=0.1, size=3)
        root.keyframe_insert("location", frame=frame)
        if object_motion:
            arm.rotation_euler = rng.normal(scale=0.5, size=3)
            arm.location = np.asarray(arm.location) + rng.normal(scale=0.2, size=3)
            arm.keyframe_insert("rotation_euler", frame=frame)
            arm.keyframe_insert("location", frame=frame)


def evaluated_world_vertices(obj) -> np.ndarray:
    """Blender's own evaluated (skinned) vertex positions in world space. [V, 3]"""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
    finally:
        evaluated.to_mesh_clear()
    world = np.asarray(evaluated.matrix_world, dtype=np.float64)
    return co.reshape(-1, 3).astype(np.float64) @ world[:3, :3].T + world[:3, 3]


def smplx_lbs(vertices: np.ndarray, weights: np.ndarray, joints: np.ndarray, parents, root_orient: np.ndarray,
              pose: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """SMPL-X linear blend skinning (no blend shapes): root rotation about the pelvis, trans added after.

    Args:
        vertices: Rest vertices, body frame. [V, 3]
        weights: Skin weights. [V, J]
        joints: Rest joints, body frame. [J, 3]
        parents: Parent per joint. [J]
        root_orient: [3]; pose: local axis-angle of joints 1.. [J-1, 3]; trans: [3].

    Returns:
        Posed vertices. [V, 3]
    """
    rot = convert.axis_angle_to_matrix(np.concatenate([root_orient[None], pose.reshape(-1, 3)], axis=0))
    num = len(joints)
    glob = np.zeros((num, 4, 4))
    for j in range(num):
        local = np.eye(4)
        local[:3, :3] = rot[j]
        local[:3, 3] = joints[j] - (joints[parents[j]] if parents[j] >= 0 else 0.0)
        glob[j] = glob[parents[j]] @ local if parents[j] >= 0 else local
    skin = glob.copy()
    skin[:, :3, 3] -= np.einsum("jab,jb->ja", glob[:, :3, :3], joints)
    blended = np.einsum("vj,jab->vab", weights, skin)
    return np.einsum("vab,vb->va", blended[:, :3, :3], vertices) + blended[:, :3, 3] + trans
