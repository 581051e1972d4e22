"""Importing a result folder: frame k shows frame k exactly, attributes decode right, reload stays animated; in
Blender 5.3+ a native Gaussian-splat cloud equal to what Blender's own PLY importer makes of the same frame."""

from __future__ import annotations

import bpy
import numpy as np
import pytest

from blender_addon import splat_import
from results import make_result

pytestmark = pytest.mark.bpy


NATIVE = bpy.app.version >= (5, 3, 0)
WIDTH = {"FLOAT": 1, "FLOAT_VECTOR": 3, "FLOAT_COLOR": 4, "FLOAT4": 4, "QUATERNION": 4}


def _attr(obj, name, width=None):
    attr = obj.data.attributes[name]
    width = width or WIDTH[attr.data_type]
    key = {"FLOAT_VECTOR": "vector", "FLOAT_COLOR": "color", "FLOAT4": "vector"}.get(attr.data_type, "value")
    out = np.empty(len(attr.data) * width, np.float32)
    attr.data.foreach_get(key, out)
    return out.reshape(len(attr.data), width) if width > 1 else out


def _all_attributes(obj) -> dict[str, tuple[str, np.ndarray]]:
    return {a.name: (a.data_type, _attr(obj, a.name)) for a in obj.data.attributes if not a.name.startswith(".")}


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
    np.testing.assert_allclose(rgba[:, 3], 1 / (1 + np.exp(-truth["opacity"])), atol=1e-6)
    np.testing.assert_array_equal(_attr(obj, "part_id", 1), truth["part"])
    if NATIVE:  # Blender 5.3's splat layout: raw SH DC in radiance:base, the SH rest numbered from 0
        assert obj.data.type == "GAUSSIAN_SPLAT"
        assert obj.data.attributes["radiance:base"].data_type == "FLOAT4"
        np.testing.assert_allclose(rgba[:, :3], truth["sh"][:, 0], atol=1e-6)
        for k in (0, 1, 2):
            np.testing.assert_allclose(_attr(obj, f"radiance:sh_{k}", 3), truth["sh"][:, k + 1], atol=1e-6)
    else:  # plain points with an emission colour: display RGB, SH rest numbered from 1, a viewport radius
        np.testing.assert_allclose(rgba[:, :3], 0.5 + splat_import.SH_C0 * truth["sh"][:, 0], atol=1e-5)
        for k in (1, 2, 3):
            np.testing.assert_allclose(_attr(obj, f"radiance:sh_{k}", 3), truth["sh"][:, k], atol=1e-6)
        assert (_attr(obj, "radius", 1) > 0).all()


@pytest.mark.skipif(not NATIVE, reason="native Gaussian splats need Blender 5.3+")
def test_native_splats_equal_blenders_own_ply_import(tmp_path):
    """First and last frame: names, types and values of every attribute equal Blender's wm.ply_import."""
    make_result(tmp_path / "job", num_frames=3, num_points=300, sh_degree=2, loose=True)
    obj = splat_import.import_result(bpy.context, tmp_path / "job", frame_start=1)
    splat_import.register_handlers()
    try:
        for k in (0, 2):
            bpy.context.scene.frame_set(1 + k)
            ours = _all_attributes(obj)
            before = set(bpy.data.objects)
            bpy.ops.wm.ply_import(filepath=str(splat_import.frame_path(tmp_path / "job", k)), import_attributes=True)
            (theirs_obj,) = [o for o in bpy.data.objects if o not in before]
            assert theirs_obj.data.type == obj.data.type == "GAUSSIAN_SPLAT"
            theirs = _all_attributes(theirs_obj)
            assert sorted(ours) == sorted(theirs), (sorted(ours), sorted(theirs))
            assert {"part_id", "loose", "radiance:sh_7"} <= set(ours)
            for name, (data_type, values) in theirs.items():
                assert ours[name][0] == data_type, name
                np.testing.assert_allclose(ours[name][1], values, atol=1e-5, rtol=0, err_msg=name)
            bpy.data.objects.remove(theirs_obj)
    finally:
        splat_import.unregister_handlers()


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
    assert obj.type == "POINTCLOUD" and getattr(obj.data, "type", "POINTS") == ("GAUSSIAN_SPLAT" if NATIVE else "POINTS")
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


def test_a_failing_import_cleans_up_without_hiding_its_error(tmp_path, monkeypatch):
    make_result(tmp_path / "job", num_frames=2)
    before = (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.pointclouds))

    def broken(*_args, **_kwargs):
        raise RuntimeError("attribute write failed")

    monkeypatch.setattr(splat_import, "write_attributes", broken)
    with pytest.raises(RuntimeError, match="attribute write failed"):  # the first error, not a clean-up one
        splat_import.import_result(bpy.context, tmp_path / "job", frame_start=1)
    assert (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.pointclouds)) == before
