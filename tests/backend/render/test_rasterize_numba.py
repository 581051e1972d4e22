"""The compiled CPU compositor (``backend="numba"``) against its torch twin on the cases the shared brute-force
tests do not cover: close-ups with huge splats, empty views, 1-pixel images; and the same bytes at any thread
count. (``test_rasterize.py`` checks it against the brute-force reference.)"""

from __future__ import annotations

import numba
import pytest
import torch

from backend.gaussians import Gaussians
from backend.render import Cameras, RenderSettings, look_at, render
from backend.render import rasterize_numba

pytestmark = pytest.mark.unit

NAMES = ("means", "quats", "log_scales", "opacity_logits", "sh")


def _scene(n, seed, spread=1.0, scale=(0.03, 0.15)):
    gen = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=(torch.rand(n, 3, generator=gen) - 0.5) * spread,
        quats=torch.randn(n, 4, generator=gen),
        log_scales=torch.log(scale[0] + (scale[1] - scale[0]) * torch.rand(n, 3, generator=gen)),
        opacity_logits=torch.logit(0.2 + 0.79 * torch.rand(n, generator=gen)),
        sh=torch.randn(n, 4, 3, generator=gen) * 0.5,
    )


def _camera(width, height, eye=(0.2, -2.5, 0.4), fov_px=None):
    m = look_at(torch.tensor([eye]), torch.zeros(3))
    f = fov_px or 0.9 * max(width, height)
    return Cameras.create(m, width=width, height=height, fx=f, fy=f, cx=width / 2, cy=height / 2)


def _render_with_grads(g, cam, backend, background=(0.1, 0.2, 0.3)):
    leaves = {k: getattr(g, k).clone().requires_grad_(True) for k in NAMES}
    out = render(g.replace(**leaves), cam, settings=RenderSettings(backend=backend, background=background))
    weights = torch.rand(out.rgb.shape, generator=torch.Generator().manual_seed(3))
    ((out.rgb * weights).sum() + 0.5 * out.alpha.sum() + 0.01 * (out.depth * out.alpha).sum()).backward()
    return out, {k: v.grad for k, v in leaves.items()}


def _psnr(a, b):
    mse = float(((a - b) ** 2).mean().detach())
    return float("inf") if mse == 0 else -10 * torch.log10(torch.tensor(mse)).item()


@pytest.mark.parametrize("case", ["random", "close_up_huge_splats", "one_pixel", "wide_and_short"])
def test_compiled_equals_the_torch_twin(case):
    g, cam = {
        "random": (_scene(300, 0), _camera(64, 48)),
        "close_up_huge_splats": (_scene(40, 1, spread=0.6, scale=(0.3, 0.9)), _camera(48, 48, eye=(0.0, -0.9, 0.1))),
        "one_pixel": (_scene(50, 2), _camera(1, 1, fov_px=2.0)),
        "wide_and_short": (_scene(200, 3), _camera(97, 13)),
    }[case]
    ours, g_ours = _render_with_grads(g, cam, "numba")
    ref, g_ref = _render_with_grads(g, cam, "torch")
    assert float(ref.alpha.detach().max()) > 0.05, "the view must see something"
    assert _psnr(ours.rgb, ref.rgb) >= 45 and _psnr(ours.alpha, ref.alpha) >= 45
    for k in NAMES:
        # float32 sums in another order: relative to the largest gradient of the parameter
        scale = float(g_ref[k].abs().max())
        assert float((g_ours[k] - g_ref[k]).abs().max()) <= 1e-4 * max(scale, 1e-6), k


def test_empty_view_renders_background_and_zero_gradients():
    g = _scene(30, 4)
    cam = _camera(32, 24, eye=(0.0, 5.0, 0.0))
    behind = g.replace(means=g.means + torch.tensor([0.0, 8.0, 0.0]))  # all behind the camera
    out, grads = _render_with_grads(behind, cam, "numba")
    assert float(out.alpha.detach().abs().max()) == 0.0
    assert torch.allclose(out.rgb.detach(), torch.tensor([0.1, 0.2, 0.3]).expand_as(out.rgb))
    assert all(v is None or float(v.abs().max()) == 0.0 for v in grads.values())  # None: no path at all


def test_same_bytes_at_any_thread_count():
    g, cam = _scene(2000, 5, spread=1.2), _camera(96, 80)
    runs = []
    for threads in (1, 2, 1):
        rasterize_numba.set_threads(threads)
        try:
            out, grads = _render_with_grads(g, cam, "numba")
        finally:
            rasterize_numba.set_threads(None)
        runs.append((out.rgb, out.alpha, *grads.values()))
    assert numba.config.NUMBA_NUM_THREADS >= 2
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)
