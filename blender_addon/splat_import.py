"""Import a job result folder as one point cloud whose points follow the timeline.

The object keeps only a reference to the job folder (custom properties); a ``frame_change_pre`` handler
loads ``frames/frame_%06d.ply`` for the current frame from disk (numpy, a small cache) and writes it into the
point cloud's attributes, so scrubbing shows frame k exactly and a saved .blend reopens animated (the handler
is persistent and refreshes everything on ``load_post``).

Attributes (Blender 5.3 Gaussian-splat names where they exist): ``position``, ``rotation`` (quaternion
w, x, y, z, normalised), ``scale`` (linear, per axis), ``opacity`` (0..1), ``radiance:base`` (rgb from the SH DC
term + opacity as alpha), ``radiance:sh_<k>`` (higher SH coefficients, rgb), ``radius`` (viewport size), and
the binding labels ``part_id`` / ``loose`` when the PLY has them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SH_C0 = 0.28209479177387814
PROP_JOB = "ani3dhuman_job"
PROP_FRAME_START = "ani3dhuman_frame_start"
PROP_NUM_FRAMES = "ani3dhuman_num_frames"
PROP_FPS = "ani3dhuman_fps"
PASS_THROUGH_GROUP = "Ani3DHuman Pass-through"
MATERIAL_NAME = "Ani3DHuman Splat Colour"
FRAME_PATTERN = re.compile(r"^frame_(\d{6})\.ply$")
RADIUS_FACTOR = 1.5  # viewport radius = factor * mean Gaussian scale (about 1.5 sigma looks like the splat)
MIN_RADIUS = 1e-4

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3")


class ResultError(ValueError):
    """A result folder or PLY file cannot be imported (names the file and what is wrong)."""


def read_ply_vertices(path: str | os.PathLike) -> np.ndarray:
    """Read the ``vertex`` element of a binary PLY with numpy (no bpy, no plyfile).

    Args:
        path: A binary little/big-endian PLY whose first element is ``vertex`` with scalar properties.

    Returns:
        Structured array with one field per vertex property. [N]

    Raises:
        ResultError: missing file, ASCII PLY, list properties, or a truncated file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            header = b""
            while not header.endswith(b"end_header\n"):
                line = fh.readline()
                if not line:
                    raise ResultError(f"{path}: not a PLY file (no end_header)")
                header += line
                if len(header) > 1 << 16:
                    raise ResultError(f"{path}: PLY header too long")
            offset = len(header)
    except FileNotFoundError:
        raise ResultError(f"result frame not found: {path}") from None
    lines = header.decode("ascii", "replace").splitlines()
    if not lines or lines[0].strip() != "ply":
        raise ResultError(f"{path}: not a PLY file")
    fmt, fields, count, element = None, [], None, None
    for line in lines[1:]:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "element":
            if element == "vertex":
                break  # later elements (faces) are not needed
            element, count = parts[1], int(parts[2])
            if element != "vertex":
                raise ResultError(f"{path}: first PLY element is '{element}', expected 'vertex'")
        elif parts[0] == "property" and element == "vertex":
            if parts[1] == "list":
                raise ResultError(f"{path}: list property '{parts[-1]}' in the vertex element is not supported")
            if parts[1] not in _PLY_TYPES:
                raise ResultError(f"{path}: unknown PLY property type '{parts[1]}'")
            fields.append((parts[2], _PLY_TYPES[parts[1]]))
    if fmt not in ("binary_little_endian", "binary_big_endian"):
        raise ResultError(f"{path}: PLY format '{fmt}' not supported (expected binary)")
    if count is None:
        raise ResultError(f"{path}: PLY has no vertex element")
    endian = "<" if fmt == "binary_little_endian" else ">"
    dtype = np.dtype([(name, endian + code) for name, code in fields])
    data = np.fromfile(path, dtype=dtype, count=count, offset=offset)
    if len(data) != count:
        raise ResultError(f"{path}: truncated PLY ({len(data)} of {count} vertices)")
    return data


