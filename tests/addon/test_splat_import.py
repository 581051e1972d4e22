"""Importing a result folder: frame k shows frame k exactly, attributes decode right, reload stays animated."""

from __future__ import annotations

import bpy
import numpy as np
import pytest

from blender_addon import splat_import
from results import make_result

pytestmark = pytest.mark.bpy


def _attr(obj, name, width):
    attr = obj.data.attributes[name]
    key = {"FLOAT_VECTOR": "vector", "FLOAT_COLOR": "color"}.get(attr.data_type, "value")
    out = np.empty(len(attr.data) * width, np.float32)
    attr.data.foreach_get(key, out)
    return out.reshape(len(attr.data), width) if width > 1 else out


def test_import_then_frame_set_shows_frame_k_exactly(tmp_path):
    truth = make_result(tmp_path / "job", num_frames=5)
    scene = bpy.context.scene
    scene.frame_set(10)
    obj = splat_import.import_result(bpy.context, tmp_path / "job", frame_start=10)
    assert obj.type == "POINTCLOUD"
    splat_import.register_handlers()
    try:
        for k in (3, 0, 4, 1):
            scene.frame_set(10 + k)
            np.testing.assert_array_equal(_attr(obj, "position", 3), truth["means"][k])
            # Blender's evaluated point cloud (what renders and exporters see) has the same positions.
            evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
            pos = np.empty(len(evaluated.data.points) * 3, np.float32)
            evaluated.data.attributes["position"].data.foreach_get("vector", pos)
            np.testing.assert_array_equal(pos.reshape(-1, 3), truth["means"][k])
            q = truth["quats"][k] / np.linalg.norm(truth["quats"][k], axis=1, keepdims=True)
            np.testing.assert_allclose(_attr(obj, "rotation", 4), q, atol=1e-6)
        scene.frame_set(50)  # held at the last frame past the end
        np.testing.assert_array_equal(_attr(obj, "position", 3), truth["means"][4])
    finally:
        splat_import.unregister_handlers()
    np.testing.assert_allclose(_attr(obj, "scale", 3), np.exp(truth["log_scales"]), rtol=1e-5)
    rgba = _attr(obj, "radiance:base", 4)
    np.testing.assert_allclose(rgba[:, :3], 0.5 + splat_import.SH_C0 * truth["sh"][:, 0], atol=1e-5)
    np.testing.assert_allclose(rgba[:, 3], 1 / (1 + np.exp(-truth["opacity"])), atol=1e-6)
    for k in (1, 2, 3):
        np.testing.assert_allclose(_attr(obj, f"radiance:sh_{k}", 3), truth["sh"][:, k], atol=1e-6)
    np.testing.assert_array_equal(_attr(obj, "part_id", 1), truth["part"])
    assert (_attr(obj, "radius", 1) > 0).all()


def test_saved_blend_reopens_animated(tmp_path, addon):
    truth = make_result(tmp_path / "job", num_frames=4)
    scene = bpy.context.scene
    obj = splat_import.import_result(bpy.context, tmp_path / "job", frame_start=1, name="Splats")
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    assert "Splats" not in bpy.data.objects
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    obj = bpy.data.objects["Splats"]
    scene = bpy.context.scene
    for k in (2, 0, 3):
        scene.frame_set(1 + k)
        np.testing.assert_array_equal(_attr(obj, "position", 3), truth["means"][k])


def test_bad_folder_creates_nothing(tmp_path):
    before = (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.pointclouds))
    with pytest.raises(splat_import.ResultError, match="no frames/ directory"):
        splat_import.import_result(bpy.context, tmp_path, frame_start=1)
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "frame_000000.ply").write_bytes(b"ply\nformat ascii 1.0\nend_header\n")
    with pytest.raises(splat_import.ResultError, match="not supported"):
        splat_import.import_result(bpy.context, tmp_path, frame_start=1)
    (tmp_path / "frames" / "frame_000002.ply").write_bytes(b"")
    with pytest.raises(splat_import.ResultError, match="gaps"):
        splat_import.import_result(bpy.context, tmp_path, frame_start=1)
    assert (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.pointclouds)) == before
