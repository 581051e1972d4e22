"""The torch rasterizer against an independent brute-force per-pixel renderer, analytic splats and invariances."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from backend.core.errors import CapabilityError, InputError
from backend.gaussians.container import Gaussians, rgb_to_sh_dc
from backend.render import Cameras, RenderSettings, render
from backend.render.cameras import look_at
from backend.render.rasterize import eval_sh

pytestmark = pytest.mark.unit


# ---- an independent reference: every pixel against every Gaussian, in float64 ------------------------------
def _rotation(q: torch.Tensor) -> torch.Tensor:
    """(w²−|v|²)I + 2vvᵀ + 2w[v]× for unit q — a different formula from the renderer's."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, v = q[:, :1], q[:, 1:]
    eye = torch.eye(3, dtype=q.dtype).expand(q.shape[0], 3, 3)
    cross = torch.zeros(q.shape[0], 3, 3, dtype=q.dtype)
    cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    cross = cross - cross.transpose(1, 2)
    return ((w * w - (v * v).sum(-1, keepdim=True))[..., None] * eye + 2 * v[:, :, None] * v[:, None, :]
            + 2 * w[..., None] * cross)


def brute_force(g: Gaussians, cam: Cameras, background, features=None, near=0.01, far=1e10):
    """gsplat's classic rules written per pixel: returns rgb, alpha, depth, features for camera 0."""
    w_img, h_img = cam.width, cam.height
    fx, fy, cx, cy = (float(getattr(cam, k)[0]) for k in ("fx", "fy", "cx", "cy"))
    m = cam.world_from_camera[0].to(g.means.dtype)
    # Blender camera frame: p_b = Rᵀ (p − t); OpenCV flips y and z.
    p_b = (g.means - m[:3, 3]) @ m[:3, :3]
    p = p_b * torch.tensor([1.0, -1.0, -1.0], dtype=p_b.dtype)
    r_cv = (m[:3, :3] * torch.tensor([1.0, -1.0, -1.0], dtype=m.dtype)).T
    rot = _rotation(g.quats)
    s2 = torch.exp(2 * g.log_scales)
    cov_w = rot @ torch.diag_embed(s2) @ rot.transpose(1, 2)
    cov_c = r_cv @ cov_w @ r_cv.T
    x, y, z = p.unbind(-1)
    def lim(size, c, f):  # gsplat clamps x/z, y/z to 1.3x the half field of view
        return (size - c) / f + 0.3 * 0.5 * size / f, c / f + 0.3 * 0.5 * size / f

    (lxp, lxn), (lyp, lyn) = lim(w_img, cx, fx), lim(h_img, cy, fy)
    u = torch.clamp(x / z, -lxn, lxp)
    v = torch.clamp(y / z, -lyn, lyp)
    jac = torch.zeros(len(g), 2, 3, dtype=p.dtype)
    jac[:, 0, 0], jac[:, 0, 2] = fx / z, -fx * u / z
    jac[:, 1, 1], jac[:, 1, 2] = fy / z, -fy * v / z
    cov2 = jac @ cov_c @ jac.transpose(1, 2) + 0.3 * torch.eye(2, dtype=p.dtype)
    conic = torch.linalg.inv(cov2)
    mean2 = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)
    opac = torch.sigmoid(g.opacity_logits)
    colors = torch.clamp_min(g.sh[:, 0] * 0.28209479177387814 + 0.5, 0.0)
    feats = colors if features is None else torch.cat([colors, features], -1)

    ys, xs = torch.meshgrid(torch.arange(h_img, dtype=p.dtype) + 0.5, torch.arange(w_img, dtype=p.dtype) + 0.5,
                            indexing="ij")
    trans = torch.ones(h_img, w_img, dtype=p.dtype)
    done = torch.zeros(h_img, w_img, dtype=torch.bool)
    acc = torch.zeros(h_img, w_img, feats.shape[1], dtype=p.dtype)
    acc_d = torch.zeros(h_img, w_img, dtype=p.dtype)
    for i in torch.argsort(z.detach()).tolist():
        if not (near <= float(z[i].detach()) <= far) or float(opac[i].detach()) < 1 / 255:
            continue
        d = torch.stack([xs - mean2[i, 0], ys - mean2[i, 1]], -1)
        sigma = 0.5 * torch.einsum("hwi,ij,hwj->hw", d, conic[i], d)
        alpha = torch.clamp(opac[i] * torch.exp(-sigma), max=0.999)
        use = (alpha >= 1 / 255) & ~done
        next_t = trans * (1 - alpha)
        stop = use & (next_t <= 1e-4)
        done = done | stop
        use = use & ~stop
        wgt = torch.where(use, alpha * trans, torch.zeros_like(alpha))
        acc = acc + wgt[..., None] * feats[i]
        acc_d = acc_d + wgt * z[i]
        trans = torch.where(use, next_t, trans)
    alpha = 1 - trans
    rgb = acc[..., :3] + trans[..., None] * torch.tensor(background, dtype=p.dtype)
    depth = acc_d / alpha.clamp_min(1e-10)
    brute_force.stopped_pixels = int(done.sum())
    return rgb, alpha[..., None], depth[..., None], (acc[..., 3:] if features is not None else None)


