"""Fit loop pieces: dataset layout round trip, losses, learning-rate decay, checkpoints, stop/resume equality."""

from __future__ import annotations

import json

import pytest
import torch

from backend.core.errors import Cancelled, InputError
from backend.train.dataset import VideoClip, load_videos, read_clip, write_clip
from backend.train.field_fit import (
    FieldFitSettings,
    create_fit_state,
    fit_field,
    learning_rate,
    load_checkpoint,
    save_checkpoint,
)
from backend.render.metrics import ssim
from backend.train.losses import dssim_loss, stillness_weights


@pytest.fixture(scope="module")
def tiny_scene(default_body):
    from backend.train.recovery import RecoverySettings, build_recovery_scene

    return build_recovery_scene(RecoverySettings(body_gaussians=300, skirt_gaussians=200, motion_frames=9,
                                                 trajectories=2, width=32, height=48, held_out_views=2),
                                body=default_body)


def tiny_field(scene, seed=0):
    from backend.motion.residual import ResidualField
    from backend.train.recovery import recovery_field_config

    config = recovery_field_config(scene, spatial_resolution=6, temporal_resolution=5, features=4, hidden=16)
    return ResidualField(config, torch.Generator().manual_seed(seed))


def tiny_settings(**kw):
    from backend.train.recovery import recovery_fit_settings

    base = dict(iterations=12, report_every=1)
    base.update(kw)
    return recovery_fit_settings(**base)


@pytest.mark.unit
def test_dataset_roundtrip(tmp_path, tiny_scene):
    clip = tiny_scene.dataset.clips[0]
    write_clip(tmp_path / "videos" / clip.name, clip, 9, times=torch.linspace(-1, 1, clip.num_frames))
    back = read_clip(tmp_path / "videos" / clip.name, 9)
    assert back.name == clip.name and torch.equal(back.motion_frames, clip.motion_frames)
    assert (back.frames - clip.frames).abs().max() <= 0.5 / 255 + 1e-6
    assert (back.masks - clip.masks).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.allclose(back.cameras.world_from_camera, clip.cameras.world_from_camera, atol=1e-6)
    dataset = load_videos(tmp_path / "videos", 9)
    assert len(dataset) == clip.num_frames and dataset.has_masks


