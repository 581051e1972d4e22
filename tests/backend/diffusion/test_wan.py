"""WanPrior on tiny random-weight models of the real diffusers classes, loaded only through from_pretrained."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from backend.diffusion import registry
from backend.diffusion.wan import (
    WanPrior,
    load_prompt_embeds,
    pad_reference_image,
    vace_mask_latents,
)
from backend.diffusion.wan_random import save_random_wan
from backend.core.errors import CapabilityError, InputError

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan")
    return {
        "t2v": save_random_wan(root / "t2v", kind="t2v", seed=0),
        "vace": save_random_wan(root / "vace", kind="vace", seed=1),
    }


@pytest.fixture(scope="module")
def t2v(folders):
    return WanPrior.from_pretrained(folders["t2v"], device="cpu")


@pytest.fixture(scope="module")
def vace(folders):
    return WanPrior.from_pretrained(folders["vace"], device="cpu")


def _video(frames=5, h=32, w=32, seed=0):
    return torch.rand(frames, h, w, 3, generator=torch.Generator().manual_seed(seed))


def test_loads_real_classes_with_detected_kind_and_default_cfg(t2v, vace):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel, WanVACETransformer3DModel
    from transformers import UMT5EncoderModel

    assert (t2v.kind, vace.kind) == ("t2v", "vace")
    assert type(t2v.transformer) is WanTransformer3DModel
    assert type(vace.transformer) is WanVACETransformer3DModel
    assert isinstance(t2v.vae, AutoencoderKLWan) and isinstance(t2v.text_encoder, UMT5EncoderModel)
    assert type(t2v.tokenizer).__name__.startswith("T5Tokenizer")
    assert (t2v.default_cfg, vace.default_cfg) == (2.0, 5.0)


@pytest.mark.parametrize("frames,latent_frames", [(1, 1), (5, 2), (9, 3)])
def test_encode_decode_shapes(t2v, frames, latent_frames):
    latents = t2v.encode(_video(frames, 32, 48))
    assert latents.shape == (1, 16, latent_frames, 4, 6) and latents.dtype == torch.float32
    video = t2v.decode(latents)
    assert video.shape == (frames, 32, 48, 3)
    assert float(video.min()) >= 0.0 and float(video.max()) <= 1.0


def test_latents_use_the_vae_normalisation(t2v):
    video = _video()
    latents = t2v.encode(video)
    cfg = t2v.vae.config
    mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        raw = t2v.vae.encode(video.permute(3, 0, 1, 2)[None] * 2 - 1).latent_dist.mode()
        expected_video = t2v.vae.decode(latents * std + mean).sample
    torch.testing.assert_close(latents, (raw - mean) / std, rtol=1e-5, atol=1e-5)
    expected_video = ((expected_video.clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 3, 0)
    torch.testing.assert_close(t2v.decode(latents), expected_video, rtol=1e-5, atol=1e-5)


def test_prompt_embeddings_match_the_diffusers_pipeline(t2v):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    pipe = WanPipeline(tokenizer=t2v.tokenizer, text_encoder=t2v.text_encoder, vae=t2v.vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(), transformer=t2v.transformer)
    prompt, negative = "a person moving, clean background", "blurry static"
    expected_pos, expected_neg = pipe.encode_prompt(prompt, negative, max_sequence_length=512, device="cpu")
    pos, neg = t2v.prompt_embeddings(prompt, negative)
    assert pos.shape == (1, 512, 32)
    torch.testing.assert_close(pos, expected_pos.float())
    torch.testing.assert_close(neg, expected_neg.float())
    assert not torch.equal(pos, neg)


def test_prompt_cache_lets_the_text_encoder_go(folders, t2v, tmp_path):
    cache = tmp_path / "job" / "prompt_embeds.safetensors"
    pos, neg = t2v.prompt_embeddings("a person moving", "", cache_path=cache)
    assert cache.is_file()
    no_text = WanPrior.from_pretrained(folders["t2v"], device="cpu", text_encoder=False)
    assert no_text.text_encoder is None
    pos2, neg2 = no_text.prompt_embeddings("a person moving", "", cache_path=cache)
    torch.testing.assert_close(pos2, pos)
    torch.testing.assert_close(neg2, neg)
    assert load_prompt_embeds(cache, prompt="another prompt") is None
    with pytest.raises(CapabilityError, match="text encoder"):
        no_text.prompt_embeddings("another prompt", "", cache_path=cache)


def _calls(module):
    seen = []
    handle = module.register_forward_hook(lambda m, args, kwargs, out: seen.append(kwargs), with_kwargs=True)
    return seen, handle


def test_cfg_arithmetic_and_timestep(t2v):
    pos, neg = t2v.prompt_embeddings("a person moving", "blurry")
    conds = t2v.prepare_conditions(prompt_embeds=pos, negative_prompt_embeds=neg, num_frames=5, height=32, width=32)
    uncond = t2v.prepare_conditions(prompt_embeds=neg, negative_prompt_embeds=pos, num_frames=5, height=32,
                                    width=32)
    x = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    sigma = torch.tensor(0.7)
    seen, handle = _calls(t2v.transformer)
    try:
        v_c = t2v.velocity(conds, cfg_scale=1.0)(x, sigma)
        assert len(seen) == 1  # scale 1: the conditional branch alone
        v_u = t2v.velocity(uncond, cfg_scale=1.0)(x, sigma)
        seen.clear()
        v = t2v.velocity(conds, cfg_scale=3.5)(x, sigma)
        assert len(seen) == 2
        assert all(torch.allclose(k["timestep"], torch.tensor([700.0])) for k in seen)
    finally:
        handle.remove()
    assert not torch.allclose(v_c, v_u)
    torch.testing.assert_close(v, v_u + 3.5 * (v_c - v_u), rtol=1e-5, atol=1e-5)
    # default scale: the model's (2 for T2V)
    torch.testing.assert_close(t2v.velocity(conds)(x, sigma), v_u + 2.0 * (v_c - v_u), rtol=1e-5, atol=1e-5)


def test_velocity_is_deterministic(vace):
    pos, neg = vace.prompt_embeddings()
    conds = vace.prepare_conditions(prompt_embeds=pos, negative_prompt_embeds=neg, num_frames=5, height=32, width=32,
                                    pose_video=_video(seed=4), reference_image=torch.rand(20, 12, 3))
    x = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    runs = [vace.velocity(conds, generator=torch.Generator().manual_seed(s))(x, 0.5) for s in (0, 0, 1)]
    assert runs[0].shape == x.shape
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])  # the reference slot's noise comes from the generator


def test_vace_conditions_match_the_diffusers_pipeline(vace):
    """Control latents and mask channels reproduce WanVACEPipeline.prepare_video_latents/prepare_masks."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanVACEPipeline
    from PIL import Image

    pose = (_video(seed=6) * 255).round().to(torch.uint8)
    # 24 x 16: a multiple of 8, which the pipeline's image processor would otherwise snap to first
    ref = (torch.rand(24, 16, 3, generator=torch.Generator().manual_seed(7)) * 255).round().to(torch.uint8)
    pos, neg = vace.prompt_embeddings()
    ours = vace.prepare_conditions(prompt_embeds=pos, negative_prompt_embeds=neg, num_frames=5, height=32,
                                   width=32, pose_video=pose.float() / 255, reference_image=ref.float() / 255)

    pipe = WanVACEPipeline(tokenizer=vace.tokenizer, text_encoder=vace.text_encoder, vae=vace.vae,
                           scheduler=FlowMatchEulerDiscreteScheduler(), transformer=vace.transformer)
    frames = [Image.fromarray(f.numpy()) for f in pose]
    video, mask, refs = pipe.preprocess_conditions(frames, None, Image.fromarray(ref.numpy()), 1, 32, 32, 5,
                                                   torch.float32, torch.device("cpu"))
    latents = pipe.prepare_video_latents(video, mask, refs, None, torch.device("cpu"))
    masks = pipe.prepare_masks(mask, refs, None)
    expected = torch.cat([latents, masks], dim=1)

    assert ours.control_latents.shape == expected.shape == (1, 96, 3, 4, 4)
    assert ours.num_reference_frames == 1
    torch.testing.assert_close(ours.control_latents.float(), expected.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.reference_latents, expected[:, :16, :1].float(), rtol=1e-4, atol=1e-4)


