"""Plain session functions: the camera JSON contract matches Blender's own projection; the job spec built from
the panel carries the reference frame and camera."""

from __future__ import annotations

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from blender_addon import session

pytestmark = pytest.mark.bpy


@pytest.mark.parametrize("fit,shift,res", [("AUTO", (0.0, 0.0), (640, 480)), ("VERTICAL", (0.1, -0.05), (300, 500)),
                                           ("HORIZONTAL", (-0.2, 0.15), (400, 400))])
def test_camera_json_projects_like_blender(fit, shift, res):
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = res
    scene.render.resolution_percentage = 50
    data = bpy.data.cameras.new("Cam")
    data.lens, data.sensor_fit, data.shift_x, data.shift_y = 42.0, fit, *shift
    cam = bpy.data.objects.new("Cam", data)
    scene.collection.objects.link(cam)
    cam.location = (0.5, -4.0, 1.5)
    cam.rotation_euler = (1.3, 0.05, 0.2)
    bpy.context.view_layer.update()
    js = session.camera_json(scene, cam)
    assert (js["width"], js["height"]) == (res[0] // 2, res[1] // 2)
    world_from_camera = np.asarray(js["world_from_camera"])
    rng = np.random.default_rng(0)
    for point in rng.normal(size=(5, 3)) * 0.5 + np.array([0.0, 0.0, 1.0]):
        ndc = world_to_camera_view(scene, cam, Vector(point))  # x right, y up, in [0, 1]
        local = np.linalg.inv(world_from_camera) @ np.append(point, 1.0)
        depth = -local[2]
        u = js["fx"] * local[0] / depth + js["cx"]
        v = -js["fy"] * local[1] / depth + js["cy"]  # pixel rows go down
        np.testing.assert_allclose([u, v], [ndc.x * js["width"], (1 - ndc.y) * js["height"]], atol=1e-3)


def test_preview_png_becomes_an_image(tmp_path):
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 8, 6, 100
    image = bpy.data.images.new("src", 8, 6)
    image.pixels[:] = np.tile([0.2, 0.4, 0.6, 1.0], 48)
    image.filepath_raw = str(tmp_path / "p.png")
    image.file_format = "PNG"
    image.save()
    shown = session.show_preview((tmp_path / "p.png").read_bytes())
    assert shown.name == session.PREVIEW_IMAGE and tuple(shown.size) == (8, 6)
    pixels = np.asarray(shown.pixels[:]).reshape(6, 8, 4)
    np.testing.assert_allclose(pixels[0, 0], [0.2, 0.4, 0.6, 1.0], atol=0.01)
    assert session.show_preview(b"not a png") is None


@pytest.mark.parametrize("res,shift", [((320, 240), (0.1, -0.05)), ((200, 360), (-0.2, 0.15))])
def test_camera_from_json_is_the_inverse_of_camera_json(res, shift):
    scene = bpy.context.scene
    world = np.eye(4)
    world[:3, :3] = np.asarray([[1, 0, 0], [0, 0, -1], [0, 1, 0]])  # looking along +Y, Z up
    world[:3, 3] = (0.2, -3.0, 1.1)
    size = max(res)
    js = {"width": res[0], "height": res[1], "fx": 400.0, "fy": 400.0, "cx": res[0] / 2 - shift[0] * size,
          "cy": res[1] / 2 + shift[1] * size, "world_from_camera": world.tolist()}
    cam = session.camera_from_json(scene, js)
    bpy.context.view_layer.update()
    back = session.camera_json(scene, cam)
    for key in ("width", "height", "fx", "fy", "cx", "cy"):
        assert back[key] == pytest.approx(js[key], abs=1e-3), key
    np.testing.assert_allclose(back["world_from_camera"], world, atol=1e-6)
    with pytest.raises(session.SessionError, match="square pixels"):
        session.camera_from_json(scene, {**js, "fy": 300.0})


def test_dynamics_panel_becomes_the_job_specs_dynamics_fields(addon):
    props = bpy.context.scene.ani3dhuman
    assert props.clothing_dynamics and props.garment == "auto"  # dynamics on by default, garment detected
    assert session.dynamics_spec(props) == {"dynamics": "auto", "cloth_preset": "medium"}
    props.clothing_dynamics, props.cloth_preset, props.garment = False, "heavy", "dress"
    assert session.dynamics_spec(props) == {"dynamics": "none", "cloth_preset": "heavy", "garment": {"type": "dress"}}
    props.clothing_dynamics, props.cloth_preset, props.garment = True, "medium", "auto"


def test_sampler_panel_becomes_the_job_specs_sampler_fields(addon):
    props = bpy.context.scene.ani3dhuman
    props.sampler, props.override_sampler = "released", False
    assert session.sampler_spec(props) == ("released", {})
    props.override_sampler = True
    props.sampler_steps, props.sampler_strength, props.sampler_guidance = 12, 0.55, 0.2
    props.sampler_gamma, props.sampler_gamma_value, props.sampler_cfg = "value", 0.25, 0.0
    name, values = session.sampler_spec(props)
    assert name == "released"
    assert values == {"steps": 12, "strength": 0.55, "shift": 5.0, "guidance": 0.2, "guidance_schedule": "linear",
                      "gamma": 0.25}  # CFG 0 = the model's default: not sent
    props.sampler_cfg, props.sampler_gamma = 5.0, "full"
    assert session.sampler_spec(props)[1]["cfg"] == 5.0 and session.sampler_spec(props)[1]["gamma"] == "full"
    props.override_sampler = False
