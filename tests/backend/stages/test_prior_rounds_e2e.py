"""The whole prior loop on CPU with a tiny random-weight Wan prior: every stage runs, outputs and progress land.

Checks plumbing (render -> restore -> fit rounds -> export), not quality.
"""

from __future__ import annotations

import json

import pytest

from backend.core.errors import Cancelled

pytestmark = [pytest.mark.model, pytest.mark.slow]

TINY = {"rounds": 2, "trajectories_per_round": 1, "iterations": 6, "video_frames": 5, "width": 32, "height": 48,
        "restore_steps": 2, "spatial_resolution": 8, "temporal_resolution": 5, "features": 4, "multires": [1]}


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    from backend.diffusion.wan_random import save_random_wan

    return save_random_wan(tmp_path_factory.mktemp("wan") / "tiny-t2v", arch="tiny", kind="t2v", seed=0)


def make_spec(default_body, prior, **kw):
    from backend.stages.job import JobSpec
    from backend.motion.builtin import builtin_motion

    motion = builtin_motion("walk", default_body, frames=9)
    return JobSpec(motion=motion, gaussians=300, seed=3, quality="preview", prior=str(prior),
                   extras={"prior_preset": TINY}, **kw)


def test_animate_with_prior_runs_every_stage(tmp_path, default_body, tiny_prior):
    from backend.gaussians import load_ply
    from backend.motion.residual import ResidualField
    from backend.stages.animate import animate

    events = []
    out = tmp_path / "job"
    result = animate(make_spec(default_body, tiny_prior), out, events.append)
    assert result["layered"] is True
    for key in ("load prior", "coarse render", "restore", "fit", "final render"):
        assert key in result["timings"], key
    for stage in ("coarse", "restored", "final"):
        for k in range(2):
            clip = out / "renders" / stage / f"trajectory_{k:02d}"
            assert len(sorted(clip.glob("frame_*.png"))) == 5, clip
            cams = json.loads((clip / "cameras.json").read_text())
            assert len(cams["frames"]) == 5 and len(cams["motion_frames"]) == 5
            assert (clip / "video.mp4").stat().st_size > 0 and (clip / "contact_sheet.png").is_file()
    field = ResidualField.load(out / "field")
    fit = json.loads((out / "field" / "fit.json").read_text())
    assert fit["iterations"] == 6 and field.config.spatial_resolution == 8
    assert len(sorted((out / "frames").glob("frame_*.ply"))) == 9
    assert load_ply(out / "frames" / "frame_000004.ply").num_gaussians == 300
    stages = {e.stage for e in events}
    assert {"restore", "fit", "render", "export", "done"} <= stages
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(e.preview is not None for e in events if e.stage == "fit")
    # the hidden checkpoint sibling is gone once the job completed
    assert not any(p.name.endswith(".checkpoint") for p in tmp_path.iterdir())


def test_stopped_job_leaves_checkpoint_and_resumes(tmp_path, default_body, tiny_prior):
    from backend.stages.animate import animate

    spec = make_spec(default_body, tiny_prior)
    out = tmp_path / "job"

    def stop_in_second_round(event):
        if event.stage == "fit" and "round 2" in event.message:
            raise Cancelled()

    with pytest.raises(Cancelled):
        animate(spec, out, stop_in_second_round)
    assert not out.exists()
    ckpt = tmp_path / ".job.checkpoint"
    assert (ckpt / "videos" / "trajectory_01" / "cameras.json").is_file()
    assert (ckpt / "fit" / "state.json").is_file()
    events = []
    animate(spec, out, events.append)
    assert any("reusing restored" in e.message for e in events)
    assert (out / "field" / "field.safetensors").is_file()
    assert not ckpt.exists()


def test_prior_preset_override_is_validated():
    from backend.core.errors import InputError
    from backend.stages.presets import preset

    assert preset("preview", {"iterations": 7}).iterations == 7
    with pytest.raises(InputError, match="unknown field"):
        preset("preview", {"iters": 7})
    with pytest.raises(InputError, match="4k\\+1"):
        preset("preview", {"video_frames": 6})


@pytest.mark.parametrize("sampler", ["paper", "released"])
def test_both_sampler_presets_run_and_are_recorded_with_the_mask_term_and_warnings(tmp_path, default_body,
                                                                                    tiny_prior, sampler):
    from backend.diffusion.restore import SAMPLER_PRESETS
    from backend.stages.animate import animate

    spec = make_spec(default_body, tiny_prior)
    spec = type(spec)(**{**spec.__dict__, "sampler": sampler, "sampler_settings": {"steps": 2}})
    result = animate(spec, tmp_path / "job")
    recorded = result["sampler"]
    assert recorded["preset"] == sampler and recorded["steps"] == 2
    for key in ("gamma", "guidance", "cfg", "shift"):
        assert recorded[key] == SAMPLER_PRESETS[sampler][key], key
    assert result["settings"]["sampler"] == sampler
    # the restored clips carry subject masks and the mask term is active in every round
    rounds = result["prior_stages"]["round_losses"]
    assert len(rounds) == 2 and all(r["mask"] > 0.0 for r in rounds)
    restored = tmp_path / "job" / "renders" / "restored" / "trajectory_00"
    assert len(sorted(restored.glob("mask_*.png"))) == 5
    assert any("restorations run on cpu" in w for w in result["warnings"])


def test_gaussians_without_labels_warn_that_self_guidance_is_off(tmp_path, default_body, tiny_prior):
    from backend.stages.prior_rounds import preserve_masks
    from backend.render import orbit_cameras, frame_subject
    from backend.reconstruct import sample_body_gaussians
    import torch

    g = sample_body_gaussians(default_body, None, 300, torch.Generator().manual_seed(0))
    cams = orbit_cameras(frame_subject(g.means), num_frames=2, width=32, height=32)
    warnings: list[str] = []
    assert preserve_masks([g.replace(part_ids=None)] * 2, cams, "t0", warnings) is None
    assert "no part labels" in warnings[0]
    far = g.replace(means=g.means + torch.tensor([0.0, 0.0, 100.0]))  # nothing in view: the mask is empty
    mask = preserve_masks([far] * 2, cams, "t1", warnings)
    assert float(mask.sum()) == 0.0 and "preserve mask is empty" in warnings[1]


def test_prior_loop_can_refine_appearance(tmp_path, default_body, tiny_prior):
    import torch

    from backend.gaussians import load_ply
    from backend.stages.animate import animate
    from backend.stages.job import JobSpec

    spec = make_spec(default_body, tiny_prior)
    result = animate(spec, tmp_path / "job")  # appearance is on by default
    reconstructed = load_ply(tmp_path / "job" / "canonical_reconstructed.ply")
    refined = load_ply(tmp_path / "job" / "canonical.ply")
    assert torch.equal(reconstructed.means, refined.means) and not torch.equal(reconstructed.sh, refined.sh)
    fit = json.loads((tmp_path / "job" / "field" / "fit.json").read_text())
    assert fit["preset"]["appearance"] is True and result["layered"] is True
    off = JobSpec(**{**spec.__dict__, "extras": {"prior_preset": {**TINY, "appearance": False}}})
    animate(off, tmp_path / "off")
    assert not (tmp_path / "off" / "canonical_reconstructed.ply").exists()
