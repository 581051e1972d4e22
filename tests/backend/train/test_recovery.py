"""Recovery with known truth: a skirt whose true motion is skinning + a known flare/lag residual.

Ground-truth videos along diagonal trajectories are written to disk in the restore stage's layout, a job
folder is made for the subject, and ``fit_job_folder`` (what ``ani3dhuman fit`` runs) fits the field with no
prior. Held-out cameras (other azimuths/elevations) at held-out (odd) motion frames must show: ≥ 3 dB PSNR
over rigid-only on the skirt region, ≥ 50 % lower 3D error of the skirt, identity-critical Gaussians < 2 mm.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

ITERATIONS = 600



def make_job(folder, scene):
    from backend.gaussians import save_ply
    from backend.core.files import write_json

    folder.mkdir()
    save_ply(scene.canonical, folder / "canonical.ply")
    scene.motion.save(folder / "motion.npz")
    write_json(folder / "result.json", {"schema_version": 1, "status": "complete", "frames": scene.motion.num_frames,
                                        "body": "default", "quality": "preview", "seed": 0, "layered": False,
                                        "timings": {}})


def test_fit_recovers_known_skirt_residual(tmp_path, default_body):
    from backend.gaussians import load_ply
    from backend.motion.residual import ResidualField
    from backend.train.dataset import write_clip
    from backend.train.recovery import (
        build_recovery_scene,
        evaluate_recovery,
        recovery_field_config,
        recovery_fit_settings,
    )
    from backend.stages.refit import fit_job_folder

    scene = build_recovery_scene(body=default_body)
    for clip in scene.dataset.clips:
        write_clip(tmp_path / "videos" / clip.name, clip, scene.motion.num_frames)
    make_job(tmp_path / "job", scene)

    events = []
    result = fit_job_folder(tmp_path / "job", tmp_path / "videos", tmp_path / "fitted",
                            settings=recovery_fit_settings(ITERATIONS), field_config=recovery_field_config(scene),
                            seed=0, progress=events.append)
    assert result["layered"] is True and result["fit"]["iterations"] == ITERATIONS
    assert {"fit", "export", "done"} <= {e.stage for e in events}

    field = ResidualField.load(tmp_path / "fitted" / "field")
    metrics = evaluate_recovery(scene, field)
    print(json.dumps(metrics.__dict__, indent=1))
    assert metrics.psnr_fit - metrics.psnr_rigid >= 3.0, metrics
    assert metrics.error_fit_mm <= 0.5 * metrics.error_rigid_mm, metrics
    assert metrics.identity_max_mm < 2.0, metrics

    # the exported frames are the fitted layered motion (frame 5 is a held-out time)
    frame = load_ply(tmp_path / "fitted" / "frames" / "frame_000005.ply")
    truth = scene.true_frame(5).means[scene.skirt]
    err = (frame.means[scene.skirt] - truth).norm(dim=-1).mean()
    assert float(err) * 1000 <= 0.6 * metrics.error_rigid_mm