def _camera(width=40, height=30, dtype=torch.float64, fov=50.0, eye=(0.3, -2.0, 0.6), target=(0.0, 0.0, 0.1)):
    m = look_at(torch.tensor([eye], dtype=torch.float64), torch.tensor(target, dtype=torch.float64))
    f = 0.5 * height / math.tan(math.radians(fov) / 2)
    return Cameras.create(m.to(dtype), width=width, height=height, fx=f, fy=f * 1.1, cx=width / 2 + 1.3,
                          cy=height / 2 - 0.7)


def _scene(n=40, seed=0, dtype=torch.float64, stack=True):
    gen = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=gen) - 0.5) * torch.tensor([1.6, 0.8, 1.2])
    if stack:  # a deep pile of opaque Gaussians on one line of sight so transmittance runs out
        means[:12] = torch.tensor([0.05, 0.0, 0.1]) + torch.linspace(-0.3, 0.3, 12)[:, None] * torch.tensor(
            [0.0, 1.0, 0.0])
    log_scales = torch.log(0.03 + 0.12 * torch.rand(n, 3, generator=gen))
    opac = 0.3 + 0.69 * torch.rand(n, generator=gen)
    if stack:
        opac[:12] = 0.995
        log_scales[:12] = math.log(0.12)
    colors = torch.rand(n, 3, generator=gen)
    return Gaussians(
        means=means.to(dtype),
        quats=torch.randn(n, 4, generator=gen).to(dtype),
        log_scales=log_scales.to(dtype),
        opacity_logits=torch.logit(opac).to(dtype),
        sh=rgb_to_sh_dc(colors)[:, None].to(dtype),
    )


TORCH = RenderSettings(backend="torch", background=(0.2, 0.4, 0.9))
# Every check of the torch path against the brute-force reference runs for its compiled twin too.
CPU_BACKENDS = pytest.mark.parametrize("backend", ["torch", "numba"])


