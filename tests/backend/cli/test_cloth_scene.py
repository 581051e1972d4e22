"""The independent Blender-cloth scene, tiny: Blender's cloth solver and Cycles make the ground truth
(``scripts/cloth_scene.py``), and the user's commands read it as a capture: ``animate`` from the RGBA photo,
``fit --videos`` on RGBA ``0000.png`` frames with per-camera ``"frame"`` indices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
BLENDER_PY = Path(os.environ.get("ANI3D_BLENDER53_PYTHON", REPO / ".venv-blender-5.3" / "bin" / "python"))


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    if not BLENDER_PY.is_file():
        pytest.skip(f"needs the Blender 5.3 environment ({BLENDER_PY}; ./scripts/setup.sh makes it)")
    out = tmp_path_factory.mktemp("cloth") / "twirl"
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"),
           "BLENDER_USER_RESOURCES": str(home / "blender")}
    subprocess.run([sys.executable, str(REPO / "scripts" / "cloth_scene.py"), "--out", str(out), "--frames", "8",
                    "--size", "64", "--photo-size", "128", "--samples", "4", "--warmup", "6", "--trajectories", "2",
                    "--blender", str(BLENDER_PY)], check=True, cwd=REPO, env=env, timeout=600)
    return out


def test_the_scene_is_a_capture_the_cli_reads(tiny_scene, tmp_path):
    from backend.cli.main import main
    from backend.train.dataset import load_videos

    stats = json.loads((tiny_scene / "cloth_stats.json").read_text())
    assert stats["max_inside_body"] == 0 and all(f["finite"] for f in stats["frames"])
    videos = load_videos(tiny_scene / "videos", 8)
    assert len(videos.clips) == 2 and all(c.masks is not None for c in videos.clips)  # RGBA alpha -> masks
    assert sorted(set(videos.clips[0].motion_frames.tolist())) == list(range(8))  # per-camera "frame" indices
    job = tmp_path / "job"
    assert main(["animate", "--motion", str(tiny_scene / "motion.npz"), "--image", str(tiny_scene / "photo.png"),
                 "--camera", str(tiny_scene / "photo_camera.json"), "--reference-frame", "0", "--gaussians",
                 "2000", "--out", str(job)]) == 0
    result = json.loads((job / "result.json").read_text())
    assert result["subject"]["fit"]["iou"] > 0.9 and result["subject"]["fit_pixels_per_metre"] > 0
    fitted = tmp_path / "fitted"
    assert main(["fit", "--job", str(job), "--videos", str(tiny_scene / "videos"), "--out", str(fitted),
                 "--iterations", "20", "--appearance", "on"]) == 0
    refit = json.loads((fitted / "result.json").read_text())
    assert refit["fit"]["iterations"] == 20 and refit["fit"]["appearance"] is True
    assert (fitted / "canonical_reconstructed.ply").is_file() and len(list((fitted / "frames").iterdir())) == 8
