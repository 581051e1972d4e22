"""gsplat (CUDA) and the torch rasterizer agree on a posed 40k-Gaussian body at 512² (skipped without CUDA)."""

from __future__ import annotations

import logging
import math
import time

import pytest
import torch

from backend.render import RenderSettings, frame_subject, orbit_cameras, render

log = logging.getLogger(__name__)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (gsplat's kernels are CUDA-only)"),
]


def posed_body(n: int, seed: int = 0):
    """The default body with n surface Gaussians, posed (arms lowered, a step) and stood up in the Z-up world."""
    from backend.body import load_body_model
    from backend.motion import posed_frame, skin_gaussians
    from backend.reconstruct.surface import sample_body_gaussians

    body = load_body_model("default")
    canonical = sample_body_gaussians(body, None, n, torch.Generator().manual_seed(seed))
    pose = torch.zeros(1, 63)
    pose[0, 0], pose[0, 3] = -0.4, 0.3  # hips: one leg forward, one back
    pose[0, 15 * 3 + 2], pose[0, 16 * 3 + 2] = -1.0, 1.0  # shoulders: arms down
    out = body(None, torch.tensor([[math.pi / 2, 0.0, 0.0]]), pose, torch.zeros(1, 3))  # Y-up -> Z-up
    means, quats = skin_gaussians(canonical, None, out.joint_transforms.detach())
    return posed_frame(canonical, means[0].detach(), quats[0].detach())


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / torch.mean((a - b) ** 2)))


@pytest.mark.parametrize("antialiased", [False, True])
def test_gsplat_matches_torch_on_a_posed_body(antialiased):
    g = posed_body(40_000).to("cuda")
    framing = frame_subject(g.means.cpu(), width=512, height=512, margin=1.05)
    cams = orbit_cameras(framing, num_frames=4, width=512, height=512)
    feats = torch.nn.functional.one_hot(g.part_ids % 4, 4).float()
    ours = render(g, cams, features=feats, settings=RenderSettings(backend="torch", background=(1.0, 1.0, 1.0),
                                                                   antialiased=antialiased))
    settings = RenderSettings(backend="gsplat", background=(1.0, 1.0, 1.0), antialiased=antialiased)
    ref = render(g, cams, features=feats, settings=settings)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        render(g, cams[0:1], settings=settings)
    torch.cuda.synchronize()
    log.warning("gsplat render, 40k Gaussians at 512²: %.2f ms per camera", (time.perf_counter() - started) * 100)
    assert ref.backend == "gsplat" and ours.backend == "torch"
    assert float(ref.alpha.mean()) > 0.1  # the body is in view
    assert psnr(ours.rgb, ref.rgb) >= 45.0
    assert float((ours.alpha - ref.alpha).abs().max()) <= 1e-3
    assert psnr(ours.features, ref.features) >= 45.0
    mask = (ref.alpha > 0.5) & (ours.alpha > 0.5)
    assert float(((ours.depth - ref.depth).abs() * mask).max()) <= 1e-2


def test_auto_picks_gsplat_on_cuda():
    g = posed_body(2_000).to("cuda")
    cams = orbit_cameras(frame_subject(g.means.cpu()), num_frames=1, width=64, height=64)
    assert render(g, cams).backend == "gsplat"