def splat_attributes(vertices: np.ndarray, path: str = "PLY") -> dict[str, np.ndarray]:
    """3DGS PLY vertex records -> the point-cloud attributes (float32).

    Args:
        vertices: Structured records from ``read_ply_vertices``. [N]
        path: For error messages.

    Returns:
        ``position [N, 3]``, ``rotation [N, 4]``, ``scale [N, 3]``, ``opacity [N]``, ``radiance:base [N, 4]``,
        ``radiance:sh_<k> [N, 3]``, ``radius [N]``, and ``part_id`` / ``loose`` [N] when present.
    """
    names = vertices.dtype.names or ()
    missing = [n for n in _REQUIRED if n not in names]
    if missing:
        raise ResultError(f"{path}: not a 3DGS PLY, missing vertex properties {missing}")

    dtypes = {vertices.dtype.fields[n][0] for n in names}
    if len(dtypes) == 1 and next(iter(dtypes)).kind == "f":
        # All properties share one float type (the 3DGS layout): one 2-D view, column slices, no copies.
        table = vertices.view(next(iter(dtypes))).reshape(len(vertices), len(names))
        column = {n: i for i, n in enumerate(names)}

        def cols(keys):
            idx = [column[k] for k in keys]
            if idx == list(range(idx[0], idx[0] + len(idx))):
                return table[:, idx[0]: idx[0] + len(idx)].astype(np.float32)
            return table[:, idx].astype(np.float32)
    else:
        def cols(keys):
            return np.stack([np.asarray(vertices[k], dtype=np.float32) for k in keys], axis=1)

    quats = cols(["rot_0", "rot_1", "rot_2", "rot_3"])
    norm = np.linalg.norm(quats, axis=1, keepdims=True)
    bad = norm[:, 0] < 1e-12
    quats = quats / np.where(bad[:, None], 1.0, norm)
    quats[bad] = (1.0, 0.0, 0.0, 0.0)
    scale = np.exp(cols(["scale_0", "scale_1", "scale_2"]))
    opacity = 1.0 / (1.0 + np.exp(-cols(["opacity"])[:, 0]))
    rgb = 0.5 + np.float32(SH_C0) * cols(["f_dc_0", "f_dc_1", "f_dc_2"])
    out = {
        "position": cols(["x", "y", "z"]),
        "rotation": quats,
        "scale": scale,
        "opacity": opacity,
        "radiance:base": np.concatenate([rgb, opacity[:, None]], axis=1),
        "radius": np.maximum(np.float32(RADIUS_FACTOR) * scale.mean(axis=1), np.float32(MIN_RADIUS)),
    }
    rest = sorted((n for n in names if n.startswith("f_rest_")), key=lambda n: int(n[7:]))
    if len(rest) % 3:
        raise ResultError(f"{path}: f_rest_* count {len(rest)} is not a multiple of 3")
    per_channel = len(rest) // 3
    if per_channel:
        coeffs = cols(rest).reshape(len(vertices), 3, per_channel)  # channel-major
        for k in range(per_channel):
            out[f"radiance:sh_{k + 1}"] = coeffs[:, :, k]
    for label in ("part_id", "loose"):
        if label in names:
            out[label] = cols([label])[:, 0]
    return {key: np.ascontiguousarray(value, dtype=np.float32) for key, value in out.items()}


def write_3dgs_ply(path: str | os.PathLike, means: np.ndarray, quats: np.ndarray, log_scales: np.ndarray,
                   opacity_logits: np.ndarray, sh: np.ndarray) -> None:
    """Write the standard 3DGS PLY layout (docs/design.md §3) with numpy, atomically (temporary file + rename).

    Args:
        path: Output file.
        means: [N, 3]; quats: (w, x, y, z) [N, 4]; log_scales: [N, 3]; opacity_logits: [N];
        sh: 3DGS SH coefficients, DC first. [N, K, 3]
    """
    means = np.asarray(means)
    n = len(means)
    sh = np.asarray(sh).reshape(n, -1, 3)
    k = sh.shape[1]
    checks = {"means": (means, (n, 3)), "quats": (np.asarray(quats), (n, 4)),
              "log_scales": (np.asarray(log_scales), (n, 3)), "opacity_logits": (np.asarray(opacity_logits), (n,))}
    for name, (value, shape) in checks.items():
        if value.shape != shape:
            raise ResultError(f"{name}: expected shape {list(shape)}, got {list(value.shape)}")
    rest = np.transpose(sh[:, 1:], (0, 2, 1)).reshape(n, 3 * (k - 1))
    data = np.concatenate([means, np.zeros((n, 3)), sh[:, 0], rest, np.asarray(opacity_logits)[:, None],
                           log_scales, quats], axis=1).astype("<f4")
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * (k - 1))]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(header.encode("ascii"))
            fh.write(np.ascontiguousarray(data).tobytes())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# Attribute name -> (Blender data type, components).
