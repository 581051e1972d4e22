"""'Add Body' rig: built from the backend's body arrays, posed in Blender, exported by rig_export and posed
by the backend's own body model (run in the backend venv as a subprocess) -> same vertices as Blender's
evaluated skinned mesh (<= 1e-4 m)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import bpy
import numpy as np
import pytest

from blender_addon import body_rig, rig_export
from rigs import animate_rig, evaluated_world_vertices

pytestmark = pytest.mark.bpy

REPO = Path(__file__).resolve().parents[2]
BACKEND_PYTHON = REPO / ".venv" / "bin" / "python"
HELPER = Path(__file__).with_name("body_reference.py")


def _backend(*args):
    if not BACKEND_PYTHON.exists():
        pytest.skip("backend environment .venv missing (run scripts/setup.sh)")
    result = subprocess.run([str(BACKEND_PYTHON), str(HELPER), *map(str, args)], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    if result.returncode:
        raise AssertionError(f"backend helper failed:\n{result.stderr[-3000:]}")


@pytest.fixture(scope="module")
def body_arrays(tmp_path_factory):
    path = tmp_path_factory.mktemp("body") / "body.npz"
    _backend("arrays", path)
    data = dict(np.load(path))
    fields = {"parents": data.pop("parents").tolist(), "joint_names": data.pop("joint_names").tolist(), "up": "Y"}
    return data, fields


def test_add_body_rig_matches_backend_body(body_arrays, tmp_path):
    arrays, fields = body_arrays
    arm, mesh_obj = body_rig.build_body_rig(bpy.context, arrays, fields)
    assert len(mesh_obj.data.vertices) == len(arrays["rest_vertices"])
    binding = rig_export.bind_rig(arm)
    assert binding.kind == "ani3dhuman" and binding.has_hands
    rng = np.random.default_rng(11)
    frames = [1, 2, 3]
    animate_rig(arm, list(binding.bone_names), frames, rng, max_angle=0.6)
    motion = rig_export.export_motion(bpy.context.scene, arm, 1, 3, binding)
    np.savez(tmp_path / "motion.npz", **motion)
    _backend("pose", tmp_path / "motion.npz", tmp_path / "posed.npz")
    backend_vertices = np.load(tmp_path / "posed.npz")["vertices"]
    worst = 0.0
    for i, frame in enumerate(frames):
        bpy.context.scene.frame_set(frame)
        blender = evaluated_world_vertices(mesh_obj)
        worst = max(worst, float(np.abs(blender - backend_vertices[i]).max()))
    print(f"Add Body rig vs backend body: max vertex error {worst:.2e} m")
    assert worst <= 1e-4


def test_bad_body_arrays_create_nothing(body_arrays):
    arrays, fields = body_arrays
    before = (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.armatures))
    bad = dict(arrays, skin_weights=arrays["skin_weights"][:, :-1])
    with pytest.raises(body_rig.BodyError, match="skin_weights"):
        body_rig.build_body_rig(bpy.context, bad, fields)
    with pytest.raises(body_rig.BodyError, match="up"):
        body_rig.build_body_rig(bpy.context, arrays, dict(fields, up="X"))
    assert (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.armatures)) == before
