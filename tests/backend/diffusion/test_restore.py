"""The restoration stage end to end on tiny random-weight Wan models (CPU), through the real stage code."""

from __future__ import annotations

import math

import pytest
import torch

from backend.body.parts import PART_INDEX
from backend.diffusion.restore import RestoreConditions, RestoreSettings, restore
from backend.diffusion.wan import WanPrior
from backend.diffusion.wan_random import save_random_wan
from backend.core.errors import Cancelled, InputError
from backend.gaussians.container import Gaussians
from backend.render.cameras import Cameras

pytestmark = pytest.mark.model

F, H, W = 5, 32, 32


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan")
    return {kind: WanPrior.from_pretrained(save_random_wan(root / kind, kind=kind, seed=2), device="cpu")
            for kind in ("t2v", "vace")}


def _coarse(seed=0):
    return torch.rand(F, H, W, 3, generator=torch.Generator().manual_seed(seed))


def _cameras(frames=F):
    """Front cameras (at y = -2, looking +Y), 16 pixels per metre at the origin."""
    m = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, -2.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    return Cameras.create(m.expand(frames, 4, 4).clone(), width=W, height=H, fx=32.0)


def _state():
    """A labelled Gaussian scene and a posed default body, as the pipeline hands them over."""
    from backend.body import load_body_model

    g = torch.Generator().manual_seed(1)
    n = 40
    means = torch.rand(n, 3, generator=g) - 0.5
    parts = torch.tensor([PART_INDEX["head"], PART_INDEX["torso"]]).repeat(n // 2)
    gaussians = Gaussians.from_colors(means, torch.rand(n, 3, generator=g), scales=0.05, opacities=0.9,
                                      part_ids=parts, loose=torch.zeros(n, dtype=torch.bool))
    body = load_body_model("default")
    out = body(None, torch.tensor([math.pi / 2, 0.0, 0.0]).repeat(F, 1), torch.zeros(F, 63), torch.zeros(F, 3))
    return gaussians, out, body.joint_names


def test_full_self_guided_restoration_vace(priors, tmp_path):
    """3 steps, 5 frames, 32x32: mask rendered from Gaussians, pose drawn from joints, reference image, prompt
    through the tokenizer and text encoder (embeddings cached next to the job)."""
    gaussians, body_out, names = _state()
    conditions = RestoreConditions(
        prompt="a person moving", gaussians=gaussians, joints=body_out.joints,
        joint_transforms=body_out.joint_transforms, joint_names=names,
        reference_image=torch.rand(40, 24, 3, generator=torch.Generator().manual_seed(3)),
        prompt_cache=tmp_path / "prompt_embeds.safetensors",
    )
    reports = []
    settings = RestoreSettings(steps=3, strength=0.6, guidance=0.2, seed=7)
    video = restore(_coarse(), _cameras(), conditions, settings, lambda f, m: reports.append((f, m)),
                    prior=priors["vace"])
    assert video.shape == (F, H, W, 3) and video.dtype == torch.float32
    assert torch.isfinite(video).all() and float(video.min()) >= 0 and float(video.max()) <= 1
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert sum("step" in m for _, m in reports) == 3
    assert (tmp_path / "prompt_embeds.safetensors").is_file()


def test_restoration_t2v_with_given_mask_and_embeddings(priors):
    prior = priors["t2v"]
    pos, neg = prior.prompt_embeddings("a person moving", "")
    mask = torch.zeros(F, H, W)
    mask[:, :16] = 1.0
    conditions = RestoreConditions(prompt_embeds=pos, negative_prompt_embeds=neg, preserve_mask=mask)
    settings = RestoreSettings(steps=3, gamma="full", cfg=2.0, seed=5)
    video = restore(_coarse(), None, conditions, settings, prior=prior)
    assert video.shape == (F, H, W, 3) and torch.isfinite(video).all()
    assert torch.equal(video, restore(_coarse(), None, conditions, settings, prior=prior))  # same seed
    other = restore(_coarse(), None, conditions, RestoreSettings(steps=3, gamma="full", cfg=2.0, seed=6),
                    prior=prior)
    assert not torch.equal(video, other)


def test_full_guidance_with_a_full_mask_returns_the_coarse_latents(priors):
    """lambda = 1 (constant) and M = 1 make every x0 the coarse latents: the result is decode(encode(y))."""
    prior = priors["t2v"]
    pos, neg = prior.prompt_embeddings()
    coarse = _coarse(4)
    conditions = RestoreConditions(prompt_embeds=pos, negative_prompt_embeds=neg, preserve_mask=torch.ones(F, H, W))
    settings = RestoreSettings(steps=3, guidance=1.0, guidance_schedule="constant")
    video = restore(coarse, None, conditions, settings, prior=prior)
    torch.testing.assert_close(video, prior.decode(prior.encode(coarse)))
    # With M = 0 in the first latent frame only, that frame is free to change while the rest stays.
    mask = torch.ones(F, H, W)
    mask[0] = 0.0
    partly = restore(coarse, None, RestoreConditions(prompt_embeds=pos, negative_prompt_embeds=neg,
                                                     preserve_mask=mask), settings, prior=prior)
    assert not torch.allclose(partly[0], video[0], atol=1e-4)


def test_cancel_between_steps(priors):
    prior = priors["t2v"]
    pos, neg = prior.prompt_embeddings()
    conditions = RestoreConditions(prompt_embeds=pos, negative_prompt_embeds=neg)
    calls = []

    def progress(fraction, message):
        calls.append(message)
        if "step 2/" in message:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        restore(_coarse(), None, conditions, RestoreSettings(steps=4), progress, prior=prior)
    assert calls[-1].startswith("restore: step 2/4")


class _NoHeavyWork:
    """Wraps a prior and fails on any heavy call, to show that input checks come first."""

    def __init__(self, prior):
        self._prior = prior

    def __getattr__(self, name):
        if name in ("encode", "decode", "prepare_conditions", "velocity", "prompt_embeddings", "encode_prompt"):
            raise AssertionError(f"{name} called before the inputs were checked")
        return getattr(self._prior, name)


@pytest.mark.parametrize("shape,match", [((4, 32, 32, 3), "4k\\+1"), ((6, 32, 32, 3), "4k\\+1"),
                                         ((5, 24, 32, 3), "multiples of 16"), ((5, 32, 32), "\\[F, H, W, 3\\]")])
def test_bad_video_is_refused_before_heavy_work(priors, shape, match):
    with pytest.raises(InputError, match=match):
        restore(torch.rand(shape), None, RestoreConditions(), prior=_NoHeavyWork(priors["vace"]))


def test_mismatched_conditions_are_refused_before_heavy_work(priors):
    prior = _NoHeavyWork(priors["vace"])
    with pytest.raises(InputError, match="cameras: expected 5"):
        restore(_coarse(), _cameras(3), RestoreConditions(), prior=prior)
    with pytest.raises(InputError, match="preserve_mask"):
        restore(_coarse(), None, RestoreConditions(preserve_mask=torch.ones(5, 16, 16)), prior=prior)
    with pytest.raises(InputError, match="pose_video"):
        restore(_coarse(), None, RestoreConditions(pose_video=torch.rand(5, 32, 32)), prior=prior)
    with pytest.raises(InputError, match="give both"):
        restore(_coarse(), None, RestoreConditions(prompt_embeds=torch.zeros(1, 4, 32)), prior=prior)


def test_settings_validation():
    with pytest.raises(InputError, match="steps"):
        RestoreSettings(steps=0)
    with pytest.raises(InputError, match="strength"):
        RestoreSettings(strength=1.5)
    with pytest.raises(InputError, match="gamma"):
        RestoreSettings(gamma="sometimes")
    with pytest.raises(InputError, match="cfg"):
        RestoreSettings(cfg=0.5)