@pytest.mark.unit
def test_dataset_errors_name_the_field(tmp_path, tiny_scene):
    clip = tiny_scene.dataset.clips[0]
    folder = write_clip(tmp_path / "c", clip, 9)
    with pytest.raises(InputError, match="num_motion_frames"):
        read_clip(folder, 10)
    data = json.loads((folder / "cameras.json").read_text())
    data["motion_frames"] = data["motion_frames"][:-1]
    (folder / "cameras.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="motion_frames"):
        read_clip(folder, 9)
    (folder / "frame_000000.png").unlink()
    with pytest.raises(InputError, match="frame_"):
        read_clip(folder, 9)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no clip folders"):
        load_videos(tmp_path / "empty", 9)
    with pytest.raises(InputError, match="cameras"):
        VideoClip("x", clip.frames, clip.cameras[:2], clip.motion_frames)


@pytest.mark.unit
def test_even_motion_frames_without_mapping(tmp_path, tiny_scene):
    clip = tiny_scene.dataset.clips[0]
    folder = write_clip(tmp_path / "c", clip, 9)
    data = json.loads((folder / "cameras.json").read_text())
    del data["motion_frames"], data["num_motion_frames"]
    (folder / "cameras.json").write_text(json.dumps(data))
    assert read_clip(folder, 9).motion_frames.tolist() == [0, 2, 4, 6, 8]


@pytest.mark.unit
def test_losses():
    img = torch.rand(1, 20, 24, 3, generator=torch.Generator().manual_seed(0))
    assert float(ssim(img, img)) == pytest.approx(1.0, abs=1e-5)
    assert float(dssim_loss(img, img)) == pytest.approx(0.0, abs=1e-5)
    assert float(dssim_loss(img, 1 - img)) > 0.3


@pytest.mark.unit
def test_stillness_weights(tiny_scene):
    from backend.body.parts import identity_critical

    g = tiny_scene.canonical
    w = stillness_weights(g, 5.0, 0.1)
    assert bool((w[g.loose] == 0).all())
    crit = identity_critical(g.part_ids) & ~g.loose
    assert bool((w[crit] == 5.0).all()) and bool((w[~crit & ~g.loose] == 0.1).all())


@pytest.mark.unit
def test_learning_rate_decay():
    assert learning_rate(1.6e-3, 1.6e-5, 0, 100) == pytest.approx(1.6e-3)
    assert learning_rate(1.6e-3, 1.6e-5, 50, 100) == pytest.approx(1.6e-4)
    assert learning_rate(1.6e-3, 1.6e-5, 100, 100) == pytest.approx(1.6e-5)
    assert learning_rate(1.6e-3, 1.6e-5, 200, 100) == pytest.approx(1.6e-5)
    with pytest.raises(InputError, match="iterations"):
        FieldFitSettings(iterations=0)


def test_fit_reduces_loss_and_moves_only_what_it_may(tiny_scene):
    field = tiny_field(tiny_scene)
    settings = tiny_settings(iterations=30)
    state = create_fit_state(field, settings, seed=1)
    history = fit_field(state, tiny_scene.canonical, tiny_scene.joint_transforms, tiny_scene.dataset, settings)
    assert len(history) == 30 and state.iteration == 30
    assert state.optimizer.param_groups[0]["lr"] < settings.grid_lr[0]  # decayed
    assert sum(h.l1 for h in history[-5:]) < sum(h.l1 for h in history[:5])


def test_stop_and_resume_equals_uninterrupted(tmp_path, tiny_scene):
    settings = tiny_settings(iterations=12, checkpoint_every=5)
    scene = tiny_scene

    straight = create_fit_state(tiny_field(scene), settings, seed=7)
    fit_field(straight, scene.canonical, scene.joint_transforms, scene.dataset, settings)

    def stop_at_8(fraction, message, preview=None):
        if "iteration 8/" in message:
            raise Cancelled()

    first = create_fit_state(tiny_field(scene), settings, seed=7)
    with pytest.raises(Cancelled):
        fit_field(first, scene.canonical, scene.joint_transforms, scene.dataset, settings,
                  checkpoint_dir=tmp_path / "ckpt", report=stop_at_8)
    assert json.loads((tmp_path / "ckpt" / "state.json").read_text())["iteration"] == 8

    resumed = create_fit_state(tiny_field(scene), settings, seed=7)  # a fresh process: nothing in memory
    fit_field(resumed, scene.canonical, scene.joint_transforms, scene.dataset, settings,
              checkpoint_dir=tmp_path / "ckpt")
    assert resumed.iteration == 12
    for (name, a), (_, b) in zip(straight.field.state_dict().items(), resumed.field.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.unit
def test_checkpoint_roundtrip_restores_optimizer_and_generator(tmp_path, tiny_scene):
    settings = tiny_settings(iterations=4)
    state = create_fit_state(tiny_field(tiny_scene), settings, seed=2)
    fit_field(state, tiny_scene.canonical, tiny_scene.joint_transforms, tiny_scene.dataset, settings)
    save_checkpoint(tmp_path / "ck", state)
    other = load_checkpoint(tmp_path / "ck", create_fit_state(tiny_field(tiny_scene), settings, seed=99))
    assert other.iteration == 4
    assert torch.equal(other.generator.get_state(), state.generator.get_state())
    sa, sb = state.optimizer.state_dict(), other.optimizer.state_dict()
    for k in sa["state"]:
        assert torch.equal(sa["state"][k]["exp_avg_sq"], sb["state"][k]["exp_avg_sq"])


def test_fit_cli_refits_a_job_folder(tmp_path, tiny_scene, capsys):
    from backend.cli import main
    from backend.gaussians import save_ply
    from backend.core.files import write_json
    from backend.motion.residual import ResidualField

    job = tmp_path / "job"
    job.mkdir()
    save_ply(tiny_scene.canonical, job / "canonical.ply")
    write_json(job / "result.json", {"schema_version": 1, "frames": 9, "body": "default", "quality": "preview",
                                     "seed": 0, "timings": {}})
    for clip in tiny_scene.dataset.clips:
        write_clip(tmp_path / "videos" / clip.name, clip, 9)
    # no motion.npz in the job and none given: a one-line error, exit 2
    assert main(["fit", "--job", str(job), "--videos", str(tmp_path / "videos"), "--iterations", "2"]) == 2
    assert "motion" in capsys.readouterr().err
    tiny_scene.motion.save(tmp_path / "walk.npz")
    rc = main(["fit", "--job", str(job), "--videos", str(tmp_path / "videos"), "--iterations", "2",
               "--motion", str(tmp_path / "walk.npz")])
    assert rc == 0
    assert ResidualField.load(job / "field").config.bounds
    assert len(sorted((job / "frames").glob("frame_*.ply"))) == 9
    assert (job / "motion.npz").is_file()
    result = json.loads((job / "result.json").read_text())
    assert result["layered"] is True and result["fit"]["iterations"] == 2
    assert not (tmp_path / ".job.checkpoint").exists()
    assert main(["fit", "--job", str(job), "--videos", str(tmp_path / "nowhere")]) == 2


@pytest.mark.unit
def test_capture_layouts_are_read(tmp_path, tiny_scene):
    """RGBA frames with plain names + per-camera "frame", JPEG frames, and an MP4 all give the clip back."""
    import numpy as np
    from PIL import Image

    from backend.render.video import write_mp4

    clip = tiny_scene.dataset.clips[0]
    n = clip.num_frames
    rgba_dir, jpeg_dir, mp4_dir = tmp_path / "rgba", tmp_path / "jpeg", tmp_path / "mp4"
    cams = [{**c, "frame": int(f)} for c, f in zip(clip.cameras.to_dicts(), clip.motion_frames)]
    alpha = clip.masks[..., 0].numpy() if clip.masks is not None else np.ones(clip.frames.shape[:3])
    for folder in (rgba_dir, jpeg_dir, mp4_dir):
        folder.mkdir()
        (folder / "cameras.json").write_text(json.dumps({"frames": cams}))
    for i in range(n):  # unpadded names: natural order must put 2 before 10
        straight = clip.frames[i].numpy()
        rgba = np.concatenate([straight, alpha[i][..., None]], -1)
        Image.fromarray((rgba * 255 + 0.5).astype(np.uint8), "RGBA").save(rgba_dir / f"{i}.png")
        Image.fromarray((straight * 255 + 0.5).astype(np.uint8)).save(jpeg_dir / f"img_{i}.jpg", quality=98)
    write_mp4(clip.frames, mp4_dir / "take.mp4", fps=24)
    rgba = read_clip(rgba_dir, 9, background=(0.0, 0.0, 0.0))
    assert torch.equal(rgba.motion_frames, clip.motion_frames)
    assert rgba.masks is not None and torch.allclose(rgba.masks[..., 0], torch.as_tensor(alpha).float(), atol=1 / 255)
    expected = clip.frames * rgba.masks  # composited over black
    assert float((rgba.frames - expected).abs().max()) <= 2 / 255
    jpeg = read_clip(jpeg_dir, 9)
    assert jpeg.masks is None and float((jpeg.frames - clip.frames).abs().mean()) < 0.03
    mp4 = read_clip(mp4_dir, 9)
    assert mp4.num_frames == n and float((mp4.frames - clip.frames).abs().mean()) < 0.08


@pytest.mark.unit
def test_unreadable_layouts_list_what_is_read(tmp_path, tiny_scene):
    clip = tiny_scene.dataset.clips[0]
    folder = tmp_path / "clip"
    folder.mkdir()
    cams = clip.cameras.to_dicts()
    (folder / "cameras.json").write_text(json.dumps({"frames": cams}))
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no images or video; a clip folder holds cameras.json"):
        read_clip(folder, 9)
    write_clip(folder, clip, 9)
    half = [{**c, "frame": 0} for c in cams[:1]] + cams[1:]
    (folder / "cameras.json").write_text(json.dumps({"frames": half}))
    with pytest.raises(InputError, match=r"frames\[1\]\.frame: missing"):
        read_clip(folder, 9)


@pytest.mark.unit
def test_fit_budget_scales_with_the_video():
    from backend.stages.refit import MAX_DEFAULT_ITERATIONS, default_iterations

    warnings: list[str] = []
    assert default_iterations(10, 400, warnings) == 400
    assert default_iterations(240, 400, warnings) == 2400
    assert default_iterations(10_000, 400, warnings) == MAX_DEFAULT_ITERATIONS and "capped" in warnings[0]


def test_appearance_refinement_learns_colours_the_videos_show_and_resumes_bit_identically(tmp_path, tiny_scene):
    from backend.gaussians.container import rgb_to_sh_dc
    from backend.motion.layered import layered_frame
    from backend.render import RenderSettings, render
    from backend.train.dataset import VideoDataset
    from backend.train.field_fit import with_appearance
    from backend.train.losses import identity_critical

    canonical = tiny_scene.canonical
    loose = canonical.loose
    seen = rgb_to_sh_dc(torch.tensor([[0.1, 0.6, 0.2]])).to(canonical.sh.dtype)
    truth_sh = canonical.sh.clone()
    truth_sh[loose, 0] = seen  # the videos show a green skirt the photo did not
    truth = canonical.replace(sh=truth_sh)
    clips = []
    for clip in tiny_scene.dataset.clips:
        with torch.no_grad():
            frames = torch.cat([render(layered_frame(truth, None, tiny_scene.joint_transforms[f], 0.0),
                                       clip.cameras[i:i + 1], settings=RenderSettings(background=(1.0, 1.0, 1.0))).rgb
                                for i, f in enumerate(clip.motion_frames.tolist())])
        clips.append(VideoClip(clip.name, frames, clip.cameras, clip.motion_frames, masks=clip.masks))
    dataset = VideoDataset(clips, tiny_scene.dataset.num_motion_frames)
    settings = tiny_settings(iterations=40, appearance=True, appearance_lr=0.1)
    state = create_fit_state(tiny_field(tiny_scene), settings, seed=1, num_gaussians=canonical.num_gaussians)
    fit_field(state, canonical, tiny_scene.joint_transforms, dataset, settings)
    fitted = with_appearance(canonical, state.appearance).detach()
    before = (canonical.sh[loose, 0] - seen).norm(dim=-1).mean()
    after = (fitted.sh[loose, 0] - seen).norm(dim=-1).mean()
    assert after < 0.7 * before, (float(after), float(before))
    identity = identity_critical(canonical.part_ids) & ~loose
    moved_identity = state.appearance.detach()[identity].norm(dim=-1).mean()
    moved_skirt = state.appearance.detach()[loose].norm(dim=-1).mean()
    assert moved_identity < 0.2 * moved_skirt  # the guard holds the identity to the reconstruction
    # stop after 15 iterations and resume: bit-identical to the uninterrupted fit
    ckpt = tmp_path / "ckpt"
    resumed = create_fit_state(tiny_field(tiny_scene), settings, seed=1, num_gaussians=canonical.num_gaussians)
    fit_field(resumed, canonical, tiny_scene.joint_transforms, dataset, settings, until=15, checkpoint_dir=ckpt)
    again = create_fit_state(tiny_field(tiny_scene), settings, seed=1, num_gaussians=canonical.num_gaussians)
    fit_field(again, canonical, tiny_scene.joint_transforms, dataset, settings, checkpoint_dir=ckpt)
    assert torch.equal(again.appearance, state.appearance)
