"""Blender 5.3+, as a user would: the built zip installed into a clean Blender, Import Result on a job the real
backend wrote, the cloud equal to Blender's own PLY import of the first and last frame, and a Cycles render of it
that agrees with the backend's own renderer at the same camera."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import bpy
import numpy as np
import pytest

pytestmark = [pytest.mark.bpy, pytest.mark.e2e,
              pytest.mark.skipif(bpy.app.version < (5, 3, 0), reason="native Gaussian splats need Blender 5.3+")]

REPO = Path(__file__).resolve().parents[2]
BACKEND_PYTHON = REPO / ".venv" / "bin" / "python"
MODULE = "bl_ext.user_default.ani3dhuman"
SIZE, SAMPLES, MIN_PSNR = 128, 64, 25.0

# Runs in the backend's environment: a small job on the default subject, and the backend's render of frame 0.
BACKEND_JOB = """
import sys
from pathlib import Path
import numpy as np
from backend.body import load_body_model
from backend.gaussians import load_ply
from backend.motion.builtin import builtin_motion
from backend.render import RenderSettings, frame_subject, orbit_cameras, render, save_cameras
from backend.stages import JobSpec, animate
out = Path(sys.argv[1])
body = load_body_model("default")
animate(JobSpec(motion=builtin_motion("twirl", body, frames=4), gaussians=4000, seed=2), out / "job")
g = load_ply(out / "job" / "frames" / "frame_000000.ply")
size = int(sys.argv[2])
cam = orbit_cameras(frame_subject(g.means, width=size, height=size), num_frames=1, start_azimuth_deg=20.0,
                    width=size, height=size)
save_cameras(cam, out / "camera.json")
np.save(out / "backend_rgb.npy", render(g, cam, settings=RenderSettings()).rgb[0].numpy())
"""

WIDTH = {"FLOAT": 1, "FLOAT_VECTOR": 3, "FLOAT4": 4, "QUATERNION": 4}


def _values(obj, name):
    attr = obj.data.attributes[name]
    width = WIDTH[attr.data_type]
    out = np.empty(len(attr.data) * width, np.float32)
    attr.data.foreach_get("value" if attr.data_type in ("FLOAT", "QUATERNION") else "vector", out)
    return attr.data_type, out.reshape(-1, width)


@pytest.fixture
def backend_job(tmp_path):
    if not BACKEND_PYTHON.exists():
        pytest.skip("backend environment .venv missing (run scripts/setup.sh)")
    result = subprocess.run([str(BACKEND_PYTHON), "-c", BACKEND_JOB, str(tmp_path), str(SIZE)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path


@pytest.fixture
def installed_zip(tmp_path):
    from test_extension import _build

    zip_path = _build(tmp_path / "dist")
    assert bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default",
                                                    enable_on_install=True) == {"FINISHED"}
    try:
        yield sys.modules[MODULE]
    finally:
        import addon_utils

        addon_utils.disable(MODULE, default_set=True)
        repo = next(r for r in bpy.context.preferences.extensions.repos if r.module == "user_default")
        bpy.ops.extensions.package_uninstall(repo_directory=repo.directory, pkg_id="ani3dhuman")


def test_installed_zip_imports_native_splats_that_render_like_the_backend(backend_job, installed_zip):
    job = backend_job / "job"
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 4
    assert bpy.ops.ani3dhuman.import_result(directory=str(job), frame_start=1) == {"FINISHED"}
    (obj,) = [o for o in scene.objects if o.get("ani3dhuman_job")]
    assert obj.data.type == "GAUSSIAN_SPLAT"

    for k in (0, 3):  # first and last frame: the splat attributes equal Blender's own PLY import
        scene.frame_set(1 + k)
        before = set(bpy.data.objects)
        bpy.ops.wm.ply_import(filepath=str(job / "frames" / f"frame_{k:06d}.ply"), import_attributes=True)
        (theirs,) = [o for o in bpy.data.objects if o not in before]
        for name in ("position", "radiance:base", "scale", "rotation"):
            ours_type, ours = _values(obj, name)
            their_type, values = _values(theirs, name)
            assert ours_type == their_type, name
            np.testing.assert_allclose(ours, values, atol=1e-5, rtol=0, err_msg=name)
        bpy.data.objects.remove(theirs)

    scene.frame_set(1)
    camera = installed_zip.session.camera_from_json(scene, json.loads((backend_job / "camera.json").read_text())
                                                    ["frames"][0])
    scene.camera = camera
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = SAMPLES
    scene.cycles.seed = 0
    scene.render.film_transparent = True
    scene.view_settings.view_transform = "Standard"  # 3DGS colours are display values: no tone mapping
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.filepath = str(backend_job / "cycles.png")
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(backend_job / "cycles.png"))
    rgba = np.asarray(image.pixels[:], dtype=np.float32).reshape(SIZE, SIZE, 4)[::-1]  # Blender rows go up
    cycles = rgba[..., :3] * rgba[..., 3:]  # over black, as the backend renders
    reference = np.load(backend_job / "backend_rgb.npy")
    psnr = -10 * np.log10(float(((cycles - reference) ** 2).mean()))
    print(f"Cycles ({SAMPLES} spp, {SIZE}x{SIZE}) vs backend render(): PSNR {psnr:.2f} dB")
    assert psnr >= MIN_PSNR, psnr

    # Solid mode's engine (Workbench) draws the same splats: its silhouette covers Cycles'.
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.filepath = str(backend_job / "workbench.png")
    bpy.ops.render.render(write_still=True)
    solid = bpy.data.images.load(str(backend_job / "workbench.png"))
    alpha_solid = np.asarray(solid.pixels[:], dtype=np.float32).reshape(SIZE, SIZE, 4)[::-1, :, 3] > 0.5
    alpha_cycles = rgba[..., 3] > 0.5
    overlap = (alpha_solid & alpha_cycles).sum() / max(1, (alpha_solid | alpha_cycles).sum())
    print(f"Workbench vs Cycles silhouette IoU {overlap:.3f}")
    assert alpha_cycles.mean() > 0.02 and overlap > 0.8, (alpha_cycles.mean(), overlap)
