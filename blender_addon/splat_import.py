"""Import a job result folder as one point cloud whose points follow the timeline.

The object keeps only a reference to the job folder (custom properties); a ``frame_change_pre`` handler
loads ``frames/frame_%06d.ply`` for the current frame from disk (numpy, a small cache) and writes it into the
point cloud's attributes, so scrubbing shows frame k exactly and a saved .blend reopens animated (the handler
is persistent and refreshes everything on ``load_post``).

In Blender 5.3 and later the object is a native Gaussian-splat point cloud (``PointCloud.type ==
'GAUSSIAN_SPLAT'``) whose attributes equal what Blender's own PLY importer makes of the same frame, so Solid,
Material Preview, Rendered and F12 all draw the Gaussians. Blender 4.5-5.2 have no splats: the object is a
plain point cloud with an emission material (``ply_io.points_attributes``). Each object records its layout in
``ani3dhuman_layout``: ``splats``, ``points``, or one of the bake proxies' (``alembic_points``: positions and
velocities; ``alembic_splats``: the complete splat cache of ``bake.ALEMBIC_SPLAT_ATTRIBUTES``; ``usd_splats``:
the splat attributes with ``radiance:base`` as a colour, which USD keeps).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .ply_io import (
    SH_C0,
    ResultError,
    attribute_type,
    foreach_key,
    points_attributes,
    read_ply_vertices,
    splat_attributes,
)

log = logging.getLogger(__name__)

PROP_JOB = "ani3dhuman_job"
PROP_FRAME_START = "ani3dhuman_frame_start"
PROP_NUM_FRAMES = "ani3dhuman_num_frames"
PROP_FPS = "ani3dhuman_fps"
PASS_THROUGH_GROUP = "Ani3DHuman Pass-through"
MATERIAL_NAME = "Ani3DHuman Splat Colour"
PROP_LAYOUT = "ani3dhuman_layout"
FRAME_PATTERN = re.compile(r"^frame_(\d{6})\.ply$")
LAYOUTS = ("splats", "points", "alembic_points", "alembic_splats", "usd_splats")


def native_splats() -> bool:
    """True in Blender 5.3+, which draws Gaussian splats natively."""
    import bpy

    return bpy.app.version >= (5, 3, 0)


def alembic_splat_attributes(splats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A frame's splat attributes renamed and split into the types Alembic keeps (FLOAT, FLOAT_VECTOR), with the
    names Houdini and other Alembic readers expect: ``Cd`` (base colour, display RGB), ``Alpha`` (opacity),
    ``scale`` (linear), ``orient_xyz`` + ``orient_w`` (the unit quaternion; Houdini's ``orient`` is x, y, z, w),
    ``sh_<k>`` (higher SH coefficients), and the labels as they are."""
    base = splats["radiance:base"]
    quats = splats["rotation"]
    out = {"position": splats["position"], "Cd": 0.5 + np.float32(SH_C0) * base[:, :3], "Alpha": base[:, 3],
           "scale": splats["scale"], "orient_xyz": quats[:, 1:], "orient_w": quats[:, 0]}
    for name, values in splats.items():
        if name.startswith("radiance:sh_"):
            out["sh_" + name.split("_")[-1]] = values
        elif name not in ("position", "radiance:base", "rotation", "scale"):
            out[name] = values
    return {key: np.ascontiguousarray(value, dtype=np.float32) for key, value in out.items()}

