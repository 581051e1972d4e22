"""Armature pose per frame -> the motion contract (SMPL-X parameters in the Blender world, Z up, metres).

The math, for one joint ``j`` (all 4x4 affine, column vectors):

- ``B_j``: the bone's rest matrix in armature space (``bone.matrix_local``), ``P_j(t)``: its posed matrix
  (``pose_bone.matrix``), ``M(t)``: the armature object's world matrix. Blender skins the rest mesh with
  ``M P_j B_j^-1`` — bone roll and rest orientations cancel out of that product.
- ``K``: the axis-aligned rotation taking the body model's rest frame (Y up, +X = the body's left, +Z = its
  front) into armature space. The add-on's own rig stores it; for other rigs it is estimated from the rest
  joint positions and snapped to the nearest axis-aligned rotation (rigs are built axis-aligned; an estimate
  off by a few degrees would tilt every joint).
- SMPL-X's global rotation of joint ``j`` is then ``Q_j = rot(M P_j B_j^-1 K)``; its local rotation is
  ``Q_parent^T Q_j`` and ``root_orient = Q_pelvis`` (which includes the Y-up -> Z-up turn into the world).
- SMPL-X rotates the root about the pelvis and adds ``trans`` after posing, so the posed pelvis is
  ``J_pelvis + trans``: ``trans = M P_pelvis B_pelvis^-1 pelvis_rest - J_pelvis``, with ``J_pelvis`` the rest
  pelvis in the body frame.

Supported rigs: the add-on's body rig ("Add Body"), SMPL-X rigs (bones ``pelvis``, ``left_hip``, ...) as made
by the SMPL-X Blender add-on, and SMPL FBX rigs (``m_avg_Pelvis``, ``f_avg_L_Hip``, ...).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from . import convert

log = logging.getLogger(__name__)

# The SMPL-X kinematic tree for the joints a motion carries: pelvis, 21 body joints, 2 x 15 hand joints.
BODY_JOINTS = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)
BODY_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
_FINGERS = ("index", "middle", "pinky", "ring", "thumb")
HAND_JOINTS = tuple(f"{side}_{finger}{i}" for side in ("left", "right") for finger in _FINGERS for i in (1, 2, 3))
ALL_JOINTS = BODY_JOINTS + HAND_JOINTS


def _all_parents() -> tuple[int, ...]:
    parents = list(BODY_PARENTS)
    index = {name: i for i, name in enumerate(ALL_JOINTS)}
    for name in HAND_JOINTS:
        side, rest = name.split("_", 1)
        level = int(rest[-1])
        parent = f"{side}_wrist" if level == 1 else f"{side}_{rest[:-1]}{level - 1}"
        parents.append(index[parent])
    return tuple(parents)


ALL_PARENTS = _all_parents()

# SMPL FBX bone suffixes for the 22 body joints (prefix m_avg_ / f_avg_ / none).
SMPL_FBX_BODY = (
    "Pelvis", "L_Hip", "R_Hip", "Spine1", "L_Knee", "R_Knee", "Spine2", "L_Ankle", "R_Ankle", "Spine3",
    "L_Foot", "R_Foot", "Neck", "L_Collar", "R_Collar", "Head", "L_Shoulder", "R_Shoulder", "L_Elbow",
    "R_Elbow", "L_Wrist", "R_Wrist",
)

# Custom properties the add-on's own rig carries (written by "Add Body").
PROP_RIG = "ani3dhuman_rig"
PROP_BODY_TO_ARMATURE = "ani3dhuman_body_to_armature"  # 9 floats, row-major K
PROP_BETAS = "ani3dhuman_betas"


class RigError(ValueError):
    """The armature cannot be exported (unsupported naming, missing bones, mirrored transform)."""


@dataclass(frozen=True)
class RigBinding:
    """How an armature's bones map onto SMPL-X joints.

    Attributes:
        kind: "ani3dhuman" (the add-on's rig), "smplx" or "smpl_fbx".
        bone_names: Bone name per joint of ``ALL_JOINTS`` (hand entries only when ``has_hands``).
        has_hands: All 30 finger joints are present, so the motion carries ``pose_hand``.
        body_to_armature: K, the rotation from the body rest frame into armature space. [3, 3]
        betas: Shape coefficients to send with the motion. [S]
    """

    kind: str
    bone_names: tuple[str, ...]
    has_hands: bool
    body_to_armature: np.ndarray
    betas: np.ndarray

    @property
    def num_joints(self) -> int:
        return len(self.bone_names)


def _naming_candidates(bone_names: set[str]) -> list[tuple[str, list[str], list[str]]]:
    """(kind, body bone names, hand bone names) for every naming scheme the rig could use."""
    out = [("smplx", list(BODY_JOINTS), list(HAND_JOINTS))]
    prefixes = {name[: -len("Pelvis")] for name in bone_names if name.endswith("Pelvis")} or {"m_avg_"}
    for prefix in sorted(prefixes):
        out.append(("smpl_fbx", [prefix + s for s in SMPL_FBX_BODY], []))
    return out


def estimate_body_to_armature(rest_heads: dict[str, np.ndarray]) -> np.ndarray:
    """Estimate K (body rest frame -> armature space) from rest joint positions, snapped to the axes.

    Args:
        rest_heads: Armature-space rest positions by SMPL-X joint name (needs pelvis, left/right hip, neck).

    Returns:
        An axis-aligned rotation. [3, 3]
    """
    left = rest_heads["left_hip"] - rest_heads["right_hip"]
    up = rest_heads["neck"] - rest_heads["pelvis"]
    if np.linalg.norm(left) < 1e-8 or np.linalg.norm(up) < 1e-8:
        raise RigError("rest pose is degenerate: hips or pelvis/neck coincide")
    left = left / np.linalg.norm(left)
    up = up - left * np.dot(up, left)
    up = up / np.linalg.norm(up)
    front = np.cross(left, up)
    return convert.nearest_axis_rotation(np.stack([left, up, front], axis=1))


def bind_rig(armature_obj) -> RigBinding:
    """Map ``armature_obj``'s bones onto SMPL-X joints.

    Raises:
        RigError: not an armature, or the best-matching naming scheme misses bones (listed in the message).
    """
    if armature_obj is None or getattr(armature_obj, "type", None) != "ARMATURE":
        raise RigError("no armature selected: pick the body's armature in the Subject panel")
    bones = armature_obj.data.bones
    names = {b.name for b in bones}
    best = None
    for kind, body, hands in _naming_candidates(names):
        missing = [n for n in body if n not in names]
        if best is None or len(missing) < len(best[3]):
            best = (kind, body, hands, missing)
    kind, body, hands, missing = best
    if missing:
        raise RigError(
            f"armature '{armature_obj.name}' is not a supported SMPL/SMPL-X rig: missing bones "
            f"{', '.join(missing)} (expected SMPL-X names like 'pelvis', 'left_hip' or SMPL FBX names like "
            f"'m_avg_Pelvis')")
    has_hands = bool(hands) and all(n in names for n in hands)
    bone_names = tuple(body + (hands if has_hands else []))
    if armature_obj.get(PROP_RIG):
        kind = "ani3dhuman"
        k = np.asarray(armature_obj[PROP_BODY_TO_ARMATURE], dtype=np.float64).reshape(3, 3)
    else:
        heads = {joint: np.asarray(bones[bone].head_local, dtype=np.float64)
                 for joint, bone in zip(BODY_JOINTS, bone_names)}
        k = estimate_body_to_armature(heads)
    return RigBinding(kind=kind, bone_names=bone_names, has_hands=has_hands, body_to_armature=k,
                      betas=_read_betas(armature_obj))


def _read_betas(armature_obj) -> np.ndarray:
    """Betas from the add-on's rig property, else a SMPL-X add-on mesh's ``Shape000..`` keys, else zeros."""
    if PROP_BETAS in armature_obj:
        return np.asarray(armature_obj[PROP_BETAS], dtype=np.float64)
    for child in armature_obj.children:
        keys = getattr(getattr(child.data, "shape_keys", None), "key_blocks", None)
        if keys is None:
            continue
        values = [keys[f"Shape{i:03d}"].value for i in range(300) if f"Shape{i:03d}" in keys]
        if values:
            return np.asarray(values, dtype=np.float64)
    return np.zeros(10)


def motion_from_matrices(world_from_armature: np.ndarray, pose_matrices: np.ndarray, rest_matrices: np.ndarray,
                         body_to_armature: np.ndarray, parents: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The pure core of the export: bone matrices per frame -> SMPL-X parameters in the world.

    Args:
        world_from_armature: The armature object's world matrix per frame. [F, 4, 4]
        pose_matrices: ``pose_bone.matrix`` per frame and joint (armature space). [F, J, 4, 4]
        rest_matrices: ``bone.matrix_local`` per joint (armature space). [J, 4, 4]
        body_to_armature: K, rotation from the body rest frame into armature space. [3, 3]
        parents: SMPL-X parent index per joint (-1 for the pelvis, which must be joint 0). [J]

    Returns:
        ``root_orient [F, 3]``, ``pose_local [F, J-1, 3]`` (axis-angle, joint order), ``trans [F, 3]``,
        ``pelvis_rest [3]`` (body frame), ``scale [F]`` (the world scale of the pelvis transform) and
        ``world_rotations [F, J, 3, 3]``.
    """
    m = np.asarray(world_from_armature, dtype=np.float64)
    p = np.asarray(pose_matrices, dtype=np.float64)
    b = np.asarray(rest_matrices, dtype=np.float64)
    k = np.asarray(body_to_armature, dtype=np.float64)
    f, j = p.shape[:2]
    if m.shape != (f, 4, 4) or b.shape != (j, 4, 4) or k.shape != (3, 3) or len(parents) != j:
        raise ValueError(f"shape mismatch: world {m.shape}, pose {p.shape}, rest {b.shape}, K {k.shape}, "
                         f"parents {len(parents)}")
    skin = p @ np.linalg.inv(b)[None]  # rest -> posed, armature space  [F, J, 4, 4]
    world = m[:, None] @ skin  # rest (armature space) -> posed world
    rot, sv = convert.polar_rotation(world[..., :3, :3] @ k)
    local = np.empty((f, j - 1, 3, 3))
    for idx in range(1, j):
        local[:, idx - 1] = np.swapaxes(rot[:, parents[idx]], -1, -2) @ rot[:, idx]
    # Rest pelvis in the body frame, at the armature's world scale at the first frame.
    pelvis_rest_arm = b[0, :3, 3]
    rest_scale = float(np.cbrt(abs(np.linalg.det(m[0, :3, :3]))))
    pelvis_rest_body = k.T @ pelvis_rest_arm * rest_scale
    pelvis_posed = (world[:, 0] @ np.append(pelvis_rest_arm, 1.0))[:, :3]
    return {
        "root_orient": convert.matrix_to_axis_angle(rot[:, 0]),
        "pose_local": convert.matrix_to_axis_angle(local),
        "trans": pelvis_posed - pelvis_rest_body,
        "pelvis_rest": pelvis_rest_body,
        "scale": sv[:, 0].mean(axis=-1),
        "world_rotations": rot,
    }


def sample_rig(scene, armature_obj, binding: RigBinding, frames: list[int]):
    """Evaluate the rig at ``frames`` (restores the current frame afterwards).

    Returns:
        (world_from_armature [F, 4, 4], pose_matrices [F, J, 4, 4], rest_matrices [J, 4, 4])
    """
    import bpy  # noqa: F401  (only this function needs Blender)

    rest = np.stack([np.asarray(armature_obj.data.bones[n].matrix_local, dtype=np.float64)
                     for n in binding.bone_names])
    world = np.empty((len(frames), 4, 4))
    pose = np.empty((len(frames), binding.num_joints, 4, 4))
    current = (scene.frame_current, scene.frame_subframe)
    try:
        for i, frame in enumerate(frames):
            scene.frame_set(frame)
            depsgraph = bpy.context.evaluated_depsgraph_get()
            evaluated = armature_obj.evaluated_get(depsgraph)
            world[i] = np.asarray(evaluated.matrix_world, dtype=np.float64)
            bones = evaluated.pose.bones
            pose[i] = np.stack([np.asarray(bones[n].matrix, dtype=np.float64) for n in binding.bone_names])
    finally:
        scene.frame_set(current[0], subframe=current[1])
    return world, pose, rest


def export_motion(scene, armature_obj, frame_start: int, frame_end: int,
                  binding: RigBinding | None = None) -> dict[str, np.ndarray]:
    """Export the armature's pose over ``[frame_start, frame_end]`` as a motion (docs/design.md §3).

    Args:
        scene: The scene whose frames are sampled.
        armature_obj: A supported armature object.
        frame_start: First frame (inclusive).
        frame_end: Last frame (inclusive).
        binding: A precomputed binding (else ``bind_rig``).

    Returns:
        ``root_orient [F, 3]``, ``pose_body [F, 63]``, optional ``pose_hand [F, 90]``, ``trans [F, 3]``,
        ``betas [S]``, ``mocap_frame_rate`` (0-d), all float64 numpy arrays.

    Raises:
        RigError: unsupported rig, bad frame range, or a mirrored transform.
    """
    if frame_end < frame_start:
        raise RigError(f"frame range is empty: start {frame_start} > end {frame_end}")
    binding = binding or bind_rig(armature_obj)
    frames = list(range(int(frame_start), int(frame_end) + 1))
    world, pose, rest = sample_rig(scene, armature_obj, binding, frames)
    try:
        core = motion_from_matrices(world, pose, rest, binding.body_to_armature,
                                    ALL_PARENTS[: binding.num_joints])
    except ValueError as exc:
        raise RigError(f"armature '{armature_obj.name}': {exc}") from exc
    if np.any(np.abs(core["scale"] - 1.0) > 0.01):
        log.warning("armature '%s' is scaled (world scale %.3f..%.3f); SMPL-X bodies are real size, so the "
                    "backend body will not match the rig's size", armature_obj.name, core["scale"].min(),
                    core["scale"].max())
    local = core["pose_local"]
    motion = {
        "root_orient": core["root_orient"],
        "pose_body": local[:, :21].reshape(len(frames), 63),
        "trans": core["trans"],
        "betas": binding.betas.astype(np.float64),
        "mocap_frame_rate": np.asarray(scene.render.fps / scene.render.fps_base, dtype=np.float64),
    }
    if binding.has_hands:
        motion["pose_hand"] = local[:, 21:51].reshape(len(frames), 90)
    return motion


def pelvis_rest_body(armature_obj, binding: RigBinding) -> np.ndarray:
    """The rig's rest pelvis in the body frame (what ``trans`` is measured from). [3]"""
    head = np.asarray(armature_obj.data.bones[binding.bone_names[0]].head_local, dtype=np.float64)
    return binding.body_to_armature.T @ head


def bone_name_for(binding: RigBinding, joint: str) -> str:
    """The rig's bone name for an SMPL-X joint name."""
    return binding.bone_names[ALL_JOINTS.index(joint)]



def motion_world_transforms(motion: dict, rest_joints_body: np.ndarray, num_joints: int) -> np.ndarray:
    """SMPL-X forward kinematics in numpy: the rest(body frame) -> posed(world) transform of each joint.

    Args:
        motion: ``root_orient [F,3]``, ``pose_body [F,63]``, optional ``pose_hand [F,90]``, ``trans [F,3]``.
        rest_joints_body: Rest joints in the body frame, ``ALL_JOINTS`` order. [J, 3]
        num_joints: 22 (body) or 52 (with hands).

    Returns:
        Affine transforms ``A_j`` with ``x_world = A_j x_body``. [F, J, 4, 4]
    """
    root = np.asarray(motion["root_orient"], dtype=np.float64)
    frames = len(root)
    pose = [root[:, None], np.asarray(motion["pose_body"], dtype=np.float64).reshape(frames, 21, 3)]
    if num_joints > 22:
        hand = motion.get("pose_hand")
        hand = np.zeros((frames, 90)) if hand is None else np.asarray(hand, dtype=np.float64)
        pose.append(hand.reshape(frames, 30, 3))
    rot = convert.axis_angle_to_matrix(np.concatenate(pose, axis=1))
    joints = np.asarray(rest_joints_body, dtype=np.float64)
    glob = np.zeros((frames, num_joints, 4, 4))
    for j in range(num_joints):
        local = np.zeros((frames, 4, 4))
        local[:, :3, :3] = rot[:, j]
        local[:, 3, 3] = 1.0
        parent = ALL_PARENTS[j]
        local[:, :3, 3] = joints[j] - (joints[parent] if parent >= 0 else 0.0)
        glob[:, j] = glob[:, parent] @ local if parent >= 0 else local
    skin = glob.copy()
    skin[..., :3, 3] -= np.einsum("fjab,jb->fja", glob[..., :3, :3], joints)
    skin[..., :3, 3] += np.asarray(motion["trans"], dtype=np.float64)[:, None]
    return skin


def apply_motion(scene, armature_obj, motion: dict, frame_start: int, binding: RigBinding | None = None) -> int:
    """Key a motion onto a supported rig (the inverse of ``export_motion``): quaternion rotations on every
    mapped bone and the pelvis location, one key per frame from ``frame_start``.

    The rig's rest pose must be the body's zero pose (true for Add Body and SMPL-X rigs). The armature object's
    current world matrix is kept (it is not keyed).

    Returns:
        The number of frames keyed.
    """
    binding = binding or bind_rig(armature_obj)
    frames = len(np.asarray(motion["root_orient"]))
    bones = armature_obj.data.bones
    k = binding.body_to_armature
    world = np.asarray(armature_obj.matrix_world, dtype=np.float64)
    scale = float(np.cbrt(abs(np.linalg.det(world[:3, :3]))))
    rest_body = np.stack([k.T @ np.asarray(bones[n].head_local, dtype=np.float64) * scale
                          for n in binding.bone_names])
    a = motion_world_transforms(motion, rest_body, binding.num_joints)  # body -> world
    body_from_arm = np.eye(4)
    body_from_arm[:3, :3] = k.T * scale
    # Armature-space skinning transform S_j = M^-1 A_j (K s) per mapped bone.  [F, J, 4, 4]
    s_mapped = np.linalg.inv(world)[None, None] @ a @ body_from_arm[None, None]
    joint_of = {name: j for j, name in enumerate(binding.bone_names)}
    s_all: dict[str, np.ndarray] = {}
    for bone in bones:  # parents come before children
        if bone.name in joint_of:
            s_all[bone.name] = s_mapped[:, joint_of[bone.name]]
        elif bone.parent is not None:
            s_all[bone.name] = s_all[bone.parent.name]  # unmapped bones keep their rest pose
        else:
            s_all[bone.name] = np.broadcast_to(np.eye(4), (frames, 4, 4))
    for name in binding.bone_names:
        bone = bones[name]
        rest = np.asarray(bone.matrix_local, dtype=np.float64)
        parent_s = s_all[bone.parent.name] if bone.parent is not None else np.broadcast_to(np.eye(4), (frames, 4, 4))
        basis = np.linalg.inv(rest)[None] @ np.linalg.inv(parent_s) @ s_all[name] @ rest[None]
        quats = convert.matrix_to_quaternion(basis[:, :3, :3])
        pose_bone = armature_obj.pose.bones[name]
        pose_bone.rotation_mode = "QUATERNION"
        for i in range(frames):
            pose_bone.rotation_quaternion = quats[i]
            pose_bone.keyframe_insert("rotation_quaternion", frame=frame_start + i)
            if name == binding.bone_names[0] or np.abs(basis[i, :3, 3]).max() > 1e-6:
                pose_bone.location = basis[i, :3, 3]
                pose_bone.keyframe_insert("location", frame=frame_start + i)
    return frames
