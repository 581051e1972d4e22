"""'Add Body': build an armature + skinned mesh from the backend's body model arrays.

The arrays arrive over the wire (``client.body_model``): rest vertices and joints in the body's Y-up rest
frame, faces, dense skin weights, parents and joint names. The rig is built in Blender's Z-up world (object
transforms identity, armature space = world), bones named with SMPL-X joint names so ``rig_export`` binds it
like an SMPL-X rig; the exact body-to-armature rotation and the betas are stored on the armature.
"""

from __future__ import annotations

import logging
import re

import numpy as np

from . import convert, rig_export

log = logging.getLogger(__name__)

MIN_BONE = 0.01  # metres; zero-length joints get a short bone along their parent's direction


class BodyError(ValueError):
    """The body model arrays are inconsistent (names the field, expected and actual)."""


def smplx_joint_name(name: str) -> str:
    """SMPL-style joint names (``L_Hip``, ``Spine1``, ``m_avg_L_Hip``) -> SMPL-X names (``left_hip``)."""
    name = re.sub(r"^[mf]_avg_", "", str(name))
    name = re.sub(r"^L_", "left_", name)
    name = re.sub(r"^R_", "right_", name)
    return name.lower()


def validate_body_arrays(arrays: dict, fields: dict) -> dict:
    """Check shapes and types of a ``body_model`` reply; returns clean float64/int arrays.

    Args:
        arrays: ``rest_vertices [V,3]``, ``faces [T,3]``, ``rest_joints [J,3]``, ``skin_weights [V,J]``.
        fields: ``parents [J]``, ``joint_names [J]``, ``up`` ("Y" or "Z").

    Raises:
        BodyError: naming the field.
    """
    out = {}
    for name, width in (("rest_vertices", 3), ("faces", 3), ("rest_joints", 3)):
        value = arrays.get(name)
        if value is None:
            raise BodyError(f"body model: array '{name}' missing")
        value = np.asarray(value)
        if value.ndim != 2 or value.shape[1] != width or len(value) == 0:
            raise BodyError(f"body model: '{name}' expected shape [N, {width}], got {list(value.shape)}")
        out[name] = value
    num_v, num_j = len(out["rest_vertices"]), len(out["rest_joints"])
    weights = np.asarray(arrays.get("skin_weights", np.zeros((0, 0))))
    if weights.shape != (num_v, num_j):
        raise BodyError(f"body model: 'skin_weights' expected shape [{num_v}, {num_j}], got {list(weights.shape)}")
    faces = out["faces"].astype(np.int64)
    if faces.min() < 0 or faces.max() >= num_v:
        raise BodyError(f"body model: 'faces' index out of range [0, {num_v})")
    parents = [int(p) for p in fields.get("parents", [])]
    names = [str(n) for n in fields.get("joint_names", [])]
    if len(parents) != num_j or len(names) != num_j:
        raise BodyError(f"body model: expected {num_j} parents and joint names, got {len(parents)} and {len(names)}")
    if parents[0] != -1 or any(not (0 <= p < j) for j, p in enumerate(parents) if j > 0):
        raise BodyError("body model: 'parents' must list each joint after its parent, root first (-1)")
    up = str(fields.get("up", "Y")).upper()
    if up not in ("Y", "Z"):
        raise BodyError(f"body model: 'up' expected 'Y' or 'Z', got {up!r}")
    return {"rest_vertices": out["rest_vertices"].astype(np.float64), "faces": faces,
            "rest_joints": out["rest_joints"].astype(np.float64), "skin_weights": weights.astype(np.float64),
            "parents": parents, "joint_names": [smplx_joint_name(n) for n in names], "up": up}


def _tails(heads: np.ndarray, parents: list[int], names: list[str]) -> np.ndarray:
    """Bone tails: towards the main child, else continuing the parent's direction."""
    children: dict[int, list[int]] = {}
    for j, p in enumerate(parents):
        if p >= 0:
            children.setdefault(p, []).append(j)
    tails = np.empty_like(heads)
    up = np.array([0.0, 0.0, 1.0])
    for j in range(len(heads)):
        kids = [c for c in children.get(j, []) if np.linalg.norm(heads[c] - heads[j]) > MIN_BONE]
        main = [c for c in kids if re.match(r"(spine|neck|head)", names[c])]
        target = None
        if main:
            target = heads[main[0]]
        elif len(kids) == 1:
            target = heads[kids[0]]
        elif kids:
            target = heads[kids].mean(axis=0)
        if target is not None and np.linalg.norm(target - heads[j]) > MIN_BONE:
            tails[j] = target
            continue
        p = parents[j]
        direction = heads[j] - heads[p] if p >= 0 else up
        length = np.linalg.norm(direction)
        if length < 1e-6:  # zero-length joint: reuse the parent's bone direction
            direction = tails[p] - heads[p] if p >= 0 else up
            length = np.linalg.norm(direction)
        tails[j] = heads[j] + direction / length * max(0.5 * length, MIN_BONE) if length > 0 else heads[j] + up * 0.05
    return tails