def test_vace_mask_latents_pixel_unshuffle():
    # Time: nearest-exact from 5 to 2 frames samples frames 1 and 3 (the pipeline's choice, kept as is).
    mask = torch.zeros(5, 32, 32)
    mask[1, 9, 17] = 1  # pixel (9, 17): latent cell (1, 2), sub-position (1, 1) -> channel 1 * 8 + 1
    mask[3, 0, 31] = 1  # latent cell (0, 3), sub-position (0, 7) -> channel 7
    mask[0, 5, 5] = 1  # frame 0 is not sampled
    out = vace_mask_latents(mask, 2)
    assert out.shape == (64, 2, 4, 4)
    assert out.sum() == 2 and out[9, 0, 1, 2] == 1 and out[7, 1, 0, 3] == 1


def test_reference_image_is_padded_not_stretched():
    image = torch.rand(20, 10, 3)  # portrait 2:1 onto a square canvas: 32 x 16, centred
    canvas = pad_reference_image(image, 32, 32)
    assert canvas.shape == (32, 32, 3)
    assert torch.all(canvas[:, :8] == 1.0) and torch.all(canvas[:, 24:] == 1.0)
    inner = canvas[:, 8:24]
    expected = torch.nn.functional.interpolate(image.permute(2, 0, 1)[None], size=(32, 16), mode="bilinear",
                                               align_corners=False)[0].permute(1, 2, 0)
    torch.testing.assert_close(inner, expected)
    wide = pad_reference_image(torch.rand(10, 40, 3), 32, 64)  # 1:4 onto 1:2 -> 16 x 64 band in the middle
    assert torch.all(wide[:8] == 1.0) and torch.all(wide[24:] == 1.0) and not torch.all(wide[8:24] == 1.0)


