"""Bake an imported result for other tools: Alembic, PLY sequence (bit-exact copies) and USD (every attribute).

Alembic depends on the Blender version:

- Blender 5.3+ writes point clouds as Alembic points and keeps their FLOAT and FLOAT_VECTOR point attributes
  (FLOAT4, QUATERNION and FLOAT_COLOR are dropped). The bake writes the complete splat cache in those types,
  named as Houdini reads them (``ALEMBIC_SPLAT_ATTRIBUTES``): positions, ``velocity`` (Alembic's
  ``.velocities``, Houdini's ``v``), ``scale``, ``Cd``, ``Alpha``, ``orient_xyz`` + ``orient_w``, ``sh_<k>``.
- Blender 4.5-5.2 export point clouds as an empty and drop custom attributes: the bake writes positions per
  frame and a ``velocity`` per point through a vertex-only mesh.

Either way the bake object is a temporary proxy with a pass-through Geometry Nodes modifier (so the exporter
sees it as animated), fed by the same frame handler as the result, and removed afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from . import splat_import

log = logging.getLogger(__name__)

ALEMBIC_SPLAT_ATTRIBUTES = {
    "velocity": "m/s per point (forward difference x fps); Alembic .velocities, Houdini v",
    "scale": "linear Gaussian scale per axis (metres)",
    "Cd": "base colour, display RGB = 0.5 + SH_C0 * f_dc",
    "Alpha": "opacity in [0, 1]",
    "orient_xyz": "x, y, z of the unit rotation quaternion",
    "orient_w": "w of the unit rotation quaternion (Houdini: orient = set(orient_xyz, orient_w))",
    "sh_<k>": "higher SH coefficient k (rgb), as Blender's radiance:sh_<k>",
    "part_id, loose, ...": "the per-Gaussian labels of the PLY, when present",
}
ALEMBIC_NOTE_SPLATS = "Alembic keeps the complete splat cache (positions, velocity, scale, Cd, Alpha, orient, SH)."
ALEMBIC_NOTE_POINTS = ("Alembic keeps positions and velocities only (Blender before 5.3 drops point attributes); "
                       "PLY sequence and USD keep every attribute.")


def alembic_note() -> str:
    """What an Alembic bake keeps in this Blender."""
    return ALEMBIC_NOTE_SPLATS if splat_import.native_splats() else ALEMBIC_NOTE_POINTS


def usd_attribute_name(name: str) -> str:
    """An attribute's name as this Blender writes it to USD: 5.2+ keep ``:`` in primvar names, older Blender
    writes ``_`` (``radiance:base`` -> ``radiance_base``)."""
    import bpy

    return name if bpy.app.version >= (5, 2, 0) else name.replace(":", "_")


class BakeError(ValueError):
    """A bake cannot run (names what is wrong)."""


def _result_object(obj):
    if obj is None or not obj.get(splat_import.PROP_JOB):
        raise BakeError("select an imported Ani3DHuman result (a point cloud made by 'Import Result')")
    return obj


def result_frame_range(obj) -> tuple[int, int]:
    """Scene frames covered by the result: (first, last)."""
    start = int(obj.get(splat_import.PROP_FRAME_START, 0))
    return start, start + int(obj.get(splat_import.PROP_NUM_FRAMES, 1)) - 1


def _frame_range(obj, frame_start, frame_end):
    first, last = result_frame_range(obj)
    start = first if frame_start is None else int(frame_start)
    end = last if frame_end is None else int(frame_end)
    if end < start:
        raise BakeError(f"frame range is empty: start {start} > end {end}")
    return start, end


class _Selection:
    """Select only ``objects`` for an exporter, restoring selection, active object and frame afterwards."""

    def __init__(self, context, objects):
        self.context, self.objects = context, objects

    def __enter__(self):
        view_layer = self.context.view_layer
        self.active = view_layer.objects.active
        self.selected = [o for o in view_layer.objects if o.select_get()]
        self.frame = self.context.scene.frame_current
        for o in self.selected:
            o.select_set(False)
        for o in self.objects:
            o.select_set(True)
        view_layer.objects.active = self.objects[0]
        return self

    def __exit__(self, *exc):
        view_layer = self.context.view_layer
        for o in self.objects:
            if o.name in view_layer.objects:
                o.select_set(False)
        for o in self.selected:
            if o.name in view_layer.objects:
                o.select_set(True)
        view_layer.objects.active = self.active
        self.context.scene.frame_set(self.frame)


def bake_alembic(context, obj, filepath: str | os.PathLike, frame_start: int | None = None,
                 frame_end: int | None = None, velocities: bool = True) -> Path:
    """Write the result to an Alembic file: the complete splat cache in Blender 5.3+, positions (and velocities)
    before.

    Args:
        context: Blender context.
        obj: An imported result object.
        filepath: Output ``.abc`` path (folders are created).
        frame_start, frame_end: Scene frame range (default: the whole result).
        velocities: Also write a ``velocity`` per point (forward differences times the result fps).

    Returns:
        The written path.
    """
    import bpy

    obj = _result_object(obj)
    start, end = _frame_range(obj, frame_start, frame_end)
    filepath = Path(bpy.path.abspath(str(filepath))).resolve()
    filepath.parent.mkdir(parents=True, exist_ok=True)
    splats = splat_import.native_splats()
    proxy = _bake_proxy(context, obj, "alembic_splats" if splats else "alembic_points", start, velocities)
    data = proxy.data
    try:
        with _Selection(context, [proxy]), splat_import.handlers_active():
            result = bpy.ops.wm.alembic_export(
                filepath=str(filepath), start=start, end=end, selected=True, as_background_job=False,
                init_scene_frame_range=False, flatten=True, uvs=False, normals=False, vcolors=False,
                face_sets=False, export_custom_properties=False, evaluation_mode="RENDER")
        if "FINISHED" not in result:
            raise BakeError(f"Alembic export failed: {result}")
    finally:
        splat_import._LOADED.pop(proxy.as_pointer(), None)
        splat_import.remove_data_blocks([proxy, data])
    log.info("Alembic: %s frames %d-%d", filepath, start, end)
    return filepath


def _bake_proxy(context, obj, layout: str, frame: int, velocities: bool = False):
    """A temporary object showing ``obj``'s result in ``layout`` (a point cloud; a vertex-only mesh for
    ``alembic_points``), linked to the scene, fed by the frame handler, with every attribute created at ``frame``.
    Named like the result, so the exported object takes its name."""
    import bpy

    first = splat_import.CACHE.get(splat_import.frame_path(obj[splat_import.PROP_JOB], 0))
    count = len(first["position"])
    if layout == "alembic_points":
        data = bpy.data.meshes.new(obj.name + " bake")
        data.vertices.add(count)
    else:
        data = bpy.data.pointclouds.new(obj.name + " bake")
        data.resize(count)
    proxy = bpy.data.objects.new(obj.name, data)
    try:
        for key in (splat_import.PROP_JOB, splat_import.PROP_FRAME_START, splat_import.PROP_NUM_FRAMES,
                    splat_import.PROP_FPS):
            if key in obj:
                proxy[key] = obj[key]
        proxy[splat_import.PROP_LAYOUT] = layout
        proxy["ani3dhuman_velocity"] = int(velocities)
        proxy.matrix_world = obj.matrix_world
        context.scene.collection.objects.link(proxy)
        splat_import.update_object(proxy, frame)
        splat_import.add_pass_through_modifier(proxy)
    except Exception:
        splat_import.remove_data_blocks([proxy, data])
        raise
    return proxy


def export_ply_sequence(obj, directory: str | os.PathLike, frame_start: int | None = None,
                        frame_end: int | None = None) -> list[Path]:
    """Copy the result's 3DGS PLY files (every attribute, bit-exact) as ``frame_<scene frame>.ply``.

    Returns:
        The written files.
    """
    import bpy

    obj = _result_object(obj)
    start, end = _frame_range(obj, frame_start, frame_end)
    directory = Path(bpy.path.abspath(str(directory))).resolve()
    job = obj[splat_import.PROP_JOB]
    num = int(obj[splat_import.PROP_NUM_FRAMES])
    sources = []
    for frame in range(start, end + 1):
        index = splat_import.frame_index(frame, result_frame_range(obj)[0], num)
        source = splat_import.frame_path(job, index)
        if not source.is_file():
            raise BakeError(f"result frame missing on disk: {source}")
        sources.append((frame, source))
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for frame, source in sources:
        target = directory / f"frame_{frame:06d}.ply"
        shutil.copyfile(source, target)
        written.append(target)
    return written


def export_usd(context, obj, filepath: str | os.PathLike, frame_start: int | None = None,
               frame_end: int | None = None) -> Path:
    """Write the point cloud with all its attributes per frame to USD (``.usd``/``.usda``/``.usdc``)."""
    import bpy

    obj = _result_object(obj)
    start, end = _frame_range(obj, frame_start, frame_end)
    filepath = Path(bpy.path.abspath(str(filepath))).resolve()
    filepath.parent.mkdir(parents=True, exist_ok=True)
    scene = context.scene
    saved = (scene.frame_start, scene.frame_end)
    scene.frame_start, scene.frame_end = start, end
    # Blender 5.3's USD exporter drops FLOAT4 attributes (the splats' radiance:base): export a proxy that carries
    # the same attributes with radiance:base as a colour.
    proxy = _bake_proxy(context, obj, "usd_splats", start) if splat_import.native_splats() else None
    try:
        with _Selection(context, [proxy or obj]), splat_import.handlers_active():
            result = bpy.ops.wm.usd_export(filepath=str(filepath), selected_objects_only=True,
                                           export_animation=True, export_points=True,
                                           export_materials=False, evaluation_mode="RENDER")
    finally:
        scene.frame_start, scene.frame_end = saved
        if proxy is not None:
            splat_import._LOADED.pop(proxy.as_pointer(), None)
            splat_import.remove_data_blocks([proxy, proxy.data])
    if "FINISHED" not in result:
        raise BakeError(f"USD export failed: {result}")
    return filepath


def alembic_frames(context, filepath: str | os.PathLike, frames: list[int],
                   names: tuple[str, ...] = ("position",)) -> dict[int, dict[str, np.ndarray]]:
    """Re-import an Alembic file and read its points' attributes at ``frames`` (``position`` in world space),
    for checks; removes what it imported again."""
    import bpy

    before = set(bpy.data.objects)
    bpy.ops.wm.alembic_import(filepath=str(filepath))
    new = [o for o in bpy.data.objects if o not in before]
    out = {}
    try:
        found = [o for o in new if o.type in ("MESH", "POINTCLOUD")]
        if len(found) != 1:
            raise BakeError(f"expected one point set in {filepath}, found {len(found)}")
        for frame in frames:
            context.scene.frame_set(frame)
            evaluated = found[0].evaluated_get(context.evaluated_depsgraph_get())
            m = np.asarray(evaluated.matrix_world)
            values = {}
            for name in names:
                attr = evaluated.data.attributes[name]
                width = {"FLOAT_VECTOR": 3, "FLOAT": 1}[attr.data_type]
                buf = np.empty(len(attr.data) * width, np.float32)
                attr.data.foreach_get("vector" if width == 3 else "value", buf)
                values[name] = buf.reshape(-1, 3) if width == 3 else buf
            if "position" in values:  # world space
                values["position"] = values["position"] @ m[:3, :3].T + m[:3, 3]
            out[frame] = values
    finally:
        for o in new:
            bpy.data.objects.remove(o)
    return out


def alembic_positions(context, filepath: str | os.PathLike, frames: list[int]) -> dict[int, np.ndarray]:
    """World positions of an Alembic file's points at ``frames`` (for checks)."""
    return {frame: values["position"] for frame, values in alembic_frames(context, filepath, frames).items()}
