"""Sampler settings per job: presets, overrides, validation on every path in (spec, CLI, wire dict)."""

from __future__ import annotations

import pytest

from backend.core.errors import InputError

pytestmark = pytest.mark.unit


def test_presets_resolve_and_overrides_win():
    from backend.diffusion.restore import sampler_settings

    paper = sampler_settings("paper", None, steps=4, strength=0.6, seed=3)
    assert (paper.steps, paper.strength, paper.gamma, paper.cfg, paper.seed) == (4, 0.6, "sigma", None, 3)
    released = sampler_settings("released", None, steps=4, strength=0.6)
    assert (released.steps, released.strength, released.guidance, released.gamma, released.cfg, released.shift) == \
        (7, 0.7, 0.05, "full", 5.0, 5.0)
    tuned = sampler_settings("released", {"steps": 12, "gamma": "0.3", "guidance_schedule": "constant"}, steps=4,
                             strength=0.6)
    assert (tuned.steps, tuned.gamma, tuned.guidance_schedule, tuned.strength) == (12, 0.3, "constant", 0.7)


@pytest.mark.parametrize("name,overrides,message", [
    ("papr", {}, "sampler: expected one of"),
    ("paper", {"stepz": 3}, "sampler_settings: unknown field"),
    ("paper", {"steps": 0}, "sampler_settings.steps"),
    ("paper", {"strength": 1.5}, "sampler_settings.strength"),
    ("paper", {"gamma": "half"}, "sampler_settings.gamma"),
    ("paper", {"cfg": 0.5}, "sampler_settings.cfg"),
    ("paper", {"guidance": "a lot"}, "sampler_settings.guidance"),
])
def test_bad_sampler_settings_name_the_field(default_body, name, overrides, message):
    from backend.motion.builtin import builtin_motion
    from backend.stages.job import JobSpec

    motion = builtin_motion("walk", default_body, frames=3)
    with pytest.raises(InputError, match=message):
        JobSpec(motion=motion, sampler=name, sampler_settings=overrides)
    with pytest.raises(InputError, match=message):  # the wire's path
        JobSpec.from_dict({"motion": motion.arrays(), "sampler": name, "sampler_settings": overrides})


def test_released_sets_the_released_video_size_unless_the_job_overrides_it(default_body):
    from backend.motion.builtin import builtin_motion
    from backend.stages.job import JobSpec
    from backend.stages.presets import job_preset

    motion = builtin_motion("walk", default_body, frames=3)
    released = job_preset(JobSpec(motion=motion, sampler="released"))
    assert (released.video_frames, released.width, released.height) == (81, 480, 832)
    paper = job_preset(JobSpec(motion=motion))
    assert (paper.video_frames, paper.width, paper.height) == (17, 160, 272)
    small = job_preset(JobSpec(motion=motion, sampler="released", extras={"prior_preset": {"video_frames": 5}}))
    assert (small.video_frames, small.width) == (5, 480)


def test_cli_sampler_flags_reach_the_spec_and_bad_ones_exit_2(tmp_path, capsys, default_body):
    from backend.cli.main import main
    from backend.motion.builtin import builtin_motion

    motion_path = tmp_path / "m.npz"
    builtin_motion("walk", default_body, frames=3).save(motion_path)
    code = main(["animate", "--motion", str(motion_path), "--out", str(tmp_path / "job"), "--gaussians", "200",
                 "--sampler", "released", "--steps", "9", "--gamma", "0.5", "--cfg", "4"])
    assert code == 0
    import json

    settings = json.loads((tmp_path / "job" / "result.json").read_text())["settings"]
    assert settings["sampler"] == "released"
    assert settings["sampler_settings"] == {"steps": 9, "gamma": 0.5, "cfg": 4.0}
    code = main(["animate", "--motion", str(motion_path), "--out", str(tmp_path / "bad"), "--strength", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "sampler_settings.strength" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