def test_t2v_refuses_vace_inputs(t2v):
    pos, neg = t2v.prompt_embeddings()
    with pytest.raises(InputError, match="VACE"):
        t2v.prepare_conditions(prompt_embeds=pos, negative_prompt_embeds=neg, num_frames=5, height=32, width=32,
                               pose_video=_video())


@pytest.mark.parametrize("frames,h,w,match", [(4, 32, 32, "4k\\+1"), (5, 24, 32, "multiples of 16"),
                                               (5, 32, 40, "multiples of 16")])
def test_bad_video_sizes(t2v, frames, h, w, match):
    with pytest.raises(InputError, match=match):
        t2v.encode(torch.rand(frames, h, w, 3))


def test_missing_folder_and_repo_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CapabilityError, match="does not exist"):
        WanPrior.from_pretrained(tmp_path / "nowhere", device="cpu")
    with pytest.raises(CapabilityError, match="hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers"):
        WanPrior.from_pretrained("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", device="cpu", cache_dir=tmp_path / "hf")


def test_corrupt_folders(folders, tmp_path):
    broken = shutil.copytree(folders["t2v"], tmp_path / "no_weights")
    for f in (broken / "transformer").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(CapabilityError, match="incomplete or corrupt: missing or unreadable transformer"):
        WanPrior.from_pretrained(broken, device="cpu")
    garbage = shutil.copytree(folders["t2v"], tmp_path / "garbage")
    for f in (garbage / "vae").glob("*.safetensors"):
        f.write_bytes(b"not a safetensors file")
    with pytest.raises(CapabilityError, match="cannot load vae"):
        WanPrior.from_pretrained(garbage, device="cpu")
    bad_json = shutil.copytree(folders["t2v"], tmp_path / "bad_json")
    (bad_json / "transformer" / "config.json").write_text("{ not json")
    with pytest.raises(CapabilityError, match="transformer/config.json"):
        WanPrior.from_pretrained(bad_json, device="cpu")


def test_unsupported_variants(folders, tmp_path):
    with pytest.raises(InputError, match="prior kind"):
        WanPrior.from_pretrained(folders["t2v"], kind="i2v", device="cpu")
    with pytest.raises(InputError, match="holds a 't2v' model"):
        WanPrior.from_pretrained(folders["t2v"], kind="vace", device="cpu")
    i2v = shutil.copytree(folders["t2v"], tmp_path / "i2v")
    config = json.loads((i2v / "transformer" / "config.json").read_text())
    config.update(in_channels=36, image_dim=1280)
    (i2v / "transformer" / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="unsupported variant"):
        WanPrior.from_pretrained(i2v, device="cpu")
    animate = shutil.copytree(folders["t2v"], tmp_path / "animate")
    config["_class_name"] = "WanAnimateTransformer3DModel"
    (animate / "transformer" / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="unsupported variant"):
        WanPrior.from_pretrained(animate, device="cpu")