class FrameCache:
    """Small LRU of decoded frames, keyed by (path, mtime, size) so a rewritten file is re-read."""

    def __init__(self, capacity: int = 8):
        self.capacity = capacity
        self._items: OrderedDict[tuple, dict[str, np.ndarray]] = OrderedDict()

    def get(self, path: Path, native: bool = True) -> dict[str, np.ndarray]:
        """The frame's attributes: Blender 5.3's splat layout (``native``) or the plain point layout."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise ResultError(f"result frame not found: {path}") from None
        key = (str(path), stat.st_mtime_ns, stat.st_size, native)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = (splat_attributes if native else points_attributes)(read_ply_vertices(path), str(path))
        self._items[key] = value
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()


CACHE = FrameCache()


def list_frames(job_dir: str | os.PathLike) -> list[Path]:
    """The frame files of a job folder, in order; checks they are numbered 0..F-1 without gaps."""
    job_dir = Path(job_dir)
    frames_dir = job_dir / "frames"
    if not frames_dir.is_dir():
        raise ResultError(f"{job_dir}: not a result folder (no frames/ directory)")
    found = sorted((int(m.group(1)), p) for p in frames_dir.iterdir() if (m := FRAME_PATTERN.match(p.name)))
    if not found:
        raise ResultError(f"{frames_dir}: no frame_XXXXXX.ply files")
    indices = [i for i, _ in found]
    if indices != list(range(len(found))):
        raise ResultError(f"{frames_dir}: frame files are not numbered 0..{len(found) - 1} without gaps")
    return [p for _, p in found]


def frame_path(job_dir: str | os.PathLike, index: int) -> Path:
    return Path(job_dir) / "frames" / f"frame_{index:06d}.ply"


def frame_index(scene_frame: int, frame_start: int, num_frames: int) -> int:
    """The result frame shown at ``scene_frame`` (held at the ends)."""
    return int(min(max(scene_frame - frame_start, 0), num_frames - 1))


def _pass_through_group():
    import bpy

    group = bpy.data.node_groups.get(PASS_THROUGH_GROUP)
    if group is None:
        group = bpy.data.node_groups.new(PASS_THROUGH_GROUP, "GeometryNodeTree")
        group.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
        group.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
        node_in = group.nodes.new("NodeGroupInput")
        node_out = group.nodes.new("NodeGroupOutput")
        node_out.location = (300, 0)
        group.links.new(node_in.outputs[0], node_out.inputs[0])
    return group


def add_pass_through_modifier(obj):
    """A Geometry Nodes modifier that changes nothing: exporters then treat the geometry as animated."""
    modifier = obj.modifiers.new("Ani3DHuman Frames", "NODES")
    modifier.node_group = _pass_through_group()
    return modifier


def _colour_material():
    import bpy

    material = bpy.data.materials.get(MATERIAL_NAME)
    if material is None:
        material = bpy.data.materials.new(MATERIAL_NAME)
        if material.node_tree is None:  # Blender < 5.0 creates materials without nodes
            material.use_nodes = True
        nodes, links = material.node_tree.nodes, material.node_tree.links
        nodes.clear()
        attr = nodes.new("ShaderNodeAttribute")
        attr.attribute_type = "GEOMETRY"
        attr.attribute_name = "radiance:base"
        # 3DGS colours are display (sRGB) values; shaders work in linear light. Gamma 2.2 ~ the sRGB curve.
        gamma = nodes.new("ShaderNodeGamma")
        gamma.inputs["Gamma"].default_value = 2.2
        emission = nodes.new("ShaderNodeEmission")
        output = nodes.new("ShaderNodeOutputMaterial")
        links.new(attr.outputs["Color"], gamma.inputs["Color"])
        links.new(gamma.outputs["Color"], emission.inputs["Color"])
        links.new(emission.outputs["Emission"], output.inputs["Surface"])
        material.diffuse_color = (0.8, 0.7, 0.6, 1.0)
    return material


def write_attributes(data, attributes: dict[str, np.ndarray], native: bool = False) -> None:
    """Write per-point attributes into point-cloud (or mesh vertex) data, creating missing ones (``native``:
    Blender 5.3's splat types, ``radiance:base`` as FLOAT4)."""
    count = len(attributes["position"])
    for name, values in attributes.items():
        if name == "position":
            if hasattr(data, "points"):
                data.attributes["position"].data.foreach_set("vector", values.ravel())
            else:
                data.vertices.foreach_set("co", values.ravel())
            continue
        data_type = attribute_type(name, values, native)
        attr = data.attributes.get(name)
        if attr is None or attr.data_type != data_type:
            if attr is not None:
                data.attributes.remove(attr)
            attr = data.attributes.new(name, data_type, "POINT")
        if len(attr.data) != count:
            raise ResultError(f"attribute '{name}' has {len(attr.data)} points, frame has {count}")
        attr.data.foreach_set(foreach_key(data_type), values.ravel())
    data.update_tag()


def import_result(context, job_dir: str | os.PathLike, frame_start: int, name: str | None = None,
                  collection=None):
    """Create one point-cloud object showing the job's frames from ``frame_start`` on.

    Everything is validated (folder, frame numbering, first frame readable) before anything is created.

    Args:
        context: Blender context (scene, view layer).
        job_dir: The job output folder (``frames/frame_%06d.ply``).
        frame_start: Scene frame that shows result frame 0.
        name: Object name (default: the folder name).
        collection: Where to link it (default: the scene collection).

    Returns:
        The new object.

    Raises:
        ResultError: the folder is not a readable result.
    """
    import bpy

    job_dir = Path(job_dir).resolve()
    frames = list_frames(job_dir)
    native = native_splats()
    first = CACHE.get(frames[0], native)
    count = len(first["position"])
    fps = _result_fps(job_dir)
    name = name or f"Ani3DHuman {job_dir.name}"

    created = []  # data blocks to remove if anything fails, newest first
    try:
        if native:
            cloud = bpy.data.pointclouds.new(name)
            created.append(cloud)
            cloud.resize(count)
            cloud.type = "GAUSSIAN_SPLAT"
            obj = bpy.data.objects.new(name, cloud)
            created.insert(0, obj)
            (collection or context.scene.collection).objects.link(obj)
        else:
            mesh = bpy.data.meshes.new(name)
            created.append(mesh)
            mesh.vertices.add(count)
            mesh.vertices.foreach_set("co", first["position"].ravel())
            obj = bpy.data.objects.new(name, mesh)
            created.insert(0, obj)
            (collection or context.scene.collection).objects.link(obj)
            _convert_to_pointcloud(context, obj)
            created.insert(1, obj.data)
            obj.data.materials.append(_colour_material())
        write_attributes(obj.data, first, native)
        if not native and hasattr(obj.data, "color_attributes"):  # viewers colour by the active colour attribute
            obj.data.color_attributes.active = obj.data.attributes["radiance:base"]
        add_pass_through_modifier(obj)
        obj[PROP_JOB] = str(job_dir)
        obj[PROP_FRAME_START] = int(frame_start)
        obj[PROP_NUM_FRAMES] = len(frames)
        obj[PROP_LAYOUT] = "splats" if native else "points"
        if fps:
            obj[PROP_FPS] = float(fps)
    except Exception:
        remove_data_blocks(created)
        raise
    _LOADED.pop(obj.as_pointer(), None)
    update_object(obj, context.scene.frame_current)
    return obj


def remove_data_blocks(blocks) -> None:
    """Remove data blocks created by a failed step, objects first; a failure here is logged, never raised over
    the error that started the clean-up."""
    import bpy

    collections = {"OBJECT": bpy.data.objects, "MESH": bpy.data.meshes, "POINTCLOUD": bpy.data.pointclouds}
    for block in blocks:
        try:
            kind = block.id_type
            if block.users == 0 or kind == "OBJECT":
                collections[kind].remove(block)
        except ReferenceError:  # already removed together with another block
            continue
        except Exception as exc:  # noqa: BLE001 — the original error matters more
            log.warning("Ani3DHuman: could not clean up %r: %s", block, exc)


def _result_fps(job_dir: Path) -> float | None:
    import json

    try:
        fps = json.loads((job_dir / "result.json").read_text()).get("fps")
        return float(fps) if fps else None
    except (OSError, ValueError, AttributeError):
        return None


def _convert_to_pointcloud(context, obj) -> None:
    import bpy

    view_layer = context.view_layer
    previous_active = view_layer.objects.active
    previous_selected = [o for o in view_layer.objects if o.select_get()]
    for other in previous_selected:
        other.select_set(False)
    obj.select_set(True)
    view_layer.objects.active = obj
    try:
        with context.temp_override(active_object=obj, selected_objects=[obj], selected_editable_objects=[obj],
                                   object=obj):
            bpy.ops.object.convert(target="POINTCLOUD")
    finally:
        obj.select_set(False)
        for other in previous_selected:
            if other.name in view_layer.objects:
                other.select_set(True)
        view_layer.objects.active = previous_active if previous_active is not None else obj
    if obj.type != "POINTCLOUD":
        raise ResultError(f"could not convert '{obj.name}' to a point cloud (got {obj.type})")


# Which result frame each object currently holds: id pointer -> (job folder, index).
_LOADED: dict[int, tuple[str, int]] = {}


def update_object(obj, scene_frame: int) -> int:
    """Load the result frame for ``scene_frame`` into ``obj`` (no-op if it already holds it).

    Returns:
        The result frame index shown.
    """
    job = obj.get(PROP_JOB)
    num = int(obj.get(PROP_NUM_FRAMES, 0))
    if not job or num <= 0:
        raise ResultError(f"object '{obj.name}' has no Ani3DHuman result attached")
    index = frame_index(scene_frame, int(obj.get(PROP_FRAME_START, 0)), num)
    key = (str(job), index)
    if _LOADED.get(obj.as_pointer()) == key:
        return index
    layout = object_layout(obj)
    native = layout in ("splats", "alembic_splats", "usd_splats")
    attributes = CACHE.get(frame_path(job, index), native)
    if layout == "alembic_points":
        attributes = {"position": attributes["position"]}
    elif layout == "alembic_splats":
        attributes = alembic_splat_attributes(attributes)
    if obj.get("ani3dhuman_velocity"):
        attributes["velocity"] = _velocity(obj, job, index, attributes["position"], native)
    write_attributes(obj.data, attributes, native and layout == "splats")
    _LOADED[obj.as_pointer()] = key
    return index


def object_layout(obj) -> str:
    """The object's attribute layout (objects from older add-on versions carry none: inferred)."""
    layout = obj.get(PROP_LAYOUT)
    if layout in LAYOUTS:
        return layout
    if obj.type == "MESH":
        return "alembic_points"
    return "splats" if getattr(obj.data, "type", "POINTS") == "GAUSSIAN_SPLAT" else "points"


def _velocity(obj, job, index: int, position: np.ndarray, native: bool) -> np.ndarray:
    """Per-point velocity in m/s: forward difference times the result fps (backward at the last frame)."""
    num = int(obj[PROP_NUM_FRAMES])
    fps = float(obj.get(PROP_FPS, 0.0)) or 24.0
    if num == 1:
        velocity = np.zeros_like(position)
    elif index + 1 < num:
        velocity = (CACHE.get(frame_path(job, index + 1), native)["position"] - position) * fps
    else:
        velocity = (position - CACHE.get(frame_path(job, index - 1), native)["position"]) * fps
    return np.ascontiguousarray(velocity, dtype=np.float32)


def result_objects(scene):
    return [obj for obj in scene.objects if obj.get(PROP_JOB)]


def refresh_scene(scene) -> list[str]:
    """Update every result object in ``scene`` to the current frame; returns error messages (never raises)."""
    errors = []
    for obj in result_objects(scene):
        try:
            update_object(obj, scene.frame_current)
        except (ResultError, OSError, ValueError, RuntimeError) as exc:
            errors.append(f"{obj.name}: {exc}")
    for message in errors:
        log.warning("Ani3DHuman: %s", message)
    return errors


def _on_frame_change(scene, depsgraph=None):
    refresh_scene(scene)


def _on_load_post(*_args):
    """After opening a file or an undo step the data blocks are new: reload every result at its frame."""
    import bpy

    _LOADED.clear()
    CACHE.clear()
    for scene in bpy.data.scenes:
        refresh_scene(scene)


def _on_undo(*_args):
    import bpy

    _LOADED.clear()
    for scene in bpy.data.scenes:
        refresh_scene(scene)


# (handler list name, callback); all persistent so they survive loading files.
_HANDLER_SPECS = (("frame_change_pre", _on_frame_change), ("load_post", _on_load_post),
                  ("undo_post", _on_undo), ("redo_post", _on_undo))
_HANDLERS: tuple | None = None


def register_handlers() -> None:
    import bpy
    from bpy.app.handlers import persistent

    global _HANDLERS
    if _HANDLERS is None:
        _HANDLERS = tuple((name, persistent(fn)) for name, fn in _HANDLER_SPECS)
    for name, fn in _HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if fn not in handlers:
            handlers.append(fn)


@contextlib.contextmanager
def handlers_active():
    """Make sure the frame handler runs inside the block (exporters step frames); restores the previous state."""
    import bpy

    was = _HANDLERS is not None and _HANDLERS[0][1] in bpy.app.handlers.frame_change_pre
    if not was:
        register_handlers()
    try:
        yield
    finally:
        if not was:
            unregister_handlers()


def unregister_handlers() -> None:
    import bpy

    if _HANDLERS is None:
        return
    for name, fn in _HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if fn in handlers:
            handlers.remove(fn)
    _LOADED.clear()
