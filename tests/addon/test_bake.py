"""Bakes: Alembic re-imported gives the per-frame positions (<= 1e-5 m) plus velocities, and in Blender 5.3+ the
complete splat cache (scale, colour, opacity, rotation); PLY sequence is bit-exact; USD re-imported keeps
positions and every attribute per frame, named as this Blender writes them."""

from __future__ import annotations

import bpy
import numpy as np
import pytest

from blender_addon import bake, splat_import
from results import make_result

pytestmark = pytest.mark.bpy

NATIVE = bpy.app.version >= (5, 3, 0)


def _evaluated_points(obj, name="position", width=3):
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    attr = evaluated.data.attributes[name]
    key = "vector" if width == 3 else "value"
    out = np.empty(len(attr.data) * width, np.float32)
    attr.data.foreach_get(key, out)
    m = np.asarray(evaluated.matrix_world)
    values = out.reshape(-1, width)
    return values @ m[:3, :3].T + m[:3, 3] if name == "position" else values


@pytest.fixture
def result_obj(tmp_path):
    truth = make_result(tmp_path / "job", num_frames=5, num_points=400, fps=25.0)
    obj = splat_import.import_result(bpy.context, tmp_path / "job", frame_start=7)
    return obj, truth


@pytest.mark.skipif(not NATIVE, reason="Blender before 5.3 writes no point attributes to Alembic")
def test_alembic_bake_carries_the_complete_splat_cache(result_obj, tmp_path):
    obj, truth = result_obj
    path = bake.bake_alembic(bpy.context, obj, tmp_path / "out" / "splats.abc")
    bpy.ops.wm.read_factory_settings(use_empty=True)  # a clean Blender reads it back
    names = ("position", "velocity", "scale", "Cd", "Alpha", "orient_xyz", "orient_w", "sh_0", "sh_2", "part_id")
    frames = bake.alembic_frames(bpy.context, path, list(range(7, 12)), names)
    for k in range(5):
        got = frames[7 + k]
        np.testing.assert_allclose(got["position"], truth["means"][k], atol=1e-5, rtol=0)
        np.testing.assert_allclose(got["scale"], np.exp(truth["log_scales"]), rtol=1e-5)
        np.testing.assert_allclose(got["Cd"], 0.5 + splat_import.SH_C0 * truth["sh"][:, 0], atol=1e-6)
        np.testing.assert_allclose(got["Alpha"], 1 / (1 + np.exp(-truth["opacity"])), atol=1e-6)
        q = truth["quats"][k] / np.linalg.norm(truth["quats"][k], axis=1, keepdims=True)
        np.testing.assert_allclose(got["orient_w"], q[:, 0], atol=1e-6)
        np.testing.assert_allclose(got["orient_xyz"], q[:, 1:], atol=1e-6)
        np.testing.assert_allclose(got["sh_0"], truth["sh"][:, 1], atol=1e-6)
        np.testing.assert_allclose(got["sh_2"], truth["sh"][:, 3], atol=1e-6)
        np.testing.assert_array_equal(got["part_id"], truth["part"])
        step = truth["means"][k + 1] - truth["means"][k] if k < 4 else truth["means"][4] - truth["means"][3]
        np.testing.assert_allclose(got["velocity"], step * 25.0, atol=1e-4)


def test_alembic_bake_round_trips_positions_and_writes_velocities(result_obj, tmp_path):
    obj, truth = result_obj
    names_before = sorted(o.name for o in bpy.data.objects)
    path = bake.bake_alembic(bpy.context, obj, tmp_path / "out" / "splats.abc")
    assert sorted(o.name for o in bpy.data.objects) == names_before  # the proxy is gone
    assert b".velocities" in path.read_bytes()
    positions = bake.alembic_positions(bpy.context, path, list(range(7, 12)))
    worst = max(float(np.abs(positions[7 + k] - truth["means"][k]).max()) for k in range(5))
    assert worst <= 1e-5, worst
    # Velocities (m/s, forward differences x 25 fps; the last frame uses the backward difference).
    frames = bake.alembic_frames(bpy.context, path, [8, 11], ("position", "velocity"))
    for k in (1, 4):
        step = truth["means"][k + 1] - truth["means"][k] if k < 4 else truth["means"][4] - truth["means"][3]
        np.testing.assert_allclose(frames[7 + k]["velocity"], step * 25.0, atol=1e-4)


def test_alembic_bake_partial_range_and_errors(result_obj, tmp_path):
    obj, truth = result_obj
    path = bake.bake_alembic(bpy.context, obj, tmp_path / "part.abc", frame_start=9, frame_end=10,
                             velocities=False)
    positions = bake.alembic_positions(bpy.context, path, [9, 10])
    np.testing.assert_allclose(positions[10], truth["means"][3], atol=1e-5)
    with pytest.raises(bake.BakeError, match="empty"):
        bake.bake_alembic(bpy.context, obj, tmp_path / "x.abc", frame_start=10, frame_end=9)
    cube = bpy.data.objects.new("Empty", None)
    with pytest.raises(bake.BakeError, match="imported Ani3DHuman result"):
        bake.bake_alembic(bpy.context, cube, tmp_path / "x.abc")


def test_ply_sequence_is_bit_exact(result_obj, tmp_path):
    obj, _ = result_obj
    files = bake.export_ply_sequence(obj, tmp_path / "seq")
    assert [f.name for f in files] == [f"frame_{f:06d}.ply" for f in range(7, 12)]
    for k, f in enumerate(files):
        assert f.read_bytes() == splat_import.frame_path(tmp_path / "job", k).read_bytes()


def test_usd_keeps_every_attribute_per_frame(result_obj, tmp_path):
    obj, truth = result_obj
    path = bake.export_usd(bpy.context, obj, tmp_path / "splats.usdc")
    bpy.data.objects.remove(obj)
    bpy.ops.wm.usd_import(filepath=str(path))
    imported = [o for o in bpy.data.objects if o.type == "POINTCLOUD"]
    assert len(imported) == 1
    names = set(imported[0].data.attributes.keys())
    # Blender 5.0 writes ':' as '_' in primvar names (radiance_base), 5.2+ keeps it (primvars:radiance:base).
    expected = ({"rotation", "scale", "radiance:base", "radiance:sh_0", "part_id"} if NATIVE else
                {"rotation", "scale", "opacity", "radiance:base", "radiance:sh_1", "part_id"})
    assert {bake.usd_attribute_name(n) for n in expected} <= names, names
    for k in (0, 2, 4):
        bpy.context.scene.frame_set(7 + k)
        np.testing.assert_array_equal(_evaluated_points(imported[0]), truth["means"][k])
        q = truth["quats"][k] / np.linalg.norm(truth["quats"][k], axis=1, keepdims=True)
        np.testing.assert_allclose(_evaluated_points(imported[0], "rotation", 4), q, atol=1e-6)