def test_large_model_without_cuda_is_refused_before_loading(folders, tmp_path, monkeypatch):
    big = shutil.copytree(folders["t2v"], tmp_path / "big")
    config = json.loads((big / "transformer" / "config.json").read_text())
    config.update(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40, text_dim=4096)
    (big / "transformer" / "config.json").write_text(json.dumps(config))
    assert registry.transformer_params(config) == pytest.approx(14e9, rel=0.05)

    import diffusers

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded before the capability check")

    monkeypatch.setattr(diffusers.WanTransformer3DModel, "from_pretrained", no_loading)
    monkeypatch.setattr(diffusers.AutoencoderKLWan, "from_pretrained", no_loading)
    with pytest.raises(CapabilityError, match="needs an NVIDIA GPU"):
        WanPrior.from_pretrained(big, device="cpu")


def test_device_cuda_without_cuda(folders):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(CapabilityError, match="no CUDA"):
        WanPrior.from_pretrained(folders["t2v"], device="cuda")


def test_model_offload_keeps_results(folders, t2v):
    """'model' offload (modules moved in and out around each use) gives the same numbers as none."""
    offloaded = WanPrior.from_pretrained(folders["t2v"], device="cpu", offload="model")
    video = _video()
    torch.testing.assert_close(offloaded.encode(video), t2v.encode(video))
    # 'group' (diffusers block-level group offload of the transformer) runs the same blocks.
    grouped = WanPrior.from_pretrained(folders["t2v"], device="cpu", offload="group", text_encoder=False)
    pos, neg = t2v.prompt_embeddings()
    x = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    velocities = []
    for prior in (t2v, grouped):
        conds = prior.prepare_conditions(prompt_embeds=pos, negative_prompt_embeds=neg, num_frames=5, height=32,
                                         width=32)
        velocities.append(prior.velocity(conds)(x, 0.3))
    torch.testing.assert_close(velocities[1], velocities[0])
    with pytest.raises(InputError, match="offload"):
        WanPrior.from_pretrained(folders["t2v"], device="cpu", offload="sometimes")


def _fake_hf_cache(cache, repo_id, source):
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(source, repo / "snapshots" / commit)
    return repo / "snapshots" / commit


def test_repo_id_from_the_hf_cache_and_model_status(folders, tmp_path):
    cache = tmp_path / "hub"
    repo_id = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    snapshot = _fake_hf_cache(cache, repo_id, folders["t2v"])
    status = {s.info.repo_id: s for s in registry.model_status(cache)}
    assert status[repo_id].present and status[repo_id].path == snapshot
    assert not status["Wan-AI/Wan2.1-VACE-1.3B-diffusers"].present
    prior = WanPrior.from_pretrained(repo_id, device="cpu", cache_dir=cache, text_encoder=False)
    assert prior.name == repo_id and prior.kind == "t2v" and prior.default_cfg == 2.0


def test_models_cli_lists_present_and_missing(folders, tmp_path, capsys):
    from backend.cli import main

    cache = tmp_path / "hub"
    _fake_hf_cache(cache, "Wan-AI/Wan2.1-VACE-1.3B-diffusers", folders["vace"])
    assert main(["models", "--cache-dir", str(cache), "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert set(rows) == {m.repo_id for m in registry.SUPPORTED_MODELS}
    assert rows["Wan-AI/Wan2.1-VACE-1.3B-diffusers"]["present"]
    missing = rows["Wan-AI/Wan2.1-VACE-14B-diffusers"]
    assert not missing["present"] and missing["download"] == "hf download Wan-AI/Wan2.1-VACE-14B-diffusers"
    assert main(["models", "--download", "Wan-AI/Wan2.1-VACE-14B-diffusers"]) == 2
    assert "--allow-download" in capsys.readouterr().err


def test_two_expert_switch(folders, tmp_path):
    """Wan2.2 layout: transformer_2 + boundary_ratio; high noise uses the first expert, low noise the second."""
    two = shutil.copytree(folders["t2v"], tmp_path / "two")
    shutil.copytree(two / "transformer", two / "transformer_2")
    index = json.loads((two / "model_index.json").read_text())
    index.update(transformer_2=["diffusers", "WanTransformer3DModel"], boundary_ratio=0.875)
    (two / "model_index.json").write_text(json.dumps(index))
    prior = WanPrior.from_pretrained(two, device="cpu", text_encoder=False)
    assert prior.transformer_2 is not None and prior.boundary_ratio == 0.875
    assert prior._expert(900.0) is prior.transformer and prior._expert(500.0) is prior.transformer_2
    shutil.rmtree(two / "transformer_2")
    with pytest.raises(CapabilityError, match="transformer_2"):
        WanPrior.from_pretrained(two, device="cpu")


def test_decoded_video_is_finite_numpy_friendly(t2v):
    out = t2v.decode(t2v.encode(_video()))
    assert np.isfinite(out.numpy()).all()
