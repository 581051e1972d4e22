"""Bake an imported result for other tools: Alembic (positions + velocities), PLY sequence and USD (every
attribute).

Alembic cannot carry the Gaussian attributes (Blender's exporter drops custom point attributes): it gets the
positions per frame and a ``velocity`` vector per point. A vertex-only mesh only gets per-frame positions in
Alembic when Blender sees it as deforming, so the bake uses a temporary mesh proxy with a pass-through
Geometry Nodes modifier, fed by the same frame handler as the point cloud, and removes it afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from . import splat_import

log = logging.getLogger(__name__)

ALEMBIC_DROPS = "colour, opacity, scale, rotation and SH (Alembic keeps positions and velocities only)"
ALEMBIC_NOTE = f"Alembic drops {ALEMBIC_DROPS.split(' (')[0]}; PLY sequence and USD keep every attribute."


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
    """Write the result's per-frame positions (and velocities, m/s) to an Alembic file.

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
    first = splat_import.CACHE.get(splat_import.frame_path(obj[splat_import.PROP_JOB], 0))

    mesh = bpy.data.meshes.new(obj.name + " Alembic")
    proxy = bpy.data.objects.new(obj.name, mesh)  # the Alembic object takes the result's name
    try:
        mesh.vertices.add(len(first["position"]))
        mesh.vertices.foreach_set("co", first["position"].ravel())
        if velocities:
            mesh.attributes.new("velocity", "FLOAT_VECTOR", "POINT")
        for key in (splat_import.PROP_JOB, splat_import.PROP_FRAME_START, splat_import.PROP_NUM_FRAMES,
                    splat_import.PROP_FPS):
            if key in obj:
                proxy[key] = obj[key]
        proxy["ani3dhuman_velocity"] = int(velocities)
        proxy.matrix_world = obj.matrix_world
        context.scene.collection.objects.link(proxy)
        splat_import.add_pass_through_modifier(proxy)
        with _Selection(context, [proxy]), splat_import.handlers_active():
            result = bpy.ops.wm.alembic_export(
                filepath=str(filepath), start=start, end=end, selected=True, as_background_job=False, init_scene_frame_range=False,
                flatten=True, uvs=False, normals=False, vcolors=False, face_sets=False,
                export_custom_properties=False, evaluation_mode="RENDER")
        if "FINISHED" not in result:
            raise BakeError(f"Alembic export failed: {result}")
    finally:
        splat_import._LOADED.pop(proxy.as_pointer(), None)
        bpy.data.objects.remove(proxy)
        bpy.data.meshes.remove(mesh)
    log.info("Alembic: %s frames %d-%d", filepath, start, end)
    return filepath


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
    try:
        with _Selection(context, [obj]), splat_import.handlers_active():
            result = bpy.ops.wm.usd_export(filepath=str(filepath), selected_objects_only=True,
                                           export_animation=True, export_points=True,
                                           export_materials=False, evaluation_mode="RENDER")
    finally:
        scene.frame_start, scene.frame_end = saved
    if "FINISHED" not in result:
        raise BakeError(f"USD export failed: {result}")
    return filepath


def alembic_positions(context, filepath: str | os.PathLike, frames: list[int]) -> dict[int, np.ndarray]:
    """Re-import an Alembic file and read its world positions at ``frames`` (for checks); removes it again."""
    import bpy

    before = set(bpy.data.objects)
    bpy.ops.wm.alembic_import(filepath=str(filepath))
    new = [o for o in bpy.data.objects if o not in before]
    out = {}
    try:
        meshes = [o for o in new if o.type == "MESH"]
        if len(meshes) != 1:
            raise BakeError(f"expected one mesh in {filepath}, found {len(meshes)}")
        for frame in frames:
            context.scene.frame_set(frame)
            evaluated = meshes[0].evaluated_get(context.evaluated_depsgraph_get())
            data = evaluated.to_mesh()
            co = np.empty(len(data.vertices) * 3, np.float32)
            data.vertices.foreach_get("co", co)
            m = np.asarray(evaluated.matrix_world)
            out[frame] = co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]
            evaluated.to_mesh_clear()
    finally:
        for o in new:
            bpy.data.objects.remove(o)
    return out