def build_body_rig(context, arrays: dict, fields: dict, name: str = "Ani3DHuman Body",
                   betas: np.ndarray | None = None, body_name: str = "default"):
    """Create the armature and its skinned mesh in ``context.scene``.

    Args:
        context: Blender context.
        arrays: ``rest_vertices``, ``faces``, ``rest_joints``, ``skin_weights`` (body rest frame, metres).
        fields: ``parents``, ``joint_names``, ``up``.
        name: Armature name (the mesh gets `` Mesh`` appended).
        betas: Shape coefficients the arrays were made with (stored on the rig for export). [S]
        body_name: Backend body model name (stored on the rig).

    Returns:
        (armature object, mesh object).

    Raises:
        BodyError: inconsistent arrays (nothing is created then).
    """
    import bpy

    body = validate_body_arrays(arrays, fields)
    k = convert.Y_UP_TO_Z_UP if body["up"] == "Y" else np.eye(3)
    heads = body["rest_joints"] @ k.T
    verts = body["rest_vertices"] @ k.T
    names, parents = body["joint_names"], body["parents"]
    if len(set(names)) != len(names):
        raise BodyError("body model: joint names are not unique")
    tails = _tails(heads, parents, names)

    created = []
    try:
        arm_data = bpy.data.armatures.new(name)
        created.append(arm_data)
        arm = bpy.data.objects.new(name, arm_data)
        created.append(arm)
        context.scene.collection.objects.link(arm)
        view_layer = context.view_layer
        previous_active = view_layer.objects.active
        view_layer.objects.active = arm
        bpy.ops.object.mode_set(mode="EDIT")
        try:
            edit = arm_data.edit_bones
            for j, joint in enumerate(names):
                bone = edit.new(joint)
                bone.head = heads[j]
                bone.tail = tails[j]
            for j, joint in enumerate(names):
                if parents[j] >= 0:
                    edit[joint].parent = edit[names[parents[j]]]
        finally:
            bpy.ops.object.mode_set(mode="OBJECT")
        view_layer.objects.active = previous_active if previous_active is not None else arm
        arm_data.display_type = "STICK"
        arm.show_in_front = True
        for pose_bone in arm.pose.bones:
            pose_bone.rotation_mode = "QUATERNION"
        arm[rig_export.PROP_RIG] = 1
        arm[rig_export.PROP_BODY_TO_ARMATURE] = [float(x) for x in k.reshape(-1)]
        arm[rig_export.PROP_BETAS] = [float(b) for b in (np.zeros(10) if betas is None else np.asarray(betas))]
        arm["ani3dhuman_body"] = str(body_name)

        mesh = bpy.data.meshes.new(name + " Mesh")
        created.append(mesh)
        faces = body["faces"]
        mesh.vertices.add(len(verts))
        mesh.vertices.foreach_set("co", verts.astype(np.float32).ravel())
        mesh.loops.add(faces.size)
        mesh.loops.foreach_set("vertex_index", faces.astype(np.int32).ravel())
        mesh.polygons.add(len(faces))
        mesh.polygons.foreach_set("loop_start", (np.arange(len(faces)) * 3).astype(np.int32))
        mesh.update(calc_edges=True)
        mesh.validate()
        mesh.polygons.foreach_set("use_smooth", np.ones(len(faces), bool))
        obj = bpy.data.objects.new(name + " Mesh", mesh)
        created.append(obj)
        context.scene.collection.objects.link(obj)
        weights = body["skin_weights"]
        for j, joint in enumerate(names):
            idx = np.nonzero(weights[:, j] > 0)[0]
            if len(idx) == 0:
                continue
            group = obj.vertex_groups.new(name=joint)
            for v, w in zip(idx.tolist(), weights[idx, j].tolist()):
                group.add((v,), w, "REPLACE")
        obj.parent = arm
        modifier = obj.modifiers.new("Armature", "ARMATURE")
        modifier.object = arm
    except Exception:
        for block in reversed(created):
            try:
                collection = {"ARMATURE": bpy.data.armatures, "MESH": bpy.data.meshes}.get(
                    getattr(block, "id_type", ""), None)
                if isinstance(block, bpy.types.Object):
                    bpy.data.objects.remove(block)
                elif collection is not None:
                    collection.remove(block)
            except ReferenceError:
                pass
        raise
    return arm, obj