def attribute_spec(name: str) -> tuple[str, int]:
    if name == "rotation":
        return "QUATERNION", 4
    if name == "radiance:base":
        return "FLOAT_COLOR", 4
    if name in ("scale", "velocity") or name.startswith("radiance:sh_"):
        return "FLOAT_VECTOR", 3
    return "FLOAT", 1


def _foreach_key(data_type: str) -> str:
    return {"QUATERNION": "value", "FLOAT_COLOR": "color", "FLOAT_VECTOR": "vector", "FLOAT": "value"}[data_type]


class FrameCache:
    """Small LRU of decoded frames, keyed by (path, mtime, size) so a rewritten file is re-read."""

    def __init__(self, capacity: int = 8):
        self.capacity = capacity
        self._items: OrderedDict[tuple, dict[str, np.ndarray]] = OrderedDict()

    def get(self, path: Path) -> dict[str, np.ndarray]:
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise ResultError(f"result frame not found: {path}") from None
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = splat_attributes(read_ply_vertices(path), str(path))
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


def write_attributes(data, attributes: dict[str, np.ndarray]) -> None:
    """Write per-point attributes into point-cloud (or mesh vertex) data, creating missing ones."""
    count = len(attributes["position"])
    for name, values in attributes.items():
        if name == "position":
            if hasattr(data, "points"):
                data.attributes["position"].data.foreach_set("vector", values.ravel())
            else:
                data.vertices.foreach_set("co", values.ravel())
            continue
        data_type, _ = attribute_spec(name)
        attr = data.attributes.get(name)
        if attr is None or attr.data_type != data_type:
            if attr is not None:
                data.attributes.remove(attr)
            attr = data.attributes.new(name, data_type, "POINT")
        if len(attr.data) != count:
            raise ResultError(f"attribute '{name}' has {len(attr.data)} points, frame has {count}")
        attr.data.foreach_set(_foreach_key(data_type), values.ravel())
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
    first = CACHE.get(frames[0])
    count = len(first["position"])
    fps = _result_fps(job_dir)
    name = name or f"Ani3DHuman {job_dir.name}"

    mesh = bpy.data.meshes.new(name)
    obj = None
    try:
        mesh.vertices.add(count)
        mesh.vertices.foreach_set("co", first["position"].ravel())
        obj = bpy.data.objects.new(name, mesh)
        (collection or context.scene.collection).objects.link(obj)
        _convert_to_pointcloud(context, obj)
        cloud = obj.data
        write_attributes(cloud, first)
        cloud.materials.append(_colour_material())
        if hasattr(cloud, "color_attributes"):  # viewers that colour by the active colour attribute use it
            cloud.color_attributes.active = cloud.attributes["radiance:base"]
        add_pass_through_modifier(obj)
        obj[PROP_JOB] = str(job_dir)
        obj[PROP_FRAME_START] = int(frame_start)
        obj[PROP_NUM_FRAMES] = len(frames)
        if fps:
            obj[PROP_FPS] = float(fps)
    except Exception:
        if obj is not None:
            data = obj.data
            bpy.data.objects.remove(obj)
            if data is not None and data.users == 0:
                (bpy.data.pointclouds if data.id_type == "POINTCLOUD" else bpy.data.meshes).remove(data)
        if mesh.name in bpy.data.meshes and mesh.users == 0:
            bpy.data.meshes.remove(mesh)
        raise
    _LOADED.pop(obj.as_pointer(), None)
    update_object(obj, context.scene.frame_current)
    return obj


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
    attributes = CACHE.get(frame_path(job, index))
    if obj.type == "MESH":
        attributes = _mesh_attributes(obj, job, index, attributes)
    write_attributes(obj.data, attributes)
    _LOADED[obj.as_pointer()] = key
    return index


def _mesh_attributes(obj, job, index, attributes):
    """Mesh bake proxies carry positions and velocities only (what Alembic can store)."""
    out = {"position": attributes["position"]}
    if obj.get("ani3dhuman_velocity"):
        num = int(obj[PROP_NUM_FRAMES])
        fps = float(obj.get(PROP_FPS, 0.0)) or 24.0
        if num == 1:
            velocity = np.zeros_like(attributes["position"])
        elif index + 1 < num:
            velocity = (CACHE.get(frame_path(job, index + 1))["position"] - attributes["position"]) * fps
        else:
            velocity = (attributes["position"] - CACHE.get(frame_path(job, index - 1))["position"]) * fps
        out["velocity"] = np.ascontiguousarray(velocity, dtype=np.float32)
    return out


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