@CPU_BACKENDS
def test_matches_brute_force_rgb_alpha_depth_features(backend):
    g, cam = _scene(), _camera()
    feats = torch.rand(len(g), 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    out = render(g, cam, features=feats, settings=replace(TORCH, backend=backend))
    rgb, alpha, depth, extra = brute_force(g, cam, TORCH.background, features=feats)
    assert out.backend == backend
    assert out.rgb.shape == (1, 30, 40, 3) and out.alpha.shape == (1, 30, 40, 1)
    assert out.depth.shape == (1, 30, 40, 1) and out.features.shape == (1, 30, 40, 2)
    assert brute_force.stopped_pixels > 10, "scene must exercise early termination"
    assert float((alpha == 0).sum()) > 0, "scene must leave some background"
    for ours, ref in ((out.rgb, rgb), (out.alpha, alpha), (out.depth, depth), (out.features, extra)):
        assert (ours[0] - ref).abs().max() <= 1e-4


@CPU_BACKENDS
def test_matches_brute_force_in_float32_and_small_chunks(backend):
    g, cam = _scene(seed=3).to(dtype=torch.float32), _camera(dtype=torch.float32)
    ref = brute_force(g.to(dtype=torch.float64), cam.to(dtype=torch.float64), TORCH.background)
    for max_pairs in (1 << 21, 256):  # one chunk, and many chunks with finished-pixel culling
        out = render(g, cam, settings=RenderSettings(backend=backend, background=TORCH.background,
                                                    max_pairs=max_pairs))
        assert (out.rgb[0].double() - ref[0]).abs().max() <= 1e-4
        assert (out.alpha[0].double() - ref[1]).abs().max() <= 1e-4
        assert (out.depth[0].double() - ref[2]).abs().max() <= 1e-4 * 3  # depth ~2 m: float32 rounding


@pytest.mark.parametrize("backend,max_pairs", [("torch", 1 << 21), ("torch", 64), ("numba", 1 << 21)])
def test_gradients_match_brute_force_autograd(backend, max_pairs):
    cam = _camera(width=24, height=18)
    settings = RenderSettings(backend=backend, background=TORCH.background, max_pairs=max_pairs)
    base = _scene(n=16, seed=1)
    names = ("means", "quats", "log_scales", "opacity_logits", "sh")

    def grads(fn):
        leaves = {k: getattr(base, k).clone().requires_grad_(True) for k in names}
        g = base.replace(**leaves)
        rgb, alpha, depth = fn(g)
        weights = torch.rand(rgb.shape, generator=torch.Generator().manual_seed(9), dtype=rgb.dtype)
        loss = (rgb * weights).sum() + 0.3 * alpha.sum() + 0.1 * depth.sum()
        loss.backward()
        return {k: v.grad for k, v in leaves.items()}

    ours = grads(lambda g: (lambda o: (o.rgb[0], o.alpha[0], o.depth[0]))(render(g, cam, settings=settings)))
    ref = grads(lambda g: brute_force(g, cam, TORCH.background)[:3])
    for k in names:
        scale = float(ref[k].abs().max())
        assert scale > 0, k
        assert (ours[k] - ref[k]).abs().max() <= 1e-6 * max(1.0, scale), k


@CPU_BACKENDS
def test_single_isotropic_gaussian_is_the_analytic_splat(backend):
    size, f, z, sigma, opacity = 41, 60.0, 2.0, 0.05, 0.8
    cam = Cameras.create(look_at(torch.tensor([[0.0, -z, 0.0]]), torch.zeros(3)), width=size, height=size, fx=f,
                         cx=size / 2, cy=size / 2)  # centre of pixel 20 is 20.5 = size / 2
    color = torch.tensor([[0.9, 0.5, 0.2]])
    g = Gaussians.from_colors(torch.zeros(1, 3), color, scales=sigma, opacities=opacity)
    out = render(g, cam, settings=RenderSettings(backend=backend))
    sigma_px = math.sqrt(f * f * sigma * sigma / (z * z) + 0.3)
    c = size // 2
    assert torch.allclose(out.rgb[0, c, c], opacity * color[0], atol=1e-5)
    dist = torch.arange(0, 8, dtype=torch.float32)
    expected = opacity * torch.exp(-0.5 * dist ** 2 / sigma_px ** 2)
    expected = torch.where(expected >= 1 / 255, expected, torch.zeros_like(expected))
    assert torch.allclose(out.alpha[0, c, c:c + 8, 0], expected, atol=1e-5)  # along +x
    assert torch.allclose(out.alpha[0, c:c + 8, c, 0], expected, atol=1e-5)  # along +y (image down)
    assert torch.allclose(out.depth[0, c, c, 0], torch.tensor(z), atol=1e-5)
    assert float(out.alpha.sum()) == pytest.approx(
        float(torch.where(out.alpha > 0, out.alpha, 0).sum()), rel=1e-6)


@CPU_BACKENDS
def test_order_of_gaussians_does_not_change_the_image(backend):
    g, cam = _scene(n=60, seed=2).to(dtype=torch.float32), _camera(dtype=torch.float32)
    perm = torch.randperm(len(g), generator=torch.Generator().manual_seed(4))
    a = render(g, cam, settings=replace(TORCH, backend=backend))
    b = render(g.subset(perm), cam, settings=replace(TORCH, backend=backend))
    assert (a.rgb - b.rgb).abs().max() <= 1e-6
    assert (a.depth - b.depth).abs().max() <= 1e-5


@CPU_BACKENDS
def test_near_plane_and_behind_camera_are_culled(backend):
    cam = _camera(width=20, height=20, eye=(0.0, -2.0, 0.0), target=(0.0, 0.0, 0.0))
    behind = Gaussians.from_colors(torch.tensor([[0.0, -3.0, 0.0], [0.0, -1.995, 0.0]], dtype=torch.float64),
                                   torch.ones(2, 3, dtype=torch.float64), scales=0.2)
    out = render(behind, cam, settings=RenderSettings(backend=backend, near=0.01))
    assert float(out.alpha.abs().max()) == 0.0


def test_sh_degree_one_follows_view_direction():
    g = _scene(n=10, seed=6, stack=False)
    sh = torch.zeros(len(g), 4, 3, dtype=torch.float64)
    sh[:, 0] = g.sh[:, 0]
    sh[:, 3] = 0.5  # the −C1·x term
    g1 = g.replace(sh=sh)
    dirs = torch.nn.functional.normalize(torch.randn(5, 3, dtype=torch.float64), dim=-1)
    val = eval_sh(sh[:5], dirs, 1)
    expected = 0.28209479177387814 * sh[:5, 0] - 0.4886025119029199 * dirs[:, :1] * 0.5
    assert torch.allclose(val, expected)
    cam = _camera()
    a = render(g1, cam, settings=RenderSettings(backend="torch", sh_degree=0))
    b = render(g1, cam, settings=RenderSettings(backend="torch"))
    assert float((a.rgb - b.rgb).abs().max()) > 1e-3
    assert torch.allclose(a.alpha, b.alpha)


def test_settings_and_inputs_are_validated():
    g, cam = _scene(n=5, stack=False), _camera()
    with pytest.raises(InputError, match="features"):
        render(g, cam, features=torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(InputError, match="backend"):
        RenderSettings(backend="vulkan")
    with pytest.raises(InputError, match="sh_degree"):
        render(g, cam, settings=RenderSettings(sh_degree=2))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where CUDA is absent")
def test_gsplat_where_it_cannot_run_is_a_clear_error_and_auto_uses_the_compiled_cpu_path():
    g, cam = _scene(n=5, stack=False), _camera()
    with pytest.raises(CapabilityError, match="gsplat"):
        render(g, cam, settings=RenderSettings(backend="gsplat"))
    assert render(g, cam).backend == "numba"


def test_float32_scan_path_for_devices_without_float64(monkeypatch):
    """MPS has no float64: the segmented doubling scan must give the same image (run here on CPU)."""
    import backend.render.rasterize as rasterize

    g, cam = _scene(seed=3).to(dtype=torch.float32), _camera(dtype=torch.float32)
    ref = brute_force(g.to(dtype=torch.float64), cam.to(dtype=torch.float64), TORCH.background)
    monkeypatch.setattr(rasterize, "_scan_dtype", lambda device: torch.float32)
    out = render(g, cam, settings=RenderSettings(backend="torch", background=TORCH.background, max_pairs=256))
    assert (out.rgb[0].double() - ref[0]).abs().max() <= 1e-4
    assert (out.alpha[0].double() - ref[1]).abs().max() <= 1e-4


@CPU_BACKENDS
def test_body_scene_with_many_chunks_matches_brute_force(backend):
    """A realistic opaque figure, forced through many small chunks (windows, per-row culling, carried T)."""
    from backend.render import frame_subject, orbit_cameras
    from backend.render.scenes import body_gaussians

    g = body_gaussians(1500, generator=torch.Generator().manual_seed(2), scale_range=(0.02, 0.04)).to(
        dtype=torch.float64)
    cam = orbit_cameras(frame_subject(g.means, width=48, height=64), num_frames=8, start_azimuth_deg=30.0,
                        width=48, height=64)[0:1].to(dtype=torch.float64)
    ref = brute_force(g, cam, (1.0, 1.0, 1.0))
    assert brute_force.stopped_pixels > 100
    for max_pairs in (1 << 21, 300):
        out = render(g, cam, settings=RenderSettings(backend=backend, background=(1.0, 1.0, 1.0),
                                                    max_pairs=max_pairs))
        assert (out.rgb[0] - ref[0]).abs().max() <= 1e-4
        assert (out.alpha[0] - ref[1]).abs().max() <= 1e-4
        assert (out.depth[0] - ref[2]).abs().max() <= 1e-4


def test_projection_matches_gsplats_own_torch_reference():
    """gsplat's pure-torch projection (CPU) gives the same centres, conics and depths as ours."""
    torch_impl = pytest.importorskip("gsplat.cuda._torch_impl")
    from backend.render.rasterize import covariances_3d, project_gaussians

    g, cam = _scene(n=200, seed=7, stack=False), _camera(width=64, height=48)
    g = g.replace(means=g.means * 3.0)  # some outside the view, so the FoV clamp of the Jacobian matters
    covars = covariances_3d(g.quats, g.scales)
    view, k = cam.view_matrices(), cam.intrinsics()
    radii, means2d, depths, conics, _ = torch_impl._fully_fused_projection(g.means, covars, view, k, 64, 48)
    ours = project_gaussians(g.means, covars, g.opacities, view[0], cam.fx[0], cam.fy[0], cam.cx[0], cam.cy[0],
                             64, 48, 0.01, 1e10)
    assert ours.index.numel() > 50
    ref_valid = (radii[0] > 0).all(-1)
    assert bool(ref_valid[ours.index].all())  # everything we keep, gsplat keeps (our boxes are tighter)
    torch.testing.assert_close(ours.means2d, means2d[0, ours.index], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours.conics, conics[0, ours.index], rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(ours.depths, depths[0, ours.index], rtol=1e-9, atol=1e-9)


# ---- antialiased mode (gsplat's rasterize_mode="antialiased", Mip-Splatting's 2D filter) ---------------------
def _brute_force_antialiased(g: Gaussians, cam: Cameras, background):
    """The reference with each opacity times sqrt(det Σ₂ / det(Σ₂ + 0.3 I)), Σ₂ computed here independently."""
    m = cam.world_from_camera[0].to(g.means.dtype)
    fx, fy, cx, cy = (float(getattr(cam, k)[0]) for k in ("fx", "fy", "cx", "cy"))
    p = ((g.means - m[:3, 3]) @ m[:3, :3]) * torch.tensor([1.0, -1.0, -1.0], dtype=g.means.dtype)
    r_cv = (m[:3, :3] * torch.tensor([1.0, -1.0, -1.0], dtype=m.dtype)).T
    rot = _rotation(g.quats)
    cov_c = r_cv @ (rot @ torch.diag_embed(torch.exp(2 * g.log_scales)) @ rot.transpose(1, 2)) @ r_cv.T
    x, y, z = p.unbind(-1)
    lx = (cam.width - cx) / fx + 0.15 * cam.width / fx, cx / fx + 0.15 * cam.width / fx
    ly = (cam.height - cy) / fy + 0.15 * cam.height / fy, cy / fy + 0.15 * cam.height / fy
    u, v = torch.clamp(x / z, -lx[1], lx[0]), torch.clamp(y / z, -ly[1], ly[0])
    jac = torch.zeros(len(g), 2, 3, dtype=p.dtype)
    jac[:, 0, 0], jac[:, 0, 2], jac[:, 1, 1], jac[:, 1, 2] = fx / z, -fx * u / z, fy / z, -fy * v / z
    cov2 = jac @ cov_c @ jac.transpose(1, 2)
    factor = torch.sqrt(torch.linalg.det(cov2) / torch.linalg.det(cov2 + 0.3 * torch.eye(2, dtype=p.dtype)))
    opac = torch.sigmoid(g.opacity_logits) * factor
    dimmed = Gaussians(means=g.means, quats=g.quats, log_scales=g.log_scales, opacity_logits=torch.logit(opac),
                       sh=g.sh)
    return brute_force(dimmed, cam, background)


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_antialiased_matches_brute_force_and_its_gradients(backend):
    g, cam = _scene(), _camera()
    g = Gaussians(means=g.means, quats=g.quats, log_scales=g.log_scales - 2.5, opacity_logits=g.opacity_logits,
                  sh=g.sh)  # small splats, some under a pixel, so the compensation matters
    settings = replace(TORCH, backend=backend, antialiased=True)
    out = render(g, cam, settings=settings)
    rgb, alpha, _, _ = _brute_force_antialiased(g, cam, TORCH.background)
    classic = render(g, cam, settings=replace(TORCH, backend=backend))
    assert float((classic.alpha - out.alpha).abs().max()) > 0.05, "scene must exercise the compensation"
    assert torch.allclose(out.rgb[0], rgb, atol=1e-6) and torch.allclose(out.alpha[0], alpha, atol=1e-6)

    def grads(fn):
        params = [t.clone().requires_grad_(True) for t in (g.means, g.quats, g.log_scales, g.opacity_logits)]
        gg = Gaussians(means=params[0], quats=params[1], log_scales=params[2], opacity_logits=params[3], sh=g.sh)
        image, a = fn(gg)
        (image.square().sum() + a.sum()).backward()
        return [p.grad for p in params]

    ours = grads(lambda gg: (lambda o: (o.rgb[0], o.alpha[0]))(render(gg, cam, settings=settings)))
    ref = grads(lambda gg: _brute_force_antialiased(gg, cam, TORCH.background)[:2])
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def test_antialiased_keeps_a_subpixel_splats_energy():
    """A splat far below a pixel: classic blurs it to 0.3 px² at full opacity (bloat); antialiased dims it so
    its integrated alpha stays close to the true Gaussian's."""
    cam = _camera(width=32, height=32, fov=40.0, eye=(0.0, -3.0, 0.0), target=(0.0, 0.0, 0.0))
    f = float(cam.fx[0])
    sigma = 0.2 * 3.0 / f  # metres: 0.2 px at 3 m
    g = Gaussians(means=torch.zeros(1, 3, dtype=torch.float64), quats=torch.tensor([[1.0, 0, 0, 0]],
                  dtype=torch.float64), log_scales=torch.full((1, 3), math.log(sigma), dtype=torch.float64),
                  opacity_logits=torch.logit(torch.tensor([0.9], dtype=torch.float64)),
                  sh=torch.zeros(1, 1, 3, dtype=torch.float64))
    true_mass = 0.9 * 2 * math.pi * (f * sigma / 3.0) ** 2  # ∫ o·G over the image plane, in px²
    classic = float(render(g, cam, settings=RenderSettings()).alpha.sum())
    anti = float(render(g, cam, settings=RenderSettings(antialiased=True)).alpha.sum())
    assert classic > 5 * true_mass
    assert anti == pytest.approx(true_mass, rel=0.1)


def test_antialias_is_chosen_where_cameras_see_the_subject_coarser_than_its_fit():
    from backend.render.render import ANTIALIAS_BELOW, antialias_for

    cam = _camera(width=64, height=64, eye=(0.0, -3.0, 0.0), target=(0.0, 0.0, 0.0))
    centre = torch.zeros(3, dtype=torch.float64)
    density = float(cam.pixels_per_metre(centre)[0])
    assert density == pytest.approx(float(cam.fy[0]) / 3.0)
    assert not antialias_for(cam, centre, None)  # procedural / imported subjects: as they were made
    assert not antialias_for(cam, centre, density)  # the fit's own density
    assert not antialias_for(cam.resized(32, 32), centre, 0.5 / (ANTIALIAS_BELOW + 0.01) * density)
    assert antialias_for(cam.resized(32, 32), centre, density)  # half resolution
    far = _camera(width=64, height=64, eye=(0.0, -9.0, 0.0), target=(0.0, 0.0, 0.0))
    assert antialias_for(far, centre, density)  # three times farther away
