"""Cameras of the JSON contract (as the renderer writes them) project points exactly as Blender does.

The fixture (tests/backend/render/data/camera_projection.json) holds cameras made by ``backend.render``'s
trajectories; the backend suite checks that ``backend.render.Cameras`` projects its points by the contract
formula below. Here a Blender camera is built from each JSON camera and Blender's own
``world_to_camera_view`` must land every point within 0.5 px of the same formula. No torch, no backend.
"""

from __future__ import annotations

import json
from pathlib import Path

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Matrix, Vector

pytestmark = pytest.mark.bpy

FIXTURE = Path(__file__).resolve().parents[1] / "backend" / "render" / "data" / "camera_projection.json"


def contract_projection(cam: dict, point: np.ndarray) -> np.ndarray:
    """docs/design.md §3: Blender camera (looks down −Z, +Y up); pixels from the top-left, y down."""
    local = np.linalg.inv(np.asarray(cam["world_from_camera"], dtype=np.float64)) @ np.append(point, 1.0)
    depth = -local[2]
    return np.array([cam["fx"] * local[0] / depth + cam["cx"], -cam["fy"] * local[1] / depth + cam["cy"]])


def blender_camera_from_json(scene, cam: dict):
    """A Blender camera object matching a JSON camera (square pixels, sensor fit horizontal)."""
    assert abs(cam["fx"] - cam["fy"]) < 1e-6 * cam["fx"], "Blender cameras have square pixels here"
    width, height = cam["width"], cam["height"]
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    data = bpy.data.cameras.new("JsonCam")
    data.sensor_fit = "HORIZONTAL"
    data.sensor_width = 36.0
    data.lens = cam["fx"] * data.sensor_width / width
    size = max(width, height)  # Blender's shift is in units of the larger image side
    data.shift_x = (width / 2 - cam["cx"]) / size
    data.shift_y = (cam["cy"] - height / 2) / size
    obj = bpy.data.objects.new("JsonCam", data)
    scene.collection.objects.link(obj)
    obj.matrix_world = Matrix(cam["world_from_camera"])
    bpy.context.view_layer.update()
    return obj


def test_json_cameras_project_like_blender():
    fixture = json.loads(FIXTURE.read_text())
    scene = bpy.context.scene
    points = np.asarray(fixture["points"], dtype=np.float64)
    assert len(fixture["cameras"]) >= 4 and len(points) >= 4
    checked = 0
    for cam in fixture["cameras"]:
        obj = blender_camera_from_json(scene, cam)
        for point in points:
            ndc = world_to_camera_view(scene, obj, Vector(point))  # x right, y up, in [0, 1]; z = depth
            ours = contract_projection(cam, point)
            blender = np.array([ndc.x * cam["width"], (1.0 - ndc.y) * cam["height"]])
            assert ndc.z > 0
            np.testing.assert_allclose(ours, blender, atol=0.5)
            checked += 1
        bpy.data.objects.remove(obj)
    assert checked == len(fixture["cameras"]) * len(points)


def test_up_axis_is_world_z():
    """A point above the look-at centre appears higher in the image (smaller row) in Blender too."""
    cam = json.loads(FIXTURE.read_text())["cameras"][0]
    obj = blender_camera_from_json(bpy.context.scene, cam)
    centre = np.array([0.0, 0.0, 0.875])
    low = world_to_camera_view(bpy.context.scene, obj, Vector(centre))
    high = world_to_camera_view(bpy.context.scene, obj, Vector(centre + [0.0, 0.0, 0.5]))
    assert high.y > low.y  # Blender's normalised y points up
    assert contract_projection(cam, centre + [0.0, 0.0, 0.5])[1] < contract_projection(cam, centre)[1]
    bpy.data.objects.remove(obj)
