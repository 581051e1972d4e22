"""Bad input through the real operators: a clear message, no traceback, nothing half-created."""

from __future__ import annotations

import socket

import bpy
import numpy as np
import pytest

from rigs import build_rig, synthetic_joints

pytestmark = pytest.mark.bpy


def _free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _counts():
    return (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.armatures), len(bpy.data.pointclouds))


def _expect_error(op, match, **kwargs):
    before = _counts()
    with pytest.raises(RuntimeError) as info:
        op(**kwargs)
    message = str(info.value)
    assert "Traceback" not in message
    assert match in message, message
    assert _counts() == before
    return message


def _smplx_rig(drop=()):
    rng = np.random.default_rng(0)
    names, joints, parents = synthetic_joints(rng, hands=False)
    keep = [i for i, n in enumerate(names) if n not in drop]
    remap = {old: new for new, old in enumerate(keep)}
    sub_parents = [remap.get(parents[i], -1) for i in keep]
    arm, *_ = build_rig("Rig", [names[i] for i in keep], joints[keep], sub_parents, rng)
    return arm


def test_animate_reports_bad_inputs(addon, tmp_path):
    props = bpy.context.scene.ani3dhuman
    props.endpoint = _free_endpoint()
    _expect_error(bpy.ops.ani3dhuman.animate, "no armature selected")

    props.armature = _smplx_rig(drop=("right_knee", "head"))
    _expect_error(bpy.ops.ani3dhuman.animate, "missing bones right_knee, head")

    props.armature = _smplx_rig()
    props.reference_image = str(tmp_path / "missing.png")
    _expect_error(bpy.ops.ani3dhuman.animate, "reference image not found")
    (tmp_path / "notes.png").write_text("not an image")
    props.reference_image = str(tmp_path / "notes.png")
    _expect_error(bpy.ops.ani3dhuman.animate, "must be a PNG or JPEG")

    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    props.reference_image = str(png)
    _expect_error(bpy.ops.ani3dhuman.animate, "needs its reference camera")

    props.reference_image = ""
    props.use_scene_range = False
    props.frame_start, props.frame_end = 5, 2
    _expect_error(bpy.ops.ani3dhuman.animate, "frame range is empty")

    props.frame_start, props.frame_end = 1, 3
    _expect_error(bpy.ops.ani3dhuman.animate, "backend not reachable")
    assert props.connection_status == "not reachable"


def test_add_body_without_backend_creates_nothing(addon):
    bpy.context.scene.ani3dhuman.endpoint = _free_endpoint()
    _expect_error(bpy.ops.ani3dhuman.add_body, "backend not reachable")


def test_result_operators_report_bad_inputs(addon, tmp_path):
    _expect_error(bpy.ops.ani3dhuman.import_result, "no frames/ directory", directory=str(tmp_path))
    _expect_error(bpy.ops.ani3dhuman.bake_alembic, "select an imported Ani3DHuman result",
                  filepath=str(tmp_path / "x.abc"))
    _expect_error(bpy.ops.ani3dhuman.export_usd, "select an imported Ani3DHuman result",
                  filepath=str(tmp_path / "x.usdc"))
    _expect_error(bpy.ops.ani3dhuman.cancel, "no running job")
    assert not (tmp_path / "x.abc").exists()


def test_import_operator_then_bake(addon, tmp_path):
    from results import make_result

    make_result(tmp_path / "job", num_frames=3)
    assert bpy.ops.ani3dhuman.import_result(directory=str(tmp_path / "job"), frame_start=1) == {"FINISHED"}
    props = bpy.context.scene.ani3dhuman
    assert props.result_object is not None
    assert bpy.ops.ani3dhuman.bake_alembic(filepath=str(tmp_path / "a.abc")) == {"FINISHED"}
    assert bpy.ops.ani3dhuman.export_ply_sequence(directory=str(tmp_path / "ply")) == {"FINISHED"}
    assert bpy.ops.ani3dhuman.export_usd(filepath=str(tmp_path / "a.usdc")) == {"FINISHED"}
    assert (tmp_path / "a.abc").stat().st_size > 0 and (tmp_path / "a.usdc").stat().st_size > 0
    assert len(list((tmp_path / "ply").glob("frame_*.ply"))) == 3


def test_prior_menu_offers_what_the_backend_reported(addon):
    from blender_addon import properties, session

    props = bpy.context.scene.ani3dhuman
    assert props.prior == "none"
    assert [i[0] for i in properties.prior_items(props, bpy.context)] == ["none"]
    hello = {"priors": ["none", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "Wan-AI/Wan2.1-VACE-1.3B-diffusers"],
             "prior_models": [{"id": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "kind": "t2v", "present": True},
                              {"id": "Wan-AI/Wan2.1-VACE-1.3B-diffusers", "kind": "vace", "present": False}]}
    assert session.remember_priors(props, hello) == hello["priors"][1:]
    items = properties.prior_items(props, bpy.context)
    assert [i[0] for i in items] == hello["priors"]
    assert "not downloaded" in items[2][2] and "present" in items[1][2]
    props.prior = "Wan-AI/Wan2.1-VACE-1.3B-diffusers"
    assert props.prior == "Wan-AI/Wan2.1-VACE-1.3B-diffusers"
    with pytest.raises(TypeError):
        props.prior = "typed-by-hand"  # no free text: only what the backend offers
    # A backend that no longer offers the selected prior: the menu falls back to none.
    session.remember_priors(props, {"priors": ["none", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"]})
    assert props.prior == "none"
