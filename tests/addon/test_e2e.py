"""End to end: the backend runs as a subprocess (its own venv) on loopback; the add-on starts it, adds the
body rig over the wire, runs Animate's steps (calling the polling function, as the timer would), sees
progress, imports the result and bakes it."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import bpy
import numpy as np
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.bpy]

REPO = Path(__file__).resolve().parents[2]
BACKEND_PYTHON = REPO / ".venv" / "bin" / "python"


def _free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def backend(addon, tmp_path):
    if not BACKEND_PYTHON.exists():
        pytest.skip("backend environment .venv missing (run scripts/setup.sh)")
    from blender_addon import preferences, session

    props = bpy.context.scene.ani3dhuman
    props.endpoint = _free_endpoint()
    prefs = preferences.Prefs(python_path=str(BACKEND_PYTHON), backend_dir=str(REPO),
                              jobs_dir=str(tmp_path / "jobs"), results_dir=str(tmp_path / "results"))
    proc = session.start_backend(prefs, props.endpoint)
    try:
        session.wait_for_backend(props, timeout_s=120)
        yield prefs
    finally:
        session.stop_backend()
        if proc.process.poll() is None:
            proc.process.kill()


def test_animate_import_bake_against_a_live_backend(backend, tmp_path):
    from blender_addon import bake, session, splat_import

    scene = bpy.context.scene
    props = scene.ani3dhuman
    assert props.connected and props.connection_status.startswith("connected")

    assert bpy.ops.ani3dhuman.add_body() == {"FINISHED"}
    arm = props.armature
    assert arm is not None and arm.type == "ARMATURE"
    mesh_obj = next(o for o in arm.children if o.type == "MESH")

    # A small motion: raise the left arm and walk forward over 4 frames.
    scene.frame_start, scene.frame_end = 1, 4
    for frame in range(1, 5):
        bone = arm.pose.bones["left_shoulder"]
        bone.rotation_quaternion = (np.cos(0.2 * frame), 0.0, np.sin(0.2 * frame), 0.0)
        bone.keyframe_insert("rotation_quaternion", frame=frame)
        arm.location = (0.0, -0.1 * frame, 0.0)
        arm.keyframe_insert("location", frame=frame)
    props.gaussians, props.quality, props.prior, props.seed = 2000, "preview", "none", 3

    results_root = Path(backend.results_dir)
    job = session.start_job(bpy.context, props, results_root)
    seen = []
    job = session.run_until_done(bpy.context, timeout_s=300,
                                 on_step=lambda j: seen.append((j.state, props.stage, props.progress)))
    assert job.state == "imported", (job.state, job.error, props.error)
    assert seen[-1][0] == "imported" and seen[-1][2] == 1.0
    # Progress came through: the backend's stages, with fractions rising, before the final state.
    stages = [stage for _, stage, _ in job.events if stage]
    assert {"body", "reconstruct"} <= set(stages), job.events
    fractions = [f for _, _, f in job.events if f is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    obj = bpy.data.objects[job.object_name]
    assert obj.type == "POINTCLOUD" and obj[splat_import.PROP_NUM_FRAMES] == 4
    assert props.result_object == obj

    # Frame k's splats sit on Blender's own skinned body mesh at frame k (same world, same pose).
    depsgraph = bpy.context.evaluated_depsgraph_get
    for frame in (1, 4):
        scene.frame_set(frame)
        pos = np.empty(len(obj.data.points) * 3, np.float32)
        obj.data.attributes["position"].data.foreach_get("vector", pos)
        pos = pos.reshape(-1, 3)
        evaluated = mesh_obj.evaluated_get(depsgraph())
        mesh = evaluated.to_mesh()
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        evaluated.to_mesh_clear()
        world = np.asarray(evaluated.matrix_world)
        co = co.reshape(-1, 3) @ world[:3, :3].T + world[:3, 3]
        lo, hi = co.min(axis=0), co.max(axis=0)
        assert (pos.min(axis=0) > lo - 0.05).all() and (pos.max(axis=0) < hi + 0.05).all(), (frame, lo, hi)
        np.testing.assert_allclose(pos.mean(axis=0), co.mean(axis=0), atol=0.1)

    abc = tmp_path / "bake" / "splats.abc"
    assert bpy.ops.ani3dhuman.bake_alembic(filepath=str(abc)) == {"FINISHED"}
    positions = bake.alembic_positions(bpy.context, abc, [1, 4])
    scene.frame_set(4)
    pos = np.empty(len(obj.data.points) * 3, np.float32)
    obj.data.attributes["position"].data.foreach_get("vector", pos)
    np.testing.assert_allclose(positions[4], pos.reshape(-1, 3), atol=1e-5)


def test_job_error_is_reported(backend):
    from blender_addon import session

    props = bpy.context.scene.ani3dhuman
    assert bpy.ops.ani3dhuman.add_body() == {"FINISHED"}
    bpy.context.scene.frame_start, bpy.context.scene.frame_end = 1, 2
    # A prior remembered from another backend's hello, which this backend does not offer.
    session.remember_priors(props, {"priors": ["none", "no-such-prior"]})
    props.prior = "no-such-prior"
    before = len(bpy.data.objects)
    with pytest.raises(RuntimeError, match="backend rejected the job"):
        bpy.ops.ani3dhuman.animate()
    assert len(bpy.data.objects) == before


def test_cancel_reaches_the_backend(backend):
    from blender_addon import session

    scene = bpy.context.scene
    props = scene.ani3dhuman
    assert bpy.ops.ani3dhuman.add_body() == {"FINISHED"}
    scene.frame_start, scene.frame_end = 1, 120
    props.gaussians = 300_000  # long enough (writing 120 large frames) to be cancelled while running
    session.start_job(bpy.context, props, Path(backend.results_dir))
    while props.job_state != "running":
        assert session.poll_backend(bpy.context) is not None, props.error
        time.sleep(0.05)
    assert bpy.ops.ani3dhuman.cancel() == {"FINISHED"}
    job = session.run_until_done(bpy.context, timeout_s=120)
    assert job.state == "cancelled", (job.state, job.error)
    assert props.error == "job cancelled"
    assert not [o for o in bpy.data.objects if o.type == "POINTCLOUD"]


def test_failed_job_is_reported_not_raised(backend, tmp_path):
    """A job the pipeline refuses (a flat photo with no person silhouette, a camera looking away) ends 'failed'
    with the backend's reason in the panel; nothing is imported."""
    from blender_addon import session

    scene = bpy.context.scene
    props = scene.ani3dhuman
    assert bpy.ops.ani3dhuman.add_body() == {"FINISHED"}
    scene.frame_start, scene.frame_end = 1, 2
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 48, 100
    image = bpy.data.images.new("photo", 64, 48)
    image.pixels[:] = np.tile([0.5, 0.4, 0.3, 1.0], 64 * 48)
    image.filepath_raw, image.file_format = str(tmp_path / "photo.png"), "PNG"
    image.save()
    cam = bpy.data.objects.new("Away", bpy.data.cameras.new("Away"))
    scene.collection.objects.link(cam)
    cam.location, cam.rotation_euler = (0.0, 5.0, 1.0), (1.5708, 0.0, 0.0)  # looks along +Y, away from the body
    props.reference_image, props.reference_camera, props.reference_frame = str(tmp_path / "photo.png"), cam, 1
    session.start_job(bpy.context, props, Path(backend.results_dir))
    job = session.run_until_done(bpy.context, timeout_s=120)
    assert job.state == "failed", (job.state, job.error)
    assert props.error.startswith("job failed: image: ") and "Traceback" not in props.error
    assert props.job_state == "failed"
    assert not [o for o in bpy.data.objects if o.type == "POINTCLOUD"]
